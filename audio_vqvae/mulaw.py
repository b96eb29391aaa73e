"""8-bit μ-law companding (ITU-T G.711), the WaveNet decoder's output alphabet.

Example:
    >>> import torch
    >>> x = torch.tensor([-1.0, 0.0, 0.5, 1.0])
    >>> mu_law_encode(x)
    tensor([  0, 128, 239, 255])
    >>> mu_law_decode(mu_law_encode(x)).round(decimals=2)
    tensor([-1.0000,  0.0000,  0.5000,  1.0000])
"""

from __future__ import annotations

import math

import torch


def mu_law_compress(audio: torch.Tensor, quantization_channels: int = 256) -> torch.Tensor:
    """Continuous μ-law companding, Tensor[...] in [-1, 1] -> Tensor[...] in [-1, 1] (values outside are clipped)."""
    mu = quantization_channels - 1
    audio = audio.clamp(-1.0, 1.0)
    return torch.sign(audio) * torch.log1p(mu * audio.abs()) / math.log1p(mu)


def mu_law_encode(audio: torch.Tensor, quantization_channels: int = 256) -> torch.Tensor:
    """Map audio in [-1, 1] to integer classes in [0, quantization_channels).

    Args:
        audio: Tensor[...] of floats in [-1, 1] (values outside are clipped).
        quantization_channels: number of classes (256 for 8-bit μ-law).

    Returns:
        LongTensor[...] of classes.
    """
    mu = quantization_channels - 1
    return ((mu_law_compress(audio, quantization_channels) + 1) / 2 * mu + 0.5).long()


def mu_law_decode(classes: torch.Tensor, quantization_channels: int = 256) -> torch.Tensor:
    """Inverse of :func:`mu_law_encode`: LongTensor[...] of classes -> FloatTensor[...] in [-1, 1]."""
    return mu_law_expand(2 * classes.float() / (quantization_channels - 1) - 1, quantization_channels)


def mu_law_expand(companded: torch.Tensor, quantization_channels: int = 256) -> torch.Tensor:
    """Inverse of :func:`mu_law_compress`: Tensor[...] of companded values in [-1, 1] -> audio in [-1, 1]."""
    mu = quantization_channels - 1
    return torch.sign(companded) * torch.expm1(companded.abs() * math.log1p(mu)) / mu


def mu_law_class_bounds(classes: torch.Tensor, quantization_channels: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The audio interval ``(low, high)`` that :func:`mu_law_encode` maps to each class: DoubleTensors like ``classes``.

    Encoding rounds the companded value, so class q covers companded values within half a step of
    ``2q / (Q - 1) - 1``; the end classes are open (everything beyond ±1 is clipped into them).
    """
    mu = quantization_channels - 1
    q = classes.double()
    low = mu_law_expand(((q - 0.5) * 2 / mu - 1).clamp(-1.0, 1.0), quantization_channels)
    high = mu_law_expand(((q + 0.5) * 2 / mu - 1).clamp(-1.0, 1.0), quantization_channels)
    return low.masked_fill(q <= 0, -math.inf), high.masked_fill(q >= mu, math.inf)
