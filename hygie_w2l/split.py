"""Train / validation split without leakage.

The two splits are contiguous segments (train first, validation last by default 20 %)
separated by a guard gap at least as long as the audio window plus the sync window. On top
of that, a sample is only drawn from a segment when everything it touches lies inside it:
its SYNC_T frames and the mel windows of those frames, which reach
``TRAIN_WINDOW_LEAD_FRAMES`` frames before the first frame and the rest of the 0.2 s window
after the last one. So no validation frame, nor any audio under one, is reachable from the
training split (tests/test_split.py enumerates every sample to prove it).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from hygie_w2l.audio import (
    FPS,
    MEL_FRAMES_PER_S,
    MEL_WINDOW_FRAMES,
    SYNC_T,
    TRAIN_WINDOW_LEAD_FRAMES,
)
from hygie_w2l.errors import HygieError

WINDOW_VIDEO_FRAMES = math.ceil(MEL_WINDOW_FRAMES * FPS / MEL_FRAMES_PER_S)  # 5 frames = 0.2 s
REACH_BEFORE = TRAIN_WINDOW_LEAD_FRAMES  # the first frame's window starts 2 frames early
REACH_AFTER = WINDOW_VIDEO_FRAMES - TRAIN_WINDOW_LEAD_FRAMES - 1  # and ends 2 frames late
GUARD_FRAMES = WINDOW_VIDEO_FRAMES + SYNC_T  # 10 frames = 0.4 s between the segments
MIN_SAMPLE_SPAN = REACH_BEFORE + SYNC_T + REACH_AFTER  # 9 frames touched by one sample
MIN_TRAIN_FRAMES = 4 * MIN_SAMPLE_SPAN
MIN_VAL_FRAMES = 2 * MIN_SAMPLE_SPAN


class DatasetTooShortError(HygieError):
    pass


@dataclasses.dataclass(frozen=True)
class Split:
    train: tuple[int, int]  # [start, end) frame indices
    val: tuple[int, int]
    guard_frames: int = GUARD_FRAMES

    def segment(self, name: str) -> tuple[int, int]:
        return self.train if name == "train" else self.val


def make_split(n_frames: int, val_fraction: float = 0.2, source: str = "the video") -> Split:
    """Train = the beginning, validation = the end, a guard gap between them."""
    n_val = max(MIN_VAL_FRAMES, int(round(n_frames * val_fraction)))
    train_end = n_frames - n_val - GUARD_FRAMES
    if train_end < MIN_TRAIN_FRAMES:
        need_s = (MIN_TRAIN_FRAMES + MIN_VAL_FRAMES + GUARD_FRAMES) / FPS
        raise DatasetTooShortError(
            f"{source}: {n_frames} usable frames ({n_frames / FPS:.1f} s) are too few for a "
            f"train/validation split; give at least {need_s:.1f} s of video with a visible "
            "face (a few minutes are better).")
    return Split((0, train_end), (n_frames - n_val, n_frames))


def sample_reach(start: int) -> tuple[int, int]:
    """[first, end) video frames whose pixels or audio a sample starting at ``start`` reads."""
    return start - REACH_BEFORE, start + SYNC_T + REACH_AFTER


def valid_starts(segment: tuple[int, int], usable: np.ndarray) -> np.ndarray:
    """Start frames of the samples lying wholly inside ``segment`` on usable frames.

    usable: (N,) bool, a face was found (or interpolated) and the audio covers the frame.
    """
    a, b = segment
    starts = []
    for s in range(a + REACH_BEFORE, b - SYNC_T - REACH_AFTER + 1):
        lo, hi = sample_reach(s)
        if lo >= a and hi <= b and usable[s:s + SYNC_T].all():
            starts.append(s)
    return np.array(starts, np.int64)
