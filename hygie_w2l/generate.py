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


def reconstruct_mouths(model: nn.Module, data: PreparedDataset, indices: Sequence[int],
                       reference: int, batch_size: int = 16) -> np.ndarray:
    """A FiLM U-Net's mouth crops for dataset frames from their own audio, drawn on the
    crop of frame ``reference`` (as a render on a still template would): (N, S, S, 3)."""
    crops = data.array("mouth").take([reference] * len(indices))
    mels = np.stack([mel_window(data.mel, int(i), data.fps) for i in indices])
    return run_generator(model, film_inputs(crops), mels, batch_size)
