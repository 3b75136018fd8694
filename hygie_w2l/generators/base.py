"""The contract every mouth generator fulfils, so that render, eval, export and training
never ask which architecture they hold.

* :class:`Generator`: every generator builds its model from a checkpoint's config, and
  the render stages that synthesise the mouth (``stages``), from what the render or eval
  gives it (chain.StageContext).
* :class:`PixelGenerator`: a network that draws the mouth's pixels in a crop. It knows its
  crop (kind and size), how to cut that crop and its paste mask from a tracked frame
  (through the one crop recipe, crops.py), its model inputs from crops + references + mel
  windows, example inputs for export, its training sampler and its training forward; its
  stages are crop -> generate (generate.Engine) -> blend.

Models live in hygie_w2l/models/ (and lips.py).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

import numpy as np

from hygie_w2l.audio import MEL_WINDOW_FRAMES, N_MELS
from hygie_w2l.chain import (
    BlendStage,
    CropStage,
    Cut,
    GenerateStage,
    MouthStages,
    Stage,
    StageContext,
)
from hygie_w2l.crops import CropConfig, CropPlan
from hygie_w2l.pixels import PixelFormat
from hygie_w2l.types import CropKind, GeneratorArch, Image

if TYPE_CHECKING:  # torch is imported where it runs: a lips render never needs it
    import torch
    from torch import nn

    from hygie_w2l.dataset import PreparedDataset, Sampler

def to_float(images: np.ndarray) -> np.ndarray:
    """(B, S, S, 3) uint8 BGR -> (B, 3, S, S) float32 in [0, 1]."""
    return images.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)


class Generator(abc.ABC):
    """One mouth generator architecture."""

    arch: ClassVar[GeneratorArch]
    family: ClassVar[Literal["pixels", "shapes"]]
    official_file: ClassVar[str | None] = None  # official weights to start from, if any
    uses_expert: ClassVar[bool] = False  # the frozen lip-sync expert's loss applies
    int8_refusal: ClassVar[str | None] = "it has no ONNX engine"  # None: INT8 allowed
    needs_library: ClassVar[bool] = False  # draws its mouths from the person's library
    preset_section: ClassVar[str] = "generator"  # its settings in presets/*.toml
    # how its render holds frames: as decoded (I420), only what a crop reads and what a
    # paste writes converted to BGR (pixels.py): swscale's BGR pipes cost 1.5x a transcode
    pixel_format: ClassVar[PixelFormat] = "yuv420p"

    @classmethod
    @abc.abstractmethod
    def build_model(cls, config: Mapping[str, Any] | None = None) -> nn.Module:
        """A fresh model from a checkpoint's config (None: the default)."""

    @classmethod
    @abc.abstractmethod
    def of_model(cls, model: nn.Module) -> Self:
        """The generator that feeds ``model`` (its settings read from the model)."""

    def crop_config(self) -> CropConfig:
        """The crop recipe's settings this generator needs."""
        return CropConfig()

    @abc.abstractmethod
    def stages(self, context: StageContext) -> MouthStages:
        """The render stages that synthesise the mouth, between the reader and the writer."""


class PixelGenerator(Generator):
    """A network that draws the mouth's pixels in a crop of the frame."""

    family = "pixels"
    crop_kind: ClassVar[CropKind]
    input_channels: ClassVar[int]
    int8_refusal: ClassVar[str | None] = None

    def __init__(self, crop_px: int) -> None:
        self.crop_px = crop_px

    @classmethod
    @abc.abstractmethod
    def new_model(cls, data: PreparedDataset, channels: tuple[int, ...]) -> nn.Module:
        """An untrained model for fine-tuning on ``data`` (``channels``: widths, where the
        architecture has a choice)."""

    @abc.abstractmethod
    def cut(self, image: Image, plan: CropPlan, i: int) -> Cut:
        """Frame ``i``'s crop (from its picture ``image``) and paste mask."""

    @abc.abstractmethod
    def inputs(self, crops: np.ndarray, references: np.ndarray) -> np.ndarray:
        """crops, references (B, S, S, 3) uint8 BGR -> (B, input_channels, S, S) float32:
        the frames to dub and the reference frames (at render, the template frame itself).
        numpy, not torch: an exported model runs without torch (generate.Engine)."""

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Random (mel (B, 1, 80, 16), inputs (B, C, S, S)) of the right shapes."""
        import torch

        return (torch.randn(batch, 1, N_MELS, MEL_WINDOW_FRAMES),
                torch.rand(batch, self.input_channels, self.crop_px, self.crop_px))

    @abc.abstractmethod
    def sampler(self, data: PreparedDataset, split: str, length: int, seed: int) -> Sampler:
        """Training or validation samples of ``data``."""

    @abc.abstractmethod
    def forward(self, model: nn.Module, batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Predictions and targets as (B, T, C, H, W): pred, real, mouth (loss weights),
        input (what the model saw, for previews); region (where the loss applies) and the
        official layouts (pred_official, sync_mel) where they exist."""

    def stages(self, context: StageContext) -> MouthStages:
        """crop -> generate (batched, in its own thread) -> blend (-> HD retrieval, with a
        mouth library)."""
        from hygie_w2l.generate import Engine
        from hygie_w2l.hd import HDStage, predicted_codes, run_lips_model

        engine = Engine(context.checkpoint, self, context.engine, context.source)
        generate = GenerateStage(engine.generate, context.mel_windows, context.timer)
        stages: list[Stage] = [CropStage(self.cut, context.plan, context.timer), generate,
                               BlendStage(context.blend, context.timer)]
        out = MouthStages(stages, engine.batch_size, lambda: {
            "batch_size": engine.chunk, "engine_note": engine.note}, [generate.close])
        if context.hd is not None:
            lips = run_lips_model(context.source) if context.hd.query == "predicted" else None
            codes = predicted_codes(lips, context) if lips is not None else None
            hd = HDStage(context.hd, context.blend, context.timer, codes, context.pose)
            out.closers.append(hd.close)
            stages.append(hd)
            out.info = lambda: {"batch_size": engine.chunk, "engine_note": engine.note,
                                "hd": hd.summary(), "warning": hd.warning()}
        return out
