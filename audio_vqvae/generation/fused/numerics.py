"""The kernels' compile options and scalar numerics: the gate activation (a rational tanh) and the
inverse-CDF sampler (a vectorisable float64 exp)."""

from __future__ import annotations

import functools
import hashlib
import math
from pathlib import Path

import numpy as np
from numba import njit

# 'contract' lets LLVM fuse a*b+c into one FMA; it changes no other IEEE semantics, and every kernel
# is compiled with it, so the canonical arithmetic is the same everywhere. The kernels also use
# error_model="numpy": a float division then has no zero check (numba's default raises
# ZeroDivisionError), which would keep the gate activation loops from vectorising (the tanh
# denominator is never zero). IEEE division itself is the same, scalar or vector.
FASTMATH = {"contract"}


@functools.lru_cache(maxsize=1)
def _package_stamp() -> bytes:
    """A digest of every module of this package: what a cached kernel was compiled from."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.digest()


def cached_jit(**options):
    """``njit(cache=True)`` where the cache directory is writable, plain ``njit`` where it is not.

    numba checks a cached kernel against the source of its own module only; the kernels here are built
    from the helpers of every module of the package, so the check is made against all of them (an
    edited helper recompiles the kernels instead of loading stale machine code).
    """
    def decorate(function):
        try:
            dispatcher = njit(cache=True, **options)(function)
        except RuntimeError:  # numba: no writable cache locator for this file
            return njit(**options)(function)
        cache_file = getattr(getattr(dispatcher, "_cache", None), "_cache_file", None)
        if cache_file is not None and hasattr(cache_file, "_source_stamp"):  # numba's internals, kept if they move
            cache_file._source_stamp = (cache_file._source_stamp, _package_stamp())
        return dispatcher
    return decorate


# ------------------------------------------------------------------ gate activation

_TANH_CLAMP = np.float32(7.90531110763549805)  # |x| beyond this rounds tanh(x) to ±1 in float32
# Rational approximation of tanh (the one Eigen uses for float): x * P(x^2) / Q(x^2).
_A1, _A3, _A5 = np.float32(4.89352455891786e-03), np.float32(6.37261928875436e-04), np.float32(1.48572235717979e-05)
_A7, _A9 = np.float32(5.12229709037114e-08), np.float32(-8.60467152213735e-11)
_A11, _A13 = np.float32(2.00018790482477e-13), np.float32(-2.76076847742355e-16)
_B0, _B2 = np.float32(4.89352518554385e-03), np.float32(2.26843463243900e-03)
_B4, _B6 = np.float32(1.18534705686654e-04), np.float32(1.19825839466702e-06)
HALF = np.float32(0.5)
ZERO = np.float32(0.0)
SQRT_HALF = np.float32(math.sqrt(0.5))


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def tanh(x):
    x = min(max(x, -_TANH_CLAMP), _TANH_CLAMP)
    x2 = x * x
    p = x2 * _A13 + _A11
    p = x2 * p + _A9
    p = x2 * p + _A7
    p = x2 * p + _A5
    p = x2 * p + _A3
    p = x2 * p + _A1
    q = x2 * _B6 + _B4
    q = x2 * q + _B2
    q = x2 * q + _B0
    return x * p / q


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def gated_activation(filter_value, gate_value):
    """``tanh(filter) * sigmoid(gate)``, the WaveNet gate."""
    return tanh(filter_value) * (HALF * tanh(HALF * gate_value) + HALF)  # sigmoid(x) = (1 + tanh(x/2)) / 2


# ------------------------------------------------------------------ sampling

# exp in float64 for the sampler, written so that LLVM vectorises it (libm's exp is one call per class):
# x = n ln2 + r with n = round(x / ln2) (Cody-Waite, ln2 in two parts), e^r by its Taylor series to
# r^13 (|r| <= ln2/2: truncation below 1e-17 relative), 2^(n + 60) put into the exponent bits and
# 2^-60 multiplied last, so that results down to exp(-745) come out as the subnormals torch's exp gives
# (sampling with u = 0 picks the first class of nonzero weight). About 1 ulp, like libm and torch's
# exp, which differ from each other in the last bit as well.
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_ROUND = 6755399441055744.0  # 1.5 * 2**52: x + _ROUND - _ROUND rounds x to an integer, kept in the low bits
_ROUND_BITS = np.int64(0x4338000000000000)  # the bit pattern of _ROUND
_EXP_FLOOR = -746.0  # exp(-746) rounds to 0.0, as does exp of anything lower
_EXP_OFFSET = 60
_EXP_UNSCALE = 2.0 ** -_EXP_OFFSET
_EXP_COEFFICIENTS = tuple(1.0 / math.factorial(k) for k in range(14))


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _exp_series(r):
    p = _EXP_COEFFICIENTS[13]
    for k in range(12, -1, -1):  # Horner, unrolled by LLVM
        p = p * r + _EXP_COEFFICIENTS[k]
    return p


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def sample_class(logits, cdf, work, uniform, inv_temperature, greedy):
    """Inverse-CDF draw from softmax(logits / T) with one uniform number; argmax (first) when greedy.

    Probabilities are accumulated in float64 in class order; the class is the first whose cumulative
    mass exceeds ``uniform`` times the total (``torch.searchsorted(cdf, u * total, right=True)``).
    ``cdf`` and ``work`` are float64 scratch buffers of one entry per class.
    """
    classes = logits.shape[0]
    best = 0
    top = logits[0]
    for q in range(1, classes):
        if logits[q] > top:
            top = logits[q]
            best = q
    if greedy:
        return best
    largest = np.float64(top)
    for q in range(classes):  # vectorised: e^x = e^r * 2^n, n = round(x / ln2)
        x = max((np.float64(logits[q]) - largest) * inv_temperature, _EXP_FLOOR)
        k = x * _LOG2E + _ROUND
        n = k - _ROUND
        r = x - n * _LN2_HI
        r = r - n * _LN2_LO
        cdf[q] = k
        work[q] = _exp_series(r)
    bits = cdf.view(np.int64)
    for q in range(classes):  # 2^(n + 60) from the low bits of k
        bits[q] = (bits[q] - _ROUND_BITS + (1023 + _EXP_OFFSET)) << 52
    scales = bits.view(np.float64)
    for q in range(classes):
        work[q] = (work[q] * scales[q]) * _EXP_UNSCALE
    total = 0.0
    for q in range(classes):
        total += work[q]
        cdf[q] = total
    threshold = uniform * total
    low = 0
    high = classes - 1  # the answer is in [low, high]: searchsorted's "none" (classes) clamps to classes - 1
    while low < high:
        middle = (low + high) >> 1
        if cdf[middle] <= threshold:
            low = middle + 1
        else:
            high = middle
    return low
