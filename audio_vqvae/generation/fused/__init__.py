"""Fused CPU kernels for the per-sample WaveNet loop (numba).

The PyTorch queue implementation spends nearly all of its time in operator dispatch: ~10 small ops
per layer per sample. Here one compiled function runs the whole loop with all weights in a layout
made for it (inputs-major), with no allocation per sample, a vectorisable rational tanh, and
inverse-CDF sampling over a 256-entry scratch buffer instead of a softmax copy. Products keep their
partial sums in registers (explicit 8-float vectors): along the outputs for one utterance, along a
block of 8 utterances (activations (channels, 8), batch innermost) for a batch.

The modules, by concept:
    numerics      compile options, the on-disk cache, the gate activation and the sampler
    synthesis     one step of a decoder's synthesis (prediction, new sample, μ-law class)
    barrier       atomics and the handshake of two threads on one utterance
    lanes         register-held vectors and the products built on them
    utterance     one utterance on one or two threads, and its precomputed conditioning part
    lane_blocks   a batch in blocks of LANES utterances
    weights       :class:`FusedWeights`, the decoder's weights in kernel layout
    arguments     :class:`KernelOptions` and :class:`Chunk`, what a call takes besides the weights

Every kernel takes the weights as one :class:`FusedWeights`, its options as one :class:`KernelOptions`
and the arrays of the steps it runs as one :class:`Chunk`; only the state (queues, synthesis history,
the sample fed first) is passed apart, because the two threads of one utterance keep their own copies.

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

from audio_vqvae.generation.fused.arguments import Chunk, KernelOptions
from audio_vqvae.generation.fused.lane_blocks import run_lane_blocks
from audio_vqvae.generation.fused.lanes import LANES
from audio_vqvae.generation.fused.utterance import conditioning_biases, run_utterance, run_utterance_two_threads
from audio_vqvae.generation.fused.weights import FusedWeights

__all__ = ["LANES", "Chunk", "FusedWeights", "KernelOptions", "conditioning_biases", "run_lane_blocks",
           "run_utterance", "run_utterance_two_threads"]
