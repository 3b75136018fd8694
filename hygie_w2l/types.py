"""Domain types shared by every pipeline stage."""

from __future__ import annotations

import dataclasses
from typing import Literal, get_args

import numpy as np
from numpy.typing import NDArray

Image = NDArray[np.uint8]  # H x W x 3, BGR, uint8
Wave = NDArray[np.float32]  # (n_samples,) float32 mono in [-1, 1] at SAMPLE_RATE_HZ
Mel = NDArray[np.float32]  # (N_MELS, n_mel_frames) float32 in [-4, 4]
MelWindow = NDArray[np.float32]  # (N_MELS, MEL_WINDOW_FRAMES) float32
Landmarks = NDArray[np.float32]  # (N, 2) float32 pixel coordinates (x, y)
Affine = np.ndarray  # (2, 3) float64 frame -> crop matrix
BBox = tuple[int, int, int, int]  # (x1, y1, x2, y2) pixels, x2/y2 exclusive

MelAlignment = Literal["train", "inference"]

GeneratorArch = Literal["wav2lip", "film_unet", "lips"]
"""The mouth generators (one class each in hygie_w2l/generators/)."""
GENERATOR_ARCHS: tuple[GeneratorArch, ...] = get_args(GeneratorArch)

Device = Literal["auto", "cpu", "cuda", "mps"]
EngineKind = Literal["torch", "onnx"]


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """How an image generator runs (generate.Engine); here, where torch is not imported, so
    a lips render, which runs no image network, never imports it."""

    device: Device = "auto"
    engine: EngineKind = "torch"
    int8: bool = False  # with the onnx engine: static 8-bit model calibrated on real inputs
    batch_size: int = 0  # 0: fitted to the device's free memory (auto_batch_size)
    threads: int = 0  # CPU threads of the generator; 0: GENERATOR_THREADS (measured)

TrackerBackend = Literal["mediapipe", "face-alignment"]

CropKind = Literal["face", "mouth", "hd", "lips"]
"""The crops of the crop recipe (crops.py): Wav2Lip face, FiLM U-Net mouth, HD patch (on
the frame's own mouth corners), lips (the same frame placed from the eyes)."""
MOUTH_CROP_SIZES_PX = (96, 128, 192, 256)
"""The FiLM U-Net's mouth crop sides (here, not in models/film_unet.py: the crop recipe
needs them where torch is not imported)."""
