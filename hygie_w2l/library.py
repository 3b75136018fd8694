"""The mouth library: the person's own real HD mouths, searchable by shape and appearance.

A *mouth library* (``hygie-w2l index DATASET --out retrieval/NAME``) holds, for every kept
frame of one or more prepared datasets: the HD mouth patch in the canonical mouth frame
(mouth corners at fixed points, ``geometry.hd_affine``), its lip landmarks in that frame, and
a search descriptor::

    descriptor = [ shape / s_shape ,  w_app * appearance / s_app ]

* shape: the 40 lip landmarks (outer + inner ring) in the canonical frame, divided by the
  patch width, so a mouth shifted, scaled or rotated in the video gives the same shape;
* appearance: the first ``pca_dims`` PCA components of a 16x12 greyscale copy of the patch,
  each copy standardised (mean 0, std 1) so lighting changes do not dominate;
* s_shape, s_app: the library's RMS norm of each part, so ``w_app`` is the weight of
  appearance relative to shape. ``w_app`` is tuned when the index is built: held-out frames
  of the datasets (their patch blurred like a 96-px generator's output) query the library,
  and the weight that brings the retrieved inner mouths closest to the true ones is kept
  (the table is in ``meta.json``).

Near-duplicates are pruned: a frame whose lip landmarks differ from the last kept frame of
its clip by less than ``prune_rms`` (RMS, fraction of the mouth width) is dropped (held
poses, silences). Kept entries stay in time order, so "entry j+1 follows entry j" means the
real video playing on (temporal.py uses it). The render stage is in hd.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from hygie_w2l import __version__
from hygie_w2l.atomic import not_an_input, replace_folder, writable_folder
from hygie_w2l.errors import HygieError
from hygie_w2l.geometry import hd_affine, polygon_mask, transform_points
from hygie_w2l.landmarks import outer_inner_rings
from hygie_w2l.pixels import warp_affine
from hygie_w2l.prepare import DATASET_FORMAT_VERSION
from hygie_w2l.storage import ChunkedArray, ChunkWriter, read_json
from hygie_w2l.types import Affine, Landmarks

INDEX_FORMAT_VERSION = 2  # 2: raw shape codes and each mouth's context (pose, skin colour)
EXACT_MAX_ENTRIES = 20_000  # exact (flat) search up to this size, HNSW above
APPEARANCE_WH = (16, 12)  # the greyscale copy behind the appearance code
TUNING_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)


class IndexError_(HygieError):
    """A mouth library that cannot be used (missing, damaged, other version)."""


@dataclasses.dataclass(frozen=True)
class IndexConfig:
    pca_dims: int = 16
    appearance_weight: float | None = None  # None: tuned on held-out frames at build
    prune_rms: float = 0.005  # RMS lip-landmark change (fraction of mouth width) under which
    # a frame repeats the last kept frame of its clip and is dropped
    split: str = "train"  # which frames of each dataset enter the library: train | all
    hnsw_m: int = 32

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True)
                              .encode()).hexdigest()[:16]


# ----------------------------------------------------------------- descriptors ----

def lip_points(landmarks: Landmarks) -> np.ndarray:
    """Outer then inner lip ring, (K, 2) float32 (K = 40 for MediaPipe, 20 for iBUG)."""
    outer, inner = outer_inner_rings(landmarks)
    return np.concatenate([outer, inner]).astype(np.float32)


def shape_code(points_canonical: np.ndarray, patch_hw: tuple[int, int]) -> np.ndarray:
    """Lip points already in the canonical frame -> (2K,) centred, width-normalised."""
    h, w = patch_hw
    return ((points_canonical - (w / 2, h / 2)) / w).reshape(-1).astype(np.float32)


def appearance_pixels(patch: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 BGR patch -> (192,) standardised greyscale of a 16x12 copy."""
    grey = cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY) if patch.ndim == 3 else patch
    small = cv2.resize(grey, APPEARANCE_WH, interpolation=cv2.INTER_AREA).astype(np.float32)
    small -= small.mean()
    return (small / max(float(small.std()), 1.0)).reshape(-1)


@dataclasses.dataclass
class DescriptorSpace:
    """How raw shape codes and appearance pixels become descriptors (fitted on a library)."""

    pca_mean: np.ndarray  # (192,)
    pca_components: np.ndarray  # (pca_dims, 192)
    shape_scale: float
    appearance_scale: float
    appearance_weight: float

    @classmethod
    def fit(cls, shapes: np.ndarray, pixels: np.ndarray, pca_dims: int) -> DescriptorSpace:
        mean = pixels.mean(0)
        _, _, vt = np.linalg.svd(pixels - mean, full_matrices=False)
        comps = vt[:pca_dims].astype(np.float32)
        app = (pixels - mean) @ comps.T
        shape_c = shapes - shapes.mean(0)
        return cls(mean.astype(np.float32), comps,
                   float(np.sqrt((shape_c ** 2).sum(1).mean())) or 1.0,
                   float(np.sqrt((app ** 2).sum(1).mean())) or 1.0, 1.0)

    def __call__(self, shapes: np.ndarray, pixels: np.ndarray,
                 weight: float | None = None) -> np.ndarray:
        w = self.appearance_weight if weight is None else weight
        app = (pixels - self.pca_mean) @ self.pca_components.T
        return np.ascontiguousarray(np.concatenate(
            [shapes / self.shape_scale, w * app / self.appearance_scale], axis=1),
            dtype=np.float32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"pca_mean": self.pca_mean, "pca_components": self.pca_components,
                "scales": np.array([self.shape_scale, self.appearance_scale,
                                    self.appearance_weight], np.float64)}

    @classmethod
    def from_arrays(cls, a: Any) -> DescriptorSpace:
        s = a["scales"]
        return cls(a["pca_mean"], a["pca_components"], float(s[0]), float(s[1]), float(s[2]))


CONTEXT_NAMES = ("yaw", "pitch", "roll", "L", "a", "b")
CONTEXT_VERSION = 1  # of context_features: renders keep a template's features by it
SKIN_RING_DILATE = 0.15  # of the canonical width: the lips' own pixels stay out of the ring


def context_features(patch: np.ndarray, points: np.ndarray, pose_deg: np.ndarray
                     ) -> np.ndarray:
    """A mouth's context, whatever its shape: head pose (yaw, pitch, roll, degrees) and the
    mean Lab colour of the skin around the lips (the patch outside the dilated outer lip
    hull): (6,) float32. patch (h, w, 3) uint8 BGR in the canonical frame, points (40, 2)."""
    h, w = patch.shape[:2]
    lips = polygon_mask(points[:len(points) // 2], (h, w),
                        dilate_px=int(round(SKIN_RING_DILATE * w)))
    lab = cv2.cvtColor(patch, cv2.COLOR_BGR2LAB)
    skin = (lips < 0.5).astype(np.uint8)
    colour = cv2.mean(lab, mask=skin if skin.any() else None)[:3]
    return np.concatenate([np.nan_to_num(pose_deg), colour]).astype(np.float32)


def canonical_mouth(frame: np.ndarray, landmarks: Landmarks, patch_hw: tuple[int, int]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(patch, its lip points (40, 2)): the mouth of a frame (BGR or I420: pixels.py) in the
    canonical mouth frame."""
    m = hd_affine(landmarks, patch_hw)
    patch = warp_affine(frame, m, (patch_hw[1], patch_hw[0]), cv2.INTER_AREA)
    return patch, transform_points(lip_points(landmarks), m)



def simulate_generator_blur(patch: np.ndarray, mouth_width_px: float) -> np.ndarray:
    """What a 96-px face generator leaves of a patch: detail finer than its pixels gone (the
    mouth is ~40 px wide in a 96-px face crop)."""
    factor = max(mouth_width_px / 40.0, 1.0)
    h, w = patch.shape[:2]
    small = cv2.resize(patch, (max(int(w / factor), 4), max(int(h / factor), 4)),
                       interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


# ------------------------------------------------------------------------ FAISS ----

def make_faiss_index(descriptors: np.ndarray, hnsw_m: int = 32) -> Any:
    import faiss

    d = descriptors.shape[1]
    if len(descriptors) <= EXACT_MAX_ENTRIES:
        index = faiss.IndexFlatL2(d)
    else:
        index = faiss.IndexHNSWFlat(d, hnsw_m)
        index.hnsw.efConstruction = 64
    index.add(np.ascontiguousarray(descriptors, dtype=np.float32))
    return index


# --------------------------------------------------------------------- library ----

@dataclasses.dataclass
class BuildSummary:
    out: Path
    meta: dict[str, Any]

    def text(self) -> str:
        m = self.meta
        lines = [f"mouth library {self.out}: {m['n_entries']} mouths kept of "
                 f"{m['n_candidates']} frames ({m['index_type']}, {m['dims']} dims, "
                 f"patch {m['patch_hw'][1]}x{m['patch_hw'][0]} px), built in "
                 f"{m['build_seconds']:.1f} s"]
        if m.get("tuning"):
            lines.append("appearance weight tuned on held-out frames (inner-mouth L1, lower "
                         "is better):")
            for w, err in m["tuning"].items():
                mark = "  <- kept" if float(w) == m["appearance_weight"] else ""
                lines.append(f"  w_app {float(w):4.2f}: {err:.4f}{mark}")
        lines.append(f"typical nearest distance (held-out frames): "
                     f"{m['typical_distance']:.3f}")
        return "\n".join(lines)


def _dataset_frames(data: Any, split: str) -> np.ndarray:
    if split == "all":
        frames = np.arange(data.n_frames)
    else:
        a, b = data.split.segment(split)
        frames = np.arange(a, b)
    return frames[np.asarray(data.usable)[frames] & ~np.isnan(data.plan.hd[frames, 0, 0])]


@dataclasses.dataclass
class _Entries:
    """The mouths kept for a library, in time order, while it is being built."""

    shapes: list[np.ndarray] = dataclasses.field(default_factory=list)
    pixels: list[np.ndarray] = dataclasses.field(default_factory=list)
    context: list[np.ndarray] = dataclasses.field(default_factory=list)
    points: list[np.ndarray] = dataclasses.field(default_factory=list)
    sources: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    segments: list[int] = dataclasses.field(default_factory=list)
    n_candidates: int = 0


def _frame_mouth(data: Any, f: int, patch_hw: tuple[int, int]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(HD patch, inner-mouth mask, lip points, shape code) of dataset frame f, at the
    library's patch size."""
    hd = data.array("hd")
    patch, mask = _fit(hd[f], patch_hw), _fit(data.array("hd_inner_mask")[f], patch_hw)
    pts = transform_points(lip_points(np.asarray(data.landmarks[f])),
                           _scaled(data.plan.hd[f], hd.shape[1:3], patch_hw))
    return patch, mask, pts, shape_code(pts, patch_hw)


def _collect(datas: Sequence[Any], config: IndexConfig, patch_hw: tuple[int, int],
             patches: ChunkWriter, inner: ChunkWriter) -> tuple[_Entries, list[dict[str, Any]]]:
    """Every kept mouth of the datasets (near-duplicates of the last kept frame of their
    clip pruned), their patches written as they come; and each dataset's provenance."""
    entries, provenance, segment = _Entries(), [], 0
    for di, data in enumerate(datas):
        frames = _dataset_frames(data, config.split)
        entries.n_candidates += len(frames)
        last_kept: np.ndarray | None = None
        prev_frame = -2
        for f in tqdm(frames.tolist(), desc=f"index {data.root.name}", unit="frame",
                      leave=False, disable=None):
            patch, mask, pts, code = _frame_mouth(data, f, patch_hw)
            if f != prev_frame + 1:
                segment, last_kept = segment + 1, None
            prev_frame = f
            if last_kept is not None and \
                    float(np.sqrt(np.mean((code - last_kept) ** 2))) < config.prune_rms:
                continue  # pruned on shape (cheap, before the PCA exists)
            last_kept = code
            entries.shapes.append(code)
            entries.pixels.append(appearance_pixels(patch))
            entries.context.append(context_features(patch, pts, data.pose[f]))
            entries.points.append(pts)
            entries.sources.append((di, f))
            entries.segments.append(segment)
            patches.append(patch)
            inner.append(mask)
        provenance.append({"path": str(data.root.resolve()),
                           "source_sha256": data.meta.get("source_sha256"),
                           "format_version": data.meta["format_version"],
                           "frames_considered": int(len(frames))})
    return entries, provenance


def _fit_space(entries: _Entries, config: IndexConfig, datas: Sequence[Any],
               patch_hw: tuple[int, int], folder: Path
               ) -> tuple[DescriptorSpace, dict[str, float], list[_Query]]:
    """The descriptor space of the kept mouths, its appearance weight (tuned on held-out
    frames unless given) with the tuning table, and those held-out queries."""
    shapes, pixels = np.stack(entries.shapes), np.stack(entries.pixels)
    space = DescriptorSpace.fit(shapes, pixels, min(config.pca_dims, len(shapes) - 1))
    queries = _held_out_queries(datas, patch_hw, 200)  # tuning and typical distance
    tuning: dict[str, float] = {}
    if config.appearance_weight is None:
        tuning = tune_appearance_weight(space, shapes, pixels, ChunkedArray(
            folder / "patches"), ChunkedArray(folder / "inner_mask"), queries)
        space.appearance_weight = float(min(tuning, key=lambda w: tuning[w]))
    else:
        space.appearance_weight = float(config.appearance_weight)
    return space, tuning, queries


def build_index(datasets: Sequence[str | Path], out: str | Path,
                config: IndexConfig = IndexConfig()) -> BuildSummary:
    """Build a mouth library from prepared datasets into the folder ``out`` (replaced
    atomically: a failed build leaves the previous library untouched)."""
    import faiss

    from hygie_w2l.dataset import PreparedDataset

    if config.split not in ("train", "all"):
        raise HygieError(f"--split {config.split}: choose train or all.")
    started = time.perf_counter()
    out = not_an_input(out, *datasets)
    datas = [PreparedDataset(d) for d in datasets]
    writable_folder(out.parent)
    patch_hw = datas[0].plan.hd_hw
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        patches = ChunkWriter(tmp / "patches", (*patch_hw, 3))
        inner = ChunkWriter(tmp / "inner_mask", patch_hw)
        entries, provenance = _collect(datas, config, patch_hw, patches, inner)
        patches.close()
        inner.close()
        if len(entries.shapes) < 2:
            raise HygieError(f"{', '.join(map(str, datasets))}: fewer than 2 usable mouths "
                             "for a library; prepare a longer video with the face visible.")
        space, tuning, queries = _fit_space(entries, config, datas, patch_hw, tmp)
        descriptors = space(np.stack(entries.shapes), np.stack(entries.pixels))
        index = make_faiss_index(descriptors, config.hnsw_m)
        faiss.write_index(index, str(tmp / "index.faiss"))
        np.savez(tmp / "library.npz", descriptors=descriptors, points=np.stack(entries.points),
                 shapes=np.stack(entries.shapes), context=np.stack(entries.context),
                 sources=np.array(entries.sources, np.int32),
                 segments=np.array(entries.segments, np.int32), **space.to_arrays())
        meta = {"format_version": INDEX_FORMAT_VERSION,
                "dataset_format": DATASET_FORMAT_VERSION, "config": dataclasses.asdict(config),
                "config_hash": config.digest(), "datasets": provenance,
                "patch_hw": list(patch_hw), "n_candidates": entries.n_candidates,
                "n_entries": len(entries.shapes), "dims": int(descriptors.shape[1]),
                "index_type": type(index).__name__,
                "appearance_weight": space.appearance_weight, "tuning": tuning,
                "typical_distance": _typical_distance(space, queries, index),
                "build_seconds": time.perf_counter() - started,
                "versions": {"hygie_w2l": __version__, "faiss": faiss.__version__}}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BuildSummary(out, meta)


def _fit(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Datasets of another mouth size are resized to the library's patch size."""
    image = np.asarray(image)
    if image.shape[:2] == hw:
        return image
    return cv2.resize(image, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)


def _scaled(m: Affine, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> Affine:
    s = np.array([[dst_hw[1] / src_hw[1]], [dst_hw[0] / src_hw[0]]])
    return m * s


_Query = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""A held-out frame as a query: (shape code, blurred appearance, true patch, inner mask)."""


def tune_appearance_weight(space: DescriptorSpace, shapes: np.ndarray, pixels: np.ndarray,
                           patches: ChunkedArray, inner: ChunkedArray,
                           queries: list[_Query]) -> dict[str, float]:
    """Inner-mouth L1 (0..1) between held-out frames' true patches and the library patch
    their blurred copy retrieves, for each candidate appearance weight."""
    if not queries:
        return {}
    q_shapes = np.stack([q[0] for q in queries])
    q_pixels = np.stack([q[1] for q in queries])
    result = {}
    for w in TUNING_WEIGHTS:
        index = make_faiss_index(space(shapes, pixels, w))
        _, ids = index.search(space(q_shapes, q_pixels, w), 1)
        errs = []
        for (_, _, true_patch, true_inner), j in zip(queries, ids[:, 0], strict=True):
            m = np.maximum(true_inner, inner[int(j)]).astype(np.float32) / 255.0
            if m.sum() < 1:
                m = np.ones_like(m)
            diff = np.abs(patches[int(j)].astype(np.float32) - true_patch) / 255.0
            errs.append(float((diff.mean(-1) * m).sum() / m.sum()))
        result[f"{w:g}"] = float(np.mean(errs))
    return result


def _held_out_queries(datas: Sequence[Any], patch_hw: tuple[int, int], n_max: int
                      ) -> list[_Query]:
    """Validation frames as queries, their patch blurred as a 96-px generator leaves it."""
    out = []
    for data in datas:
        frames = _dataset_frames(data, "val")
        if len(frames) == 0:
            continue
        frames = frames[np.linspace(0, len(frames) - 1, min(n_max, len(frames))).astype(int)]
        for f in frames.tolist():
            patch, mask, _, code = _frame_mouth(data, f, patch_hw)
            out.append((code, appearance_pixels(simulate_generator_blur(
                patch, data.plan.mouth_width_px)), patch.astype(np.float32), mask))
    return out


def _typical_distance(space: DescriptorSpace, queries: list[_Query], index: Any) -> float:
    """Median distance from held-out frames to their nearest library mouth: the scale
    against which render's distances are judged."""
    if not queries:
        return float("nan")
    d, _ = index.search(space(np.stack([q[0] for q in queries]),
                              np.stack([q[1] for q in queries])), 1)
    return float(np.median(np.sqrt(np.maximum(d[:, 0], 0))))


class MouthLibrary:
    """A built library, opened for queries (patches memory-mapped)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise IndexError_(f"{self.root}: not a mouth library (no meta.json). Build one "
                              f"with `hygie-w2l index DATASET --out {self.root}`.")
        self.meta = read_json(meta_path, {"format_version": int}, "mouth library's metadata",
                              f"Build it again with `hygie-w2l index DATASET --out {self.root}`.")
        version = self.meta.get("format_version")
        if version != INDEX_FORMAT_VERSION:
            raise IndexError_(f"{self.root}: library format {version}, this hygie-w2l reads "
                              f"format {INDEX_FORMAT_VERSION}. Build it again with "
                              "`hygie-w2l index`.")
        if self.meta.get("dataset_format") != DATASET_FORMAT_VERSION:
            raise IndexError_(
                f"{self.root}: built from datasets of format {self.meta.get('dataset_format')}"
                f", this hygie-w2l prepares format {DATASET_FORMAT_VERSION}: its mouths were "
                "cut with another geometry. Prepare the video again and rebuild the index.")
        read_json(meta_path, {"n_entries": int, "patch_hw": list, "datasets": list,
                              "config": dict}, "mouth library's metadata",
                  f"Build it again with `hygie-w2l index DATASET --out {self.root}`.")
        try:
            import faiss

            self.index = faiss.read_index(str(self.root / "index.faiss"))
            arrays = np.load(self.root / "library.npz")
            self.points = arrays["points"]
            self.shapes = arrays["shapes"]  # (N, 80) shape codes (shape_code)
            self.context = arrays["context"]  # (N, 6) context_features
            self.sources = arrays["sources"]
            self.segments = arrays["segments"]
            self.space = DescriptorSpace.from_arrays(arrays)
            self.patches = ChunkedArray(self.root / "patches")
            self.inner = ChunkedArray(self.root / "inner_mask")
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            raise IndexError_(f"{self.root}: the library is damaged ({exc}). Build it again "
                              "with `hygie-w2l index`.") from exc
        if not (self.index.ntotal == len(self.points) == len(self.patches)
                == self.meta["n_entries"]):
            raise IndexError_(f"{self.root}: the library's files disagree on its size; build "
                              "it again with `hygie-w2l index`.")
        if hasattr(self.index, "hnsw"):
            self.index.hnsw.efSearch = 64
        self.patch_hw: tuple[int, int] = tuple(self.meta["patch_hw"])  # type: ignore[assignment]
        self.typical_distance = float(self.meta.get("typical_distance", float("nan")))

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, descriptors: np.ndarray, k: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """(distances (B, k) (L2, not squared), ids (B, k))."""
        k = min(k, len(self))
        d, ids = self.index.search(np.ascontiguousarray(descriptors, dtype=np.float32), k)
        return np.sqrt(np.maximum(d, 0)), ids

    def follows(self) -> np.ndarray:
        """(N,) bool: entry j+1 is the real video's next kept frame after entry j."""
        f = np.zeros(len(self), bool)
        f[:-1] = self.segments[1:] == self.segments[:-1]
        return f
