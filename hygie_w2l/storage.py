"""On-disk arrays of a prepared dataset: a few large uint8 arrays, written in chunks while the
video streams (memory stays flat), read back memory-mapped (training reads only what it uses).

An array ``NAME`` is a folder ``NAME/`` of ``000000.npy``, ``000001.npy`` ... each holding up
to ``CHUNK_FRAMES`` frames, every chunk written atomically.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hygie_w2l.atomic import atomic_path
from hygie_w2l.errors import InputFileError

CHUNK_FRAMES = 256


Schema = Mapping[str, type | tuple[type, ...]]


def read_json(path: Path, schema: Schema, what: str, fix: str) -> dict[str, Any]:
    """A JSON object file of ours (a dataset's or a library's meta.json ...), checked: it
    parses, it is an object, and it has ``schema``'s keys with values of those types; else
    one InputFileError naming the file, what it should have been (``what``) and the fix."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputFileError(path, f"not found: this is not a {what}", fix) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputFileError(path, f"a damaged {what} (not readable JSON: {exc})", fix) from None
    if not isinstance(data, dict):
        raise InputFileError(path, f"not a {what} (a JSON {type(data).__name__}, not an object)",
                             fix)
    for key, kind in schema.items():
        if key not in data:
            raise InputFileError(path, f"a damaged {what} (it has no {key!r})", fix)
        if not isinstance(data[key], kind) or isinstance(data[key], bool) and kind is int:
            raise InputFileError(path, f"a damaged {what} ({key!r} is a "
                                 f"{type(data[key]).__name__})", fix)
    return data


class ChunkWriter:
    """Append frames one by one; full chunks are flushed to disk as they fill."""

    def __init__(self, folder: Path, frame_shape: tuple[int, ...], dtype: type = np.uint8):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.npy"):
            old.unlink()
        self.frame_shape, self.dtype = frame_shape, dtype
        self._buf: np.ndarray = np.zeros((CHUNK_FRAMES, *frame_shape), dtype)
        self._n_in_buf = 0
        self.n_chunks = 0
        self.n_frames = 0

    def append(self, frame: np.ndarray) -> None:
        self._buf[self._n_in_buf] = frame
        self._n_in_buf += 1
        self.n_frames += 1
        if self._n_in_buf == CHUNK_FRAMES:
            self._flush()

    def _flush(self) -> None:
        if self._n_in_buf == 0:
            return
        with atomic_path(self.folder / f"{self.n_chunks:06d}.npy") as tmp:
            np.save(tmp, self._buf[: self._n_in_buf])
        self.n_chunks += 1
        self._n_in_buf = 0

    def close(self) -> None:
        self._flush()


class ChunkedArray:
    """Read-only, memory-mapped view of a chunked array: ``arr[i]`` is one frame."""

    def __init__(self, folder: Path) -> None:
        files = sorted(folder.glob("*.npy"))
        if not files:
            raise FileNotFoundError(f"{folder}: no chunks")
        self._chunks = [np.load(f, mmap_mode="r") for f in files]
        sizes = [len(c) for c in self._chunks]
        self._starts = np.cumsum([0, *sizes])
        self.shape = (int(self._starts[-1]), *self._chunks[0].shape[1:])
        self.dtype = self._chunks[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(index)
        c = int(np.searchsorted(self._starts, index, side="right")) - 1
        return np.asarray(self._chunks[c][index - self._starts[c]])

    def take(self, indices: Iterable[int]) -> np.ndarray:
        return np.stack([self[int(i)] for i in indices])
