"""The batched generator stage: masked crops + mel windows in, generated crops out.

Shared by evaluation (reconstructing a dataset's held-out frames from their own audio) and
rendering; the inputs are built exactly as in training (dataset.py), from the same geometry.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from hygie_w2l.audio import mel_window
from hygie_w2l.dataset import PreparedDataset
from hygie_w2l.doctor import proc_kb
from hygie_w2l.geometry import generator_mask, lower_half_mask


def film_inputs(crops: np.ndarray) -> torch.Tensor:
    """Reference crops (B, S, S, 3) uint8 BGR -> (B, 4, S, S): the crop + the fixed
    generator mask (where to edit). At render the reference is the template frame dubbed."""
    ref = torch.from_numpy(crops).float().permute(0, 3, 1, 2) / 255.0
    mask = torch.from_numpy(generator_mask(ref.shape[-1]))[None, None].expand(
        len(ref), 1, -1, -1)
    return torch.cat([ref, mask], dim=1)


def wav2lip_inputs(faces: np.ndarray, references: np.ndarray) -> torch.Tensor:
    """faces, references (B, 96, 96, 3) uint8 BGR -> (B, 6, 96, 96): masked | reference."""
    real = torch.from_numpy(faces).float().permute(0, 3, 1, 2) / 255.0
    ref = torch.from_numpy(references).float().permute(0, 3, 1, 2) / 255.0
    masked = real * (1 - torch.from_numpy(lower_half_mask(real.shape[-1])))
    return torch.cat([masked, ref], dim=1)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float in [0, 1] -> (B, H, W, 3) uint8."""
    return (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


# Batch size: as large as a share of the device's free memory allows, up to where a larger
# batch stops paying (on a CPU, batch 16 runs no faster than 8: scripts/bench_generator.py).
BATCH_CAP = {"cuda": 128, "mps": 32, "cpu": 8}
MEMORY_SHARE = {"cuda": 0.5, "mps": 0.25, "cpu": 0.1}


@torch.no_grad()
def activation_bytes(model: nn.Module, mel: torch.Tensor, inputs: torch.Tensor) -> int:
    """Bytes of every module's output in one forward pass of (mel, inputs): an upper bound of
    the working memory of that batch (without gradients, most are freed as it goes)."""
    total = 0

    def count(_m: nn.Module, _i: object, out: object) -> None:
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel() * out.element_size()

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if not list(m.children())]
    try:
        model(mel, inputs)
    finally:
        for h in hooks:
            h.remove()
    return total


def free_memory_bytes(device: torch.device) -> int:
    """Memory free for the generator: the GPU's free memory, or the host's available RAM."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    available = proc_kb("/proc/meminfo", "MemAvailable")
    if available is not None:
        return available * 1024
    import os

    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def auto_batch_size(model: nn.Module, mel: torch.Tensor, inputs: torch.Tensor,
                    device: torch.device, free_bytes: int | None = None) -> int:
    """The batch size for ``device``: MEMORY_SHARE of its free memory divided by the working
    memory of one sample (measured on ``mel``/``inputs``, a batch of one), capped by
    BATCH_CAP. At least 1."""
    per_sample = max(activation_bytes(model, mel.to(device), inputs.to(device)), 1)
    free = free_memory_bytes(device) if free_bytes is None else free_bytes
    budget = free * MEMORY_SHARE.get(device.type, 0.1)
    return int(np.clip(budget // per_sample, 1, BATCH_CAP.get(device.type, 8)))


@torch.no_grad()
def run_generator(model: nn.Module, inputs: torch.Tensor, mels: np.ndarray,
                  batch_size: int = 16, device: torch.device | str = "cpu") -> np.ndarray:
    """inputs (N, C, H, W), mels (N, 80, 16) -> (N, H, W, 3) uint8, in batches."""
    model.eval()
    outs = []
    for a in range(0, len(inputs), batch_size):
        x = inputs[a:a + batch_size].to(device)
        mel = torch.from_numpy(np.ascontiguousarray(mels[a:a + batch_size]))[:, None].to(device)
        outs.append(to_uint8(model(mel, x)))
    return np.concatenate(outs) if outs else np.zeros((0,), np.uint8)


def calibration_feeds(data: PreparedDataset, arch: str, n: int = 32, batch: int = 8
                      ) -> list[dict[str, np.ndarray]]:
    """Real generator inputs for INT8 calibration: ``n`` frames spread over the training
    split, as render would feed them (the frame is its own reference)."""
    usable = [int(i) for i in data.starts("train") if data.usable[i]]
    if not usable:
        raise ValueError(f"{data.root}: no usable training frames to calibrate on")
    picks = [usable[j] for j in np.linspace(0, len(usable) - 1, n).round().astype(int)]
    feeds = []
    for a in range(0, n, batch):
        idx = picks[a:a + batch]
        mels = np.stack([mel_window(data.mel, i, data.fps) for i in idx])[:, None]
        if arch == "wav2lip":
            faces = data.array("face").take(idx)
            inputs = wav2lip_inputs(faces, faces)
        else:
            inputs = film_inputs(data.array("mouth").take(idx))
        feeds.append({"mel": mels.astype(np.float32), "face": inputs.numpy()})
    return feeds


def reconstruct_mouths(model: nn.Module, data: PreparedDataset, indices: Sequence[int],
                       reference: int, batch_size: int = 16) -> np.ndarray:
    """A FiLM U-Net's mouth crops for dataset frames from their own audio, drawn on the
    crop of frame ``reference`` (as a render on a still template would): (N, S, S, 3)."""
    crops = data.array("mouth").take([reference] * len(indices))
    mels = np.stack([mel_window(data.mel, int(i), data.fps) for i in indices])
    return run_generator(model, film_inputs(crops), mels, batch_size)
