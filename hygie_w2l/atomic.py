"""Atomic output files: written beside their destination under a temporary name, then renamed.

A crash, a Ctrl-C or a full disk leaves the previous file (or nothing) in place, never half a
file. Every output of the project (videos, checkpoints, datasets' arrays, downloads) goes
through :func:`atomic_path`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from hygie_w2l.errors import OutputError


def check_writable(path: str | Path) -> Path:
    """Fail early, with a fix, when ``path`` cannot be written; returns it as a Path."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{path}: the folder {folder} does not exist. Create it first "
                          f"(mkdir -p {folder}) or choose another output path.")
    if path.is_dir():
        raise OutputError(f"{path}: is a folder. Give a file name, e.g. {path / 'out.mp4'}.")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"{path}: the folder {folder} is not writable. "
                          "Choose an output folder you can write to.")
    # The mode bits count even for root: the atomic rename would replace a file its owner
    # marked read-only (rename needs only the folder's permission).
    if path.exists() and (not os.access(path, os.W_OK) or not path.stat().st_mode & 0o222):
        raise OutputError(f"{path}: the file exists and is read-only. "
                          "Remove it, make it writable (chmod u+w) or choose another name.")
    return path


def writable_folder(folder: str | Path, flag: str = "--out") -> Path:
    """Create ``folder`` (and its parents) where needed and check that a file can be made
    in it; an OutputError naming it otherwise (permissions, a read-only or immutable
    folder, a file in the way)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".hygie-write-check-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except FileExistsError:
        raise OutputError(f"{folder}: a file is in the way of this folder. Choose another "
                          f"{flag}.") from None
    except OSError as exc:
        raise OutputError(f"{folder}: cannot write there ({exc.strerror or exc}). Choose a "
                          f"{flag} you can write to.") from None
    return folder


def not_an_input(out: str | Path, *inputs: str | Path | None, flag: str = "--out") -> Path:
    """Refuse an output that is one of the inputs (the same file or folder, by inode, under
    whatever name): writing it would destroy that input."""
    out = Path(out)
    for given in inputs:
        if given is not None and out.exists() and Path(given).exists() and \
                os.path.samefile(out, given):
            raise OutputError(f"{out}: is also an input ({given}); writing there would "
                              f"destroy it. Choose another {flag}.")
    return out


def replace_folder(new: Path, out: Path) -> None:
    """Put the finished folder ``new`` at ``out``, replacing what was there only once the
    new one is complete (two renames; the old one is removed last)."""
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        new.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(out)
    out.chmod(0o755)


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    The temporary file keeps ``path``'s suffix so that tools choosing a format by extension
    (ffmpeg, numpy) behave the same. On any error the temporary file is removed.
    """
    path = check_writable(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                                    dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise OutputError(f"{path}: nothing was written; the previous file is kept.")
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise OutputError(f"{path}: the disk is full; nothing was overwritten. "
                              "Free some space and run the command again.") from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)
