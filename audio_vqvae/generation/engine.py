"""Batched WaveNet generation: one entry point, a fused CPU path and the PyTorch path.

Everything that does not depend on the previous sample is computed in parallel before the sample
loop: the codes upsampled to the sample rate and the speaker projection of every layer. The PyTorch
path also precomputes every layer's conditioning projection for all time steps, chunk by chunk. For a
batch, the fused path instead folds that projection into each layer's gate product (C more inputs
per gate): precomputed, it is L x G floats written and read again per sample and utterance (10 KB
for SMALL), and for a block of utterances moving them cost more than the products (folded: 1.17x
faster at batch 16 on two threads, measured A/B). One utterance on two threads is bound by the
threads' per-layer handshakes instead, so there the projection is precomputed (by a kernel that
sums in the same order, keeping a batch bit-identical to its utterances one by one).

On CUDA the PyTorch path's step (~15 kernels per layer) is captured once in a CUDA graph and replayed
per sample (:mod:`audio_vqvae.generation.cuda_graph`, method ``"graph"``), with the same arithmetic
as the eager path, so the same samples.

Sampling is inverse-CDF with one pre-drawn uniform number per step and utterance, drawn from a
``torch.Generator`` seeded with that utterance's seed: both paths consume the same numbers, and an
utterance's samples depend only on its own seed, so a batch equals its utterances one by one.

Example:
    >>> import torch
    >>> from audio_vqvae.config import WaveNetConfig
    >>> from audio_vqvae.wavenet import WaveNet
    >>> net = WaveNet(WaveNetConfig(stacks=1, layers_per_stack=3, residual_channels=8, gate_channels=8,
    ...                             skip_channels=8, conditioning_channels=4, speaker_dim=4), 2, 3, (2,)).eval()
    >>> conditioning = torch.randn(2, 4, 50)                              # (B, C, T)
    >>> fused = generate(net, conditioning, torch.tensor([0, 1]), seeds=[1, 2], method="fused")
    >>> torch_path = generate(net, conditioning, torch.tensor([0, 1]), seeds=[1, 2], method="torch")
    >>> fused.samples.shape, torch.equal(fused.samples, torch_path.samples)  # (B, T)
    (torch.Size([2, 50]), True)
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Callable, Literal, Optional, Sequence

import numpy as np
import torch

from audio_vqvae.lpc import Synthesis
from audio_vqvae.mulaw import mu_law_decode, mu_law_encode
from audio_vqvae.wavenet import GenerationOutput, WaveNet

Method = Literal["auto", "fused", "torch", "graph"]
METHODS = ("auto", "fused", "torch", "graph")
CHUNK_BYTES = 64 * 2**20  # PyTorch path: gate biases computed at once (all utterances), bounds their memory
FUSED_CHUNK_SAMPLES = 2**15  # fused path, batch > 1: samples (all utterances) per kernel call, paces progress
THREAD_PROBE_STEPS = 512  # fused path, one utterance: steps timed with two threads, then with one
# Fused path, one utterance: its precomputed gate biases, one buffer reused by every chunk. Small enough
# to stay in L3 next to the weights; a larger buffer's first touch alone (a page fault per 4 KB) cost
# ~6 us per step of the first chunk, a quarter of a step's time.
FUSED_BIAS_BYTES = 8 * 2**20


# ------------------------------------------------------------------ sampling shared by both paths


def draw_uniforms(seeds: Sequence[int], steps: int) -> torch.Tensor:
    """The random numbers of a generation: DoubleTensor[B x T], row b from a generator seeded with ``seeds[b]``."""
    rows = [torch.rand(steps, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)
            for seed in seeds]
    return torch.stack(rows) if rows else torch.empty(0, steps, dtype=torch.float64)


def seeds_from(generator: Optional[torch.Generator], batch: int) -> list[int]:
    """One seed per utterance from ``generator`` (or torch's global one): reproducible under ``torch.manual_seed``."""
    return torch.randint(0, 2**62, (batch,), generator=generator).tolist()


def sample_inverse_cdf(logits: torch.Tensor, uniforms: torch.Tensor, temperature: float) -> torch.Tensor:
    """One class per row of Tensor[B x Q] from softmax(logits / temperature) and DoubleTensor[B] uniforms.

    The class is the first whose cumulative probability (float64, class order) exceeds ``u``; a
    temperature <= 0 is greedy (the first argmax). The fused kernels implement the same rule.
    """
    if temperature <= 0:
        return logits.argmax(dim=1)
    scaled = logits.double()
    weights = torch.exp((scaled - scaled.max(dim=1, keepdim=True).values) * (1.0 / temperature))
    cdf = torch.cumsum(weights, dim=1)
    threshold = (uniforms.to(cdf.device) * cdf[:, -1]).unsqueeze(1)
    return torch.searchsorted(cdf, threshold, right=True).squeeze(1).clamp_(max=logits.shape[1] - 1)


# ------------------------------------------------------------------ state


@dataclass
class FusedState:
    """State of a fused generation, made fresh for every call.

    Attributes:
        queues: float32 array (B, slots, R): every layer's ring buffer of its last ``dilation`` inputs
            (layer l owns rows ``offsets[l]`` to ``offsets[l] + dilation_l``); zeros match causal padding.
            For a batch run in blocks of utterances: (blocks, slots, R, LANES), the batch innermost.
        previous: int64 array (B,): the sample fed at the next step (μ-law silence at the start).
        position: steps generated so far.
    """

    queues: np.ndarray
    previous: np.ndarray
    position: int = 0

    @classmethod
    def create(cls, slots: int, batch: int, channels: int, silence: int, blocks: int = 0,
               lanes: int = 0) -> "FusedState":
        shape = (blocks, slots, channels, lanes) if blocks else (batch, slots, channels)
        return cls(np.zeros(shape, np.float32), np.full(batch, silence, np.int64))


# ------------------------------------------------------------------ availability


@functools.lru_cache(maxsize=1)
def fused_available() -> bool:
    """Whether the numba kernels import (compilation happens on first use and is cached on disk)."""
    try:
        from audio_vqvae.generation import fused  # noqa: F401
    except Exception:  # numba missing or broken: the PyTorch path still works
        return False
    return True


def resolve_method(method: str, device: torch.device, synthesis: bool = False) -> str:
    """The path that runs: ``"auto"`` is the fused kernels on CPU (when numba imports), the CUDA graph on
    CUDA unless the decoder synthesises (``synthesis``: an LPC split or a harmonic part, which the graph does
    not generate yet), and the PyTorch path otherwise. ``"graph"`` off CUDA runs the same step eagerly (a
    check, not fast)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if synthesis and method == "graph":
        raise ValueError("method 'graph' does not generate a decoder with a synthesis (LPC split or harmonic part) "
                         "yet; use 'torch' (or 'auto')")
    if method == "auto":
        if device.type == "cuda":
            return "torch" if synthesis else "graph"
        return "fused" if device.type == "cpu" and fused_available() else "torch"
    if method == "fused":
        if device.type != "cpu":
            raise ValueError("the fused generator runs on CPU; use method='torch' for other devices")
        if not fused_available():
            raise RuntimeError("the fused generator needs numba (pip install numba)")
    return method


# ------------------------------------------------------------------ entry point


@torch.no_grad()
def generate(decoder: WaveNet, conditioning: torch.Tensor, speaker: torch.Tensor, *, temperature: float = 1.0,
             seeds: Optional[Sequence[int]] = None, generator: Optional[torch.Generator] = None,
             method: Method = "auto", teacher: Optional[torch.Tensor] = None, return_logits: bool = False,
             progress: Optional[Callable[[int], None]] = None, chunk_steps: Optional[int] = None,
             synthesis: Optional[torch.Tensor] = None) -> GenerationOutput:
    """Generate μ-law samples autoregressively for a batch of utterances.

    Args:
        decoder: the WaveNet (eval mode).
        conditioning: Tensor[B x C x T] at the sample rate (``VQVAE.conditioning``).
        speaker: LongTensor[B] of speaker ids.
        temperature: softmax temperature; 0 is greedy decoding (argmax).
        seeds: one seed per utterance; if None they are drawn from ``generator`` (or torch's global one).
        generator: source of the seeds when ``seeds`` is None.
        method: ``"fused"`` (numba, CPU), ``"torch"`` (per-layer queues, any device), ``"graph"`` (the
            PyTorch step captured in a CUDA graph; eager off CUDA) or ``"auto"`` (fused on CPU when numba
            is available, graph on CUDA without ``synthesis``, else torch: :func:`resolve_method`).
        teacher: optional LongTensor[B x T]: feed these samples instead of the generated ones (checks); with
            ``synthesis``, the signal Tensor[B x T] to feed instead of the synthesised one.
        return_logits: also return the logits Tensor[B x Q x T] every sample was drawn from.
        progress: called with the number of steps done after every chunk.
        chunk_steps: steps per chunk (progress is reported after each); default: about 64 MiB of
            precomputed gate biases (PyTorch path), 8 MiB (fused path, one utterance), or about 32k
            samples over the batch (fused path, batch > 1, which precomputes none).
        synthesis: Tensor[B x T x (2 + M)] per-sample synthesis rows (:func:`audio_vqvae.lpc.synthesis_rows`:
            the harmonic part, the excitation's gain and the LPC prediction coefficients), for a decoder that
            synthesises (``lpc_order`` or ``harmonics``): the samples drawn are the excitation, scaled by the gain
            and added to the prediction.

    Returns:
        :class:`~audio_vqvae.wavenet.GenerationOutput` with ``samples`` LongTensor[B x T] (and ``signal``
        with ``synthesis``).
    """
    batch, _, steps = conditioning.shape
    if speaker.shape != (batch,):
        raise ValueError(f"speaker must have shape ({batch},), got {tuple(speaker.shape)}")
    weights = next(decoder.parameters()).device
    if conditioning.device != weights or speaker.device != weights:
        raise ValueError(f"the decoder is on {weights} but the conditioning is on {conditioning.device} and the "
                         f"speakers on {speaker.device}: move them to the decoder's device")
    if seeds is None:
        seeds = seeds_from(generator, batch)
    if len(seeds) != batch:
        raise ValueError(f"need one seed per utterance ({batch}), got {len(seeds)}")
    if (synthesis is None) != (decoder.prediction_embedding is None):
        raise ValueError("a decoder with an LPC split or a harmonic part generates with its synthesis rows "
                         "(synthesis=..., VQVAE.decoder_inputs), and only it does")
    if synthesis is not None and synthesis.shape[:2] != (batch, steps):
        raise ValueError(f"synthesis must have shape ({batch}, {steps}, 2 + order), got {tuple(synthesis.shape)}")
    method = resolve_method(method, conditioning.device, synthesis=synthesis is not None)
    uniforms = draw_uniforms(seeds, steps) if temperature > 0 else torch.zeros(batch, steps, dtype=torch.float64)
    if chunk_steps is None:
        bytes_per_step = 4 * batch * len(decoder.layers) * (decoder.config.gate_channels + 2)
        if method != "fused":
            chunk_steps = max(256, CHUNK_BYTES // bytes_per_step)
        elif batch == 1:
            chunk_steps = max(256, FUSED_BIAS_BYTES // bytes_per_step)
        else:  # the lanes kernel precomputes no biases
            chunk_steps = max(256, FUSED_CHUNK_SAMPLES // batch)
    if method == "graph":
        from audio_vqvae.generation.cuda_graph import generate_graph

        return generate_graph(decoder, conditioning, speaker, temperature, uniforms, teacher, return_logits,
                              progress, chunk_steps)
    run = _generate_fused if method == "fused" else _generate_torch
    return run(decoder, conditioning, speaker, temperature, uniforms, teacher, return_logits, progress, chunk_steps,
               synthesis)


def _generate_torch(decoder, conditioning, speaker, temperature, uniforms, teacher, return_logits, progress,
                    chunk_steps, rows=None):
    """The per-layer-queue path (:meth:`WaveNet.step`), with biases precomputed per chunk."""
    batch, _, steps = conditioning.shape
    device = conditioning.device
    classes = decoder.quantization_channels
    state = decoder.new_state(batch, device, conditioning.dtype)
    samples = torch.empty(batch, steps, dtype=torch.long, device=device)
    logits_out = conditioning.new_empty(batch, classes, steps) if return_logits else None
    previous = torch.full((batch,), decoder.silence, dtype=torch.long, device=device)
    uniforms = uniforms.to(device)
    synthesis = _Synthesis(rows, classes) if rows is not None else None
    for start in range(0, steps, chunk_steps):
        stop = min(start + chunk_steps, steps)
        biases = torch.stack(decoder.layer_biases(conditioning[:, :, start:stop], speaker), dim=0)  # (L, B, G, T')
        biases = biases.permute(3, 0, 1, 2).contiguous()  # (T', L, B, G): one step's slice is contiguous
        for t in range(start, stop):
            prediction = synthesis.predict(t) if synthesis is not None else None
            logits = decoder.step(state, previous, biases[t - start], prediction)
            samples[:, t] = sample_inverse_cdf(logits, uniforms[:, t], temperature)
            if logits_out is not None:
                logits_out[:, :, t] = logits
            if synthesis is not None:
                previous = synthesis.advance(t, samples[:, t], None if teacher is None else teacher[:, t])
            else:
                previous = teacher[:, t] if teacher is not None else samples[:, t]
        if progress is not None:
            progress(stop)
    signal = synthesis.signal.to(conditioning.dtype) if synthesis is not None else None
    return GenerationOutput(samples=samples, logits=logits_out, signal=signal)


class _Synthesis(Synthesis):
    """:class:`audio_vqvae.lpc.Synthesis` in the WaveNet's μ-law classes: the prediction's class is its input, the
    drawn class is the excitation, and the new sample's class is the next input."""

    def __init__(self, rows: torch.Tensor, classes: int):
        super().__init__(rows)
        self.classes = classes

    def predict(self, t: int) -> torch.Tensor:
        return mu_law_encode(super().predict(t), self.classes)

    def advance(self, t: int, excitation: torch.Tensor, teacher: Optional[torch.Tensor]) -> torch.Tensor:
        """Add the drawn excitation class to the prediction; the class of the new sample (the next input)."""
        return mu_law_encode(super().advance(t, mu_law_decode(excitation, self.classes), teacher), self.classes)


def _kernel_constant(decoder: WaveNet, speaker: torch.Tensor) -> np.ndarray:
    """The gates' starting values, speaker projection + dilated-conv bias, in kernel gate order: (B, L, 4W)."""
    from audio_vqvae.generation.fused import FusedWeights

    order = torch.as_tensor(FusedWeights.gate_order(decoder.config.gate_channels))
    gates = decoder.config.gate_channels
    index = torch.where(order >= 0, order, torch.full_like(order, gates))  # padding -> an appended zero row

    def kernel_order(rows: torch.Tensor) -> torch.Tensor:  # (..., G, X) -> (..., 4W, X)
        return torch.cat([rows, rows.new_zeros(rows.shape[:-2] + (1, rows.shape[-1]))], dim=-2)[..., index, :]

    # For every speaker of the table, then picked: a product over the batch would round differently
    # with the batch size, and a batch must give exactly the samples of its utterances one by one.
    table = decoder.speaker_embedding.weight  # (N, D)
    constant = torch.stack([layer.speaker(table) + layer.dilated.bias for layer in decoder.layers], dim=1)  # (N, L, G)
    constant = kernel_order(constant[speaker].unsqueeze(-1)).squeeze(-1)  # (B, L, 4W)
    return np.ascontiguousarray(constant.detach().float().numpy())


def _generate_fused(decoder, conditioning, speaker, temperature, uniforms, teacher, return_logits, progress,
                    chunk_steps, lpc=None):
    # ``lpc``: the synthesis rows (B, T, 2 + M): the harmonic part, the gain, then the LPC coefficients.
    import numba

    from audio_vqvae.generation import fused

    batch, _, steps = conditioning.shape
    classes = decoder.quantization_channels
    weights = fused.FusedWeights.from_decoder(decoder)
    layers, _, _, width2 = weights.dilated.shape
    constant = _kernel_constant(decoder, speaker)  # (B, L, 4W)
    conditioning_steps = conditioning.float().transpose(1, 2)  # (B, T, C)
    samples = torch.empty(batch, steps, dtype=torch.long)
    logits_out = torch.empty(batch, classes, steps) if return_logits else None
    greedy = temperature <= 0
    options = fused.KernelOptions(inv_temperature=0.0 if greedy else 1.0 / temperature, greedy=greedy,
                                  use_teacher=teacher is not None, save_logits=return_logits)
    threads = numba.get_num_threads()
    # A batch runs in blocks of utterances, batch innermost (one kernel for any batch > 1).
    lane_blocks = _lane_block_starts(batch, threads, fused.LANES) if batch > 1 else None
    state = FusedState.create(weights.queue_slots, batch, decoder.config.residual_channels, decoder.silence,
                              blocks=0 if lane_blocks is None else len(lane_blocks) - 1, lanes=fused.LANES)
    if lane_blocks is None:
        constant = constant[0].reshape(layers, 2, width2)
    else:
        constant = _lane_constant(constant, lane_blocks, fused.LANES)
    # One utterance may run on two threads that wait for each other at every layer: fast on idle cores,
    # slow when other processes hold one of them. Both kernels give identical samples, so the choice is
    # re-made per chunk from measured speed (each is tried on a short chunk first).
    chooser = _ThreadChooser(enabled=batch == 1 and threads >= 2)
    # A decoder that synthesises: each utterance's last residual samples (the synthesis state); a dummy of
    # the same type otherwise, so that one compiled kernel serves both.
    use_lpc = lpc is not None
    history = np.zeros((batch, lpc.shape[2] - 2 if use_lpc else 1), np.float64)
    signal = torch.empty(batch, steps) if use_lpc else None
    # Reused by every chunk: fresh pages would cost a page fault per 4 KB, as much as computing them.
    bias_buffer = np.empty((min(chunk_steps, steps) if lane_blocks is None else 0, layers, 2, width2), np.float32)
    start = 0
    while start < steps:
        two_threads, limit = chooser.next(chunk_steps)
        stop = min(start + limit, steps)
        length = stop - start
        began = time.perf_counter()
        # Every kernel argument is C-contiguous, so each kernel is compiled (and cached) once.
        chunk_conditioning = np.ascontiguousarray(conditioning_steps[:, start:stop].numpy())  # (B, T', C)
        chunk = fused.Chunk(
            position=state.position,
            uniforms=np.ascontiguousarray(uniforms[:, start:stop].numpy()),
            teacher=(np.ascontiguousarray(teacher[:, start:stop].to(torch.long).numpy())
                     if teacher is not None and not use_lpc else np.zeros((batch, length), np.int64)),
            teacher_signal=(np.ascontiguousarray(teacher[:, start:stop].float().numpy())
                            if use_lpc and teacher is not None else np.zeros((batch, length), np.float32)),
            synthesis_rows=(np.ascontiguousarray(lpc[:, start:stop].double().numpy()) if use_lpc
                            else np.zeros((batch, 0, 2), np.float64)),
            samples=np.empty((batch, length), np.int64),
            logits=np.empty((batch, length if return_logits else 0, classes), np.float32),
            signal=np.zeros((batch, length if use_lpc else 0), np.float32),
        )
        if lane_blocks is not None:
            fused.run_lane_blocks(lane_blocks, weights, options, chunk, chunk_conditioning, constant, state.queues,
                                  history, state.previous)
        else:  # one utterance: the conditioning part of the gates first, over all threads
            biases = bias_buffer[:length]
            fused.conditioning_biases(weights.dilated, chunk_conditioning[0], constant, biases)
            run = fused.run_utterance_two_threads if two_threads else fused.run_utterance
            state.previous[0] = run(weights, options, chunk.utterance(0), biases, state.queues[0], history[0],
                                    int(state.previous[0]))
        chooser.record(two_threads, length, time.perf_counter() - began)
        state.position = stop
        samples[:, start:stop] = torch.from_numpy(chunk.samples)
        if signal is not None:
            signal[:, start:stop] = torch.from_numpy(chunk.signal)
        if logits_out is not None:
            logits_out[:, :, start:stop] = torch.from_numpy(chunk.logits).transpose(1, 2)
        if progress is not None:
            progress(stop)
        start = stop
    return GenerationOutput(samples=samples.to(conditioning.device), logits=logits_out,
                            signal=None if signal is None else signal.to(conditioning.device))


def _lane_constant(constant: np.ndarray, starts: np.ndarray, lanes: int) -> np.ndarray:
    """(B, L, 4W) per-utterance gate starting values -> (blocks, L, 4W, lanes), the batch innermost (unused lanes 0)."""
    blocks = np.zeros((len(starts) - 1,) + constant.shape[1:] + (lanes,), np.float32)
    for block in range(len(starts) - 1):
        members = constant[starts[block]:starts[block + 1]]  # (count, L, 4W)
        blocks[block, :, :, :len(members)] = np.moveaxis(members, 0, -1)
    return blocks


def _lane_block_starts(batch: int, threads: int, lanes: int) -> np.ndarray:
    """Split a batch into blocks of at most ``lanes`` utterances, at least one block per thread: (blocks + 1,).

    A block costs the same whether its lanes are full or not, so a small batch is spread over all
    threads rather than packed into one block.
    """
    blocks = max(-(-batch // lanes), min(threads, batch))
    return np.array([(batch * k) // blocks for k in range(blocks + 1)], np.int64)


class _ThreadChooser:
    """Picks one or two threads per chunk for a single utterance from the speed measured so far."""

    REPROBE_EVERY = 32  # chunks

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.speed = {True: None, False: None}  # steps/s with two threads / one thread
        self.chunks = 0

    def next(self, chunk_steps: int) -> tuple[bool, int]:
        if not self.enabled:
            return False, chunk_steps
        self.chunks += 1
        for mode in (True, False):
            if self.speed[mode] is None:
                return mode, min(chunk_steps, THREAD_PROBE_STEPS)
        best = self.speed[True] >= self.speed[False]
        if self.chunks % self.REPROBE_EVERY == 0:  # conditions change: measure the other one again
            return not best, min(chunk_steps, THREAD_PROBE_STEPS)
        return best, chunk_steps

    def record(self, mode: bool, steps: int, seconds: float) -> None:
        if self.enabled:
            self.speed[mode] = steps / max(seconds, 1e-9)
