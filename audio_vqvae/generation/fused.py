"""Fused CPU kernels for the per-sample WaveNet loop (numba).

The PyTorch queue implementation spends nearly all of its time in operator dispatch: ~10 small ops
per layer per sample. Here one compiled function runs the whole loop with all weights in a layout
made for it (inputs-major, so that every inner loop is a contiguous, vectorisable AXPY), with no
allocation per sample, a vectorisable rational tanh, and inverse-CDF sampling over a 256-entry
scratch buffer instead of a softmax copy.

Arithmetic is *canonical*: every kernel (one thread, two threads on one utterance, lanes of a
batch) sums in the same order, so a batch gives bit-identical samples to its utterances one by one.
The gate channels are split into two blocks (one per core when two threads share an utterance); the
residual and skip sums of each block are accumulated separately and added in a fixed order.

Layouts (kernel order of the gate columns: [tanh block 0 | sigmoid block 0 | tanh block 1 | sigmoid block 1]):
    dilated   (L, 2R, G)  rows 0..R-1 see the input ``dilation`` steps ago, rows R..2R-1 the current input
    residual  (L, H, R)   skip (L, H, S)          H = G / 2, rows in the original channel order
    out1      (S, S)      out2 (S, Q)             (inputs, outputs)
    biases    (B, T, L, G) conditioning + speaker + dilated-conv bias, gate columns in kernel order
    queues    (B, slots, R) per-layer ring buffers, layer l owns rows offsets[l] .. offsets[l] + dilation_l
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic


def _jit(**options):
    """``njit(cache=True)`` where the cache directory is writable, plain ``njit`` where it is not."""
    def decorate(function):
        try:
            return njit(cache=True, **options)(function)
        except RuntimeError:  # numba: no writable cache locator for this file
            return njit(**options)(function)
    return decorate


# 'contract' lets LLVM fuse a*b+c into one FMA; it changes no other IEEE semantics, and every kernel
# below is compiled with it, so the canonical arithmetic is the same everywhere.
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


@njit(inline="always", fastmath=FASTMATH)
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


@njit(inline="always", fastmath=FASTMATH)
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


@njit(inline="always", fastmath=FASTMATH)
def _sample(logits, cdf, uniform, inv_temperature, greedy):
    """Inverse-CDF draw from softmax(logits / T) with one uniform number; argmax (first) when greedy.

    Probabilities are accumulated in float64 in class order; the class is the first whose cumulative
    mass exceeds ``uniform`` times the total (``torch.searchsorted(cdf, u * total, right=True)``).
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
    total = 0.0
    largest = np.float64(top)
    for q in range(classes):
        total += math.exp((np.float64(logits[q]) - largest) * inv_temperature)
        cdf[q] = total
    threshold = uniform * total
    best = 0
    while best < classes - 1 and cdf[best] <= threshold:
        best += 1
    return best


# ------------------------------------------------------------------ one utterance, one or two threads
#
# Inner loops always start at index 0 of a block-major axis: an offset index (``start + g``) makes
# numba emit a negative-index check that stops LLVM from vectorising the loop.


@njit(fastmath=FASTMATH, nogil=True)
def _utterance_worker(thread, threads, flags, parts, skip_out, hidden, logits,
                      dilated, residual, residual_bias, skip, skip_bias, embedding, out1, out1_bias, out2, out2_bias,
                      dilations, offsets, biases, uniforms, inv_temperature, greedy,
                      teacher, use_teacher, queues, position, previous, samples, logits_out, save_logits):
    """Run ``biases.shape[0]`` steps of one utterance; returns the sample to feed next.

    With ``threads == 2``, ``thread`` owns gate block ``thread``, output part ``thread`` and its own
    copy of ``queues``; ``parts``, ``skip_out``, ``hidden`` and ``logits`` are shared and each is read
    only after the barrier that follows its writes (``parts`` alternates by layer parity).
    """
    layers, channels2, _, width2 = dilated.shape
    channels = channels2 // 2
    width = width2 // 2
    skip_channels = skip.shape[3]
    half_hidden = out1.shape[2]
    half_classes = out2.shape[3]
    classes = logits_out.shape[1]
    first_block = thread if threads == 2 else 0
    last_block = thread + 1 if threads == 2 else 2

    inputs = np.empty(2 * channels, np.float32)  # [input dilation steps ago | current input]
    pre = np.empty(width2, np.float32)
    gated = np.empty(width, np.float32)
    skips = np.empty((2, skip_channels), np.float32)  # per gate block
    activation = np.empty(skip_channels, np.float32)
    cdf = np.empty(2 * half_classes, np.float64)
    flat_logits = logits.reshape(2 * half_classes)
    count = 0
    sample = previous
    for t in range(biases.shape[0]):
        step = position + t
        for r in range(channels):
            inputs[channels + r] = embedding[sample, r]
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
                for i in range(channels2):
                    value = inputs[i]
                    for g in range(width2):
                        pre[g] += value * dilated[layer, i, block, g]
                for h in range(width):
                    gated[h] = _gated(pre[h], pre[width + h])
                for r in range(channels):
                    parts[parity, block, r] = _ZERO
                for h in range(width):
                    value = gated[h]
                    for r in range(channels):
                        parts[parity, block, r] += value * residual[layer, block, h, r]
                    for s in range(skip_channels):
                        skips[block, s] += value * skip[layer, block, h, s]
            if threads == 2:
                count += 1
                _barrier(flags, thread, count)
            for r in range(channels):
                value = inputs[channels + r] + residual_bias[layer, r]
                value = value + parts[parity, 0, r]
                value = value + parts[parity, 1, r]
                inputs[channels + r] = value * _SQRT_HALF
        # Output network (ReLU, 1x1, ReLU, 1x1); with two threads each computes one part of the rows.
        for block in range(first_block, last_block):
            for s in range(skip_channels):
                skip_out[block, s] = skips[block, s]
        if threads == 2:
            count += 1
            _barrier(flags, thread, count)
        for s in range(skip_channels):
            value = skip_bias[s] + skip_out[0, s]
            value = value + skip_out[1, s]
            activation[s] = max(value, _ZERO)
        for part in range(first_block, last_block):
            for s in range(half_hidden):
                hidden[part, s] = out1_bias[part, s]
            for i in range(skip_channels):
                value = activation[i]
                for s in range(half_hidden):
                    hidden[part, s] += value * out1[i, part, s]
        if threads == 2:
            count += 1
            _barrier(flags, thread, count)
        for part in range(first_block, last_block):
            for q in range(half_classes):
                logits[part, q] = out2_bias[part, q]
            for source in range(2):
                for i in range(half_hidden):
                    value = max(hidden[source, i], _ZERO)
                    for q in range(half_classes):
                        logits[part, q] += value * out2[source, i, part, q]
        if threads == 2:
            count += 1
            _barrier(flags, thread, count)
        if save_logits and thread == 0:
            for q in range(classes):
                logits_out[t, q] = flat_logits[q]
        drawn = _sample(flat_logits, cdf, uniforms[t], inv_temperature, greedy)
        if thread == 0:
            samples[t] = drawn
        # No barrier here: the other thread's next writes to `logits`, `hidden` and `skip_out` come
        # after barriers that this thread reaches only once it has read them.
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


@_jit(parallel=True, fastmath=FASTMATH, nogil=True)
def run_utterance_two_threads(dilated, residual, residual_bias, skip, skip_bias, embedding, out1, out1_bias, out2,
                              out2_bias, dilations, offsets, biases, uniforms, inv_temperature, greedy,
                              teacher, use_teacher, queues, position, previous, samples, logits_out, save_logits):
    """One utterance on two threads; arrays as :func:`run_utterances` with the batch axis dropped.
    Needs two numba threads (the threads wait for each other). Returns the sample to feed next."""
    flags = np.zeros(2 * _FLAG_STRIDE, np.int64)
    parts, skips, hidden, logits = _shared_buffers(residual, skip, out1, out2)
    second_queues = queues.copy()
    last = np.empty(2, np.int64)
    for thread in prange(2):
        own_queues = queues if thread == 0 else second_queues
        last[thread] = _utterance_worker(
            thread, 2, flags, parts, skips, hidden, logits, dilated, residual, residual_bias, skip, skip_bias,
            embedding, out1, out1_bias, out2, out2_bias, dilations, offsets, biases, uniforms,
            inv_temperature, greedy, teacher, use_teacher, own_queues, position, previous, samples, logits_out,
            save_logits)
    return last[0]


# ------------------------------------------------------------------ several utterances in lock step on each thread


@njit(fastmath=FASTMATH, nogil=True)
def _group_worker(lanes, dilated, residual, residual_bias, skip, skip_bias, embedding, out1, out1_bias, out2,
                  out2_bias, dilations, offsets, biases, uniforms, inv_temperature, greedy,
                  teacher, use_teacher, queues, position, previous, samples, logits_out, save_logits):
    """``_utterance_worker`` on one thread for ``lanes`` utterances in lock step, with the same arithmetic.

    The lane loop sits between the input loop and the output loop of every product, so each weight row
    is fetched from far memory once and reused from L1 for all lanes.
    """
    layers, channels2, _, width2 = dilated.shape
    channels = channels2 // 2
    width = width2 // 2
    skip_channels = skip.shape[3]
    half_hidden = out1.shape[2]
    half_classes = out2.shape[3]
    classes = logits_out.shape[2]
    gates = 2 * width2
    all_dilated = dilated.reshape((layers, channels2, gates))
    all_biases = biases.reshape((lanes, biases.shape[1], layers, gates))
    inputs = np.empty((lanes, channels2), np.float32)
    pre3 = np.empty((lanes, 2, width2), np.float32)
    pre = pre3.reshape((lanes, gates))
    gated = np.empty((lanes, width), np.float32)
    parts = np.empty((lanes, 2, channels), np.float32)
    skips = np.empty((lanes, 2, skip_channels), np.float32)
    activation = np.empty((lanes, skip_channels), np.float32)
    hidden = np.empty((lanes, 2, half_hidden), np.float32)
    logits = np.empty((lanes, 2, half_classes), np.float32)
    cdf = np.empty(2 * half_classes, np.float64)
    current = np.empty(lanes, np.int64)
    for b in range(lanes):
        current[b] = previous[b]
    for t in range(biases.shape[1]):
        step = position + t
        for b in range(lanes):
            for r in range(channels):
                inputs[b, channels + r] = embedding[current[b], r]
        skips[:] = _ZERO
        for layer in range(layers):
            slot = offsets[layer] + step % dilations[layer]
            for b in range(lanes):
                for r in range(channels):
                    inputs[b, r] = queues[b, slot, r]
                    queues[b, slot, r] = inputs[b, channels + r]
            # Both gate blocks in one pass (long inner loops); per output the same sum as block by block.
            for b in range(lanes):
                for g in range(gates):
                    pre[b, g] = all_biases[b, t, layer, g]
            for i in range(channels2):
                for b in range(lanes):
                    value = inputs[b, i]
                    for g in range(gates):
                        pre[b, g] += value * all_dilated[layer, i, g]
            for block in range(2):
                for b in range(lanes):
                    for h in range(width):
                        gated[b, h] = _gated(pre3[b, block, h], pre3[b, block, width + h])
                    for r in range(channels):
                        parts[b, block, r] = _ZERO
                for h in range(width):
                    for b in range(lanes):
                        value = gated[b, h]
                        for r in range(channels):
                            parts[b, block, r] += value * residual[layer, block, h, r]
                        for s in range(skip_channels):
                            skips[b, block, s] += value * skip[layer, block, h, s]
            for b in range(lanes):
                for r in range(channels):
                    value = inputs[b, channels + r] + residual_bias[layer, r]
                    value = value + parts[b, 0, r]
                    value = value + parts[b, 1, r]
                    inputs[b, channels + r] = value * _SQRT_HALF
        for b in range(lanes):
            for s in range(skip_channels):
                value = skip_bias[s] + skips[b, 0, s]
                value = value + skips[b, 1, s]
                activation[b, s] = max(value, _ZERO)
            for part in range(2):
                for s in range(half_hidden):
                    hidden[b, part, s] = out1_bias[part, s]
        for part in range(2):
            for i in range(skip_channels):
                for b in range(lanes):
                    value = activation[b, i]
                    for s in range(half_hidden):
                        hidden[b, part, s] += value * out1[i, part, s]
        for b in range(lanes):
            for part in range(2):
                for q in range(half_classes):
                    logits[b, part, q] = out2_bias[part, q]
        for part in range(2):
            for source in range(2):
                for i in range(half_hidden):
                    for b in range(lanes):
                        value = max(hidden[b, source, i], _ZERO)
                        for q in range(half_classes):
                            logits[b, part, q] += value * out2[source, i, part, q]
        for b in range(lanes):
            flat_logits = logits[b].reshape(2 * half_classes)
            if save_logits:
                for q in range(classes):
                    logits_out[b, t, q] = flat_logits[q]
            drawn = _sample(flat_logits, cdf, uniforms[b, t], inv_temperature, greedy)
            samples[b, t] = drawn
            current[b] = teacher[b, t] if use_teacher else drawn
    for b in range(lanes):
        previous[b] = current[b]


@_jit(parallel=True, fastmath=FASTMATH, nogil=True)
def run_groups(groups, dilated, residual, residual_bias, skip, skip_bias, embedding, out1, out1_bias, out2, out2_bias,
               dilations, offsets, biases, uniforms, inv_temperature, greedy,
               teacher, use_teacher, queues, position, previous, samples, logits_out, save_logits):
    """B utterances in ``groups`` contiguous groups run in lock step, one group per thread.

    Args (batch axis first): biases (B, T, L, 2, 2W) float32, uniforms (B, T) float64, teacher (B, T) int64,
    queues (B, slots, R) float32 and previous (B,) int64 (the state, updated in place), samples (B, T) int64
    and logits_out (B, T, Q) float32 (written; logits only if ``save_logits``).
    """
    batch = biases.shape[0]
    for group in prange(groups):
        start = (batch * group) // groups
        stop = (batch * (group + 1)) // groups
        if stop > start:
            _group_worker(stop - start, dilated, residual, residual_bias, skip, skip_bias, embedding, out1, out1_bias,
                          out2, out2_bias, dilations, offsets, biases[start:stop], uniforms[start:stop],
                          inv_temperature, greedy, teacher[start:stop], use_teacher, queues[start:stop], position,
                          previous[start:stop], samples[start:stop], logits_out[start:stop], save_logits)


# ------------------------------------------------------------------ weights in kernel layout


def _halves(size: int) -> int:
    return (size + 1) // 2


@dataclass
class FusedWeights:
    """The decoder's weights in the fused kernels' layout: float32, C-contiguous, block-major.

    Gate pairs are split into two blocks of ``width`` pairs (padded with a zero pair when the number of
    pairs is odd); output rows into two parts (padded likewise; a padded class has logit -inf).

    Shapes: dilated (L, 2R, 2, 2W) with columns [tanh W | sigmoid W] per block and rows [input
    ``dilation`` steps ago | current input]; residual (L, 2, W, R); skip (L, 2, W, S); out1 (S, 2, S/2);
    out2 (2, S/2, 2, Q/2). :meth:`gate_order` maps kernel gate columns to the model's channels.
    """

    dilated: np.ndarray
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
            weight = array(torch.cat([layer.dilated.weight[:, :, 0], layer.dilated.weight[:, :, 1]], dim=1))  # (G, 2R)
            columns = np.where(order[:, None] >= 0, weight[np.maximum(order, 0)], 0.0)  # (4W, 2R)
            dilated.append(columns.T.reshape(-1, 2, 2 * width))
        residual = [padded(array(layer.residual.weight[:, :, 0].t()), 2 * width).reshape(2, width, -1) for layer in layers]
        skip = [padded(array(layer.skip.weight[:, :, 0].t()), 2 * width).reshape(2, width, -1) for layer in layers]
        out1 = padded(array(decoder.output[1].weight[:, :, 0]), 2 * half_hidden)  # (2 S/2, S): outputs first
        out2 = padded(array(decoder.output[3].weight[:, :, 0]), 2 * half_classes)  # (2 Q/2, S)
        out2 = padded(out2.T, 2 * half_hidden)  # (2 S/2, 2 Q/2): inputs first, padded inputs are zero rows
        dilations = np.array([layer.dilation for layer in layers], dtype=np.int64)
        contiguous = np.ascontiguousarray
        return cls(
            dilated=contiguous(np.stack(dilated), dtype=np.float32),
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

    def arguments(self) -> tuple:
        """The weights in the order the kernels take them."""
        return (self.dilated, self.residual, self.residual_bias, self.skip, self.skip_bias, self.embedding, self.out1,
                self.out1_bias, self.out2, self.out2_bias, self.dilations, self.offsets)
