"""The kernels for one utterance, on one thread or on two that share each step, and the precomputed
conditioning part of its gates.

One utterance gets the conditioning part of the gates precomputed by :func:`conditioning_biases` (the
same partial sums as the lane blocks reach, all steps in parallel) and runs the 2R audio inputs in the
loop, where its two threads are bound by their per-layer handshakes, not by traffic. The gate channels
are split into two blocks (one per thread); the residual and skip sums of each block are accumulated
separately and added in a fixed order, so one thread and two give the same samples.

Inner loops always start at index 0 of a block-major axis: an offset index (``start + g``) makes
numba emit a negative-index check that stops LLVM from vectorising the loop.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from audio_vqvae.generation.fused.barrier import FLAG_STRIDE, barrier
from audio_vqvae.generation.fused.lanes import LANES, lanes_product, row_product
from audio_vqvae.generation.fused.numerics import FASTMATH, SQRT_HALF, ZERO, cached_jit, gated_activation, sample_class
from audio_vqvae.generation.fused.synthesis import mu_law_class, synthesis_prediction, synthesised_sample


@njit(fastmath=FASTMATH, error_model="numpy", nogil=True)
def _utterance_worker(thread, threads, shared, weights, options, chunk, biases, queues, history, previous):
    """Run ``biases.shape[0]`` steps of one utterance; returns the sample to feed next.

    ``biases`` (T', L, 2, 2W) are the gates' conditioning part from :func:`conditioning_biases`: the
    products below go on from them over the rows of the audio inputs, :attr:`FusedWeights.audio`
    (2, L, 2R, 2W), each block's rows contiguous, so that each thread streams its own. ``chunk`` is the
    utterance's :class:`Chunk` (arrays without the batch axis), ``queues`` (slots, R) and ``history``
    (M,) its state (this thread's copy, updated in place), ``previous`` the sample fed first.

    With a decoder that synthesises (``weights.synthesises``: LPC split, harmonic part), each step adds the
    embedded class of the prediction from ``chunk.synthesis_rows`` to the input, draws the excitation
    and writes ``p + e`` to ``chunk.signal`` (or feeds ``chunk.teacher_signal``).

    With ``threads == 2``, ``thread`` owns gate block ``thread``, output part ``thread`` and its own
    copy of ``queues`` and ``history``; the ``shared`` buffers ``(flags, parts, skip_out, hidden,
    logits)`` are each read only after the barrier that follows its writes (``parts`` alternates by
    layer parity).
    """
    flags, parts, skip_out, hidden, logits = shared
    audio, residual, residual_bias, skip = weights.audio, weights.residual, weights.residual_bias, weights.skip
    skip_bias, embedding, prediction_embedding = weights.skip_bias, weights.embedding, weights.prediction_embedding
    out1, out1_bias, out2, out2_bias = weights.out1, weights.out1_bias, weights.out2, weights.out2_bias
    dilations, offsets, levels, log1p_mu = weights.dilations, weights.offsets, weights.levels, weights.log1p_mu
    synthesises = weights.synthesises
    inv_temperature, greedy = options.inv_temperature, options.greedy
    use_teacher, save_logits = options.use_teacher, options.save_logits
    position, uniforms, teacher, teacher_signal = chunk.position, chunk.uniforms, chunk.teacher, chunk.teacher_signal
    synthesis_rows, samples, logits_out, signal_out = (chunk.synthesis_rows, chunk.samples, chunk.logits,
                                                       chunk.signal)
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
        if synthesises:
            prediction = synthesis_prediction(synthesis_rows[t], history)
            predicted = mu_law_class(prediction, mu, log1p_mu)
            for r in range(channels):
                inputs[channels + r] = inputs[channels + r] + prediction_embedding[predicted, r]
        skips[:] = ZERO
        for layer in range(layers):
            slot = offsets[layer] + step % dilations[layer]
            for r in range(channels):
                inputs[r] = queues[slot, r]
                queues[slot, r] = inputs[channels + r]
            parity = layer & 1
            for block in range(first_block, last_block):
                for g in range(width2):
                    pre[g] = biases[t, layer, block, g]
                row_product(inputs, 0, channels2, flat_audio, (block * layers + layer) * channels2 * width2,
                             width2, width2, pre, 0)
                for h in range(width):
                    gated[h] = gated_activation(pre[h], pre[width + h])
                for r in range(channels):
                    parts[parity, block, r] = ZERO
                matrix = (layer * 2 + block) * width
                row_product(gated, 0, width, flat_residual, matrix * channels, channels, channels, flat_parts,
                             (parity * 2 + block) * channels)
                row_product(gated, 0, width, flat_skip, matrix * skip_channels, skip_channels, skip_channels,
                             flat_skips, block * skip_channels)
            if layer == layers - 1:  # publish the skip sums: the last layer's barrier covers them too
                for block in range(first_block, last_block):
                    for s in range(skip_channels):
                        skip_out[block, s] = skips[block, s]
            if threads == 2:
                count += 1
                barrier(flags, thread, count)
            for r in range(channels):
                value = inputs[channels + r] + residual_bias[layer, r]
                value = value + parts[parity, 0, r]
                value = value + parts[parity, 1, r]
                inputs[channels + r] = value * SQRT_HALF
        # Output network (ReLU, 1x1, ReLU, 1x1); with two threads each computes one part of the rows.
        for s in range(skip_channels):
            value = skip_bias[s] + skip_out[0, s]
            value = value + skip_out[1, s]
            activation[s] = max(value, ZERO)
        for part in range(first_block, last_block):
            for s in range(half_hidden):
                hidden[part, s] = out1_bias[part, s]
            row_product(activation, 0, skip_channels, flat_out1, part * half_hidden, 2 * half_hidden, half_hidden,
                         flat_hidden, part * half_hidden)
        if threads == 2:
            count += 1
            barrier(flags, thread, count)
        for k in range(2 * half_hidden):
            rectified[k] = max(flat_hidden[k], ZERO)
        for part in range(first_block, last_block):
            for q in range(half_classes):
                logits[part, q] = out2_bias[part, q]
            row_product(rectified, 0, 2 * half_hidden, flat_out2, part * half_classes, 2 * half_classes, half_classes,
                         flat_logits, part * half_classes)
        if threads == 2:
            count += 1
            barrier(flags, thread, count)
        if save_logits and thread == 0:
            for q in range(classes):
                logits_out[t, q] = flat_logits[q]
        drawn = sample_class(flat_logits, cdf, work, uniforms[t], inv_temperature, greedy)
        if thread == 0:
            samples[t] = drawn
        # No barrier here: the other thread's next writes to `logits`, `hidden` and `skip_out` come
        # after barriers that this thread reaches only once it has read them.
        if synthesises:
            value, fed = synthesised_sample(prediction, drawn, levels, history, teacher_signal[t], use_teacher,
                                            synthesis_rows[t])
            if thread == 0:
                signal_out[t] = value
            sample = mu_law_class(fed, mu, log1p_mu)
        else:
            sample = teacher[t] if use_teacher else drawn
    return sample


@njit(inline="always")
def _shared_buffers(flags, weights):
    """What the two threads of one utterance exchange: ``(flags, parts, skip_out, hidden, logits)``."""
    parts = np.zeros((2, 2, weights.residual.shape[3]), np.float32)
    skips = np.zeros((2, weights.skip.shape[3]), np.float32)
    hidden = np.zeros((2, weights.out1.shape[2]), np.float32)
    logits = np.zeros((2, weights.out2.shape[3]), np.float32)
    return flags, parts, skips, hidden, logits


@cached_jit(parallel=True, fastmath=FASTMATH, error_model="numpy", nogil=True)
def run_utterance_two_threads(weights, options, chunk, biases, queues, history, previous):
    """One utterance on two threads (which wait for each other: needs two numba threads).

    Args:
        weights: :class:`FusedWeights`.
        options: :class:`KernelOptions`.
        chunk: :class:`Chunk` of one utterance (arrays without the batch axis).
        biases: float32 (T', L, 2, 2W) from :func:`conditioning_biases`.
        queues: float32 (slots, R): the queues' state, updated in place.
        history: float64 (M,): the synthesis state, updated in place.
        previous: the sample fed first.

    Returns:
        The sample to feed next.
    """
    flags = np.zeros(2 * FLAG_STRIDE, np.int64)
    shared = _shared_buffers(flags, weights)
    second_queues = queues.copy()
    second_history = history.copy()
    last = np.empty(2, np.int64)
    for thread in prange(2):
        own_queues = queues if thread == 0 else second_queues
        own_history = history if thread == 0 else second_history
        last[thread] = _utterance_worker(thread, 2, shared, weights, options, chunk, biases, own_queues, own_history,
                                         previous)
    return last[0]


@cached_jit(fastmath=FASTMATH, error_model="numpy", nogil=True)
def run_utterance(weights, options, chunk, biases, queues, history, previous):
    """One utterance on one thread; arguments as :func:`run_utterance_two_threads`."""
    shared = _shared_buffers(np.zeros(1, np.int64), weights)
    return _utterance_worker(0, 1, shared, weights, options, chunk, biases, queues, history, previous)


@cached_jit(parallel=True, fastmath=FASTMATH, error_model="numpy", nogil=True)
def conditioning_biases(dilated, conditioning, constant, biases):
    """The gates' conditioning part for one utterance, all steps at once (threads split the steps).

    biases[t, l] = constant[l] followed by one FMA per conditioning row of ``dilated`` in row order:
    exactly the partial sums the lanes kernel reaches after its first C inputs, so the per-utterance
    kernels, which go on from these, stay bit-identical to it. Runs LANES steps at a time as the
    lanes of :func:`lanes_product` (8 independent FMA chains per weight).

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
            lanes_product(inputs, 0, conditioning_channels, flat_dilated, layer * rows * gates, gates, pre, 0)
            for b in range(count):
                at = ((first + b) * layers + layer) * gates
                for g in range(gates):
                    flat_biases[at + g] = pre[g * LANES + b]
