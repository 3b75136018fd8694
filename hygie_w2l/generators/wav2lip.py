"""The official Wav2Lip generator: a 96-px face crop whose lower half is masked, beside a
reference face, and the audio's mel window; trained with the frozen lip-sync expert."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from hygie_w2l.audio import SYNC_T
from hygie_w2l.chain import Cut
from hygie_w2l.crops import CropPlan
from hygie_w2l.dataset import PreparedDataset, Sampler, window
from hygie_w2l.generators.base import PixelGenerator, to_float
from hygie_w2l.geometry import FACE_CROP_PX, generator_mask, invert, lower_half_mask, warp
from hygie_w2l.types import Image

if TYPE_CHECKING:  # the model's module imports torch: here only where a model is built or run
    import torch
    from torch import nn


class Wav2LipSampler(Sampler):
    """x (6, 5, 96, 96) = [masked window | reference window], indiv_mels (5, 1, 80, 16),
    mel (1, 80, 16) (the sync window), y (3, 5, 96, 96) real, mouth (1, 5, 96, 96) mouth
    mask in [0, 1] for the weighted L1: the official layouts."""

    def sample(self, start: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        faces = self.data.array("face")
        real = window(faces, start)
        reference = window(faces, self.far_start(start, rng))
        masked = real * (1.0 - lower_half_mask(real.shape[-1]))
        mouth = np.stack([self.data.face_mouth_mask(i, real.shape[-1])
                          for i in range(start, start + SYNC_T)])[None]
        return (np.concatenate([masked, reference]).astype(np.float32),
                self.data.mels(start, SYNC_T), self.data.sync_mel(start),
                real.astype(np.float32), mouth.astype(np.float32))


class Wav2LipGenerator(PixelGenerator):
    arch = "wav2lip"
    crop_kind = "face"
    input_channels = 6  # masked face | reference face
    official_file = "wav2lip.pth"
    uses_expert = True

    def __init__(self, crop_px: int = FACE_CROP_PX) -> None:
        super().__init__(crop_px)

    @classmethod
    def build_model(cls, config: Mapping[str, Any] | None = None) -> nn.Module:
        from hygie_w2l.models.wav2lip import Wav2Lip

        return Wav2Lip()

    @classmethod
    def of_model(cls, model: nn.Module) -> Self:
        return cls()

    @classmethod
    def new_model(cls, data: PreparedDataset, channels: tuple[int, ...]) -> nn.Module:
        return cls.build_model()

    def cut(self, image: Image, plan: CropPlan, i: int) -> Cut:
        """The face crop; the paste mask is the mouth crop's fixed edit region (lips and jaw)
        seen in the face crop, never the whole lower half."""
        m = plan.face[i]
        mouth_px = plan.config.mouth_px
        to_face = m @ np.vstack([invert(plan.mouth[i]), [0, 0, 1]])
        mask = warp(generator_mask(mouth_px), to_face, (self.crop_px, self.crop_px))
        return Cut(plan.cut(image, "face", i), m, mask)

    def inputs(self, crops: np.ndarray, references: np.ndarray) -> np.ndarray:
        """(B, 6, 96, 96): the face with its lower half masked | the reference face."""
        real = to_float(crops)
        masked = real * (1 - lower_half_mask(real.shape[-1]))
        return np.concatenate([masked, to_float(references)], axis=1)

    def sampler(self, data: PreparedDataset, split: str, length: int, seed: int
                ) -> Wav2LipSampler:
        return Wav2LipSampler(data, split, length, seed)

    def forward(self, model: nn.Module, batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        x, mels, sync_mel, real, mouth = batch  # official layouts (B, C, T, H, W)
        pred = model(mels, x)
        return {"pred": pred.transpose(1, 2), "real": real.transpose(1, 2),
                "mouth": mouth.transpose(1, 2), "input": x[:, :3].transpose(1, 2),
                "pred_official": pred, "sync_mel": sync_mel}
