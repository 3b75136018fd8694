"""Convolution blocks whose parameter names match the official Wav2Lip state_dicts.

Each block keeps its layers in a ``conv_block`` Sequential (conv, then BatchNorm where there
is one), so that a block at ``face_encoder_blocks.1.0`` owns the keys
``face_encoder_blocks.1.0.conv_block.0.weight`` ... ``conv_block.1.running_var``.
"""

from __future__ import annotations

import torch
from torch import nn

Size2 = int | tuple[int, int]


class ConvBN(nn.Module):
    """Conv2d -> BatchNorm2d (-> + input when residual) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size: Size2, stride: Size2 = 1,
                 padding: Size2 = 0, residual: bool = False) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding),
                                        nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class ConvTransposeBN(nn.Module):
    """ConvTranspose2d -> BatchNorm2d -> ReLU (the decoder's upsampling step)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int, padding: int,
                 output_padding: int = 0) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding),
            nn.BatchNorm2d(cout))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


class ConvLeaky(nn.Module):
    """Conv2d -> LeakyReLU(0.01), no normalisation (the quality discriminator's block)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: Size2 = 1,
                 padding: int = 0) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding))
        self.act = nn.LeakyReLU(0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


def res(c: int) -> ConvBN:
    """A 3x3 same-size residual block of ``c`` channels."""
    return ConvBN(c, c, 3, 1, 1, residual=True)


def audio_encoder(last_residuals: int) -> nn.Sequential:
    """The mel encoder shared by the generator and the expert: (B, 1, 80, 16) -> (B, 512, 1, 1).

    The expert has one more 256-channel residual block than the generator.
    """
    layers: list[nn.Module] = [
        ConvBN(1, 32, 3, 1, 1), res(32), res(32),
        ConvBN(32, 64, 3, (3, 1), 1), res(64), res(64),
        ConvBN(64, 128, 3, 3, 1), res(128), res(128),
        ConvBN(128, 256, 3, (3, 2), 1),
    ]
    layers += [res(256) for _ in range(last_residuals)]
    layers += [ConvBN(256, 512, 3, 1, 0), ConvBN(512, 512, 1, 1, 0)]
    return nn.Sequential(*layers)
