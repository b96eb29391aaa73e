"""Encoder: strided 1-D convolutions over the raw waveform (van den Oord et al. 2017, Sec. 4.3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from audio_vqvae.config import EncoderConfig


class ResidualBlock(nn.Module):
    """ReLU, 3-wide conv, ReLU, 1x1 conv, added to the input (the paper's residual layers)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size=3, padding=1)
        self.project = nn.Conv1d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(F.relu(self.conv(F.relu(x))))


class StridedConv(nn.Module):
    """Conv1d of window ``2 * stride`` and the given stride, padded so that T -> T // stride exactly."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        kernel_size = 2 * stride
        self.pad_left = (kernel_size - stride) // 2
        self.pad_right = kernel_size - stride - self.pad_left
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size=kernel_size, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # floor((T + (k - s) - k) / s) + 1 == T // s for every T >= s.
        return self.conv(F.pad(x, (self.pad_left, self.pad_right)))


class Encoder(nn.Module):
    """Raw waveform to continuous latents, Tensor[B x 1 x T] -> Tensor[B x code_dim x T // hop_length].

    Args:
        config: the encoder's part of the model config.
        code_dim: size D of each latent vector (the quantizer's ``code_dim``).

    Example:
        >>> enc = Encoder(EncoderConfig(hidden_channels=16), code_dim=8)
        >>> enc(torch.zeros(2, 1, 1000)).shape
        torch.Size([2, 8, 15])
    """

    def __init__(self, config: EncoderConfig, code_dim: int):
        super().__init__()
        config.validate()
        self.hop_length = config.hop_length
        layers: list[nn.Module] = []
        in_channels = 1
        for stride in config.strides:
            layers.append(StridedConv(in_channels, config.hidden_channels, stride))
            layers.extend(ResidualBlock(config.hidden_channels) for _ in range(config.residual_layers))
            layers.append(nn.ReLU())
            in_channels = config.hidden_channels
        self.layers = nn.Sequential(*layers)
        self.output = nn.Conv1d(config.hidden_channels, code_dim, kernel_size=1)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.dim() != 3 or audio.shape[1] != 1:
            raise ValueError(f"Encoder expects audio of shape (B, 1, T), got {tuple(audio.shape)}")
        if audio.shape[-1] < self.hop_length:
            raise ValueError(f"Encoder needs at least hop_length={self.hop_length} samples, got {audio.shape[-1]}")
        return self.output(self.layers(audio))  # (B, D, T // hop)
