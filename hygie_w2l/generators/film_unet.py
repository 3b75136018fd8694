"""The FiLM U-Net: a small generator of the mouth crop from a reference crop, its fixed
edit mask and the audio; it trains from scratch on one person on a CPU."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from hygie_w2l.audio import SYNC_T
from hygie_w2l.chain import Cut
from hygie_w2l.crops import CropConfig, CropPlan
from hygie_w2l.dataset import PreparedDataset, Sampler
from hygie_w2l.generators.base import PixelGenerator, to_float
from hygie_w2l.geometry import generator_mask
from hygie_w2l.types import Image

if TYPE_CHECKING:  # the model's module imports torch: here only where a model is built or run
    import torch
    from torch import nn


class FilmUNetSampler(Sampler):
    """Two true neighbours t, t+1 of the same clip for the temporal loss: crop (2, 4, S, S) =
    a *reference* frame's crop (another moment of the same split, at least a sync window
    away) + the fixed generator mask (where to edit); mel (2, 1, 80, 16); real (2, 3, S, S)
    frames t, t+1; lips (2, 1, S, S) their lip hulls (loss weights only). The network never
    sees frame t: the mouth can only come from the audio, as at render time, where the
    reference is the template frame."""

    def sample(self, start: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        t = start + int(rng.integers(SYNC_T - 1))  # t and t+1 both inside the sample
        ref = self.far_start(start, rng) + int(rng.integers(SYNC_T))
        crops = self.data.array("mouth").take([t, t + 1, ref]).astype(np.float32) / 255.0
        lips = self.data.array("mouth_mask").take([t, t + 1]).astype(np.float32) / 255.0
        real = crops[:2].transpose(0, 3, 1, 2)  # (2, 3, S, S)
        reference = np.broadcast_to(crops[2].transpose(2, 0, 1), real.shape)
        hole = np.broadcast_to(generator_mask(real.shape[-1]), (2, 1, *real.shape[-2:]))
        masked = np.concatenate([reference, hole], axis=1)  # (2, 4, S, S)
        return masked.astype(np.float32), self.data.mels(t, 2), real.copy(), lips[:, None].copy()


class FilmUNetGenerator(PixelGenerator):
    arch = "film_unet"
    crop_kind = "mouth"
    input_channels = 4  # reference crop + edit mask
    int8_refusal = ("the FiLM U-Net runs as fast in fp32 on a CPU (measured 38 vs 41 "
                    "frames/s) and its FiLM modulations lose up to 80 grey levels in 8 bits")

    @classmethod
    def build_model(cls, config: Mapping[str, Any] | None = None) -> nn.Module:
        from hygie_w2l.models.film_unet import FilmUNet, FilmUNetConfig

        cfg = dict(config or {})
        if "channels" in cfg:
            cfg["channels"] = tuple(cfg["channels"])
        return FilmUNet(FilmUNetConfig(**cfg))

    @classmethod
    def of_model(cls, model: nn.Module) -> Self:
        from hygie_w2l.models.film_unet import FilmUNetConfig

        config = getattr(model, "config", None)
        assert isinstance(config, FilmUNetConfig), "not a FiLM U-Net"
        return cls(config.size_px)

    @classmethod
    def new_model(cls, data: PreparedDataset, channels: tuple[int, ...]) -> nn.Module:
        from hygie_w2l.models.film_unet import FilmUNet, FilmUNetConfig

        size = int(data.array("mouth").shape[1])
        return FilmUNet(FilmUNetConfig(size_px=size, channels=channels))

    def crop_config(self) -> CropConfig:
        return dataclasses.replace(CropConfig(), mouth_px=self.crop_px)

    def cut(self, image: Image, plan: CropPlan, i: int) -> Cut:
        return Cut(plan.cut(image, "mouth", i), plan.mouth[i], generator_mask(self.crop_px))

    def inputs(self, crops: np.ndarray, references: np.ndarray) -> np.ndarray:
        """(B, 4, S, S): the reference crop + the fixed generator mask (where to edit); the
        frame's own crop is never seen (its mouth must come from the audio)."""
        ref = to_float(references)
        mask = np.broadcast_to(generator_mask(ref.shape[-1]), (len(ref), 1, *ref.shape[-2:]))
        return np.concatenate([ref, mask], axis=1)

    def sampler(self, data: PreparedDataset, split: str, length: int, seed: int
                ) -> FilmUNetSampler:
        return FilmUNetSampler(data, split, length, seed)

    def forward(self, model: nn.Module, batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        crop, mel, real, lips = batch  # (B, 2, 4, S, S), (B, 2, 1, 80, 16), ...
        b, t = crop.shape[:2]
        pred = model(mel.flatten(0, 1), crop.flatten(0, 1)).unflatten(0, (b, t))
        # outside the generator's mask the reference shows through and is never pasted
        return {"pred": pred, "real": real, "mouth": lips, "input": crop[:, :, :3],
                "region": crop[:, :, 3:]}
