"""What hygie-w2l keeps between commands, under ``$HYGIE_CACHE`` (default
``~/.cache/hygie-w2l``): ONNX exports of checkpoints (``onnx/``) and the face tracking of
templates (``templates/``). Everything here can be rebuilt; ``hygie-w2l cache list`` shows
it and ``hygie-w2l cache clear`` frees it.

A template is rendered many times with new speech: its per-frame face detections are kept,
keyed by the file's content (SHA-256) and everything they depend on (frame rate, start,
tracker settings, format version), written atomically. A later render of the same template
reads them instead of tracking again; a changed file (same name, new content) or changed
settings get a new key, and the render says it re-tracked and why. Per-frame features a
render derives from the template's pixels (the lips path's skin colour under the mouth) are
kept beside them under the same key (``KEY.NAME.npy``), NaN rows where not computed yet; so
are what a render derives from the detections alone, for as many frames as it shows: the
track (gaps filled, boxes smoothed, head pose) and the crop matrices (``KEY.NAME.npz``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from hygie_w2l import __version__
from hygie_w2l.atomic import atomic_path
from hygie_w2l.errors import OutputError

TEMPLATE_CACHE_VERSION = 1
KINDS = ("onnx", "templates")


def cache_root() -> Path:
    """$HYGIE_CACHE, else ~/.cache/hygie-w2l."""
    return Path(os.environ.get("HYGIE_CACHE") or Path.home() / ".cache" / "hygie-w2l")


def file_sha256(path: Path, chunk_bytes: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class Detections:
    """A template's raw per-frame face detections, before gap filling and smoothing (which
    depend on how many frames a render shows, so they are redone from these)."""

    points: np.ndarray  # (n, P, 3) float32, NaN rows where no face was found
    status: np.ndarray  # (n,) uint8 face_tracker.STATUS_*
    multi_face_frames: int
    complete: bool  # every frame of the file from ``start`` on (not only a prefix)

    def __len__(self) -> int:
        return len(self.status)


class TemplateCache:
    """The cached detections of one template file under given settings."""

    def __init__(self, path: Path, settings: dict[str, Any]) -> None:
        self.path = path.resolve()
        self.settings = {**settings, "format": TEMPLATE_CACHE_VERSION,
                         "hygie_w2l": __version__}
        self.sha256 = file_sha256(path)
        blob = json.dumps([self.sha256, self.settings], sort_keys=True, default=str)
        self.key = hashlib.sha256(blob.encode()).hexdigest()[:24]
        self.folder = cache_root() / "templates"
        self.file = self.folder / f"{self.key}.npz"

    def load(self, n_frames: int) -> Detections | None:
        """The detections of the first ``n_frames`` frames, when cached (None: not cached,
        damaged, or too short and not complete)."""
        try:
            with np.load(self.file) as data:
                d = Detections(data["points"], data["status"], int(data["multi"]),
                               bool(data["complete"]))
        except (OSError, KeyError, ValueError, EOFError):
            return None
        if len(d) < n_frames and not d.complete:
            return None
        os.utime(self.file)  # recently used: `cache clear --older` keeps it
        return dataclasses.replace(d, points=d.points[:n_frames], status=d.status[:n_frames])

    def why_not(self) -> str:
        """Why nothing was found (for the line a render prints)."""
        seen = _paths(self.folder).get(str(self.path))
        if seen is None:
            return "not tracked before"
        if seen["sha256"] != self.sha256:
            return "the file changed since it was tracked"
        if seen["settings"] != self.settings:
            return "the tracking settings changed"
        return "more frames are shown than were tracked"

    def features(self, name: str) -> np.ndarray | None:
        """The per-frame array ``name`` derived from this template, when kept."""
        try:
            values: np.ndarray = np.load(self._features_file(name), allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        return values

    def save_features(self, name: str, values: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self._features_file(name)) as tmp, tmp.open("wb") as f:
            np.save(f, values, allow_pickle=False)

    def _features_file(self, name: str) -> Path:
        return self.folder / f"{self.key}.{name}.npy"

    def derived(self, name: str, source: str) -> dict[str, np.ndarray] | None:
        """The arrays ``name`` computed from these detections (a render's track and crop
        matrices, for as many frames as it showed), when kept and made from ``source`` (a
        digest of what they were computed from: :func:`digest`)."""
        try:
            with np.load(self._derived_file(name), allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            if str(arrays.pop("source")) != source:
                return None
        except Exception:  # anything damaged or foreign: made again, and replaced
            return None
        return arrays

    def save_derived(self, name: str, source: str, arrays: dict[str, np.ndarray]) -> None:
        """Keep ``arrays`` as ``name``, made from ``source``; best effort: a cache that
        cannot be written costs the next render the time to make them again, not its
        output."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(self._derived_file(name)) as tmp:
                np.savez(tmp, source=np.array(source), **arrays)
        except (OSError, OutputError):
            pass

    def _derived_file(self, name: str) -> Path:
        return self.folder / f"{self.key}.{name}.npz"

    def save(self, detections: Detections) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for derived in self.folder.glob(f"{self.key}.*.npz"):  # made from the ones replaced
            derived.unlink(missing_ok=True)
        with atomic_path(self.file) as tmp:
            np.savez(tmp, points=detections.points, status=detections.status,
                     multi=np.int64(detections.multi_face_frames),
                     complete=np.bool_(detections.complete))
        paths = _paths(self.folder)
        paths[str(self.path)] = {"sha256": self.sha256, "settings": self.settings,
                                 "key": self.key, "time": time.time()}
        with atomic_path(self.folder / "paths.json") as tmp:
            tmp.write_text(json.dumps(paths, indent=1, default=str))


def digest(*parts: np.ndarray | str) -> str:
    """A short SHA-256 of arrays (their bytes, dtypes and shapes) and strings: what a
    derived result was made from."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, str):
            h.update(p.encode())
        else:
            a = np.ascontiguousarray(p)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.data)
    return h.hexdigest()[:24]


def _paths(folder: Path) -> dict[str, Any]:
    """Which template file was last tracked under which key (to say why a cache missed)."""
    try:
        data = json.loads((folder / "paths.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    kind: str
    path: Path
    bytes: int
    modified: float
    source: str  # what it was made from, where known


def list_cache() -> list[CacheEntry]:
    """Every file of the cache, oldest first."""
    root = cache_root()
    sources = {v["key"]: k for k, v in _paths(root / "templates").items()
               if isinstance(v, dict) and "key" in v}
    sources.update(_export_sources(root / "onnx"))
    out = []
    for kind in KINDS:
        for f in sorted((root / kind).glob("*")) if (root / kind).is_dir() else []:
            if f.is_file() and f.name != "paths.json" and not f.name.startswith("."):
                st = f.stat()
                out.append(CacheEntry(kind, f, st.st_size, st.st_mtime,
                                      sources.get(f.name.split(".")[0], "")))
    return sorted(out, key=lambda e: e.modified)


def _export_sources(folder: Path) -> dict[str, str]:
    """{key: checkpoint file} of the ONNX exports, from the record beside each
    (export.cached_export)."""
    out = {}
    for record in folder.glob("*.json") if folder.is_dir() else []:
        try:
            out[record.name.split(".")[0]] = str(json.loads(record.read_text())["source"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # an older or damaged record: the export is listed without its source
    return out


def clear_cache(kind: str | None = None) -> tuple[int, int]:
    """Remove the cache (or one kind of it): (files removed, bytes freed)."""
    entries = [e for e in list_cache() if kind in (None, e.kind)]
    for e in entries:
        e.path.unlink(missing_ok=True)
    for k in KINDS if kind is None else (kind,):
        folder = cache_root() / k
        if folder.is_dir() and not any(p for p in folder.iterdir() if p.name != "paths.json"):
            shutil.rmtree(folder, ignore_errors=True)
    return len(entries), sum(e.bytes for e in entries)
