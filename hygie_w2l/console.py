"""The terminal: what the libraries write there behind Python's back is kept off it.

MediaPipe's C++ threads (TensorFlow Lite, absl logging) write start-up notes straight to
file descriptor 2, at moments of their choosing, among our own messages and progress bars.
:func:`filtered_stderr` routes descriptor 2 through a pipe for the duration of a command and
drops those lines; everything else goes through unchanged (``--verbose``: nothing dropped).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator
from typing import Any

NOISE = re.compile(rb"^(?:[IWE]\d{4} [\d:.]+ +\d+ \S+:\d+\]|"
                   rb"INFO: Created TensorFlow Lite|"
                   rb"WARNING: All log messages before absl::InitializeLog)")
NOISE_STARTS = (b"I0", b"W0", b"E0", b"INFO: Cr", b"WARNING: All")


def _forward(read_fd: int, write_fd: int) -> None:
    """Copy the pipe to the real stderr, whole lines of noise left out; a partial line is
    passed on at once (progress bars) unless it may be the start of noise."""
    pending = b""
    while chunk := os.read(read_fd, 65536):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        out = b"".join(line + b"\n" for line in lines if not NOISE.match(line))
        if pending and not any(pending.startswith(s[:len(pending)]) for s in NOISE_STARTS):
            out, pending = out + pending, b""
        if out:
            os.write(write_fd, out)
    if pending and not NOISE.match(pending):
        os.write(write_fd, pending)


@contextlib.contextmanager
def filtered_stderr(enabled: bool = True) -> Iterator[None]:
    """File descriptor 2 through a filter that drops the libraries' own log lines."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    stream = sys.stderr
    real = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    thread = threading.Thread(target=_forward, args=(read_fd, real), daemon=True)
    thread.start()
    # descriptor 2 is a pipe now: progress bars (tqdm asks isatty()) must still draw when
    # the real stderr is a terminal
    sys.stderr = _Terminal(stream, os.isatty(real))  # type: ignore[assignment]
    try:
        yield
    finally:
        stream.flush()
        sys.stderr = stream
        os.dup2(real, 2)  # closes the pipe's last write end: the thread sees the end
        thread.join(timeout=5)
        os.close(read_fd)
        os.close(real)


class _Terminal:
    """sys.stderr as it was, but saying whether the real stderr is a terminal."""

    def __init__(self, stream: object, tty: bool) -> None:
        self._stream, self._tty = stream, tty

    def isatty(self) -> bool:
        return self._tty

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
