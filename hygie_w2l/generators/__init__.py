"""The mouth generators, one class per architecture; the registry is the only place that
lists them (add an architecture: one file here, one line below, one name in
types.GeneratorArch). A class's module is imported when it is first asked for: the image
generators' import torch (1.5-2 s), which a lips render does not need."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from hygie_w2l.chain import Cut
from hygie_w2l.errors import HygieError
from hygie_w2l.generators.base import Generator, PixelGenerator
from hygie_w2l.types import GENERATOR_ARCHS, GeneratorArch

if TYPE_CHECKING:
    from hygie_w2l.models.checkpoint import Checkpoint

GENERATORS: dict[GeneratorArch, str] = {  # module in this package: class
    "wav2lip": "wav2lip:Wav2LipGenerator",
    "film_unet": "film_unet:FilmUNetGenerator",
    "lips": "lips:LipsGenerator",
}
assert tuple(GENERATORS) == GENERATOR_ARCHS


def generator_class(arch: str) -> type[Generator]:
    if arch not in GENERATORS:
        raise HygieError(f"unknown generator {arch!r}; known: {', '.join(GENERATORS)}")
    module, name = GENERATORS[arch].split(":")  # type: ignore[index]
    cls: type[Generator] = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    return cls


FALLBACK_ARCH: GeneratorArch = "lips"  # learns in seconds on a CPU, from half a minute


def default_arch() -> GeneratorArch:
    """The generator to fine-tune when none is named: the first whose official weights are
    in checkpoints/, else the one that learns from scratch."""
    from hygie_w2l.weights import official_path

    for arch in GENERATORS:
        cls = generator_class(arch)
        if cls.official_file and official_path(cls.official_file).exists():
            return arch
    return FALLBACK_ARCH


def generator_for(ckpt: Checkpoint) -> Generator:
    """The generator that feeds a loaded checkpoint's model."""
    return generator_class(ckpt.arch).of_model(ckpt.model)


def cli_name(arch: str) -> str:
    """How the command line spells an architecture (film_unet -> film-unet)."""
    return arch.replace("_", "-")


__all__ = ["GENERATORS", "Cut", "Generator", "PixelGenerator", "cli_name", "default_arch",
           "generator_class", "generator_for"]
