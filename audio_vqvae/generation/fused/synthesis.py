"""One step of a decoder's synthesis (LPC split, harmonic part) inside the kernels: the prediction from a
synthesis row ``(h[t], g[t], c_1..c_M)`` (:func:`audio_vqvae.lpc.synthesis_rows`), the sample it makes with
the drawn excitation scaled by the gain, and the μ-law class of a float64 value.

Compiled without 'contract' and called, not numba-inlined, so that no product is fused into an FMA:
the arithmetic is that of the PyTorch path (audio_vqvae.lpc.Synthesis), float64
throughout. The prediction is summed here in coefficient order and by torch's reduction there: the two
may differ in the last bit of a float64, which changes a float32 sample or a μ-law class only when the
sum lies within that bit of a rounding boundary (the tests find the paths identical).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(error_model="numpy")
def mu_law_class(x, mu, log1p_mu):
    """``audio_vqvae.mulaw.mu_law_encode`` of one float64, in the same operations."""
    x = min(max(x, -1.0), 1.0)
    companded = math.copysign(math.log1p(mu * abs(x)), x) / log1p_mu
    return np.int64((companded + 1.0) / 2.0 * mu + 0.5)


@njit(error_model="numpy")
def synthesis_prediction(row, history):
    """``p = Σ_i c_i u[t − i] + h[t]``, clamped to [-1, 1], from one synthesis row ``(h[t], g[t], c_1..c_M)``;
    ``history`` holds the residual u[t − 1], u[t − 2], ..."""
    p = 0.0
    for i in range(history.shape[0]):
        p = p + row[2 + i] * history[i]
    p = p + row[0]
    return min(max(p, -1.0), 1.0)


@njit(error_model="numpy")
def synthesised_sample(prediction, drawn, levels, history, fed_teacher, use_teacher, row):
    """The new sample ``p + g e`` (float32) and, after ``history`` has moved on by the residual of the sample fed
    (the fed value less the offset ``h[t]``), the fed value; ``row`` is the step's synthesis row."""
    value = np.float32(min(max(prediction + row[1] * levels[drawn], -1.0), 1.0))
    offset = row[0]
    fed = fed_teacher if use_teacher else value
    if history.shape[0] > 0:
        for i in range(history.shape[0] - 1, 0, -1):
            history[i] = history[i - 1]
        history[0] = np.float64(fed) - offset
    return value, np.float64(fed)
