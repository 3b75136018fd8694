"""Domain types shared by every pipeline stage."""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

Frame = NDArray[np.uint8]  # H x W x 3, BGR, uint8
Wave = NDArray[np.float32]  # (n_samples,) float32 mono in [-1, 1] at SAMPLE_RATE_HZ
Mel = NDArray[np.float32]  # (N_MELS, n_mel_frames) float32 in [-4, 4]
MelWindow = NDArray[np.float32]  # (N_MELS, MEL_WINDOW_FRAMES) float32
Landmarks = NDArray[np.float32]  # (N, 2) float32 pixel coordinates (x, y)
BBox = tuple[int, int, int, int]  # (x1, y1, x2, y2) pixels, x2/y2 exclusive

MelAlignment = Literal["train", "inference"]
