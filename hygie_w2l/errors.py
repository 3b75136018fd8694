"""User-facing errors. The CLI prints them without a traceback and exits with code 2."""

from __future__ import annotations

from pathlib import Path

EXIT_USER_ERROR = 2


class HygieError(Exception):
    """An error the user can fix: the message says what is wrong, with which file and
    what to do."""


class InputFileError(HygieError):
    """A file given by the user is missing, unreadable, corrupt or of an unsupported kind."""

    def __init__(self, path: str | Path, problem: str, fix: str) -> None:
        self.path = Path(path)
        super().__init__(f"{path}: {problem}. {fix}")


class NoAudioStreamError(InputFileError):
    """A media file has no audio stream where one is needed."""


class FFmpegError(HygieError):
    """ffmpeg failed; the message carries its own stderr (last lines)."""

    def __init__(self, what: str, stderr: str) -> None:
        tail = "\n".join(line for line in stderr.strip().splitlines()[-8:])
        super().__init__(f"{what}\nffmpeg said:\n{tail}")


class OutputError(HygieError):
    """An output cannot be written (missing folder, read-only file, full disk)."""
