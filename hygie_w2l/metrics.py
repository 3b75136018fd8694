"""Measurements on generated mouths: held-out audio of a dataset turned into mouths on a
reference frame, measured with MediaPipe like the real frames.

Why a reference frame and not the real frames: pasting a generated mouth into the real
frame leaves the real chin and cheeks around it, and MediaPipe reads the jaw, so the
"generated" opening would partly be the real one. Drawn on one still frame (as a render on a
still template is), every change of the mouth has to come from the audio.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import nn

from hygie_w2l.blend import paste
from hygie_w2l.dataset import PreparedDataset
from hygie_w2l.face_tracker import FaceMeshDetector
from hygie_w2l.generate import reconstruct_mouths
from hygie_w2l.geometry import generator_mask
from hygie_w2l.landmarks import mouth_opening
from hygie_w2l.media import read_frames


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation over the frames where both are measured (NaN-safe)."""
    ok = ~(np.isnan(a) | np.isnan(b))
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def reference_frame(data: PreparedDataset) -> int:
    """The training-split frame whose mouth is the most closed (a neutral template)."""
    a, b = data.split.train
    return a + int(np.argmin(np.asarray(data.array("mouth_mask").take(range(a, b)))
                             .reshape(b - a, -1).mean(1)))


def held_out_openings(model: nn.Module, data: PreparedDataset, video: str | Path,
                      frames: Sequence[int], reference: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(generated, real) mouth openings of ``frames``; NaN where MediaPipe finds no face.

    generated: the frames' audio drawn on ``reference`` (default: the most closed training
    frame) and pasted into that frame; real: MediaPipe on the real frames.
    """
    ref = reference_frame(data) if reference is None else reference
    generated = reconstruct_mouths(model, data, frames, ref)
    hole = generator_mask(generated.shape[1])
    wanted = {int(f): k for k, f in enumerate(frames)}
    gen = np.full(len(frames), np.nan)
    real = np.full(len(frames), np.nan)
    with FaceMeshDetector(video=False) as detector:
        for i, frame in enumerate(read_frames(video, fps=data.fps)):
            if i == ref:
                for k in range(len(frames)):
                    lm = detector.detect(paste(frame, generated[k], hole,
                                               data.transforms["mouth"][ref]))
                    gen[k] = mouth_opening(lm) if lm is not None else np.nan
            if i in wanted:
                lm = detector.detect(frame)
                real[wanted[i]] = mouth_opening(lm) if lm is not None else np.nan
    return gen, real
