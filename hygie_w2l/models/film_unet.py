"""The seed's audio-conditioned FiLM U-Net ("U-Net Lite"): a small mouth generator that trains
from scratch on one person on a CPU.

A visual U-Net reads the masked mouth crop and its mask; an audio encoder turns the 80 x 16 mel
window into one vector, from which each decoder level gets a per-channel scale and shift
(FiLM). The network predicts a residual: ``clamp(x_masked + tanh(delta), 0, 1)``, so that the
visible (unmasked) pixels are kept by default and only the mouth has to be drawn.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from hygie_w2l.types import MOUTH_CROP_SIZES_PX

SUPPORTED_SIZES_PX = MOUTH_CROP_SIZES_PX


@dataclasses.dataclass(frozen=True)
class FilmUNetConfig:
    size_px: int = 128
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    audio_dim: int = 256
    in_channels: int = 4  # masked RGB crop + mask

    def __post_init__(self) -> None:
        if self.size_px not in SUPPORTED_SIZES_PX:
            raise ValueError(f"size_px must be one of {SUPPORTED_SIZES_PX}, got {self.size_px}")


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout),
                         nn.SiLU())


class AudioEncoder(nn.Module):
    """(B, 1, 80, 16) mel window -> (B, audio_dim)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            _conv(1, 32, 1), _conv(32, 64, 2), _conv(64, 96, 2), _conv(96, 128, 2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, dim), nn.SiLU())

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.net(mel)


class FilmUp(nn.Module):
    """Upsample x2, concatenate the skip, convolve, then scale/shift from the audio."""

    def __init__(self, cin: int, cskip: int, cout: int, audio_dim: int) -> None:
        super().__init__()
        self.conv1 = _conv(cin + cskip, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.norm = nn.GroupNorm(8, cout, affine=False)
        self.film = nn.Linear(audio_dim, 2 * cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = self.norm(self.conv2(self.conv1(torch.cat([x, skip], dim=1))))
        gamma, beta = self.film(audio)[:, :, None, None].chunk(2, dim=1)
        return F.silu(x * (1 + gamma) + beta)


class FilmUNet(nn.Module):
    """forward(mel, crop): mel (B, 1, 80, 16) in [-4, 4]; crop (B, 4, S, S) = masked RGB in
    [0, 1] + mask (1 = to generate) -> (B, 3, S, S) float32 in [0, 1]."""

    def __init__(self, config: FilmUNetConfig = FilmUNetConfig()) -> None:
        super().__init__()
        self.config = config
        ch = config.channels
        self.stem = nn.Sequential(_conv(config.in_channels, ch[0]), _conv(ch[0], ch[0]))
        self.down = nn.ModuleList(
            nn.Sequential(_conv(ch[i], ch[i + 1], 2), _conv(ch[i + 1], ch[i + 1]))
            for i in range(len(ch) - 1))
        self.audio = AudioEncoder(config.audio_dim)
        self.bottleneck_film = nn.Linear(config.audio_dim, 2 * ch[-1])
        self.up = nn.ModuleList(
            FilmUp(ch[i + 1], ch[i], ch[i], config.audio_dim)
            for i in reversed(range(len(ch) - 1)))
        self.head = nn.Conv2d(ch[0], 3, 1)
        nn.init.zeros_(self.head.weight)  # start as the identity on the visible pixels
        nn.init.zeros_(self.head.bias)  # type: ignore[arg-type]

    def forward(self, mel: torch.Tensor, crop: torch.Tensor) -> torch.Tensor:
        audio = self.audio(mel)
        skips = [self.stem(crop)]
        for block in self.down:
            skips.append(block(skips[-1]))
        gamma, beta = self.bottleneck_film(audio)[:, :, None, None].chunk(2, dim=1)
        x = skips.pop() * (1 + gamma) + beta
        for block in self.up:
            x = block(x, skips.pop(), audio)
        delta = torch.tanh(self.head(x))
        return torch.clamp(crop[:, :3] + delta, 0.0, 1.0)
