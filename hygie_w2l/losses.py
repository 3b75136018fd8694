"""Training objectives.

* mouth-weighted L1 (the seed's): every pixel counts, mouth pixels ``mouth_weight`` times more
  (8:1 by default), so the network spends its capacity where lip-sync is judged;
* temporal term: on true neighbours t, t+1 of the same clip, the change between generated
  frames should match the real change inside the mouth (no flicker, no frozen mouth);
* lip-sync loss (official): BCE of the expert's cosine similarity against "in sync";
* adversarial terms of the visual-quality discriminator (official high-quality recipe).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def weighted_l1(pred: torch.Tensor, real: torch.Tensor, mouth: torch.Tensor,
                mouth_weight: float = 8.0, region: torch.Tensor | None = None) -> torch.Tensor:
    """pred, real (..., 3, H, W) in [0, 1]; mouth (..., 1, H, W) in [0, 1] -> scalar.

    region (..., 1, H, W): where the loss applies at all (default everywhere).
    """
    weight = 1.0 + (mouth_weight - 1.0) * mouth
    if region is not None:
        weight = weight * region
    return (weight * (pred - real).abs()).sum() / (weight.sum() * pred.shape[-3])


def mouth_l1(pred: torch.Tensor, real: torch.Tensor, mouth: torch.Tensor) -> torch.Tensor:
    """Mean absolute error inside the mouth mask only (the validation metric)."""
    return (mouth * (pred - real).abs()).sum() / (mouth.sum() * pred.shape[-3]).clamp(min=1e-6)


def temporal_loss(pred: torch.Tensor, real: torch.Tensor, mouth: torch.Tensor,
                  time_dim: int) -> torch.Tensor:
    """L1 between generated and real frame-to-frame changes inside the mouth.

    pred, real: tensors whose ``time_dim`` indexes consecutive frames of one clip.
    """
    d_pred = torch.diff(pred, dim=time_dim)
    d_real = torch.diff(real, dim=time_dim)
    m = torch.minimum(mouth.narrow(time_dim, 0, mouth.shape[time_dim] - 1),
                      mouth.narrow(time_dim, 1, mouth.shape[time_dim] - 1))
    return mouth_l1(d_pred, d_real, m)


def cosine_bce(audio_emb: torch.Tensor, face_emb: torch.Tensor,
               label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The official expert loss: BCE(cos(a, v), y). Embeddings are non-negative (ReLU), so
    the similarity is a probability. Returns (loss, similarity (B,))."""
    sim = F.cosine_similarity(audio_emb, face_emb).clamp(1e-7, 1 - 1e-7)
    return F.binary_cross_entropy(sim[:, None], label), sim


def lower_half_window(faces: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) -> (B, 3T, H/2, W): the expert's input, frame-major channels."""
    lower = faces[:, :, :, faces.shape[3] // 2:]
    return torch.cat([lower[:, :, t] for t in range(lower.shape[2])], dim=1)


def sync_loss(expert: nn.Module, mel: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """How out of sync generated faces (B, 3, 5, 96, 96) are with mel (B, 1, 80, 16)."""
    audio_emb, face_emb = expert(mel, lower_half_window(faces))
    ones = torch.ones(faces.shape[0], 1, device=faces.device)
    return cosine_bce(audio_emb, face_emb, ones)[0]


def adversarial_loss(disc: nn.Module, faces: torch.Tensor, real: bool) -> torch.Tensor:
    """BCE of the quality discriminator's verdict on (B, 3, T, 96, 96) faces."""
    pred = disc(faces)
    target = torch.ones_like(pred) if real else torch.zeros_like(pred)
    return F.binary_cross_entropy(pred.clamp(1e-7, 1 - 1e-7), target)
