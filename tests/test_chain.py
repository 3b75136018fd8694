"""The render chain run concurrently: the same frames come out, in order, as when the stages
run one after the other; an error in any stage thread reaches the caller and stops the
others; a render is the same video either way."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from hygie_w2l import render as render_module
from hygie_w2l.chain import (
    CHAIN_QUEUE_BYTES,
    OPENCV_THREADS,
    EditStage,
    Frame,
    Timer,
    opencv_threads,
    reader_batch,
    run_chain,
)
from hygie_w2l.media import read_frames
from hygie_w2l.render import RenderConfig, render
from hygie_w2l.types import EngineConfig


def _frames(n: int, batch: int) -> list[list[Frame]]:
    frames = [Frame(k, k, k, np.full((2, 2, 3), k % 256, np.uint8), True) for k in range(n)]
    return [frames[i:i + batch] for i in range(0, n, batch)]


class AddOne:
    """Edits each frame's picture, as a blend stage does."""

    def push(self, frames: list[Frame]) -> list[Frame]:
        for f in frames:
            f.image = f.image + 1
        time.sleep(0.001)
        return frames

    def finish(self) -> list[Frame]:
        return []


class HoldBack:
    """Returns frames ``lag`` frames late, as the HD stage's look-ahead does."""

    def __init__(self, lag: int) -> None:
        self.lag, self.held = lag, []

    def push(self, frames: list[Frame]) -> list[Frame]:
        self.held += frames
        out, self.held = self.held[:-self.lag], self.held[-self.lag:]
        return out

    def finish(self) -> list[Frame]:
        out, self.held = self.held, []
        return out


class Fails:
    def __init__(self, at: int) -> None:
        self.at = at

    def push(self, frames: list[Frame]) -> list[Frame]:
        if any(f.k >= self.at for f in frames):
            raise ValueError(f"broken at frame {self.at}")
        return frames

    def finish(self) -> list[Frame]:
        return []


def _run(parallel: bool) -> list[tuple[int, int]]:
    stages = [AddOne(), HoldBack(5), AddOne(), HoldBack(3)]
    return [(f.k, int(f.image[0, 0, 0])) for done in run_chain(_frames(103, 8), stages,
                                                                 parallel) for f in done]


def test_parallel_chain_gives_the_frames_of_the_sequential_one_in_order() -> None:
    sequential, parallel = _run(False), _run(True)
    assert [k for k, _ in sequential] == list(range(103))
    assert parallel == sequential
    assert all(v == (k + 2) % 256 for k, v in parallel)


def test_an_error_in_a_stage_thread_reaches_the_caller_and_stops_the_chain() -> None:
    before = threading.active_count()
    seen = []
    with pytest.raises(ValueError, match="broken at frame 40"):
        for done in run_chain(_frames(200, 8), [AddOne(), Fails(40), AddOne()], True):
            seen += [f.k for f in done]
    assert seen == list(range(len(seen))) and len(seen) < 48
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before  # no stage thread left running


def test_a_caller_that_stops_early_stops_the_threads() -> None:
    before = threading.active_count()
    chain = run_chain(_frames(400, 4), [AddOne(), AddOne()], True)
    next(chain)
    chain.close()
    assert threading.active_count() == before


def test_frames_in_flight_cost_about_the_same_at_every_resolution() -> None:
    def i420(h: int, w: int) -> int:
        return h * w * 3 // 2

    assert reader_batch(8, i420(720, 1280)) == (8, 2)  # two batches of 8 per queue
    assert reader_batch(8, i420(1080, 1920)) == (8, 1)  # one
    assert reader_batch(8, i420(2160, 3840)) == (2, 1)  # one of two 4K frames
    assert reader_batch(8, 10 * CHAIN_QUEUE_BYTES) == (1, 1)  # never none
    for h, w in ((720, 1280), (1080, 1920), (2160, 3840)):
        per_batch, queued = reader_batch(8, i420(h, w))
        assert per_batch * queued * i420(h, w) <= CHAIN_QUEUE_BYTES


def test_edited_frames_let_their_source_go_unless_it_is_kept() -> None:
    # without a preview nothing reads Frame.source after the edit: the encoder's frames then
    # hold one picture each (two before: at 4K, 12 MB more a frame in flight)
    def frames() -> list[Frame]:
        pictures = [np.full((4, 4), i, np.uint8) for i in range(3)]
        return [Frame(i, i, i, p, True, source=p, edit=None if i == 1 else (lambda im: im + 1))
                for i, p in enumerate(pictures)]

    for keep in (True, False):
        stage = EditStage(Timer(), "compose", keep_source=keep)
        out = stage.push(frames())
        stage.close()
        assert [int(f.image[0, 0]) for f in out] == [1, 1, 3]
        kept = [f.source is not None for f in out]
        # an unedited frame's source is its own picture: letting it go would save nothing
        assert kept == ([True, True, True] if keep else [False, True, False])


def test_edit_workers_each_take_a_share_and_every_frame_comes_back_in_order() -> None:
    # one task per worker (frames k, k + workers, ...), not one task per frame
    tasks: list[list[int]] = []

    class Recorded(EditStage):
        @staticmethod
        def _edit(frames: list[Frame]) -> list[np.ndarray]:
            tasks.append([f.k for f in frames])
            return EditStage._edit(frames)

    for workers, n in ((1, 5), (2, 8), (2, 7), (3, 5), (2, 1), (4, 2)):
        tasks.clear()
        stage = Recorded(Timer(), "compose", workers=workers)
        out = stage.push([Frame(i, i, i, np.full((2, 2), i, np.uint8), True,
                                edit=None if i == 3 else (lambda im: im + 100))
                          for i in range(n)])
        stage.close()
        assert [int(f.image[0, 0]) for f in out] == [i if i == 3 else 100 + i
                                                      for i in range(n)]
        assert sorted(tasks) == sorted(list(range(k, n, workers)) for k in range(workers))
    with pytest.raises(ValueError):
        EditStage(Timer(), "compose", workers=0)  # would hand every frame back unedited


def test_opencv_threads_are_held_down_and_given_back() -> None:
    before = cv2.getNumThreads()
    try:
        for was, inside in ((8, OPENCV_THREADS), (1, 1)):  # lowered, never raised
            cv2.setNumThreads(was)
            with opencv_threads() as n:
                assert n == inside == cv2.getNumThreads()
            assert cv2.getNumThreads() == was
        cv2.setNumThreads(8)
        with pytest.raises(RuntimeError), opencv_threads(3):
            raise RuntimeError("a stage failed")
        assert cv2.getNumThreads() == 8
    finally:
        cv2.setNumThreads(before)


def test_parallel_and_sequential_renders_are_the_same_video(synth_clip, random_film_ckpt: Path,
                                                            tmp_path: Path, monkeypatch) -> None:
    clip, _ = synth_clip
    config = RenderConfig(blend="feather", engine=EngineConfig(device="cpu"))
    during: list[int] = []
    encode = render_module._encode

    def encode_and_look(*args, **kwargs):  # the real encode, and OpenCV's threads meanwhile
        during.append(cv2.getNumThreads())
        return encode(*args, **kwargs)

    monkeypatch.setattr(render_module, "_encode", encode_and_look)
    before = cv2.getNumThreads()
    outs = {}
    try:
        cv2.setNumThreads(6)
        for parallel in (False, True):
            out = tmp_path / f"parallel_{parallel}.mp4"
            render(clip, clip, random_film_ckpt, out,
                   dataclasses.replace(config, parallel=parallel))
            outs[parallel] = np.stack(list(read_frames(out)))
        assert during == [OPENCV_THREADS] * 2 and cv2.getNumThreads() == 6
    finally:
        cv2.setNumThreads(before)
    assert outs[True].shape == outs[False].shape and len(outs[True]) > 90
    np.testing.assert_array_equal(outs[True], outs[False])
