"""The contract every mouth generator fulfils, so that render, eval, export and training
never ask which architecture they hold.

A generator knows its crop (kind and size), how to cut that crop and its paste mask from a
tracked frame (through the one crop recipe, crops.py), how to build the model's inputs
from crops + references + mel windows, example inputs for export, its training sampler and
its training forward. Its nn.Module lives in hygie_w2l/models/.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from hygie_w2l.audio import MEL_WINDOW_FRAMES, N_MELS
from hygie_w2l.crops import CropConfig, CropPlan
from hygie_w2l.dataset import PreparedDataset
from hygie_w2l.types import Affine, CropKind, GeneratorArch, Image


@dataclasses.dataclass(frozen=True)
class Cut:
    """What the generator is fed from one frame, and where its output goes back."""

    crop: Image  # (S, S, 3) uint8 BGR
    m: Affine  # frame -> crop
    mask: np.ndarray  # (S, S) float32 in [0, 1]: the part of the output pasted back


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, S, S, 3) uint8 BGR -> (B, 3, S, S) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).float().permute(0, 3, 1, 2) / 255.0


class Generator(abc.ABC):
    """One mouth generator architecture (stateless but for its crop size)."""

    arch: ClassVar[GeneratorArch]
    crop_kind: ClassVar[CropKind]
    input_channels: ClassVar[int]
    official_file: ClassVar[str | None] = None  # official weights to start from, if any
    uses_expert: ClassVar[bool] = False  # the frozen lip-sync expert's loss applies
    int8_refusal: ClassVar[str | None] = None  # why static INT8 is refused (None: allowed)

    def __init__(self, crop_px: int) -> None:
        self.crop_px = crop_px

    # ----------------------------------------------------------------- the model ----
    @classmethod
    @abc.abstractmethod
    def build_model(cls, config: Mapping[str, Any] | None = None) -> nn.Module:
        """A fresh model from a checkpoint's config (None: the default)."""

    @classmethod
    @abc.abstractmethod
    def of_model(cls, model: nn.Module) -> Generator:
        """The generator that feeds ``model`` (its crop size read from the model)."""

    @classmethod
    @abc.abstractmethod
    def new_model(cls, data: PreparedDataset, channels: tuple[int, ...]) -> nn.Module:
        """An untrained model for fine-tuning on ``data`` (``channels``: widths, where the
        architecture has a choice)."""

    # ------------------------------------------------------------ crops and inputs ----
    def crop_config(self) -> CropConfig:
        """The crop recipe's settings this generator needs."""
        return CropConfig()

    @abc.abstractmethod
    def cut(self, image: Image, plan: CropPlan, i: int) -> Cut:
        """Frame ``i``'s crop (from its picture ``image``) and paste mask."""

    @abc.abstractmethod
    def inputs(self, crops: np.ndarray, references: np.ndarray) -> torch.Tensor:
        """crops, references (B, S, S, 3) uint8 BGR -> (B, input_channels, S, S) float32:
        the frames to dub and the reference frames (at render, the template frame itself)."""

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Random (mel (B, 1, 80, 16), inputs (B, C, S, S)) of the right shapes."""
        return (torch.randn(batch, 1, N_MELS, MEL_WINDOW_FRAMES),
                torch.rand(batch, self.input_channels, self.crop_px, self.crop_px))

    # ------------------------------------------------------------------- training ----
    @abc.abstractmethod
    def sampler(self, data: PreparedDataset, split: str, length: int, seed: int) -> Dataset:
        """Training or validation samples of ``data``."""

    @abc.abstractmethod
    def forward(self, model: nn.Module, batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Predictions and targets as (B, T, C, H, W): pred, real, mouth (loss weights),
        input (what the model saw, for previews); region (where the loss applies) and the
        official layouts (pred_official, sync_mel) where they exist."""
