"""HD retrieval: the person's own real high-resolution mouths replace blurry generated ones.

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
poses, silences). Kept entries stay in time order,
so "entry j+1 follows entry j" means the real video playing on.

At render (``render --hd-retrieval``), the descriptor of each *generated* mouth (MediaPipe
landmarks on the pasted-back frame) finds its k nearest real mouths; :class:`TemporalChooser`
picks one per frame by dynamic programming (distance + a cost for switching entries - a bonus
for following the library's own next frame), with a fixed look-ahead so memory stays flat.
:func:`compose` warps the chosen patch onto the generated lip contour (piecewise affine on a
Delaunay triangulation of the lip landmarks), matches its colour, and blends the inner mouth
(teeth, tongue; with ``lips`` the lips too) into the frame.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from hygie_w2l import __version__
from hygie_w2l.blend import BlendMode, blend_region
from hygie_w2l.errors import HygieError
from hygie_w2l.geometry import (
    Affine,
    hd_affine,
    invert,
    polygon_mask,
    transform_points,
)
from hygie_w2l.landmarks import outer_inner_rings
from hygie_w2l.storage import ChunkedArray, ChunkWriter
from hygie_w2l.types import Landmarks

INDEX_FORMAT_VERSION = 1
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


def describe_frame(frame: np.ndarray, landmarks: Landmarks, patch_hw: tuple[int, int]
                   ) -> tuple[np.ndarray, np.ndarray, Affine]:
    """(shape code, appearance pixels, frame -> canonical matrix) of the mouth in a frame."""
    m = hd_affine(landmarks, patch_hw)
    patch = cv2.warpAffine(frame, m, (patch_hw[1], patch_hw[0]), flags=cv2.INTER_AREA,
                           borderMode=cv2.BORDER_REPLICATE)
    pts = transform_points(lip_points(landmarks), m)
    return shape_code(pts, patch_hw), appearance_pixels(patch), m


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
    return frames[np.asarray(data.usable)[frames] & ~np.isnan(
        data.transforms["hd"][frames, 0, 0])]


def build_index(datasets: Sequence[str | Path], out: str | Path,
                config: IndexConfig = IndexConfig()) -> BuildSummary:
    """Build a mouth library from prepared datasets into the folder ``out`` (replaced
    atomically: a failed build leaves the previous library untouched)."""
    from hygie_w2l.dataset import PreparedDataset
    from hygie_w2l.prepare import DATASET_FORMAT_VERSION

    if config.split not in ("train", "all"):
        raise HygieError(f"--split {config.split}: choose train or all.")
    started = time.perf_counter()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    datas = [PreparedDataset(d) for d in datasets]
    h0, w0 = datas[0].meta["crops"]["hd_patch_hw"]
    patch_hw = (int(h0), int(w0))
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        shapes, pixels, points, sources, segments = [], [], [], [], []
        patches = ChunkWriter(tmp / "patches", (*patch_hw, 3))
        inner = ChunkWriter(tmp / "inner_mask", patch_hw)
        n_candidates, segment = 0, 0
        provenance = []
        for di, data in enumerate(datas):
            frames = _dataset_frames(data, config.split)
            n_candidates += len(frames)
            hd, hd_inner = data.array("hd"), data.array("hd_inner_mask")
            last_kept: np.ndarray | None = None
            prev_frame = -2
            for f in tqdm(frames, desc=f"index {data.root.name}", unit="frame", leave=False,
                          disable=None):
                f = int(f)
                patch, mask = _fit(hd[f], patch_hw), _fit(hd_inner[f], patch_hw)
                pts = transform_points(lip_points(np.asarray(data.landmarks[f])),
                                       _scaled(data.transforms["hd"][f], hd.shape[1:3],
                                               patch_hw))
                code = shape_code(pts, patch_hw)
                if f != prev_frame + 1:
                    segment, last_kept = segment + 1, None
                prev_frame = f
                # near-duplicate pruning on shape (cheap, before PCA exists)
                if last_kept is not None and float(np.sqrt(np.mean((code - last_kept) ** 2))) \
                        < config.prune_rms:
                    continue
                last_kept = code
                shapes.append(code)
                pixels.append(appearance_pixels(patch))
                points.append(pts)
                sources.append((di, f))
                segments.append(segment)
                patches.append(patch)
                inner.append(mask)
            provenance.append({"path": str(data.root.resolve()),
                               "source_sha256": data.meta.get("source_sha256"),
                               "format_version": data.meta["format_version"],
                               "frames_considered": int(len(frames))})
        patches.close()
        inner.close()
        if len(shapes) < 2:
            raise HygieError(f"{', '.join(map(str, datasets))}: fewer than 2 usable mouths "
                             "for a library; prepare a longer video with the face visible.")
        shapes_a, pixels_a = np.stack(shapes), np.stack(pixels)
        space = DescriptorSpace.fit(shapes_a, pixels_a, min(config.pca_dims, len(shapes) - 1))
        tuning: dict[str, float] = {}
        queries = _held_out_queries(datas, patch_hw, 200)  # tuning and typical distance
        if config.appearance_weight is None:
            tuning = tune_appearance_weight(space, shapes_a, pixels_a, ChunkedArray(
                tmp / "patches"), ChunkedArray(tmp / "inner_mask"), queries)
            space.appearance_weight = float(min(tuning, key=lambda w: tuning[w]))
        else:
            space.appearance_weight = float(config.appearance_weight)
        descriptors = space(shapes_a, pixels_a)
        index = make_faiss_index(descriptors, config.hnsw_m)
        typical = _typical_distance(space, queries, index)
        import faiss

        faiss.write_index(index, str(tmp / "index.faiss"))
        np.savez(tmp / "library.npz", descriptors=descriptors, points=np.stack(points),
                 sources=np.array(sources, np.int32), segments=np.array(segments, np.int32),
                 **space.to_arrays())
        meta = {"format_version": INDEX_FORMAT_VERSION,
                "dataset_format": DATASET_FORMAT_VERSION, "config": dataclasses.asdict(config),
                "config_hash": config.digest(), "datasets": provenance,
                "patch_hw": list(patch_hw), "n_candidates": n_candidates,
                "n_entries": len(shapes), "dims": int(descriptors.shape[1]),
                "index_type": type(index).__name__, "appearance_weight":
                space.appearance_weight, "tuning": tuning, "typical_distance": typical,
                "build_seconds": time.perf_counter() - started,
                "versions": {"hygie_w2l": __version__, "faiss": faiss.__version__}}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        _replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BuildSummary(out, meta)


def _replace_folder(new: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        new.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(out)
    out.chmod(0o755)


def _fit(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Datasets of another mouth size are resized to the library's patch size."""
    image = np.asarray(image)
    if image.shape[:2] == hw:
        return image
    return cv2.resize(image, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)


def _scaled(m: Affine, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> Affine:
    s = np.array([[dst_hw[1] / src_hw[1]], [dst_hw[0] / src_hw[0]]])
    return m * s


def tune_appearance_weight(space: DescriptorSpace, shapes: np.ndarray, pixels: np.ndarray,
                           patches: ChunkedArray, inner: ChunkedArray,
                           queries: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
                           ) -> dict[str, float]:
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
                      ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(shape, blurred appearance, true patch, true inner mask) of validation frames."""
    out = []
    for data in datas:
        frames = _dataset_frames(data, "val")
        if len(frames) == 0:
            continue
        frames = frames[np.linspace(0, len(frames) - 1, min(n_max, len(frames))).astype(int)]
        width = float(data.meta["crops"]["mouth_width_px_median"])
        hd, hd_inner = data.array("hd"), data.array("hd_inner_mask")
        for f in frames:
            patch = _fit(hd[int(f)], patch_hw)
            pts = transform_points(lip_points(np.asarray(data.landmarks[int(f)])),
                                   _scaled(data.transforms["hd"][int(f)], hd.shape[1:3],
                                           patch_hw))
            out.append((shape_code(pts, patch_hw),
                        appearance_pixels(simulate_generator_blur(patch, width)),
                        patch.astype(np.float32), _fit(hd_inner[int(f)], patch_hw)))
    return out


def _typical_distance(space: DescriptorSpace,
                      queries: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                      index: Any) -> float:
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
        from hygie_w2l.prepare import DATASET_FORMAT_VERSION

        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise IndexError_(f"{self.root}: not a mouth library (no meta.json). Build one "
                              f"with `hygie-w2l index DATASET --out {self.root}`.")
        self.meta = json.loads(meta_path.read_text())
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
        try:
            import faiss

            self.index = faiss.read_index(str(self.root / "index.faiss"))
            arrays = np.load(self.root / "library.npz")
            self.points = arrays["points"]
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


# ---------------------------------------------------------------- temporal pass ----

def transition_costs(prev_ids: np.ndarray, ids: np.ndarray, follows: np.ndarray,
                     switch_cost: float, follow_bonus: float) -> np.ndarray:
    """(len(prev_ids), len(ids)) cost of going from one candidate entry to the next:
    0 to stay, -bonus to play the library's next frame, +switch_cost otherwise."""
    same = prev_ids[:, None] == ids[None, :]
    nxt = (ids[None, :] == prev_ids[:, None] + 1) & follows[np.clip(prev_ids, 0, None)][:, None]
    return np.where(same, 0.0, np.where(nxt, -follow_bonus, switch_cost))


def viterbi(costs: np.ndarray, ids: np.ndarray, follows: np.ndarray, switch_cost: float,
            follow_bonus: float, start_id: int | None = None) -> np.ndarray:
    """Best path through (T, k) candidate entries with unary ``costs``: (T,) column choices."""
    t_len, _ = costs.shape
    acc = costs[0].astype(np.float64).copy()
    if start_id is not None:
        acc += transition_costs(np.array([start_id]), ids[0], follows, switch_cost,
                                follow_bonus)[0]
    back = np.zeros(costs.shape, np.int64)
    for t in range(1, t_len):
        total = acc[:, None] + transition_costs(ids[t - 1], ids[t], follows, switch_cost,
                                                follow_bonus)
        back[t] = np.argmin(total, axis=0)
        acc = total[back[t], np.arange(total.shape[1])] + costs[t]
    path = np.zeros(t_len, np.int64)
    path[-1] = int(np.argmin(acc))
    for t in range(t_len - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


class TemporalChooser:
    """Online fixed-lag Viterbi: frame t is decided once frame t + ``lag`` is known, on the
    best path over the window that starts from the last decided entry."""

    def __init__(self, follows: np.ndarray, lag: int = 8, switch_cost: float = 0.15,
                 follow_bonus: float = 0.05) -> None:
        self.follows, self.lag = follows, lag
        self.switch_cost, self.follow_bonus = switch_cost, follow_bonus
        self.window: deque[tuple[np.ndarray, np.ndarray]] = deque()
        self.last: int | None = None

    def push(self, distances: np.ndarray, ids: np.ndarray) -> list[tuple[int, float]]:
        """Add a frame's candidates; returns the (entry, distance) of frames now decided."""
        self.window.append((distances, ids))
        return self._decide(len(self.window) - self.lag)

    def flush(self) -> list[tuple[int, float]]:
        """Decide every frame still waiting (end of a voiced stretch)."""
        out = self._decide(len(self.window))
        self.last = None
        return out

    def _decide(self, n: int) -> list[tuple[int, float]]:
        out: list[tuple[int, float]] = []
        if n <= 0:
            return out
        costs = np.stack([d for d, _ in self.window])
        ids = np.stack([i for _, i in self.window])
        path = viterbi(costs, ids, self.follows, self.switch_cost, self.follow_bonus,
                       self.last)
        for t in range(n):
            d, i = self.window.popleft()
            self.last = int(i[path[t]])
            out.append((self.last, float(d[path[t]])))
        return out


# --------------------------------------------------------------------- compose ----

def _border_points(patch_hw: tuple[int, int], inset: float = 1.0) -> np.ndarray:
    """Eight points on the canonical patch's edge (anchors for the piecewise warp)."""
    h, w = patch_hw[0] - inset, patch_hw[1] - inset
    xs, ys = (inset, w / 2, w), (inset, h / 2, h)
    return np.array([(x, y) for y in ys for x in xs if not (x == w / 2 and y == h / 2)],
                    np.float32)


def piecewise_affine_map(src_pts: np.ndarray, dst_pts: np.ndarray, roi: tuple[int, int, int, int],
                         fallback: Affine) -> tuple[np.ndarray, np.ndarray]:
    """cv2.remap maps over ``roi`` (x1, y1, x2, y2 in destination pixels) that take each
    destination pixel inside the Delaunay triangulation of ``dst_pts`` to its source
    position (affine per triangle); elsewhere the ``fallback`` (dst -> src) matrix."""
    from scipy.spatial import Delaunay

    x1, y1, x2, y2 = roi
    local = dst_pts - (x1, y1)
    tri = Delaunay(local, qhull_options="QJ").simplices
    labels = np.zeros((y2 - y1, x2 - x1), np.int32)
    mats = [fallback + np.array([[0, 0, fallback[0, 0] * x1 + fallback[0, 1] * y1],
                                 [0, 0, fallback[1, 0] * x1 + fallback[1, 1] * y1]])]
    for n, (a, b, c) in enumerate(tri, start=1):
        d = local[[a, b, c]].astype(np.float64)
        s = src_pts[[a, b, c]].astype(np.float64)
        lhs = np.hstack([d, np.ones((3, 1))])
        if abs(np.linalg.det(lhs)) < 1e-6:
            mats.append(mats[0])
        else:
            mats.append(np.linalg.solve(lhs, s).T)
        cv2.fillConvexPoly(labels, np.round(d).astype(np.int32), (n,))
    mats_a = np.stack(mats).astype(np.float32)  # (T+1, 2, 3)
    ys, xs = np.mgrid[0:y2 - y1, 0:x2 - x1].astype(np.float32)
    m = mats_a[labels]
    map_x = m[..., 0, 0] * xs + m[..., 0, 1] * ys + m[..., 0, 2]
    map_y = m[..., 1, 0] * xs + m[..., 1, 1] * ys + m[..., 1, 2]
    return map_x, map_y


def compose(frame: np.ndarray, landmarks: Landmarks, patch: np.ndarray,
            patch_points: np.ndarray, strength: float = 1.0, lips: bool = False,
            mode: BlendMode = "poisson") -> np.ndarray:
    """A copy of ``frame`` whose inner mouth (and lips, with ``lips``) is the library
    ``patch`` (canonical frame, lip points ``patch_points``) warped onto the lip contour
    ``landmarks`` of the frame."""
    if strength <= 0:
        return frame
    patch_hw = (patch.shape[0], patch.shape[1])
    m = hd_affine(landmarks, patch_hw)  # frame -> canonical
    border = _border_points(patch_hw)
    dst = np.concatenate([lip_points(landmarks), transform_points(border, invert(m))])
    src = np.concatenate([patch_points, border])
    h, w = frame.shape[:2]
    x1, y1 = np.floor(dst.min(0)).astype(int)
    x2, y2 = np.ceil(dst.max(0)).astype(int) + 1
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if x2 - x1 < 4 or y2 - y1 < 4:
        return frame
    map_x, map_y = piecewise_affine_map(src, dst, (x1, y1, x2, y2), m)
    warped = cv2.remap(patch, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    outer, inner = outer_inner_rings(landmarks)
    ring = (outer if lips else inner).astype(np.float32) - (x1, y1)
    width = float(np.ptp(outer[:, 0]))
    mask = polygon_mask(ring, (y2 - y1, x2 - x1), dilate_px=int(round(0.02 * width)),
                        feather_px=max(int(round(0.04 * width)), 1))
    if mask.max() < 0.05:
        return frame
    return blend_region(frame, warped, mask * float(strength), (x1, y1), mode)


# ------------------------------------------------------------- render stage ----

def default_library(checkpoint: str | Path, root: str | Path = "retrieval") -> Path:
    """The library for a checkpoint when --index is not given: retrieval/NAME for the run
    folder NAME holding it (runs/NAME/generator/best.pt), else the only library there."""
    root, ckpt = Path(root), Path(checkpoint).resolve()
    for part in (ckpt, *ckpt.parents):
        candidate = root / part.name
        if part.name and (candidate / "meta.json").is_file():
            return candidate
    libraries = sorted(p.parent for p in root.glob("*/meta.json"))
    if len(libraries) == 1:
        return libraries[0]
    found = ", ".join(map(str, libraries)) or "none"
    raise IndexError_(f"--hd-retrieval: no mouth library found for {checkpoint} (libraries in "
                      f"{root}/: {found}). Build one with `hygie-w2l index runs/NAME/dataset "
                      "--out retrieval/NAME` and pass --index retrieval/NAME.")


@dataclasses.dataclass(frozen=True)
class HDConfig:
    index: Path
    strength: float = 1.0  # 0: generated pixels only, 1: retrieved pixels only
    lips: bool = False  # replace the lips too, not only teeth and tongue
    k: int = 8  # candidates per frame for the temporal pass
    lag: int = 8  # frames of look-ahead of the temporal pass
    switch_cost: float = 0.15  # descriptor units
    follow_bonus: float = 0.05
    far_factor: float = 2.0  # warn when distances exceed this x the library's typical one


class HDStage:
    """The render stage between blending and encoding: frames go in in order and come out
    in order, ``lag`` frames later, with their inner mouth replaced by a real HD one."""

    def __init__(self, config: HDConfig, mode: BlendMode) -> None:
        from hygie_w2l.face_tracker import FaceMeshDetector

        if not 0.0 <= config.strength <= 1.0:
            raise HygieError(f"--hd-strength {config.strength}: give a value from 0 to 1.")
        self.config, self.mode = config, mode
        self.library = MouthLibrary(config.index)
        self.chooser = TemporalChooser(self.library.follows(), config.lag, config.switch_cost,
                                       config.follow_bonus)
        self.detector = FaceMeshDetector(video=True)
        self.queue: deque[list[Any]] = deque()  # [item, frame, landmarks | None, choice]
        self.records: list[dict[str, Any]] = []
        self.missed = 0  # generated frames where MediaPipe found no face: left as generated

    def push(self, item: Any, frame: np.ndarray, active: bool) -> list[tuple[Any, np.ndarray]]:
        lm = self.detector.detect(frame) if active else None
        if active and lm is None:
            self.missed += 1
        if lm is not None:
            shape, pixels, _ = describe_frame(frame, lm, self.library.patch_hw)
            d, ids = self.library.search(self.library.space(shape[None], pixels[None]),
                                         self.config.k)
            self.queue.append([item, frame, lm, None])
            self._assign(self.chooser.push(d[0], ids[0]))
        else:
            self._assign(self.chooser.flush())
            self.queue.append([item, frame, None, None])
        return self._ready()

    def finish(self) -> list[tuple[Any, np.ndarray]]:
        self._assign(self.chooser.flush())
        return self._ready()

    def close(self) -> None:
        self.detector.close()

    def _assign(self, choices: list[tuple[int, float]]) -> None:
        waiting = (e for e in self.queue if e[2] is not None and e[3] is None)
        for choice, entry in zip(choices, waiting, strict=False):
            entry[3] = choice

    def _ready(self) -> list[tuple[Any, np.ndarray]]:
        out = []
        while self.queue and (self.queue[0][2] is None or self.queue[0][3] is not None):
            item, frame, lm, choice = self.queue.popleft()
            if lm is not None:
                j, dist = choice
                frame = compose(frame, lm, self.library.patches[j], self.library.points[j],
                                self.config.strength, self.config.lips, self.mode)
                src = self.library.sources[j]
                self.records.append({"frame": getattr(item, "k", len(self.records)),
                                     "entry": j, "distance": round(dist, 4),
                                     "source": [int(src[0]), int(src[1])]})
            out.append((item, frame))
        return out

    def summary(self) -> dict[str, Any]:
        d = np.array([r["distance"] for r in self.records])
        entries = [r["entry"] for r in self.records]
        typical = self.library.typical_distance
        far = int((d > self.config.far_factor * typical).sum()) if len(d) else 0
        return {"index": str(self.config.index), "frames": len(self.records),
                "missed": self.missed, "library_size": len(self.library),
                "median_distance": float(np.median(d)) if len(d) else None,
                "typical_distance": typical, "far_frames": far,
                "distinct_entries": len(set(entries)),
                "switches": int(sum(a != b and b != a + 1 for a, b in
                                    zip(entries, entries[1:], strict=False))),
                "per_frame": self.records}

    def warning(self) -> str | None:
        s = self.summary()
        if s["frames"] and s["far_frames"] > 0.25 * s["frames"]:
            return (f"HD retrieval: {s['far_frames']} of {s['frames']} frames found no close "
                    f"real mouth (distance > {self.config.far_factor:g} x the library's typical "
                    f"{s['typical_distance']:.2f}); the library is too small for this audio: "
                    "index a longer video of the person (hygie-w2l index DATASET ...).")
        return None
