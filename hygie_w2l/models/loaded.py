"""What a loaded checkpoint is (models/checkpoint.py loads them), here where torch is not
imported: the render's stages name it, and a lips render never imports torch."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from hygie_w2l.errors import HygieError

if TYPE_CHECKING:
    from torch import nn


class CheckpointError(HygieError):
    pass


@dataclasses.dataclass
class Checkpoint:
    """A loaded checkpoint: the model (eval mode, on the CPU) and what the file said of it."""

    model: nn.Module
    arch: str
    config: dict[str, Any]
    step: int = 0
    optimizer: dict[str, Any] | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    official: bool = False
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
