"""The render chain: frames flow from a reader through stages to a writer.

Every stage has the same contract: ``push(frames)`` takes frames in order and returns the
frames it has finished, in order (possibly later: a stage may hold frames back, as the
generator's batch in flight or the HD stage's look-ahead do); ``finish()`` returns what it
still holds. :func:`run_chain` wires them; render (reader -> crop -> generate -> blend ->
[HD] -> encode) and eval (held-out frames -> the same stages -> measures) both use it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from hygie_w2l.audio import MelSource, MelWindows
from hygie_w2l.blend import BlendMode, paste
from hygie_w2l.crops import CropPlan
from hygie_w2l.media import VideoWriter
from hygie_w2l.types import Affine, Image, Landmarks

if TYPE_CHECKING:
    from hygie_w2l.generate import EngineConfig
    from hygie_w2l.hd import HDConfig
    from hygie_w2l.models.checkpoint import Checkpoint


@dataclasses.dataclass(frozen=True)
class Cut:
    """What a generator is fed from one frame, and where its output goes back."""

    crop: Image  # (S, S, 3) uint8 BGR
    m: Affine  # frame -> crop
    mask: np.ndarray  # (S, S) float32 in [0, 1]: the part of the output pasted back


@dataclasses.dataclass
class Frame:
    """One output frame on its way through the chain."""

    k: int  # output frame index
    t: int  # source frame: the template's (render) or the dataset's (eval)
    audio: int  # the video frame of the speech it shows (render: k; eval: t)
    image: Image  # its picture, replaced by each stage that edits it
    active: bool  # the mouth is to be synthesised here (a face, and speech)
    source: Image | None = None  # the source frame's untouched picture
    landmarks: Landmarks | None = None  # the source frame's tracked landmarks
    cut: Cut | None = None  # the generator's crop, its paste matrix and mask
    reference: Image | None = None  # the generator's reference crop (None: cut.crop)
    generated: Image | None = None  # the generator's output crop


@dataclasses.dataclass
class StageContext:
    """What a generator's stages are built from, for a render or an eval."""

    checkpoint: Checkpoint
    source: Path | None  # the checkpoint's file (keys the ONNX engine's cache)
    plan: CropPlan  # the crop matrices of the frames that will be pushed (by Frame.t)
    speech: MelSource  # the speech the frames show (by Frame.audio)
    n_audio_frames: int  # video frames of that speech
    blend: BlendMode
    engine: EngineConfig
    hd: HDConfig | None  # the person's mouth library and how to use it
    pose: np.ndarray  # (N, 3) yaw, pitch, roll of the frames (by Frame.t), degrees
    timer: Timer
    fps: float

    def mel_windows(self, frames: list[Frame]) -> np.ndarray:
        """The (B, 80, 16) mel windows of the frames' speech."""
        return MelWindows(self.speech, self.fps)([f.audio for f in frames])


@dataclasses.dataclass
class MouthStages:
    """What a generator puts between the reader and the writer."""

    stages: list[Stage]
    batch_size: int  # frames per batch the reader should send
    info: Callable[[], dict[str, Any]]  # for the summary (batch used, engine, library use)
    closers: list[Callable[[], None]] = dataclasses.field(default_factory=list)

    def close(self) -> None:
        for close in reversed(self.closers):
            close()


class Timer:
    """Seconds each stage spent working (not waiting)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        since = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - since


class Stage(Protocol):
    def push(self, frames: list[Frame]) -> list[Frame]:
        """Take ``frames`` (in order); return the frames now finished (in order)."""
        ...

    def finish(self) -> list[Frame]:
        """Return every frame still held."""
        ...


def run_chain(batches: Iterable[list[Frame]], stages: Sequence[Stage]
              ) -> Iterator[list[Frame]]:
    """Push each batch through the stages; yields the frames that come out of the last."""
    for batch in batches:
        yield _through(batch, stages)
    for i, stage in enumerate(stages):  # drain: what stage i held goes on through the rest
        yield _through(stage.finish(), stages[i + 1:])


def _through(frames: list[Frame], stages: Sequence[Stage]) -> list[Frame]:
    for stage in stages:
        frames = stage.push(frames)
    return frames


# ------------------------------------------------------------------------ stages ----

CutFn = Callable[[Image, CropPlan, int], Cut]  # (picture, plan, frame) -> its Cut


class CropStage:
    """Cuts the generator's crop and paste mask of each active frame (crops.py recipe)."""

    def __init__(self, cut: CutFn, plan: CropPlan, timer: Timer) -> None:
        self.cut, self.plan, self.timer = cut, plan, timer

    def push(self, frames: list[Frame]) -> list[Frame]:
        with self.timer("crop"):
            for f in frames:
                if f.active:
                    f.cut = self.cut(f.image, self.plan, f.t)
        return frames

    def finish(self) -> list[Frame]:
        return []


MelFor = Callable[[list[Frame]], np.ndarray]  # frames -> their (B, 80, 16) mel windows
GenerateFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""(crops, references (B, S, S, 3) uint8, mels (B, 80, 16)) -> generated (B, S, S, 3)."""


class GenerateStage:
    """Runs the generator on each batch's active frames, in a thread of its own: batch b
    is generated while the stages after this one finish batch b - 1 (torch and ONNX
    Runtime release the GIL), so push returns the previous batch."""

    def __init__(self, engine: GenerateFn, mel: MelFor, timer: Timer) -> None:
        self.engine, self.mel, self.timer = engine, mel, timer
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.pending: tuple[list[Frame], Future[None]] | None = None

    def push(self, frames: list[Frame]) -> list[Frame]:
        done = self.finish()
        if frames:
            self.pending = (frames, self.pool.submit(self._generate, frames))
        return done

    def finish(self) -> list[Frame]:
        if self.pending is None:
            return []
        frames, future = self.pending
        self.pending = None
        future.result()
        return frames

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def _generate(self, frames: list[Frame]) -> None:
        todo = [f for f in frames if f.cut is not None]
        if not todo:
            return
        with self.timer("generate"):
            crops = np.stack([f.cut.crop for f in todo])  # type: ignore[union-attr]
            refs = np.stack([f.cut.crop if f.reference is None else f.reference  # type: ignore[union-attr]
                             for f in todo])
            out = self.engine(crops, refs, self.mel(todo))
        for f, g in zip(todo, out, strict=True):
            f.generated = g


class BlendStage:
    """Pastes each generated crop back into its frame through its mask."""

    def __init__(self, mode: BlendMode, timer: Timer) -> None:
        self.mode, self.timer = mode, timer

    def push(self, frames: list[Frame]) -> list[Frame]:
        with self.timer("blend"):
            for f in frames:
                if f.generated is not None and f.cut is not None:
                    f.image = paste(f.image, f.generated, f.cut.mask, f.cut.m, self.mode)
        return frames

    def finish(self) -> list[Frame]:
        return []


class EncodeStage:
    """The writer: each frame to the H.264 encoder (and template | output to the preview's)."""

    def __init__(self, writer: VideoWriter, preview: VideoWriter | None, timer: Timer) -> None:
        self.writer, self.preview, self.timer = writer, preview, timer

    def push(self, frames: list[Frame]) -> list[Frame]:
        with self.timer("encode"):
            for f in frames:
                self.writer.write(f.image)
                if self.preview is not None:
                    assert f.source is not None
                    self.preview.write(np.hstack([f.source, f.image]))
        return frames

    def finish(self) -> list[Frame]:
        return []
