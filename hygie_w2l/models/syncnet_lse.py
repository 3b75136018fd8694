"""SyncNet v2 of the standard lip-sync evaluation (LSE-D / LSE-C), clean-room.

Its weights file ``syncnet_v2.model`` is a bare state_dict whose keys index the layers of
four Sequentials (``netcnnaud.0.weight`` ...), so the layer order below is part of the format:
activations and pools keep their slots even though they hold no parameters.
"""

from __future__ import annotations

import torch
from torch import nn


def _aud_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 64, 3, 1, 1), nn.BatchNorm2d(64), nn.ReLU(),  # 0-2
        nn.MaxPool2d(1, 1),  # 3
        nn.Conv2d(64, 192, 3, 1, 1), nn.BatchNorm2d(192), nn.ReLU(),  # 4-6
        nn.MaxPool2d(3, (1, 2)),  # 7
        nn.Conv2d(192, 384, 3, 1, 1), nn.BatchNorm2d(384), nn.ReLU(),  # 8-10
        nn.Conv2d(384, 256, 3, 1, 1), nn.BatchNorm2d(256), nn.ReLU(),  # 11-13
        nn.Conv2d(256, 256, 3, 1, 1), nn.BatchNorm2d(256), nn.ReLU(),  # 14-16
        nn.MaxPool2d(3, 2),  # 17
        nn.Conv2d(256, 512, (5, 4), 1, 0), nn.BatchNorm2d(512), nn.ReLU(),  # 18-20
    )


def _lip_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(3, 96, (5, 7, 7), (1, 2, 2), 0), nn.BatchNorm3d(96), nn.ReLU(),  # 0-2
        nn.MaxPool3d((1, 3, 3), (1, 2, 2)),  # 3
        nn.Conv3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(),
        nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),  # 7
        nn.Conv3d(256, 256, (1, 3, 3), 1, (0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(),  # 8-10
        nn.Conv3d(256, 256, (1, 3, 3), 1, (0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(),  # 11-13
        nn.Conv3d(256, 256, (1, 3, 3), 1, (0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(),  # 14-16
        nn.MaxPool3d((1, 3, 3), (1, 2, 2)),  # 17
        nn.Conv3d(256, 512, (1, 6, 6), 1, 0), nn.BatchNorm3d(512), nn.ReLU(),  # 18-20
    )


def _fc(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(),
                         nn.Linear(512, dim))


class SyncNetV2_lse(nn.Module):  # noqa: N801 - named as in the reference files
    """forward_aud: MFCC (B, 1, 13, 20) -> (B, 1024); forward_lip: (B, 3, 5, 224, 224)
    pixel values 0-255 -> (B, 1024). Embeddings are compared by Euclidean distance."""

    def __init__(self, embedding_dim: int = 1024) -> None:
        super().__init__()
        self.netcnnaud = _aud_cnn()
        self.netfcaud = _fc(embedding_dim)
        self.netfclip = _fc(embedding_dim)
        self.netcnnlip = _lip_cnn()

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def forward_lip(self, frames: torch.Tensor) -> torch.Tensor:
        return self.netfclip(self.netcnnlip(frames).flatten(1))

    def forward(self, mfcc: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor,
                                                                         torch.Tensor]:
        return self.forward_aud(mfcc), self.forward_lip(frames)
