"""Clean-room Wav2Lip generator, SyncNet_color expert and visual-quality discriminator.

Written from the published facts (state_dict names, shapes and reference outputs in
``tests/data``); their ``state_dict()`` keys, order and shapes equal the official ones, so
the official checkpoints load with ``strict=True``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hygie_w2l.models.blocks import (
    ConvBN,
    ConvLeaky,
    ConvTransposeBN,
    audio_encoder,
    res,
)


def frames_to_batch(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (T*B, C, H, W), time-major as the official code concatenates."""
    return torch.cat([x[:, :, t] for t in range(x.size(2))], dim=0)


class Wav2Lip(nn.Module):
    """Generator: mel window + (masked target | reference) face -> lower-face-synced face.

    forward(mel, face):
      mel  (B, 1, 80, 16) float32 in [-4, 4], face (B, 6, 96, 96) float32 in [0, 1]
      -> (B, 3, 96, 96) float32 in [0, 1];
      or mel (B, T, 1, 80, 16) and face (B, 6, T, 96, 96) -> (B, 3, T, 96, 96).
    """

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList([
            nn.Sequential(ConvBN(6, 16, 7, 1, 3)),  # 96
            nn.Sequential(ConvBN(16, 32, 3, 2, 1), res(32), res(32)),  # 48
            nn.Sequential(ConvBN(32, 64, 3, 2, 1), res(64), res(64), res(64)),  # 24
            nn.Sequential(ConvBN(64, 128, 3, 2, 1), res(128), res(128)),  # 12
            nn.Sequential(ConvBN(128, 256, 3, 2, 1), res(256), res(256)),  # 6
            nn.Sequential(ConvBN(256, 512, 3, 2, 1), res(512)),  # 3
            nn.Sequential(ConvBN(512, 512, 3, 1, 0), ConvBN(512, 512, 1, 1, 0)),  # 1
        ])
        self.audio_encoder = audio_encoder(last_residuals=1)
        self.face_decoder_blocks = nn.ModuleList([
            nn.Sequential(ConvBN(512, 512, 1, 1, 0)),  # 1
            nn.Sequential(ConvTransposeBN(1024, 512, 3, 1, 0), res(512)),  # 3
            nn.Sequential(ConvTransposeBN(1024, 512, 3, 2, 1, 1), res(512), res(512)),  # 6
            nn.Sequential(ConvTransposeBN(768, 384, 3, 2, 1, 1), res(384), res(384)),  # 12
            nn.Sequential(ConvTransposeBN(512, 256, 3, 2, 1, 1), res(256), res(256)),  # 24
            nn.Sequential(ConvTransposeBN(320, 128, 3, 2, 1, 1), res(128), res(128)),  # 48
            nn.Sequential(ConvTransposeBN(160, 64, 3, 2, 1, 1), res(64), res(64)),  # 96
        ])
        self.output_block = nn.Sequential(ConvBN(80, 32, 3, 1, 1),
                                          nn.Conv2d(32, 3, 1, 1, 0), nn.Sigmoid())

    def forward(self, mel: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        batch = mel.size(0)
        sequence = face.dim() == 5
        if sequence:
            mel = torch.cat([mel[:, t] for t in range(mel.size(1))], dim=0)
            face = frames_to_batch(face)
        x = self.audio_encoder(mel)  # (N, 512, 1, 1)
        skips = []
        h = face
        for block in self.face_encoder_blocks:
            h = block(h)
            skips.append(h)
        for block in self.face_decoder_blocks:
            x = torch.cat((block(x), skips.pop()), dim=1)  # U-Net skip, deepest first
        out = self.output_block(x)
        if sequence:
            out = torch.stack(torch.split(out, batch, dim=0), dim=2)
        return out


class SyncNet_color(nn.Module):  # noqa: N801 - the official name, used in checkpoints
    """Lip-sync expert: mel window and 5 lower-half faces -> two L2-normalised embeddings.

    forward(mel, faces): mel (B, 1, 80, 16), faces (B, 15, 48, 96) float32 in [0, 1]
    (5 RGB frames stacked on channels) -> (audio_emb, face_emb), each (B, 512).
    """

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder = nn.Sequential(
            ConvBN(15, 32, 7, 1, 3),
            ConvBN(32, 64, 5, (1, 2), 1), res(64), res(64),
            ConvBN(64, 128, 3, 2, 1), res(128), res(128), res(128),
            ConvBN(128, 256, 3, 2, 1), res(256), res(256),
            ConvBN(256, 512, 3, 2, 1), res(512), res(512),
            ConvBN(512, 512, 3, 2, 1), ConvBN(512, 512, 3, 1, 0), ConvBN(512, 512, 1, 1, 0),
        )
        self.audio_encoder = audio_encoder(last_residuals=2)

    def forward(self, mel: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor,
                                                                        torch.Tensor]:
        face_emb = self.face_encoder(faces).flatten(1)
        audio_emb = self.audio_encoder(mel).flatten(1)
        return F.normalize(audio_emb, p=2, dim=1), F.normalize(face_emb, p=2, dim=1)


class Wav2Lip_disc_qual(nn.Module):  # noqa: N801 - the official name, used in checkpoints
    """Visual-quality discriminator on the lower half of generated faces.

    forward(faces): (B, 3, T, 96, 96) float32 in [0, 1] -> (B*T, 1) probability "real".
    """

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList([
            nn.Sequential(ConvLeaky(3, 32, 7, 1, 3)),  # 48 x 96
            nn.Sequential(ConvLeaky(32, 64, 5, (1, 2), 2), ConvLeaky(64, 64, 5, 1, 2)),  # 48
            nn.Sequential(ConvLeaky(64, 128, 5, 2, 2), ConvLeaky(128, 128, 5, 1, 2)),  # 24
            nn.Sequential(ConvLeaky(128, 256, 5, 2, 2), ConvLeaky(256, 256, 5, 1, 2)),  # 12
            nn.Sequential(ConvLeaky(256, 512, 3, 2, 1), ConvLeaky(512, 512, 3, 1, 1)),  # 6
            nn.Sequential(ConvLeaky(512, 512, 3, 2, 1), ConvLeaky(512, 512, 3, 1, 1)),  # 3
            nn.Sequential(ConvLeaky(512, 512, 3, 1, 0), ConvLeaky(512, 512, 1, 1, 0)),  # 1
        ])
        self.binary_pred = nn.Sequential(nn.Conv2d(512, 1, 1, 1, 0), nn.Sigmoid())

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        x = frames_to_batch(faces)
        x = x[:, :, x.size(2) // 2:]  # lower half: the mouth and jaw
        for block in self.face_encoder_blocks:
            x = block(x)
        return self.binary_pred(x).view(len(x), -1)
