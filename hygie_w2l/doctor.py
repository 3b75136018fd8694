"""``hygie-w2l doctor``: what this machine has for the main job, and what is missing; and
this process's resources: the most memory it has used (:func:`peak_memory_mb`) and its CPU
seconds (:func:`cpu_seconds`)."""

from __future__ import annotations

import dataclasses
import json
import resource
from collections.abc import Callable
from pathlib import Path


def proc_kb(file: str, key: str) -> int | None:
    """A ``key: N kB`` field of a Linux /proc file (e.g. "/proc/meminfo", "MemAvailable"),
    in kB; None where there is no such file or field."""
    try:
        for line in Path(file).read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_memory_mb() -> float:
    """The most resident memory this process has used, in MB.

    Linux's VmHWM (the high-water mark of this program's own memory), not getrusage's
    ru_maxrss: a process started by vfork+exec inherits its parent's peak in ru_maxrss, so
    a command run from a big process (a test runner after loading models) reported the
    runner's 2.5 GB as its own.
    """
    hwm = proc_kb("/proc/self/status", "VmHWM")
    if hwm is not None:
        return hwm / 1024
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux, bytes on macOS
    return rss / 1024 / (1024 if rss > 1 << 32 else 1)


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds (user + system) used so far by this process and by its finished, waited
    children (ffmpeg, ffprobe): the render's --stats reports the difference over a render,
    so its wall time can be read against the work two cores had to do."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = True


def _check(name: str, probe: Callable[[], str], required: bool = True) -> Check:
    try:
        return Check(name, True, probe(), required)
    except Exception as exc:  # doctor reports every failure instead of stopping at the first
        return Check(name, False, f"{type(exc).__name__}: {exc}", required)


def _ffmpeg() -> str:
    from hygie_w2l.media import ffmpeg_exe, ffmpeg_version

    return f"{ffmpeg_version()} ({ffmpeg_exe()})"


def _torch() -> str:
    import torch

    device = "cuda: " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    if device == "cpu" and torch.backends.mps.is_available():
        device = "mps"
    return f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads"


def _mediapipe() -> str:
    import mediapipe as mp
    import numpy as np

    from hygie_w2l.face_tracker import FaceMeshDetector

    with FaceMeshDetector(video=False) as detector:  # loads the bundled face models
        detector.detect(np.zeros((64, 64, 3), np.uint8))
    return f"mediapipe {mp.__version__}, FaceMesh models load"


def _opencv() -> str:
    import cv2

    missing = [f for f in ("seamlessClone", "remap", "VideoCapture") if not hasattr(cv2, f)]
    if missing:
        raise RuntimeError(f"cv2 lacks {missing}")
    return f"opencv {cv2.__version__} ({Path(cv2.__file__).parent})"


def _faiss() -> str:
    import faiss

    return f"faiss {faiss.__version__}"


def _kernels() -> str:
    from hygie_w2l import native

    if native.kernels is None:
        raise RuntimeError("not built (no C compiler or Python headers when the package was "
                           "installed, or a stale build from other sources): the lips path's "
                           "composition uses numpy, 1.5x slower (README: render speed); "
                           "install a C compiler and Python's headers (python3-dev) and run "
                           "`make install` again")
    return f"compiled ({Path(native.kernels.__file__ or '').name})"


def _weights(folder: Path) -> str:
    manifest = folder / "manifest.json"
    if not manifest.exists():
        return f"no manifest at {manifest}"
    entries = json.loads(manifest.read_text())["files"]
    present = [e["name"] for e in entries if (folder / e["name"]).exists()]
    absent = [e["name"] for e in entries if e["name"] not in present]
    text = f"present: {', '.join(present) or 'none'}"
    if absent:
        text += f"; absent (optional, `make download-weights`): {', '.join(absent)}"
    return text


def run_doctor(checkpoints: Path) -> int:
    """Print one line per check; 1 when something the main job needs is missing."""
    checks = [
        _check("ffmpeg", _ffmpeg),
        _check("torch", _torch),
        _check("opencv", _opencv),
        _check("mediapipe", _mediapipe),
        _check("faiss", _faiss),
        _check("kernels", _kernels, required=False),
        _check("weights", lambda: _weights(checkpoints), required=False),
    ]
    for c in checks:
        mark = "ok " if c.ok else ("MISSING" if c.required else "absent")
        print(f"{mark:8s}{c.name:10s}{c.detail}")
    missing = [c.name for c in checks if c.required and not c.ok]
    if missing:
        print(f"\nmissing for the main job: {', '.join(missing)}. Run `make install`.")
        return 1
    print("\nall required components are present.")
    return 0
