"""First-order pre-emphasis and its exact inverse, to shape the decoder's noise (LPCNet, Valin & Skoglund 2019).

The decoder's errors, sampling noise and 8-bit μ-law quantisation are roughly white in whatever
domain it models. Speech has most of its energy below 1 kHz, so white noise fills the quiet upper
band and the gaps between harmonics, and a listener (or a pitch tracker) hears hiss. Modelling
``x[t] − α·x[t−1]`` instead and inverting with the all-pole filter ``1 / (1 − α z⁻¹)`` after
generation tilts that noise towards the low frequencies, where the speech masks it.

Example:
    >>> import torch
    >>> x = torch.tensor([[0.5, 0.25, -0.5, 0.0]])
    >>> preemphasis(x, 0.5)
    tensor([[ 0.5000,  0.0000, -0.6250,  0.2500]])
    >>> deemphasis(preemphasis(x, 0.5), 0.5)
    tensor([[ 0.5000,  0.2500, -0.5000,  0.0000]])
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.signal import lfilter


def preemphasis(audio: torch.Tensor, coefficient: float) -> torch.Tensor:
    """``y[t] = x[t] − coefficient · x[t−1]`` along the last axis of Tensor[..., T], with ``x[−1] = 0``."""
    if coefficient == 0.0:
        return audio
    return torch.cat([audio[..., :1], audio[..., 1:] - coefficient * audio[..., :-1]], dim=-1)


def deemphasis(audio: torch.Tensor, coefficient: float) -> torch.Tensor:
    """The inverse of :func:`preemphasis`: ``y[t] = x[t] + coefficient · y[t−1]`` along the last axis, ``y[−1] = 0``.

    Computed in float64 (scipy's ``lfilter``) and returned in the input's dtype and device.
    """
    if coefficient == 0.0:
        return audio
    filtered = lfilter([1.0], [1.0, -coefficient], audio.detach().cpu().double().numpy(), axis=-1)
    return torch.from_numpy(np.ascontiguousarray(filtered)).to(dtype=audio.dtype, device=audio.device)
