"""One loader for the official Wav2Lip files and for our own self-describing checkpoints.

Everything goes through ``torch.load(..., weights_only=True)``: a file that needs code to be
unpickled (a whole serialised module, or anything malicious) is refused, never executed.

Our checkpoints describe themselves: architecture name and config, weights, optimiser state,
step, training config, dataset hash and versions, so loading needs no training code.
"""

from __future__ import annotations

import dataclasses
import pickle
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hygie_w2l import __version__
from hygie_w2l.atomic import atomic_path
from hygie_w2l.models.loaded import Checkpoint, CheckpointError, checkpoint_file
from hygie_w2l.models.syncnet_lse import SyncNetV2_lse
from hygie_w2l.models.wav2lip import SyncNet_color, Wav2Lip_disc_qual
from hygie_w2l.types import GENERATOR_ARCHS

FORMAT = "hygie-w2l-checkpoint"
FORMAT_VERSION = 1

# The models that are not mouth generators (those are built by their generator class,
# hygie_w2l/generators/), by the names used in our files.
AUX_MODELS: dict[str, Callable[[], nn.Module]] = {
    "syncnet_color": SyncNet_color, "disc_qual": Wav2Lip_disc_qual,
    "syncnet_v2": SyncNetV2_lse}
ARCHS = (*GENERATOR_ARCHS, *AUX_MODELS)
# Official files carry no architecture name: it is recognised from their keys.
OFFICIAL_ARCHS = ("wav2lip", *AUX_MODELS)


def build_model(arch: str, config: Mapping[str, Any] | None = None) -> nn.Module:
    """A fresh model of ``arch`` (from a checkpoint's config where the model has one)."""
    if arch in AUX_MODELS:
        return AUX_MODELS[arch]()
    if arch in GENERATOR_ARCHS:
        from hygie_w2l.generators import generator_class

        return generator_class(arch).build_model(config)
    raise CheckpointError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")


def model_config(model: nn.Module) -> dict[str, Any]:
    config = getattr(model, "config", None)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    return {}


def strip_module_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` that nn.DataParallel put in front of every key."""
    return {k.removeprefix("module."): v for k, v in state.items()}


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since 1.6
PICKLE_MAGIC = b"\x80"  # the legacy format: a pickle stream (protocol 2+) first


def _read(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found. Give a .pt/.pth file or a run "
                              "folder holding best.pt (see `hygie-w2l weights list`).")
    with path.open("rb") as f:
        head = f.read(4)
    if not (head.startswith(ZIP_MAGIC) or head.startswith(PICKLE_MAGIC)):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (it starts with {head!r}). "
                              "Give the .pt/.pth file of a run or an official weight file.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's own notes; the refusal says it all
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused, it needs code to be unpickled (a whole serialised module or "
            "something unsafe); only plain weight files are loaded. Get the official "
            "state_dict file (`hygie-w2l weights download`).") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, IndexError,
            KeyError, AttributeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint, truncated or corrupt "
                              f"({type(exc).__name__}). Download or copy it again.") from exc


def _guess_arch(state: Mapping[str, torch.Tensor]) -> str | None:
    keys = set(state)
    for arch in OFFICIAL_ARCHS:
        if set(build_model(arch).state_dict()) == keys:
            return arch
    return None


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Refuse a state whose keys or shapes differ, naming the first mismatch."""
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise CheckpointError(f"{path}: missing key {key!r}; wrong architecture or a "
                                  "damaged file.")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{path}: shape mismatch at {key!r}: file {tuple(state[key].shape)}, model "
                f"{tuple(tensor.shape)}; this is not a checkpoint of this architecture.")
    extra = [k for k in state if k not in expected]
    if extra:
        raise CheckpointError(f"{path}: unexpected key {extra[0]!r}; wrong architecture.")


def load_checkpoint(path: str | Path, expect: str | tuple[str, ...] | None = None) -> Checkpoint:
    """Load an official file (dict with ``state_dict``, or a bare state_dict) or one of ours.

    ``expect``: the architecture(s) the caller can use; anything else is a clear error.
    """
    path = checkpoint_file(path)
    raw = _read(path)
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path}: holds a {type(raw).__name__}, not a checkpoint dict.")
    ours = raw.get("format") == FORMAT
    state = raw["state_dict"] if "state_dict" in raw else raw
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor)
                                                 for v in state.values()):
        raise CheckpointError(f"{path}: no state_dict of tensors in it.")
    state = strip_module_prefix(state)
    arch = raw["arch"] if ours else _guess_arch(state)
    if arch is None:
        raise CheckpointError(f"{path}: its keys match no known architecture "
                              f"({', '.join(ARCHS)}).")
    wanted = (expect,) if isinstance(expect, str) else expect
    if wanted and arch not in wanted:
        raise CheckpointError(f"{path}: is a {arch} checkpoint, but {' or '.join(wanted)} "
                              "is needed here.")
    config = dict(raw.get("config", {})) if ours else {}
    model = build_model(arch, config)
    check_state_dict(model, state, path)
    model.load_state_dict(state, strict=True)
    model.eval()
    return Checkpoint(model, arch, config or model_config(model),
                      step=int(raw.get("step", raw.get("global_step", 0))),
                      optimizer=raw.get("optimizer"), meta=dict(raw.get("meta", {})),
                      official=not ours, extra=dict(raw.get("extra") or {}))


def save_checkpoint(path: str | Path, model: nn.Module, arch: str, *, step: int = 0,
                    optimizer: Mapping[str, Any] | None = None,
                    meta: Mapping[str, Any] | None = None,
                    extra: Mapping[str, Any] | None = None) -> Path:
    """Write one of our checkpoints atomically (a full disk leaves the previous file)."""
    payload = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "arch": arch,
        "config": model_config(model), "state_dict": model.state_dict(), "step": step,
        "optimizer": dict(optimizer) if optimizer is not None else None,
        "meta": {"hygie_w2l": __version__, "torch": str(torch.__version__), **(meta or {})},
        "extra": dict(extra or {}),  # training state: RNG, discriminator, schedule flags
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    if arch == "lips":  # its arrays beside it, for renders that do not import torch
        from hygie_w2l.lip_shapes import save_shapes
        from hygie_w2l.lips import LipsModel

        assert isinstance(model, LipsModel)
        save_shapes(model.shapes(), Path(path))
    return Path(path)


def save_official_layout(path: str | Path, model: nn.Module, step: int = 0) -> Path:
    """Write a file laid out like the official release (``module.`` keys, Adam state).

    Used by tests and to hand a fine-tuned Wav2Lip to tools that expect that layout.
    """
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-4).state_dict()
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, "optimizer": opt, "global_step": step,
                    "global_epoch": 0}, tmp)
    return Path(path)
