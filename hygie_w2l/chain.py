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
import os
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import cv2
import numpy as np

from hygie_w2l.audio import MelSource, MelWindows
from hygie_w2l.blend import BlendMode, paste
from hygie_w2l.crops import CropPlan
from hygie_w2l.media import VideoWriter
from hygie_w2l.pixels import to_bgr
from hygie_w2l.types import Affine, Image, Landmarks

if TYPE_CHECKING:
    from hygie_w2l.hd import HDConfig
    from hygie_w2l.models.loaded import Checkpoint
    from hygie_w2l.types import EngineConfig


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
    edit: Callable[[Image], Image] | None = None  # a picture edit decided, not yet made


@dataclasses.dataclass
class StageContext:
    """What a generator's stages are built from, for a render or an eval."""

    checkpoint: Checkpoint | None  # None: a lips render from the lips arrays alone
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
    features: FeatureStore | None = None  # keeps per-frame features of the template
    keep_source: bool = True  # Frame.source is read after the edits (a preview, eval)


    def mel_windows(self, frames: list[Frame]) -> np.ndarray:
        """The (B, 80, 16) mel windows of the frames' speech."""
        return MelWindows(self.speech, self.fps)([f.audio for f in frames])


class FeatureStore(Protocol):
    """Where per-frame features derived from a template's pixels are kept between renders
    (cache.TemplateCache): arrays by name, one row per template frame."""

    def features(self, name: str) -> np.ndarray | None: ...

    def save_features(self, name: str, values: np.ndarray) -> None: ...


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
    """Seconds each stage spent working (not waiting); stages may run in threads."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        since = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - since)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] += seconds


class Stage(Protocol):
    def push(self, frames: list[Frame]) -> list[Frame]:
        """Take ``frames`` (in order); return the frames now finished (in order)."""
        ...

    def finish(self) -> list[Frame]:
        """Return every frame still held."""
        ...


CHAIN_QUEUE_BYTES = 48 << 20
"""Pictures waiting between two concurrent stages, at most (and one batch at least): two
720p batches of 8, one 1080p batch of 8, one 4K batch of 2 frames; memory grows little
with the resolution (reader_batch says how a batch is sized)."""


def usable_cores() -> int:
    """The cores this process may run on (its affinity, where the system says), else all."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


EDIT_WORKERS = 1 if usable_cores() <= 2 else 2
"""EditStage's threads. The lips path's composition holds the GIL between its calls, so
two threads cost more CPU than one (4.2-4.8 vs 3.4-3.9 ms a frame, alone): on two cores,
where the render is CPU-bound, one is faster since the composition's kernels (8 alternated
warm 720p pairs: -0.09 s, faster in 6). With more cores (those this process may run on),
two."""
OPENCV_THREADS = 2
"""OpenCV's own threads during a render, at most. Its default is one per core, and every
warp or blend of a mouth-sized picture was split that many ways while the chain's stages
already run side by side. On a 16-core GPU machine, warm 720p renders, 3 alternated pairs
(README: render speed on a GPU machine): the render's own CPU 11.8 -> 6.0 s (lips path),
12.7 -> 8.9 (FiLM U-Net, CUDA), 18.3 -> 12.5 (Wav2Lip, CUDA), wall the same or faster
(medians 2.07 -> 2.08, 2.37 -> 2.05, 3.21 -> 3.19 s). On 2 cores nothing changes."""
_POLL_S = 0.1  # how often a waiting thread looks whether the chain was stopped
_JOIN_S = 10.0  # how long a stopped chain waits for a stage in the middle of a batch


@contextlib.contextmanager
def opencv_threads(most: int | None = None) -> Iterator[int]:
    """OpenCV's thread pool held to ``most`` threads (default OPENCV_THREADS), never raised;
    what it was is restored after (it is global to the process)."""
    before = cv2.getNumThreads()
    n = max(1, min(OPENCV_THREADS if most is None else most, before))
    cv2.setNumThreads(n)
    try:
        yield n
    finally:
        cv2.setNumThreads(before)


def reader_batch(frames_per_batch: int, frame_bytes: int) -> tuple[int, int]:
    """(frames per reader batch, batches per queue) for pictures of ``frame_bytes``: the
    generator's batch where CHAIN_QUEUE_BYTES holds two of them, smaller (down to one frame)
    for large pictures, and two batches per queue where they fit in half of it, one
    otherwise, so that frames in flight cost about the same at 720p and 4K (one batch of
    two 4K frames per queue instead of two batches: the lips path's peak memory 881-897 ->
    803-826 MB, its renders 5-10 % slower warm and 7 % faster cold; 1080p no slower)."""
    frame_bytes = max(frame_bytes, 1)
    per_batch = max(1, min(frames_per_batch, CHAIN_QUEUE_BYTES // (2 * frame_bytes)))
    return per_batch, max(1, min(2, CHAIN_QUEUE_BYTES // (2 * per_batch * frame_bytes)))


def run_chain(batches: Iterable[list[Frame]], stages: Sequence[Stage],
              parallel: bool = False, queued: int = 2) -> Iterator[list[Frame]]:
    """Push each batch through the stages; yields the frames that come out of the last.

    ``parallel``: the reader and every stage run in threads of their own, joined by
    bounded queues, so the slowest stage sets the pace instead of the sum of all (OpenCV,
    torch, ONNX Runtime and the ffmpeg pipes release the GIL), ``queued`` batches at most
    between two of them. An error in any thread stops the others and is raised here; so is
    Ctrl-C (the threads are stopped)."""
    if parallel:
        yield from _Concurrent(batches, stages, queued).run()
        return
    for batch in batches:
        yield _through(batch, stages)
    for i, stage in enumerate(stages):  # drain: what stage i held goes on through the rest
        yield _through(stage.finish(), stages[i + 1:])


def _through(frames: list[Frame], stages: Sequence[Stage]) -> list[Frame]:
    for stage in stages:
        frames = stage.push(frames)
    return frames


class _End:
    """Marks the end of the batches in a queue."""


class _Concurrent:
    """run_chain(parallel=True): one thread per stage (and the reader), bounded queues."""

    def __init__(self, batches: Iterable[list[Frame]], stages: Sequence[Stage], queued: int
                 ) -> None:
        self.batches, self.stages = batches, stages
        self.queues: list[queue.Queue[list[Frame] | _End]] = [
            queue.Queue(maxsize=queued) for _ in range(len(stages) + 1)]
        self.stop = threading.Event()
        self.failures: list[BaseException] = []

    def run(self) -> Iterator[list[Frame]]:
        threads = [threading.Thread(target=self._read, name="chain-read", daemon=True)]
        threads += [threading.Thread(target=self._work, args=(i,), daemon=True,
                                     name=f"chain-{type(s).__name__}")
                    for i, s in enumerate(self.stages)]
        for t in threads:
            t.start()
        try:
            while not isinstance(item := self._get(self.queues[-1]), _End):
                yield item
        finally:
            self.stop.set()
            deadline = time.monotonic() + _JOIN_S
            for t in threads:
                t.join(timeout=max(0.0, deadline - time.monotonic()))
        if self.failures:
            raise self.failures[0]

    def _put(self, q: queue.Queue[list[Frame] | _End], item: list[Frame] | _End) -> bool:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue[list[Frame] | _End]) -> list[Frame] | _End:
        while not self.stop.is_set():
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                continue
        return _End()

    def _read(self) -> None:
        try:
            for batch in self.batches:
                if not self._put(self.queues[0], batch):
                    return
            self._put(self.queues[0], _End())
        except BaseException as e:  # raised again in the caller's thread
            self._fail(e)

    def _work(self, i: int) -> None:
        stage, inbox, outbox = self.stages[i], self.queues[i], self.queues[i + 1]
        try:
            while not isinstance(item := self._get(inbox), _End):
                if not self._put(outbox, stage.push(item)):
                    return
            if not self.stop.is_set():
                self._put(outbox, stage.finish())
                self._put(outbox, _End())
        except BaseException as e:  # raised again in the caller's thread
            self._fail(e)

    def _fail(self, error: BaseException) -> None:
        self.failures.append(error)
        self.stop.set()


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


class EditStage:
    """Makes the edits earlier stages decided (Frame.edit: the lips path's composition),
    several frames at once in a thread pool: the edits are independent of each other once
    decided, and OpenCV releases the GIL while it warps and blends. Without ``keep_source``
    an edited frame lets its untouched picture go (nothing after it reads it: no preview),
    so the frames between here and the encoder hold one picture each, not two (at 4K, 12 MB
    a frame)."""

    def __init__(self, timer: Timer, name: str, workers: int = EDIT_WORKERS,
                 keep_source: bool = True) -> None:
        if workers < 1:
            raise ValueError(f"EditStage needs at least one worker, not {workers}")
        self.timer, self.name, self.keep_source = timer, name, keep_source
        self.workers = workers
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edit") \
            if workers > 1 else None

    def push(self, frames: list[Frame]) -> list[Frame]:
        with self.timer(self.name):
            # one task per worker (every workers-th frame), not one per frame: each task's
            # hand-back wakes this thread, and those wake-ups had cost 7 % of a lips render
            shares = [frames[k::self.workers] for k in range(self.workers)]
            edited = map(self._edit, shares) if self.pool is None else \
                self.pool.map(self._edit, shares)
            for share, images in zip(shares, edited, strict=True):
                for f, image in zip(share, images, strict=True):
                    if not self.keep_source and image is not f.image:
                        f.source = None
                    f.image, f.edit = image, None
        return frames

    @staticmethod
    def _edit(frames: list[Frame]) -> list[Image]:
        return [f.image if f.edit is None else f.edit(f.image) for f in frames]

    def finish(self) -> list[Frame]:
        return []

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)


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
                    self.preview.write(np.hstack([to_bgr(f.source), to_bgr(f.image)]))
        return frames

    def finish(self) -> list[Frame]:
        return []
