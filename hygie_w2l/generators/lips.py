"""The lips path: no image network. The audio predicts the lip shape (lips.py, trained in
seconds on a CPU), the person's own real mouths come from their library, warped onto that
shape in the template frame (hd.LipsStage)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self

from hygie_w2l.chain import EditStage, MouthStages, StageContext
from hygie_w2l.errors import HygieError
from hygie_w2l.generators.base import Generator
from hygie_w2l.lip_shapes import LipsConfig, LipShapes

if TYPE_CHECKING:
    from torch import nn


class LipsGenerator(Generator):
    arch = "lips"
    family = "shapes"
    int8_refusal = "the lips path runs no image network (nothing to quantise)"
    needs_library = True
    preset_section = "lips"

    def __init__(self, shapes: LipShapes) -> None:
        self.shapes = shapes

    @classmethod
    def build_model(cls, config: Mapping[str, Any] | None = None) -> nn.Module:
        from hygie_w2l.lips import LipsModel

        return LipsModel(LipsConfig(**dict(config or {})))

    @classmethod
    def of_model(cls, model: nn.Module) -> Self:
        from hygie_w2l.lips import LipsModel

        assert isinstance(model, LipsModel), "not a lips model"
        return cls(model.shapes())

    def stages(self, context: StageContext) -> MouthStages:
        """Predicted shapes -> the library's nearest real mouths -> composed (lips, jaw)."""
        from hygie_w2l.hd import LipsStage

        if context.hd is None:
            raise HygieError("a lips run draws the person's own mouths from their library, "
                             "and none was found: build it with `hygie-w2l index "
                             "runs/NAME/dataset --out retrieval/NAME` and pass --index.")
        stage = LipsStage(self.shapes, context)
        edit = EditStage(context.timer, "compose", keep_source=context.keep_source)
        return MouthStages([stage, edit], LIPS_BATCH_FRAMES, lambda: {"hd": stage.summary(),
                                                                "warning": stage.warning()},
                           [stage.close, edit.close])

# frames per reader batch: no network to feed, so small batches, which reach x264 sooner and
# keep fewer frames in flight (warm 720p render: 0.35 s faster than 25 in 11 of 12 alternated
# pairs, peak 0.66 -> 0.53 GB; 4 was no faster than 8)
LIPS_BATCH_FRAMES = 8
