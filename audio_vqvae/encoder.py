"""Encoder: strided 1-D convolutions over the raw waveform (van den Oord et al. 2017, Sec. 4.3)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from audio_vqvae.config import EncoderConfig
from audio_vqvae.mulaw import mu_law_compress


class ResidualBlock(nn.Module):
    """ReLU, 3-wide conv, ReLU, 1x1 conv, added to the input (the paper's residual layers)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size=3, padding=1)
        self.project = nn.Conv1d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(F.relu(self.conv(F.relu(x))))


class SumOverRanks(torch.autograd.Function):
    """A differentiable all-reduce (sum): each rank's gradient is the sum of every rank's, as for any sum.

    ``torch.distributed.nn.functional.all_reduce`` did the same (forward and backward each one sum over the
    ranks) and is deprecated: it printed a FutureWarning at the demo's first training step.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


class Standardize(nn.Module):
    """Per-channel standardisation over all frames of the batch: BatchNorm without affine parameters,
    with statistics summed over every rank under ``torch.distributed`` (so replicas stay identical).

    In training it uses the batch's mean and variance and updates running estimates, which eval uses.
    """

    def __init__(self, channels: int, momentum: float = 0.05, eps: float = 1e-5):
        super().__init__()
        self.momentum = momentum
        self.eps = eps
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.training:
            moments = torch.cat([x.sum((0, 2)), x.pow(2).sum((0, 2)), x.new_full((1,), x.shape[0] * x.shape[2])])
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                moments = SumOverRanks.apply(moments)
            channels = x.shape[1]
            count = moments[-1]
            mean = moments[:channels] / count
            var = (moments[channels:2 * channels] / count - mean.pow(2)).clamp(min=0)
            with torch.no_grad():
                unbiased = var * count / (count - 1).clamp(min=1)
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(unbiased.detach(), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean.view(1, -1, 1)) * torch.rsqrt(var.view(1, -1, 1) + self.eps)


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
        # The latents are standardised per channel over the batch. Without this, Adam follows the
        # consistent commitment gradient early in training (before the WaveNet uses its conditioning)
        # and the encoder output becomes constant over time within ~10 steps: every frame lands on one
        # code. Standardised latents cannot collapse to a constant.
        self.norm = Standardize(code_dim)
        # He initialisation keeps the signal's scale through the ReLU stack (PyTorch's default shrinks
        # it ~2.6x per stage, to ~1e-3 after six, where Adam's first bias updates swamp it); zero
        # biases make the initial output depend on the signal alone.
        for module in self.modules():
            if isinstance(module, nn.Conv1d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.dim() != 3 or audio.shape[1] != 1:
            raise ValueError(f"Encoder expects audio of shape (B, 1, T), got {tuple(audio.shape)}")
        if audio.shape[-1] < self.hop_length:
            raise ValueError(f"Encoder needs at least hop_length={self.hop_length} samples, got {audio.shape[-1]}")
        # μ-law companding (continuous, not quantised) lifts quiet speech to a usable amplitude.
        latents = self.output(self.layers(mu_law_compress(audio)))  # (B, D, T // hop)
        return self.norm(latents)
