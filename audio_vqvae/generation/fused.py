"""Fused CPU kernels for the per-sample WaveNet loop (numba).

The PyTorch queue implementation spends nearly all of its time in operator dispatch: ~10 small ops
per layer per sample. Here one compiled function runs the whole loop with all weights in a layout
made for it (inputs-major), with no allocation per sample, a vectorisable rational tanh, and
inverse-CDF sampling over a 256-entry scratch buffer instead of a softmax copy. Products keep their
partial sums in registers (explicit 8-float vectors): along the outputs for one utterance, along a
block of 8 utterances (activations (channels, 8), batch innermost) for a batch.

The layer's conditioning projection is part of the gate product (C more inputs). Blocks of
utterances run all C + 2R inputs per step, so nothing the size of (T, L, G) is written or read per
step, only C conditioning values per utterance. One utterance gets the conditioning part precomputed
by :func:`conditioning_biases` (the same partial sums, all steps in parallel) and runs the 2R audio
inputs in the loop, where its two threads are bound by their per-layer handshakes, not by traffic.

Arithmetic is *canonical*: every output of every product is its initial value followed by one FMA
per input in input order, in every kernel (one thread, two threads on one utterance, blocks of a
batch), so a batch gives bit-identical samples to its utterances one by one. The gate channels are
split into two blocks (one per core when two threads share an utterance); the residual and skip
sums of each block are accumulated separately and added in a fixed order.

Layouts (kernel order of the gate columns: [tanh block 0 | sigmoid block 0 | tanh block 1 | sigmoid block 1]):
    dilated   (L, C + 2R, G)  the gate's inputs: rows 0..C-1 the conditioning (the layer's 1x1
              conditioning projection), C..C+R-1 the input ``dilation`` steps ago, C+R..C+2R-1 the current input
    audio     (2, L, 2R, G/2) the same audio rows block-major, for one utterance: each of its two threads
              streams one contiguous block (about 6 % faster than picking its columns out of ``dilated``)
    residual  (L, H, R)   skip (L, H, S)          H = G / 2, rows in the original channel order
    out1      (S, S)      out2 (S, Q)             (inputs, outputs)
    conditioning (B, T, C) the upsampled codes at the sample rate
    constant  (B, L, G)   speaker projection + dilated-conv bias: every gate output starts from it
    biases    (T, L, G)   one utterance: constant + conditioning rows, from :func:`conditioning_biases`
    queues    (B, slots, R) per-layer ring buffers, layer l owns rows offsets[l] .. offsets[l] + dilation_l;
              (blocks, slots, R, 8) for blocks of utterances
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model


def _jit(**options):
    """``njit(cache=True)`` where the cache directory is writable, plain ``njit`` where it is not."""
    def decorate(function):
        try:
            return njit(cache=True, **options)(function)
        except RuntimeError:  # numba: no writable cache locator for this file
            return njit(**options)(function)
    return decorate


# 'contract' lets LLVM fuse a*b+c into one FMA; it changes no other IEEE semantics, and every kernel
# below is compiled with it, so the canonical arithmetic is the same everywhere. The kernels also use
# error_model="numpy": a float division then has no zero check (numba's default raises
# ZeroDivisionError), which would keep the gate activation loops from vectorising (the tanh
# denominator is never zero). IEEE division itself is the same, scalar or vector.
FASTMATH = {"contract"}

_TANH_CLAMP = np.float32(7.90531110763549805)  # |x| beyond this rounds tanh(x) to ±1 in float32
# Rational approximation of tanh (the one Eigen uses for float): x * P(x^2) / Q(x^2).
_A1, _A3, _A5 = np.float32(4.89352455891786e-03), np.float32(6.37261928875436e-04), np.float32(1.48572235717979e-05)
_A7, _A9 = np.float32(5.12229709037114e-08), np.float32(-8.60467152213735e-11)
_A11, _A13 = np.float32(2.00018790482477e-13), np.float32(-2.76076847742355e-16)
_B0, _B2 = np.float32(4.89352518554385e-03), np.float32(2.26843463243900e-03)
_B4, _B6 = np.float32(1.18534705686654e-04), np.float32(1.19825839466702e-06)
_HALF = np.float32(0.5)
_ZERO = np.float32(0.0)
_SQRT_HALF = np.float32(math.sqrt(0.5))


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _tanh(x):
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
def _gated(filter_value, gate_value):
    return _tanh(filter_value) * (_HALF * _tanh(_HALF * gate_value) + _HALF)  # sigmoid(x) = (1 + tanh(x/2)) / 2


# ------------------------------------------------------------------ atomics for the two-thread barrier


@intrinsic
def _load_acquire(typingctx, array, index):
    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, [args[1]])
        return builder.load_atomic(pointer, "acquire", 8)
    return types.int64(array, index), codegen


@intrinsic
def _store_release(typingctx, array, index, value):
    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, [args[1]])
        builder.store_atomic(args[2], pointer, "release", 8)
        return context.get_dummy_value()
    return types.void(array, index, value), codegen


_FLAG_STRIDE = 16  # int64s between the two threads' flags: one 128-byte line each
_SPINS_BEFORE_YIELD = 4096  # ~ a few microseconds: longer waits mean the other thread is not running
_sched_yield = types.ExternalFunction("sched_yield", types.int32())  # libc, resolved by name (cache-safe)


@njit(inline="always")
def _barrier(flags, thread, count):
    """Two-thread barrier on monotonically increasing counters (release my count, acquire yours).

    Spins briefly, then yields the core: when the machine is busy the other thread may be waiting
    for this very core, and spinning through its time slice would stall both.
    """
    _store_release(flags, thread * _FLAG_STRIDE, count)
    other = (1 - thread) * _FLAG_STRIDE
    spins = 0
    while _load_acquire(flags, other) < count:
        spins += 1
        if spins > _SPINS_BEFORE_YIELD:
            _sched_yield()


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
def _sample(logits, cdf, work, uniform, inv_temperature, greedy):
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


# ------------------------------------------------------------------ LPC synthesis (source-filter decoders)
#
# Compiled without 'contract' and called, not numba-inlined, so that no product is fused into an FMA:
# the arithmetic is that of the PyTorch path (audio_vqvae.generation.engine._Synthesis), float64
# throughout. The prediction is summed here in coefficient order and by torch's reduction there: the two
# may differ in the last bit of a float64, which changes a float32 sample or a μ-law class only when the
# sum lies within that bit of a rounding boundary (the tests find the paths identical).


@njit(error_model="numpy")
def _mu_law_class(x, mu, log1p_mu):
    """``audio_vqvae.mulaw.mu_law_encode`` of one float64, in the same operations."""
    x = min(max(x, -1.0), 1.0)
    companded = math.copysign(math.log1p(mu * abs(x)), x) / log1p_mu
    return np.int64((companded + 1.0) / 2.0 * mu + 0.5)


@njit(error_model="numpy")
def _lpc_prediction(row, history):
    """``p = Σ_i c_i u[t − i] + h[t]``, clamped to [-1, 1], from one synthesis row ``(h[t], c_1..c_M)``
    (:func:`audio_vqvae.lpc.synthesis_rows`); ``history`` holds the residual u[t − 1], u[t − 2], ..."""
    p = 0.0
    for i in range(history.shape[0]):
        p = p + row[1 + i] * history[i]
    p = p + row[0]
    return min(max(p, -1.0), 1.0)


@njit(error_model="numpy")
def _lpc_advance(prediction, drawn, levels, history, fed_teacher, use_teacher, offset):
    """The new sample ``p + e`` (float32) and, after ``history`` has moved on by the residual of the sample fed
    (the fed value less the offset ``h[t]``), the fed value."""
    value = np.float32(min(max(prediction + levels[drawn], -1.0), 1.0))
    fed = fed_teacher if use_teacher else value
    if history.shape[0] > 0:
        for i in range(history.shape[0] - 1, 0, -1):
            history[i] = history[i - 1]
        history[0] = np.float64(fed) - offset
    return value, np.float64(fed)


# ------------------------------------------------------------------ one utterance, one or two threads
#
# Inner loops always start at index 0 of a block-major axis: an offset index (``start + g``) makes
# numba emit a negative-index check that stops LLVM from vectorising the loop.


@njit(fastmath=FASTMATH, error_model="numpy", nogil=True)
def _utterance_worker(thread, threads, flags, parts, skip_out, hidden, logits,
                      audio, residual, residual_bias, skip, skip_bias, embedding, out1, out1_bias, out2, out2_bias,
                      dilations, offsets, biases, uniforms, inv_temperature, greedy,
                      teacher, use_teacher, queues, position, previous, samples, logits_out, save_logits,
                      prediction_embedding, lpc, history, levels, signal_out, teacher_signal, use_lpc, log1p_mu):
    """Run ``biases.shape[0]`` steps of one utterance; returns the sample to feed next.

    With ``use_lpc`` (a decoder that synthesises: LPC split, harmonic part): ``lpc`` (T, 1 + M) float64
    synthesis rows ``(h[t], c_1..c_M)`` (:func:`audio_vqvae.lpc.synthesis_rows`), ``history`` (M,) float64
    the last residual samples (this thread's state), ``levels`` (Q,) float64 the
    value of every μ-law class; each step adds the embedded class of the prediction to the input,
    draws the excitation and writes ``p + e`` to ``signal_out`` (T,) float32 (or feeds ``teacher_signal``).

    ``biases`` (T, L, 2, 2W) are the gates' conditioning part from :func:`conditioning_biases`: the
    products below go on from them over the rows of the audio inputs, ``audio`` (2, L, 2R, 2W):
    :attr:`FusedWeights.audio`, each block's rows contiguous, so that each thread streams its own.

    With ``threads == 2``, ``thread`` owns gate block ``thread``, output part ``thread`` and its own
    copy of ``queues``; ``parts``, ``skip_out``, ``hidden`` and ``logits`` are shared and each is read
    only after the barrier that follows its writes (``parts`` alternates by layer parity).
    """
    _, layers, _, width2 = audio.shape
    channels = residual.shape[3]
    channels2 = 2 * channels
    width = width2 // 2
    skip_channels = skip.shape[3]
    half_hidden = out1.shape[2]
    half_classes = out2.shape[3]
    classes = logits_out.shape[1]
    first_block = thread if threads == 2 else 0
    last_block = thread + 1 if threads == 2 else 2

    flat_audio = audio.reshape(-1)
    flat_residual = residual.reshape(-1)
    flat_skip = skip.reshape(-1)
    flat_out1 = out1.reshape(-1)
    flat_out2 = out2.reshape(-1)
    flat_parts = parts.reshape(-1)
    flat_hidden = hidden.reshape(-1)
    inputs = np.empty(channels2, np.float32)  # [input dilation steps ago | current input]
    rectified = np.empty(2 * half_hidden, np.float32)
    pre = np.empty(width2, np.float32)
    gated = np.empty(width, np.float32)
    skips = np.empty((2, skip_channels), np.float32)  # per gate block
    flat_skips = skips.reshape(-1)
    activation = np.empty(skip_channels, np.float32)
    cdf = np.empty(2 * half_classes, np.float64)
    work = np.empty(2 * half_classes, np.float64)
    flat_logits = logits.reshape(2 * half_classes)
    count = 0
    sample = previous
    mu = levels.shape[0] - 1
    prediction = 0.0
    for t in range(biases.shape[0]):
        step = position + t
        for r in range(channels):
            inputs[channels + r] = embedding[sample, r]
        if use_lpc:
            prediction = _lpc_prediction(lpc[t], history)
            predicted = _mu_law_class(prediction, mu, log1p_mu)
            for r in range(channels):
                inputs[channels + r] = inputs[channels + r] + prediction_embedding[predicted, r]
        skips[:] = _ZERO
        for layer in range(layers):
            slot = offsets[layer] + step % dilations[layer]
            for r in range(channels):
                inputs[r] = queues[slot, r]
                queues[slot, r] = inputs[channels + r]
            parity = layer & 1
            for block in range(first_block, last_block):
                for g in range(width2):
                    pre[g] = biases[t, layer, block, g]
                _row_product(inputs, 0, channels2, flat_audio, (block * layers + layer) * channels2 * width2,
                             width2, width2, pre, 0)
                for h in range(width):
                    gated[h] = _gated(pre[h], pre[width + h])
                for r in range(channels):
                    parts[parity, block, r] = _ZERO
                matrix = (layer * 2 + block) * width
                _row_product(gated, 0, width, flat_residual, matrix * channels, channels, channels, flat_parts,
                             (parity * 2 + block) * channels)
                _row_product(gated, 0, width, flat_skip, matrix * skip_channels, skip_channels, skip_channels,
                             flat_skips, block * skip_channels)
            if layer == layers - 1:  # publish the skip sums: the last layer's barrier covers them too
                for block in range(first_block, last_block):
                    for s in range(skip_channels):
                        skip_out[block, s] = skips[block, s]
            if threads == 2:
                count += 1
                _barrier(flags, thread, count)
            for r in range(channels):
                value = inputs[channels + r] + residual_bias[layer, r]
                value = value + parts[parity, 0, r]
                value = value + parts[parity, 1, r]
                inputs[channels + r] = value * _SQRT_HALF
        # Output network (ReLU, 1x1, ReLU, 1x1); with two threads each computes one part of the rows.
        for s in range(skip_channels):
            value = skip_bias[s] + skip_out[0, s]
            value = value + skip_out[1, s]
            activation[s] = max(value, _ZERO)
        for part in range(first_block, last_block):
            for s in range(half_hidden):
                hidden[part, s] = out1_bias[part, s]
            _row_product(activation, 0, skip_channels, flat_out1, part * half_hidden, 2 * half_hidden, half_hidden,
                         flat_hidden, part * half_hidden)
        if threads == 2:
            count += 1
            _barrier(flags, thread, count)
        for k in range(2 * half_hidden):
            rectified[k] = max(flat_hidden[k], _ZERO)
        for part in range(first_block, last_block):
            for q in range(half_classes):
                logits[part, q] = out2_bias[part, q]
            _row_product(rectified, 0, 2 * half_hidden, flat_out2, part * half_classes, 2 * half_classes, half_classes,
                         flat_logits, part * half_classes)
        if threads == 2:
            count += 1
            _barrier(flags, thread, count)
        if save_logits and thread == 0:
            for q in range(classes):
                logits_out[t, q] = flat_logits[q]
        drawn = _sample(flat_logits, cdf, work, uniforms[t], inv_temperature, greedy)
        if thread == 0:
            samples[t] = drawn
        # No barrier here: the other thread's next writes to `logits`, `hidden` and `skip_out` come
        # after barriers that this thread reaches only once it has read them.
        if use_lpc:
            value, fed = _lpc_advance(prediction, drawn, levels, history, teacher_signal[t], use_teacher,
                                      lpc[t, 0])
            if thread == 0:
                signal_out[t] = value
            sample = _mu_law_class(fed, mu, log1p_mu)
        else:
            sample = teacher[t] if use_teacher else drawn
    return sample


@njit(inline="always")
def _shared_buffers(residual, skip, out1, out2):
    channels = residual.shape[3]
    parts = np.zeros((2, 2, channels), np.float32)
    skips = np.zeros((2, skip.shape[3]), np.float32)
    hidden = np.zeros((2, out1.shape[2]), np.float32)
    logits = np.zeros((2, out2.shape[3]), np.float32)
    return parts, skips, hidden, logits


@_jit(parallel=True, fastmath=FASTMATH, error_model="numpy", nogil=True)
def run_utterance_two_threads(audio, residual, residual_bias, skip, skip_bias, embedding, out1, out1_bias, out2,
                              out2_bias, dilations, offsets, biases, uniforms, inv_temperature, greedy,
                              teacher, use_teacher, queues, position, previous, samples, logits_out, save_logits,
                              prediction_embedding, lpc, history, levels, signal_out, teacher_signal, use_lpc,
                              log1p_mu):
    """One utterance on two threads (which wait for each other: needs two numba threads).

    Args: biases (T, L, 2, 2W) float32 from :func:`conditioning_biases`, uniforms (T,) float64, teacher
    (T,) int64, queues (slots, R) float32 (the state, updated in place), previous (the sample fed
    first), samples (T,) int64 and logits_out (T, Q) float32 (written; logits only if ``save_logits``);
    the LPC arguments as :func:`_utterance_worker` (``history`` updated in place). Returns the sample to feed next.
    """
    flags = np.zeros(2 * _FLAG_STRIDE, np.int64)
    parts, skips, hidden, logits = _shared_buffers(residual, skip, out1, out2)
    second_queues = queues.copy()
    second_history = history.copy()
    last = np.empty(2, np.int64)
    for thread in prange(2):
        own_queues = queues if thread == 0 else second_queues
        own_history = history if thread == 0 else second_history
        last[thread] = _utterance_worker(
            thread, 2, flags, parts, skips, hidden, logits, audio, residual, residual_bias, skip, skip_bias,
            embedding, out1, out1_bias, out2, out2_bias, dilations, offsets, biases, uniforms,
            inv_temperature, greedy, teacher, use_teacher, own_queues, position, previous, samples, logits_out,
            save_logits, prediction_embedding, lpc, own_history, levels, signal_out, teacher_signal, use_lpc,
            log1p_mu)
    return last[0]


@_jit(fastmath=FASTMATH, error_model="numpy", nogil=True)
def run_utterance(audio, residual, residual_bias, skip, skip_bias, embedding, out1, out1_bias, out2, out2_bias,
                  dilations, offsets, biases, uniforms, inv_temperature, greedy,
                  teacher, use_teacher, queues, position, previous, samples, logits_out, save_logits,
                  prediction_embedding, lpc, history, levels, signal_out, teacher_signal, use_lpc, log1p_mu):
    """One utterance on one thread; arguments as :func:`run_utterance_two_threads`."""
    flags = np.zeros(1, np.int64)
    parts, skips, hidden, logits = _shared_buffers(residual, skip, out1, out2)
    return _utterance_worker(0, 1, flags, parts, skips, hidden, logits, audio, residual, residual_bias, skip,
                             skip_bias, embedding, out1, out1_bias, out2, out2_bias, dilations, offsets, biases,
                             uniforms, inv_temperature, greedy, teacher, use_teacher, queues, position, previous,
                             samples, logits_out, save_logits, prediction_embedding, lpc, history, levels,
                             signal_out, teacher_signal, use_lpc, log1p_mu)


@_jit(parallel=True, fastmath=FASTMATH, error_model="numpy", nogil=True)
def conditioning_biases(dilated, conditioning, constant, biases):
    """The gates' conditioning part for one utterance, all steps at once (threads split the steps).

    biases[t, l] = constant[l] followed by one FMA per conditioning row of ``dilated`` in row order:
    exactly the partial sums the lanes kernel reaches after its first C inputs, so the per-utterance
    kernels, which go on from these, stay bit-identical to it. Runs LANES steps at a time as the
    lanes of :func:`_lanes_product` (8 independent FMA chains per weight).

    Args: dilated (L, C + 2R, 2, 2W), conditioning (T, C), constant (L, 2, 2W); biases (T, L, 2, 2W) written.
    """
    layers, rows, _, width2 = dilated.shape
    steps, conditioning_channels = conditioning.shape
    gates = 2 * width2
    flat_dilated = dilated.reshape(-1)
    flat_constant = constant.reshape(-1)
    flat_biases = biases.reshape(-1)
    for tile in prange((steps + LANES - 1) // LANES):
        first = tile * LANES
        count = min(LANES, steps - first)
        inputs = np.zeros(conditioning_channels * LANES, np.float32)  # (C, LANES); missing steps stay 0
        pre = np.empty(gates * LANES, np.float32)
        for b in range(count):
            for c in range(conditioning_channels):
                inputs[c * LANES + b] = conditioning[first + b, c]
        for layer in range(layers):
            for g in range(gates):
                value = flat_constant[layer * gates + g]
                for b in range(LANES):
                    pre[g * LANES + b] = value
            _lanes_product(inputs, 0, conditioning_channels, flat_dilated, layer * rows * gates, gates, pre, 0)
            for b in range(count):
                at = ((first + b) * layers + layer) * gates
                for g in range(gates):
                    flat_biases[at + g] = pre[g * LANES + b]


# ------------------------------------------------------------------ blocks of 8 utterances, batch innermost
#
# A batch runs in blocks of LANES utterances whose activations are laid out (channels, LANES): one
# AVX2 register holds one channel of the whole block. A product then loads each weight once,
# broadcasts it and FMAs it into the accumulators of TILE output channels held in registers, so the
# weights are read once per block and step instead of once per utterance. The explicit vector type
# below makes those accumulators SSA values (LLVM keeps them in registers); numba arrays could alias,
# so plain loops would reload and store them at every input. Each output is still ``init`` followed
# by one FMA per input in input order: the canonical sum of the kernels above, so lanes and
# utterances alone give bit-identical results.

LANES = 8  # utterances per block: one AVX2 register of float32
TILE = 8  # output channels per register tile: 8 independent FMA chains hide the FMA latency
_VECTOR = ir.VectorType(ir.FloatType(), LANES)


class _LaneVectorType(types.Type):
    def __init__(self):
        super().__init__(name=f"LaneVector{LANES}xf32")


_lane_vector = _LaneVectorType()


@register_model(_LaneVectorType)
class _LaneVectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VECTOR)


def _element_pointer(context, builder, array_type, array, index):
    view = context.make_array(array_type)(context, builder, array)
    return cgutils.get_item_pointer(context, builder, array_type, view, [index], wraparound=False)


@intrinsic
def _vector_load(typingctx, array, index):
    """``array[index : index + LANES]`` of a 1-d float32 array as one vector (no bounds check)."""
    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        return builder.load(builder.bitcast(pointer, _VECTOR.as_pointer()), align=4)
    return _lane_vector(array, index), codegen


@intrinsic
def _vector_store(typingctx, array, index, vector):
    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        builder.store(args[2], builder.bitcast(pointer, _VECTOR.as_pointer()), align=4)
        return context.get_dummy_value()
    return types.void(array, index, vector), codegen


@intrinsic
def _vector_broadcast(typingctx, array, index):
    """``array[index]`` in every lane (no bounds check)."""
    def codegen(context, builder, signature, args):
        value = builder.load(_element_pointer(context, builder, signature.args[0], args[0], args[1]), align=4)
        vector = builder.insert_element(ir.Constant(_VECTOR, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
        mask = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
        return builder.shuffle_vector(vector, ir.Constant(_VECTOR, ir.Undefined), mask)
    return _lane_vector(array, index), codegen


@intrinsic
def _vector_fma(typingctx, a, b, c):
    """a * b + c rounded once: the same operation 'contract' makes of ``c += a * b`` in the scalar kernels."""
    def codegen(context, builder, signature, args):
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VECTOR, [_VECTOR] * 3),
                                                  f"llvm.fma.v{LANES}f32")
        return builder.call(function, args)
    return _lane_vector(_lane_vector, _lane_vector, _lane_vector), codegen


@njit(fastmath=FASTMATH, error_model="numpy")  # a call, not numba-inlined: keeps the compile of the kernels short
def _lanes_product(x, x_start, inputs, weights, w_start, outputs, out, out_start):
    """out[o] += sum_i x[i] * weights[i, o] for lane vectors, i in input order.

    x: (inputs, LANES) from flat index ``x_start``; weights: (inputs, outputs) row-major from
    ``w_start``; out: (outputs, LANES) from ``out_start``, holding the initial value.
    """
    o = 0
    while o + TILE <= outputs:
        at = out_start + o * LANES
        a0 = _vector_load(out, at)
        a1 = _vector_load(out, at + LANES)
        a2 = _vector_load(out, at + 2 * LANES)
        a3 = _vector_load(out, at + 3 * LANES)
        a4 = _vector_load(out, at + 4 * LANES)
        a5 = _vector_load(out, at + 5 * LANES)
        a6 = _vector_load(out, at + 6 * LANES)
        a7 = _vector_load(out, at + 7 * LANES)
        w = w_start + o
        for i in range(inputs):
            value = _vector_load(x, x_start + i * LANES)
            a0 = _vector_fma(value, _vector_broadcast(weights, w), a0)
            a1 = _vector_fma(value, _vector_broadcast(weights, w + 1), a1)
            a2 = _vector_fma(value, _vector_broadcast(weights, w + 2), a2)
            a3 = _vector_fma(value, _vector_broadcast(weights, w + 3), a3)
            a4 = _vector_fma(value, _vector_broadcast(weights, w + 4), a4)
            a5 = _vector_fma(value, _vector_broadcast(weights, w + 5), a5)
            a6 = _vector_fma(value, _vector_broadcast(weights, w + 6), a6)
            a7 = _vector_fma(value, _vector_broadcast(weights, w + 7), a7)
            w += outputs
        _vector_store(out, at, a0)
        _vector_store(out, at + LANES, a1)
        _vector_store(out, at + 2 * LANES, a2)
        _vector_store(out, at + 3 * LANES, a3)
        _vector_store(out, at + 4 * LANES, a4)
        _vector_store(out, at + 5 * LANES, a5)
        _vector_store(out, at + 6 * LANES, a6)
        _vector_store(out, at + 7 * LANES, a7)
        o += TILE
    while o < outputs:  # shapes that are not a multiple of TILE
        at = out_start + o * LANES
        a0 = _vector_load(out, at)
        w = w_start + o
        for i in range(inputs):
            a0 = _vector_fma(_vector_load(x, x_start + i * LANES), _vector_broadcast(weights, w), a0)
            w += outputs
        _vector_store(out, at, a0)
        o += 1


@intrinsic
def _scalar_fma(typingctx, a, b, c):
    def codegen(context, builder, signature, args):
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.FloatType(), [ir.FloatType()] * 3),
                                                  "llvm.fma.f32")
        return builder.call(function, args)
    return types.float32(types.float32, types.float32, types.float32), codegen


@njit(fastmath=FASTMATH, error_model="numpy")  # a call, not numba-inlined: keeps the compile of the kernels short
def _row_product(x, x_start, inputs, weights, w_start, stride, outputs, out, out_start):
    """out[o] += sum_i x[i] * weights[i, o] for one utterance, i in input order (the canonical sum).

    Vectors run along the outputs, 4 of them held in registers across the inputs, so each partial sum
    stays in a register instead of being loaded and stored once per input. x: (inputs,) from
    ``x_start``; weights: rows of ``stride`` floats from ``w_start``; out: (outputs,) from ``out_start``.
    """
    o = 0
    while o + 4 * LANES <= outputs:
        at = out_start + o
        a0 = _vector_load(out, at)
        a1 = _vector_load(out, at + LANES)
        a2 = _vector_load(out, at + 2 * LANES)
        a3 = _vector_load(out, at + 3 * LANES)
        w = w_start + o
        for i in range(inputs):
            value = _vector_broadcast(x, x_start + i)
            a0 = _vector_fma(value, _vector_load(weights, w), a0)
            a1 = _vector_fma(value, _vector_load(weights, w + LANES), a1)
            a2 = _vector_fma(value, _vector_load(weights, w + 2 * LANES), a2)
            a3 = _vector_fma(value, _vector_load(weights, w + 3 * LANES), a3)
            w += stride
        _vector_store(out, at, a0)
        _vector_store(out, at + LANES, a1)
        _vector_store(out, at + 2 * LANES, a2)
        _vector_store(out, at + 3 * LANES, a3)
        o += 4 * LANES
    while o + LANES <= outputs:
        at = out_start + o
        a0 = _vector_load(out, at)
        w = w_start + o
        for i in range(inputs):
            a0 = _vector_fma(_vector_broadcast(x, x_start + i), _vector_load(weights, w), a0)
            w += stride
        _vector_store(out, at, a0)
        o += LANES
    while o < outputs:
        total = out[out_start + o]
        w = w_start + o
        for i in range(inputs):
            total = _scalar_fma(x[x_start + i], weights[w], total)
            w += stride
        out[out_start + o] = total
        o += 1


@njit(fastmath=FASTMATH, error_model="numpy", nogil=True)
def _lane_block_worker(first, count, dilated, residual, residual_bias, skip, skip_bias, embedding, out1, out1_bias,
                       out2, out2_bias, dilations, offsets, conditioning, constant, uniforms, inv_temperature, greedy,
                       teacher, use_teacher, queues, position, previous, samples, logits_out, save_logits,
                       prediction_embedding, lpc, history, levels, signal_out, teacher_signal, use_lpc, log1p_mu):
    """Utterances ``first .. first + count - 1`` (count <= LANES) as one block of lanes; lanes past
    ``count`` compute on zeros and are never read. ``queues`` is this block's (slots, R, LANES) state,
    ``constant`` its (L, 4W, LANES) gate starting values. The LPC arguments are those of
    :func:`_utterance_worker` with a batch axis first (``history`` (B, M), updated in place)."""
    layers, rows, _, width2 = dilated.shape
    channels = residual.shape[3]
    conditioning_channels = conditioning.shape[2]
    width = width2 // 2
    gates = 2 * width2
    skip_channels = skip.shape[3]
    hidden_size = 2 * out1.shape[2]
    class_size = 2 * out2.shape[3]
    classes = logits_out.shape[2]
    flat_dilated = dilated.reshape(-1)
    flat_residual = residual.reshape(-1)
    flat_skip = skip.reshape(-1)
    flat_out1 = out1.reshape(-1)
    flat_out2 = out2.reshape(-1)
    flat_out1_bias = out1_bias.reshape(-1)
    flat_out2_bias = out2_bias.reshape(-1)
    flat_queues = queues.reshape(-1)
    flat_constant = constant.reshape(-1)
    steps = conditioning.shape[1]
    lane_row = channels * LANES  # one queue slot
    previous_at = conditioning_channels * LANES  # the input `dilation` steps ago
    current_at = previous_at + lane_row  # the current input

    # (C + 2R, LANES): [conditioning | input dilation steps ago | current input]; unused lanes stay zero
    inputs = np.zeros(rows * LANES, np.float32)
    pre = np.zeros(gates * LANES, np.float32)  # (4W, LANES), gate columns in kernel order
    gated = np.empty(width2 * LANES, np.float32)  # (2, W, LANES): gate block, pair
    parts = np.empty(2 * channels * LANES, np.float32)  # (2, R, LANES)
    skips = np.empty(2 * skip_channels * LANES, np.float32)  # (2, S, LANES)
    activation = np.empty(skip_channels * LANES, np.float32)
    hidden = np.empty(hidden_size * LANES, np.float32)
    logits = np.empty(class_size * LANES, np.float32)
    lane_logits = np.empty(class_size, np.float32)
    cdf = np.empty(class_size, np.float64)
    work = np.empty(class_size, np.float64)
    current = np.zeros(LANES, np.int64)
    predicted = np.zeros(LANES, np.int64)  # the class of each lane's prediction (0 for unused lanes)
    predictions = np.zeros(LANES, np.float64)
    mu = levels.shape[0] - 1
    for b in range(count):
        current[b] = previous[first + b]
    for t in range(steps):
        step = position + t
        for b in range(count):  # (utterance, channel) -> (channel, lane)
            for c in range(conditioning_channels):
                inputs[c * LANES + b] = conditioning[first + b, t, c]
        for r in range(channels):
            for b in range(LANES):
                inputs[current_at + r * LANES + b] = embedding[current[b], r]
        if use_lpc:
            for b in range(count):
                predictions[b] = _lpc_prediction(lpc[first + b, t], history[first + b])
                predicted[b] = _mu_law_class(predictions[b], mu, log1p_mu)
                for r in range(channels):
                    k = current_at + r * LANES + b
                    inputs[k] = inputs[k] + prediction_embedding[predicted[b], r]
        skips[:] = _ZERO
        for layer in range(layers):
            slot = (offsets[layer] + step % dilations[layer]) * lane_row
            for k in range(lane_row):
                inputs[previous_at + k] = flat_queues[slot + k]
                flat_queues[slot + k] = inputs[current_at + k]
            layer_start = layer * gates * LANES
            for k in range(gates * LANES):
                pre[k] = flat_constant[layer_start + k]
            _lanes_product(inputs, 0, rows, flat_dilated, layer * rows * gates, gates, pre, 0)
            for block in range(2):
                source = block * width2 * LANES
                for k in range(width * LANES):
                    gated[block * width * LANES + k] = _gated(pre[source + k], pre[source + width * LANES + k])
            parts[:] = _ZERO
            for block in range(2):
                matrix = (layer * 2 + block) * width
                _lanes_product(gated, block * width * LANES, width, flat_residual, matrix * channels, channels,
                               parts, block * lane_row)
                _lanes_product(gated, block * width * LANES, width, flat_skip, matrix * skip_channels, skip_channels,
                               skips, block * skip_channels * LANES)
            for r in range(channels):
                bias = residual_bias[layer, r]
                for b in range(LANES):
                    k = r * LANES + b
                    value = inputs[current_at + k] + bias
                    value = value + parts[k]
                    value = value + parts[lane_row + k]
                    inputs[current_at + k] = value * _SQRT_HALF
        # Output network (ReLU, 1x1, ReLU, 1x1).
        for s in range(skip_channels):
            bias = skip_bias[s]
            for b in range(LANES):
                k = s * LANES + b
                value = bias + skips[k]
                value = value + skips[skip_channels * LANES + k]
                activation[k] = max(value, _ZERO)
        for s in range(hidden_size):
            for b in range(LANES):
                hidden[s * LANES + b] = flat_out1_bias[s]
        _lanes_product(activation, 0, skip_channels, flat_out1, 0, hidden_size, hidden, 0)
        for k in range(hidden_size * LANES):
            hidden[k] = max(hidden[k], _ZERO)
        for q in range(class_size):
            for b in range(LANES):
                logits[q * LANES + b] = flat_out2_bias[q]
        _lanes_product(hidden, 0, hidden_size, flat_out2, 0, class_size, logits, 0)
        for b in range(count):
            for q in range(class_size):
                lane_logits[q] = logits[q * LANES + b]
            if save_logits:
                for q in range(classes):
                    logits_out[first + b, t, q] = lane_logits[q]
            drawn = _sample(lane_logits, cdf, work, uniforms[first + b, t], inv_temperature, greedy)
            samples[first + b, t] = drawn
            if use_lpc:
                value, fed = _lpc_advance(predictions[b], drawn, levels, history[first + b],
                                          teacher_signal[first + b, t], use_teacher, lpc[first + b, t, 0])
                signal_out[first + b, t] = value
                current[b] = _mu_law_class(fed, mu, log1p_mu)
            else:
                current[b] = teacher[first + b, t] if use_teacher else drawn
    for b in range(count):
        previous[first + b] = current[b]


@_jit(parallel=True, fastmath=FASTMATH, error_model="numpy", nogil=True)
def run_lane_blocks(starts, dilated, residual, residual_bias, skip, skip_bias, embedding, out1, out1_bias, out2,
                    out2_bias, dilations, offsets, conditioning, constant, uniforms, inv_temperature, greedy,
                    teacher, use_teacher, queues, position, previous, samples, logits_out, save_logits,
                    prediction_embedding, lpc, history, levels, signal_out, teacher_signal, use_lpc, log1p_mu):
    """B utterances in blocks of at most LANES, block k = utterances ``starts[k] .. starts[k+1] - 1``,
    blocks spread over the threads (which never wait for each other).

    Args (batch axis first): as :func:`run_utterance_two_threads` with a batch axis (conditioning
    (B, T, C); previous (B,) is updated in place), except that ``constant`` is per block and lane,
    (blocks, L, 4W, LANES), and queues are (blocks, slots, R, LANES).
    """
    for block in prange(starts.shape[0] - 1):
        _lane_block_worker(starts[block], starts[block + 1] - starts[block], dilated, residual, residual_bias,
                           skip, skip_bias, embedding, out1, out1_bias, out2, out2_bias, dilations, offsets,
                           conditioning, constant[block], uniforms, inv_temperature, greedy, teacher, use_teacher,
                           queues[block], position, previous, samples, logits_out, save_logits,
                           prediction_embedding, lpc, history, levels, signal_out, teacher_signal, use_lpc, log1p_mu)


# ------------------------------------------------------------------ weights in kernel layout


def _halves(size: int) -> int:
    return (size + 1) // 2


@dataclass
class FusedWeights:
    """The decoder's weights in the fused kernels' layout: float32, C-contiguous, block-major.

    Gate pairs are split into two blocks of ``width`` pairs (padded with a zero pair when the number of
    pairs is odd); output rows into two parts (padded likewise; a padded class has logit -inf).

    Shapes: dilated (L, C + 2R, 2, 2W) with columns [tanh W | sigmoid W] per block and rows
    [conditioning projection | input ``dilation`` steps ago | current input]; audio (2, L, 2R, 2W), the
    audio rows of ``dilated`` again, block-major for one utterance's kernels; residual (L, 2, W, R);
    skip (L, 2, W, S); out1 (S, 2, S/2); out2 (2, S/2, 2, Q/2). :meth:`gate_order` maps kernel gate
    columns to the model's channels.
    """

    dilated: np.ndarray
    audio: np.ndarray
    residual: np.ndarray
    residual_bias: np.ndarray
    skip: np.ndarray
    skip_bias: np.ndarray
    embedding: np.ndarray
    out1: np.ndarray
    out1_bias: np.ndarray
    out2: np.ndarray
    out2_bias: np.ndarray
    dilations: np.ndarray
    offsets: np.ndarray

    @staticmethod
    def gate_order(gates: int) -> np.ndarray:
        """Model gate channel of each kernel column, LongTensor-ready (L-independent), -1 for padding: (4W,)."""
        pairs = gates // 2
        width = _halves(pairs)
        order = np.full((2, 2, width), -1, dtype=np.int64)
        for block in range(2):
            for h in range(width):
                pair = block * width + h
                if pair < pairs:
                    order[block, 0, h] = pair
                    order[block, 1, h] = pairs + pair
        return order.reshape(-1)

    @classmethod
    def from_decoder(cls, decoder) -> "FusedWeights":
        """Copy a :class:`~audio_vqvae.wavenet.WaveNet`'s weights into kernel layout."""
        config = decoder.config
        layers = decoder.layers
        pairs, skip_channels, classes = config.gate_channels // 2, config.skip_channels, config.quantization_channels
        width, half_hidden, half_classes = _halves(pairs), _halves(skip_channels), _halves(classes)
        order = cls.gate_order(config.gate_channels)

        def array(tensor: torch.Tensor) -> np.ndarray:
            return np.ascontiguousarray(tensor.detach().to("cpu", torch.float32).numpy())

        def padded(matrix: np.ndarray, rows: int, fill: float = 0.0) -> np.ndarray:  # pad axis 0 to `rows`
            extra = np.full((rows - matrix.shape[0],) + matrix.shape[1:], fill, np.float32)
            return np.concatenate([matrix, extra], axis=0)

        dilated = []
        for layer in layers:
            weight = array(torch.cat([layer.conditioning.weight[:, :, 0], layer.dilated.weight[:, :, 0],
                                      layer.dilated.weight[:, :, 1]], dim=1))  # (G, C + 2R)
            columns = np.where(order[:, None] >= 0, weight[np.maximum(order, 0)], 0.0)  # (4W, C + 2R)
            dilated.append(columns.T.reshape(-1, 2, 2 * width))
        residual = [padded(array(layer.residual.weight[:, :, 0].t()), 2 * width).reshape(2, width, -1)
                    for layer in layers]
        skip = [padded(array(layer.skip.weight[:, :, 0].t()), 2 * width).reshape(2, width, -1) for layer in layers]
        out1 = padded(array(decoder.output[1].weight[:, :, 0]), 2 * half_hidden)  # (2 S/2, S): outputs first
        out2 = padded(array(decoder.output[3].weight[:, :, 0]), 2 * half_classes)  # (2 Q/2, S)
        out2 = padded(out2.T, 2 * half_hidden)  # (2 S/2, 2 Q/2): inputs first, padded inputs are zero rows
        dilations = np.array([layer.dilation for layer in layers], dtype=np.int64)
        contiguous = np.ascontiguousarray
        dilated = contiguous(np.stack(dilated), dtype=np.float32)
        return cls(
            dilated=dilated,
            audio=contiguous(dilated[:, config.conditioning_channels:].transpose(2, 0, 1, 3)),
            residual=contiguous(np.stack(residual)),
            residual_bias=array(torch.stack([layer.residual.bias for layer in layers])),
            skip=contiguous(np.stack(skip)),
            skip_bias=array(torch.stack([layer.skip.bias for layer in layers]).sum(0)),
            embedding=array(decoder.input_embedding.weight),
            out1=contiguous(out1.T.reshape(skip_channels, 2, half_hidden)),
            out1_bias=padded(array(decoder.output[1].bias), 2 * half_hidden).reshape(2, half_hidden),
            out2=contiguous(out2.reshape(2, half_hidden, 2, half_classes)),
            out2_bias=padded(array(decoder.output[3].bias), 2 * half_classes, -np.inf).reshape(2, half_classes),
            dilations=dilations,
            offsets=np.concatenate([[0], np.cumsum(dilations)[:-1]]).astype(np.int64),
        )

    @property
    def queue_slots(self) -> int:
        return int(self.dilations.sum())

    def arguments(self, utterance: bool = False) -> tuple:
        """The weights in the order the kernels take them (``utterance``: one utterance's kernels)."""
        return (self.audio if utterance else self.dilated, self.residual, self.residual_bias, self.skip,
                self.skip_bias, self.embedding, self.out1, self.out1_bias, self.out2, self.out2_bias, self.dilations,
                self.offsets)
