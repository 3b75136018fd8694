"""The HD render stage: the person's own real high-resolution mouths replace blurry
generated ones.

The descriptor of each *generated* mouth (MediaPipe landmarks on the pasted-back frame)
finds its k nearest real mouths in the library (library.py); the temporal pass
(temporal.py) picks one per frame; compose.py warps it onto the generated lip contour and
blends the inner mouth (teeth, tongue; with ``lips`` the lips too) into the frame.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar

import numpy as np

from hygie_w2l.audio import MelSource
from hygie_w2l.blend import BlendMode
from hygie_w2l.chain import Frame, StageContext, Timer
from hygie_w2l.compose import compose, compose_lips
from hygie_w2l.errors import HygieError
from hygie_w2l.geometry import invert, transform_points
from hygie_w2l.library import (
    CONTEXT_NAMES,
    CONTEXT_VERSION,
    IndexError_,
    MouthLibrary,
    appearance_pixels,
    canonical_mouth,
    context_features,
    lip_points,
    shape_code,
)
from hygie_w2l.lip_shapes import CODE_DIMS, LipShapes, read_shapes, stream_codes
from hygie_w2l.pixels import to_bgr
from hygie_w2l.temporal import TemporalChooser
from hygie_w2l.types import Landmarks


@dataclasses.dataclass
class _Waiting:
    """A frame held by the HD stage until the temporal pass has chosen its mouth."""

    frame: Frame
    landmarks: Landmarks | None  # the generated mouth's landmarks (None: passed through)
    choice: tuple[int, float] | None = None  # (library entry, distance)

    @property
    def wanted(self) -> bool:
        return self.landmarks is not None


class _Held(Protocol):
    choice: tuple[int, float] | None

    @property
    def wanted(self) -> bool: ...


H = TypeVar("H", bound=_Held)


class _Holding(Generic[H]):
    """Frames held in order while the temporal pass decides: ``assign`` gives its choices to
    the waiting frames that want a mouth, ``ready`` lets out the leading frames that are
    decided or want none (the HD stage and the lips stage share this)."""

    def __init__(self) -> None:
        self.items: deque[H] = deque()

    def append(self, item: H) -> None:
        self.items.append(item)

    def assign(self, choices: list[tuple[int, float]]) -> None:
        waiting = (w for w in self.items if w.wanted and w.choice is None)
        for choice, w in zip(choices, waiting, strict=False):
            w.choice = choice

    def ready(self) -> list[H]:
        out = []
        while self.items and (not self.items[0].wanted or self.items[0].choice is not None):
            out.append(self.items.popleft())
        return out


def default_library(checkpoint: str | Path, root: str | Path = "retrieval") -> Path:
    """The library for a checkpoint when --index is not given: NAME's library for the run
    folder NAME holding it (runs/NAME/lips/best.pt -> retrieval/NAME, looked for beside
    that runs/ folder, then in ``root``), else the only library in ``root``."""
    ckpt = Path(checkpoint).resolve()
    roots = [p.parent / "retrieval" for p in ckpt.parents if p.name == "runs"] + [Path(root)]
    for folder in roots:
        for part in (ckpt, *ckpt.parents):
            candidate = folder / part.name
            if part.name and (candidate / "meta.json").is_file():
                return candidate
    libraries = sorted(p.parent for p in Path(root).glob("*/meta.json"))
    if len(libraries) == 1:
        return libraries[0]
    found = ", ".join(map(str, libraries)) or "none"
    raise IndexError_(f"{checkpoint}: no mouth library of this person found (libraries in "
                      f"{root}/: {found}). Build one with `hygie-w2l index runs/NAME/dataset "
                      "--out retrieval/NAME` and pass --index retrieval/NAME.")


def library_for(hd: HDConfig | None, index: Path | None, generator: Any,
                checkpoint: str | Path) -> HDConfig | None:
    """The library a render or eval uses, or None: ``index`` (--index), else the one of
    ``hd`` (--hd-retrieval), else the run's (``retrieval/NAME``) when HD retrieval is on or
    the generator draws its mouths from the library (the lips path). It is opened once
    here, so a missing or damaged one fails before any other work."""
    if hd is None and not generator.needs_library:
        if index is not None:
            raise HygieError("--index is the library of --hd-retrieval: add --hd-retrieval.")
        return None
    hd = hd or HDConfig()
    hd = dataclasses.replace(hd, index=index or hd.index or default_library(checkpoint))
    MouthLibrary(hd.library)
    return hd


HDQuery = Literal["appearance", "shape", "predicted"]
HD_QUERY_NOTE = """How HD retrieval queries the library for an image generator's mouth:
* appearance (default): the generated mouth's lip shape and its (blurry) appearance, with
  the appearance weight tuned when the library was built;
* shape: the generated mouth's lip shape alone, with its pose and skin colour;
* predicted: the shape the run's lips model predicts from the audio (runs/NAME/lips).
Measured (eval, held-out split, FiLM U-Net quick preset): opening r without HD -> with HD,
appearance / shape / predicted: talk_selfie_24s 0.254 -> 0.286 / 0.173 / 0.196,
synthetic 0.855 -> 0.852 / 0.820 / 0.783, talk_sun_22s 0.709 -> 0.682 / 0.682 / 0.676:
a mouth pasted into a generated contour of another shape confuses it, so the default
stays the appearance query."""


@dataclasses.dataclass(frozen=True)
class HDConfig:
    index: Path | None = None  # the mouth library; None: the run's (library_for)
    strength: float = 1.0  # 0: generated pixels only, 1: retrieved pixels only
    lips: bool = False  # replace the lips too, not only teeth and tongue
    k: int = 8  # candidates per frame for the temporal pass
    lag: int = 8  # frames of look-ahead of the temporal pass
    switch_cost: float = 0.15  # descriptor units
    follow_bonus: float = 0.05
    far_factor: float = 2.0  # warn when distances exceed this x the library's typical one
    query: HDQuery = "appearance"  # what finds the library mouths (HD_QUERY_NOTE)

    @property
    def library(self) -> Path:
        """The library's folder, once library_for has resolved it."""
        if self.index is None:
            raise ValueError("HDConfig.index is resolved by library_for before use")
        return self.index


class HDStage:
    """The render stage between blending and encoding: frames go in in order and come out
    in order, ``lag`` frames later, with their inner mouth replaced by a real HD one."""

    def __init__(self, config: HDConfig, mode: BlendMode, timer: Timer,
                 codes: _Codes | None = None, pose: np.ndarray | None = None) -> None:
        """``codes``: the run's lips model's predicted shapes, by audio frame: with them the
        query is by shape (HDConfig.shape_mix of predicted and generated) instead of the
        generated mouth's shape and appearance."""
        from hygie_w2l.face_tracker import FaceMeshDetector

        if not 0.0 <= config.strength <= 1.0:
            raise HygieError(f"--hd-strength {config.strength}: give a value from 0 to 1.")
        self.config, self.mode, self.timer, self.codes = config, mode, timer, codes
        self.pose = pose  # (N, 3) of the frames under the mouths, by Frame.t
        self.library = MouthLibrary(config.library)
        if config.query == "predicted" and codes is None:
            raise HygieError("--hd-query predicted needs the run's lips model (runs/NAME/lips "
                             "beside the generator's run): train it with `hygie-w2l train "
                             "DATASET --arch lips --out runs/NAME/lips`.")
        self.shapes = ShapeQuery(self.library) if config.query != "appearance" else None
        self.chooser = TemporalChooser(self.library.follows(), config.lag, config.switch_cost,
                                       config.follow_bonus)
        self.detector = FaceMeshDetector(video=True)
        self.held: _Holding[_Waiting] = _Holding()
        self.records: list[dict[str, Any]] = []
        self.missed = 0  # generated frames where MediaPipe found no face: left as generated

    def push(self, frames: list[Frame]) -> list[Frame]:
        with self.timer("hd"):
            for f in frames:
                self._push_one(f)
            return self._ready()

    def finish(self) -> list[Frame]:
        with self.timer("hd"):
            self.held.assign(self.chooser.flush())
            return self._ready()

    def close(self) -> None:
        self.detector.close()

    def _push_one(self, f: Frame) -> None:
        lm = self.detector.detect(to_bgr(f.image)) if f.active else None
        if f.active and lm is None:
            self.missed += 1
        if lm is None:
            self.held.assign(self.chooser.flush())
            self.held.append(_Waiting(f, None))
            return
        hw = self.library.patch_hw
        patch, points = canonical_mouth(f.image, lm, hw)
        shape, pixels = shape_code(points, hw), appearance_pixels(patch)
        if self.shapes is not None:
            if self.codes is not None and self.config.query == "predicted":
                shape = self.codes[f.audio]
            context = context_features(patch, points,
                                       np.zeros(3) if self.pose is None else self.pose[f.t])
            d, ids = self.shapes.search(shape[None], context[None], self.config.k)
        else:
            d, ids = self.library.search(self.library.space(shape[None], pixels[None]),
                                         self.config.k)
        self.held.append(_Waiting(f, lm))
        self.held.assign(self.chooser.push(d[0], ids[0]))

    def _ready(self) -> list[Frame]:
        out = []
        for w in self.held.ready():
            if w.landmarks is not None and w.choice is not None:
                self._compose(w.frame, w.landmarks, *w.choice)
            out.append(w.frame)
        return out

    def _compose(self, f: Frame, lm: Landmarks, j: int, dist: float) -> None:
        f.image = compose(f.image, lip_points(lm), self.library.patches[j],
                          self.library.points[j], self.config.strength,
                          "lips" if self.config.lips else "inner", self.mode)
        src = self.library.sources[j]
        self.records.append({"frame": f.k, "entry": j, "distance": round(dist, 4),
                             "source": [int(src[0]), int(src[1])]})

    def summary(self) -> dict[str, Any]:
        return library_use(self.records, self.library, self.missed,
                           self.config.far_factor * self.library.typical_distance)

    def warning(self) -> str | None:
        s = self.summary()
        if s["frames"] and s["far_frames"] > 0.25 * s["frames"]:
            return (f"HD retrieval: {s['far_frames']} of {s['frames']} frames found no close "
                    f"real mouth (distance > {self.config.far_factor:g} x the library's typical "
                    f"{s['typical_distance']:.2f}); the library is too small for this audio: "
                    "index a longer video of the person (hygie-w2l index DATASET ...).")
        return None


# --------------------------------------------------------------- the lips path ----

LIPS_RAMP_FRAMES = 3  # a voiced stretch fades the library mouth in (and out) over this
LIPS_CONTEXT_WEIGHT = 0.3  # weight of pose and skin colour beside the lip shape
LIPS_SWITCH_COST = 0.15  # the temporal pass on shape descriptors (units: library RMS)
LIPS_FOLLOW_BONUS = 0.05


class ShapeQuery:
    """The library searched by lip shape, with the mouth's context (pose, skin colour) as a
    secondary term: descriptor = [shape / s_shape, w * standardised context / sqrt(6)]."""

    def __init__(self, library: MouthLibrary, context_weight: float = LIPS_CONTEXT_WEIGHT
                 ) -> None:
        from hygie_w2l.library import make_faiss_index

        self.shape_scale = library.space.shape_scale
        self.context_mean = library.context.mean(0)
        self.context_std = np.maximum(library.context.std(0), 1e-3)
        self.weight = context_weight / np.sqrt(library.context.shape[1])
        self.index = make_faiss_index(self.describe(library.shapes, library.context))

    def describe(self, shapes: np.ndarray, context: np.ndarray) -> np.ndarray:
        ctx = (context - self.context_mean) / self.context_std
        return np.ascontiguousarray(np.concatenate(
            [shapes / self.shape_scale, self.weight * ctx], axis=1), dtype=np.float32)

    def search(self, shapes: np.ndarray, context: np.ndarray, k: int
               ) -> tuple[np.ndarray, np.ndarray]:
        """(distances (B, k), ids (B, k)) of the nearest library mouths."""
        d, ids = self.index.search(self.describe(shapes, context), min(k, self.index.ntotal))
        return np.sqrt(np.maximum(d, 0)), ids


def run_lips_model(checkpoint: Path | None) -> LipShapes | None:
    """The lips model of the run a generator's checkpoint belongs to (runs/NAME/lips/best.pt
    beside runs/NAME/generator/), when there is one."""
    if checkpoint is None:
        return None
    run = checkpoint if checkpoint.is_dir() else checkpoint.parent
    path = run.parent / "lips" / "best.pt"
    if not path.is_file() or path.resolve() == Path(checkpoint).resolve():
        return None
    shapes = read_shapes(path)
    if shapes is not None:
        return shapes
    from hygie_w2l.lips import LipsModel
    from hygie_w2l.models.checkpoint import load_checkpoint

    model = load_checkpoint(path, expect="lips").model
    assert isinstance(model, LipsModel)
    return model.shapes()


def predicted_codes(model: LipShapes, context: StageContext) -> _Codes:
    """The lips model's shape codes of the speech of a render or eval, by audio frame."""
    return _Codes(model, context.speech, context.n_audio_frames)


class _Codes:
    """The predicted shape code of each audio frame, streamed a minute at a time; the first
    minute by a thread from the start, while the render's first frames are decoded (it was
    0.11 s of a warm 8-s render's first 0.45 s, every stage waiting)."""

    def __init__(self, model: LipShapes, speech: MelSource, n_frames: int) -> None:
        self.stream = stream_codes(model, speech, n_frames)
        self.first, self.codes = 0, np.zeros((0, CODE_DIMS), np.float32)
        ahead = ThreadPoolExecutor(1, "lips-codes")
        self.head: Future[tuple[int, np.ndarray]] | None = ahead.submit(next, self.stream)
        ahead.shutdown(wait=False)  # its thread ends with the task

    def __getitem__(self, k: int) -> np.ndarray:
        while k >= self.first + len(self.codes):
            head, self.head = self.head, None
            self.first, self.codes = head.result() if head is not None else next(self.stream)
        if k < self.first:
            raise ValueError(f"audio frame {k} was asked after frame {self.first}")
        return self.codes[k - self.first]


@dataclasses.dataclass
class _LipsWaiting:
    frame: Frame
    target: np.ndarray | None  # the predicted lip contour in frame pixels (None: untouched)
    run: int = 0  # frames since the voiced stretch began
    to_end: int | None = None  # frames until it ends, once known
    choice: tuple[int, float] | None = None

    @property
    def wanted(self) -> bool:
        return self.target is not None


class LipsStage:
    """The lips path's one stage: each active frame's predicted lip shape (lips.py) is
    placed in the frame's eye-anchored mouth frame (crops "lips"), the library's nearest
    real mouths by shape (and context) go through the temporal pass, and the chosen one is
    composed onto the predicted contour with the jaw following (compose.compose_lips, as
    Frame.edit: chain.EditStage makes it). Frames come out in order, ``lag`` frames later;
    silent frames keep their own mouth, and voiced stretches fade in and out over
    LIPS_RAMP_FRAMES."""

    def __init__(self, model: LipShapes, context: StageContext, k: int = 8, lag: int = 8
                 ) -> None:
        assert context.hd is not None
        self.context, self.k = context, k
        self.library = MouthLibrary(context.hd.library)
        self.query = ShapeQuery(self.library)
        self.codes = predicted_codes(model, context)
        self.chooser = TemporalChooser(self.library.follows(), lag, LIPS_SWITCH_COST,
                                       LIPS_FOLLOW_BONUS)
        self.held: _Holding[_LipsWaiting] = _Holding()
        self.records: list[dict[str, Any]] = []
        self.run = 0
        self._contexts: np.ndarray | None = None  # (template frames, 6), NaN: not yet
        self._contexts_name = ""
        self._computed = 0

    def push(self, frames: list[Frame]) -> list[Frame]:
        with self.context.timer("lips"):
            for f in frames:
                self._push_one(f)
            return self._ready()

    def finish(self) -> list[Frame]:
        with self.context.timer("lips"):
            self._end_run()
            store = self.context.features
            if store is not None and self._computed and self._contexts is not None:
                store.save_features(self._contexts_name, self._contexts)
            return self._ready()

    def close(self) -> None:
        pass

    def _push_one(self, f: Frame) -> None:
        if not f.active or f.landmarks is None:
            self._end_run()
            self.held.append(_LipsWaiting(f, None))
            return
        code = self.codes[f.audio]  # in the canonical frame, as the library's shapes
        hw = self.context.plan.hd_hw
        canonical = code.reshape(-1, 2) * hw[1] + (hw[1] / 2, hw[0] / 2)
        target = transform_points(canonical, invert(self.context.plan.lips[f.t]))
        d, ids = self.query.search(code[None], self._frame_context(f)[None], self.k)
        self.held.append(_LipsWaiting(f, target, self.run))
        self.run += 1
        self.held.assign(self.chooser.push(d[0], ids[0]))

    def _frame_context(self, f: Frame) -> np.ndarray:
        """The pose and skin colour of the frame under the mouth: computed once per template
        frame, and kept with the template's tracking for the next render
        (StageContext.features: a second render of a template reads them back)."""
        assert f.source is not None and f.landmarks is not None
        hw = self.library.patch_hw
        if self._contexts is None:
            fmt = "i420" if f.source.ndim == 2 else "bgr"  # their pixels differ a little
            self._contexts_name = f"lips-context{CONTEXT_VERSION}-{hw[0]}x{hw[1]}-{fmt}"
            self._contexts = self._load_contexts(len(self.context.plan))
        if np.isnan(self._contexts[f.t]).any():
            patch, points = canonical_mouth(f.source, f.landmarks, hw)
            self._contexts[f.t] = context_features(patch, points, self.context.pose[f.t])
            self._computed += 1
        return self._contexts[f.t]

    def _load_contexts(self, n: int) -> np.ndarray:
        """(>= n, 6): those kept by an earlier render (all of them: a longer render may
        have kept more frames), NaN rows for the others."""
        store = self.context.features
        kept = store.features(self._contexts_name) if store is not None else None
        if kept is None or kept.ndim != 2 or kept.shape[1] != len(CONTEXT_NAMES):
            kept = np.zeros((0, len(CONTEXT_NAMES)), np.float32)
        out = np.full((max(n, len(kept)), len(CONTEXT_NAMES)), np.nan, np.float32)
        out[:len(kept)] = kept
        return out

    def _end_run(self) -> None:
        """A voiced stretch ends: decide its last frames and note how far each is from
        the end (for the fade out)."""
        self.held.assign(self.chooser.flush())
        for distance, w in enumerate(w for w in reversed(self.held.items) if w.wanted):
            if w.to_end is not None:
                break
            w.to_end = distance
        self.run = 0

    def _ready(self) -> list[Frame]:
        out = []
        for w in self.held.ready():
            if w.target is not None and w.choice is not None:
                self._compose(w)
            out.append(w.frame)
        return out

    def _compose(self, w: _LipsWaiting) -> None:
        """Decide the frame's composition; EditStage makes it (frames in parallel)."""
        f, (j, dist) = w.frame, w.choice  # type: ignore[misc]
        ramp = min(w.run + 1, LIPS_RAMP_FRAMES if w.to_end is None else w.to_end + 1,
                   LIPS_RAMP_FRAMES) / LIPS_RAMP_FRAMES
        assert f.landmarks is not None and w.target is not None
        f.edit = functools.partial(compose_lips, landmarks=f.landmarks, target=w.target,
                                   patch=self.library.patches[j],
                                   patch_points=self.library.points[j], strength=ramp,
                                   mode=self.context.blend)
        src = self.library.sources[j]
        self.records.append({"frame": f.k, "entry": j, "distance": round(dist, 4),
                             "source": [int(src[0]), int(src[1])]})

    def summary(self) -> dict[str, Any]:
        return library_use(self.records, self.library, 0, float("inf"))

    def warning(self) -> str | None:
        return None


def library_use(records: list[dict[str, Any]], library: MouthLibrary, missed: int,
                far: float) -> dict[str, Any]:
    """How a render used the mouth library: frames, distinct entries, jumps, distances."""
    d = np.array([r["distance"] for r in records])
    entries = [r["entry"] for r in records]
    return {"index": str(library.root), "frames": len(records), "missed": missed,
            "library_size": len(library),
            "median_distance": float(np.median(d)) if len(d) else None,
            "typical_distance": library.typical_distance,
            "far_frames": int((d > far).sum()) if len(d) else 0,
            "distinct_entries": len(set(entries)),
            "switches": int(sum(a != b and b != a + 1 for a, b in
                                zip(entries, entries[1:], strict=False))),
            "per_frame": records}
