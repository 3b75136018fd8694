"""What a loaded checkpoint is (models/checkpoint.py loads them), here where torch is not
imported: the render's stages name it, and a lips render never imports torch."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hygie_w2l.errors import HygieError

if TYPE_CHECKING:
    from torch import nn


class CheckpointError(HygieError):
    pass


def checkpoint_file(path: str | Path) -> Path:
    """A checkpoint named by its file, or by its run folder: that folder's best.pt."""
    path = Path(path)
    return path / "best.pt" if path.is_dir() else path


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
