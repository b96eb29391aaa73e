"""The kernel for a batch: blocks of LANES utterances whose activations are laid out (channels, LANES), the
batch innermost, so that one register holds one channel of the whole block and the weights are read
once per block and step instead of once per utterance (:func:`~audio_vqvae.generation.fused.lanes.lanes_product`).

A block runs all C + 2R inputs of each gate per step (the conditioning projection folded into the
product), so nothing the size of (T, L, G) is written or read per step, only C conditioning values
per utterance. Its sums are the canonical ones of the one-utterance kernels: a batch gives
bit-identical samples to its utterances one by one.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from audio_vqvae.generation.fused.lanes import LANES, lanes_product
from audio_vqvae.generation.fused.numerics import FASTMATH, SQRT_HALF, ZERO, cached_jit, gated_activation, sample_class
from audio_vqvae.generation.fused.synthesis import mu_law_class, synthesis_prediction, synthesised_sample


@njit(fastmath=FASTMATH, error_model="numpy", nogil=True)
def _lane_block_worker(first, count, weights, options, chunk, conditioning, constant, queues, history, previous):
    """Utterances ``first .. first + count - 1`` (count <= LANES) as one block of lanes; lanes past
    ``count`` compute on zeros and are never read. ``queues`` is this block's (slots, R, LANES) state,
    ``constant`` its (L, 4W, LANES) gate starting values; the other arguments are those of
    :func:`run_lane_blocks`."""
    dilated, residual, residual_bias, skip = weights.dilated, weights.residual, weights.residual_bias, weights.skip
    skip_bias, embedding, prediction_embedding = weights.skip_bias, weights.embedding, weights.prediction_embedding
    out1, out1_bias, out2, out2_bias = weights.out1, weights.out1_bias, weights.out2, weights.out2_bias
    dilations, offsets, levels, log1p_mu = weights.dilations, weights.offsets, weights.levels, weights.log1p_mu
    synthesises = weights.synthesises
    inv_temperature, greedy = options.inv_temperature, options.greedy
    use_teacher, save_logits = options.use_teacher, options.save_logits
    position, uniforms, teacher, teacher_signal = chunk.position, chunk.uniforms, chunk.teacher, chunk.teacher_signal
    synthesis_rows, samples, logits_out, signal_out = (chunk.synthesis_rows, chunk.samples, chunk.logits,
                                                       chunk.signal)
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
        if synthesises:
            for b in range(count):
                predictions[b] = synthesis_prediction(synthesis_rows[first + b, t], history[first + b])
                predicted[b] = mu_law_class(predictions[b], mu, log1p_mu)
                for r in range(channels):
                    k = current_at + r * LANES + b
                    inputs[k] = inputs[k] + prediction_embedding[predicted[b], r]
        skips[:] = ZERO
        for layer in range(layers):
            slot = (offsets[layer] + step % dilations[layer]) * lane_row
            for k in range(lane_row):
                inputs[previous_at + k] = flat_queues[slot + k]
                flat_queues[slot + k] = inputs[current_at + k]
            layer_start = layer * gates * LANES
            for k in range(gates * LANES):
                pre[k] = flat_constant[layer_start + k]
            lanes_product(inputs, 0, rows, flat_dilated, layer * rows * gates, gates, pre, 0)
            for block in range(2):
                source = block * width2 * LANES
                for k in range(width * LANES):
                    gated[block * width * LANES + k] = gated_activation(pre[source + k],
                                                                        pre[source + width * LANES + k])
            parts[:] = ZERO
            for block in range(2):
                matrix = (layer * 2 + block) * width
                lanes_product(gated, block * width * LANES, width, flat_residual, matrix * channels, channels,
                               parts, block * lane_row)
                lanes_product(gated, block * width * LANES, width, flat_skip, matrix * skip_channels, skip_channels,
                               skips, block * skip_channels * LANES)
            for r in range(channels):
                bias = residual_bias[layer, r]
                for b in range(LANES):
                    k = r * LANES + b
                    value = inputs[current_at + k] + bias
                    value = value + parts[k]
                    value = value + parts[lane_row + k]
                    inputs[current_at + k] = value * SQRT_HALF
        # Output network (ReLU, 1x1, ReLU, 1x1).
        for s in range(skip_channels):
            bias = skip_bias[s]
            for b in range(LANES):
                k = s * LANES + b
                value = bias + skips[k]
                value = value + skips[skip_channels * LANES + k]
                activation[k] = max(value, ZERO)
        for s in range(hidden_size):
            for b in range(LANES):
                hidden[s * LANES + b] = flat_out1_bias[s]
        lanes_product(activation, 0, skip_channels, flat_out1, 0, hidden_size, hidden, 0)
        for k in range(hidden_size * LANES):
            hidden[k] = max(hidden[k], ZERO)
        for q in range(class_size):
            for b in range(LANES):
                logits[q * LANES + b] = flat_out2_bias[q]
        lanes_product(hidden, 0, hidden_size, flat_out2, 0, class_size, logits, 0)
        for b in range(count):
            for q in range(class_size):
                lane_logits[q] = logits[q * LANES + b]
            if save_logits:
                for q in range(classes):
                    logits_out[first + b, t, q] = lane_logits[q]
            drawn = sample_class(lane_logits, cdf, work, uniforms[first + b, t], inv_temperature, greedy)
            samples[first + b, t] = drawn
            if synthesises:
                value, fed = synthesised_sample(predictions[b], drawn, levels, history[first + b],
                                                teacher_signal[first + b, t], use_teacher,
                                                synthesis_rows[first + b, t])
                signal_out[first + b, t] = value
                current[b] = mu_law_class(fed, mu, log1p_mu)
            else:
                current[b] = teacher[first + b, t] if use_teacher else drawn
    for b in range(count):
        previous[first + b] = current[b]


@cached_jit(parallel=True, fastmath=FASTMATH, error_model="numpy", nogil=True)
def run_lane_blocks(starts, weights, options, chunk, conditioning, constant, queues, history, previous):
    """B utterances in blocks of at most LANES, block k = utterances ``starts[k] .. starts[k+1] - 1``,
    blocks spread over the threads (which never wait for each other).

    Args:
        starts: int64 (blocks + 1,): the first utterance of every block, then B.
        weights: :class:`FusedWeights`.
        options: :class:`KernelOptions`.
        chunk: :class:`Chunk` of the batch (arrays (B, T', ...)).
        conditioning: float32 (B, T', C): the upsampled codes at the sample rate.
        constant: float32 (blocks, L, 4W, LANES): every gate's starting value per block and lane.
        queues: float32 (blocks, slots, R, LANES): the queues' state, updated in place.
        history: float64 (B, M): the synthesis state, updated in place.
        previous: int64 (B,): the sample fed first, updated to the one to feed next.
    """
    for block in prange(starts.shape[0] - 1):
        _lane_block_worker(starts[block], starts[block + 1] - starts[block], weights, options, chunk, conditioning,
                           constant[block], queues[block], history, previous)
