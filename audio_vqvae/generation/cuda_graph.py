"""CUDA-graph generation: one whole generation step captured once, replayed per sample, batched.

One step of the PyTorch path (:meth:`WaveNet.step` plus :func:`sample_inverse_cdf`) is ~15 small
kernels per layer: launched one by one from Python, batch-1 speed on a GPU is bound by the launch
overhead, not by the arithmetic. Here the step (every layer through the per-layer queues, the output
head and the inverse-CDF sampling from a precomputed uniform) is written with fixed shapes and
device-side indices only, so it can be captured in a ``torch.cuda.CUDAGraph`` and replayed with one
launch per sample. Everything it reads or writes lives in static buffers (:class:`GraphStep`): the
queues, the step counters, and per chunk the precomputed gate biases, uniforms (and teacher samples)
copied in before the chunk's replays and the samples (and logits) copied out after them.

The step performs exactly the arithmetic of :meth:`WaveNet.step` in the same order, on the same
weights (the queue slot is picked with ``index_select`` / ``index_copy_`` of a device tensor instead
of a Python integer, and the dilated weights' taps are made contiguous once instead of per matmul:
both only move values, without rounding), so it draws the samples the eager PyTorch path draws for
the same uniforms. The same code runs eagerly without capture (``capture=False``,
the default off CUDA): that is how the CPU test suite checks it against the PyTorch path.

Example:
    >>> import torch
    >>> from audio_vqvae.config import WaveNetConfig
    >>> from audio_vqvae.generation.engine import draw_uniforms
    >>> from audio_vqvae.wavenet import WaveNet
    >>> net = WaveNet(WaveNetConfig(stacks=1, layers_per_stack=3, residual_channels=8, gate_channels=8,
    ...                             skip_channels=8, conditioning_channels=4, speaker_dim=4), 2, 3, (2,)).eval()
    >>> conditioning = torch.randn(2, 4, 50)                              # (B, C, T)
    >>> out = generate_graph(net, conditioning, torch.tensor([0, 1]), 1.0, draw_uniforms([1, 2], 50),
    ...                      chunk_steps=16, capture=False)
    >>> out.samples.shape                                                 # (B, T)
    torch.Size([2, 50])
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from audio_vqvae.wavenet import GenerationOutput, WaveNet

WARMUP_STEPS = 3  # eager steps on a side stream before capture (cuBLAS handles and workspaces get made there)


class GraphStep:
    """Static buffers of a batched generation and the one step over them (capturable: no host sync, no
    Python-int indexing of device data).

    Args:
        decoder: the WaveNet (eval mode); the step reads its parameters in place.
        batch: utterances B.
        chunk_steps: steps per chunk T'; the static per-chunk buffers hold this many.
        temperature: softmax temperature, fixed for the graph; <= 0 is greedy.
        teacher: whether teacher samples are fed instead of the generated ones.
        return_logits: whether the logits of every step are kept.
        device, dtype: of the queues and biases (the decoder's).

    Attributes:
        queues: L x Tensor[B x R x dilation_l], as :class:`~audio_vqvae.wavenet.GenerationState`.
        position: LongTensor[] steps done since the start (selects every layer's queue slot).
        index: LongTensor[1] step within the current chunk (selects the chunk buffers' row).
        previous: LongTensor[B] the sample fed at the next step.
        biases: Tensor[T' x L x B x G] this chunk's gate biases (:meth:`WaveNet.layer_biases`).
        uniforms: DoubleTensor[T' x B] this chunk's uniform numbers.
        teacher_samples: LongTensor[T' x B] this chunk's teacher samples (empty without a teacher).
        samples: LongTensor[T' x B] this chunk's drawn samples.
        logits: Tensor[T' x B x Q] this chunk's logits (empty unless ``return_logits``).
    """

    def __init__(self, decoder: WaveNet, batch: int, chunk_steps: int, temperature: float, *, teacher: bool,
                 return_logits: bool, device: torch.device, dtype: torch.dtype = torch.float32):
        self.decoder = decoder
        self.temperature = temperature
        self.use_teacher = teacher
        self.keep_logits = return_logits
        config = decoder.config
        layers, classes = len(decoder.layers), decoder.quantization_channels
        self.queues = decoder.new_state(batch, device, dtype).queues
        self.dilations = torch.tensor([layer.dilation for layer in decoder.layers], dtype=torch.long, device=device)
        self.position = torch.zeros((), dtype=torch.long, device=device)
        self.index = torch.zeros(1, dtype=torch.long, device=device)
        self.previous = torch.full((batch,), decoder.silence, dtype=torch.long, device=device)
        self.biases = torch.zeros(chunk_steps, layers, batch, config.gate_channels, device=device, dtype=dtype)
        self.uniforms = torch.zeros(chunk_steps, batch, dtype=torch.float64, device=device)
        self.teacher_samples = torch.zeros(chunk_steps if teacher else 0, batch, dtype=torch.long, device=device)
        self.samples = torch.zeros(chunk_steps, batch, dtype=torch.long, device=device)
        self.logits = torch.zeros(chunk_steps if return_logits else 0, batch, classes, device=device, dtype=dtype)
        # The two taps of every dilated weight, (R, G) each, made contiguous once: the eager step's
        # ``weight[:, :, k].t()`` is strided in both dimensions, so every matmul copies it to exactly this
        # layout first (2 of its ~15 kernels per layer); the product itself is the same call on the same values.
        self.taps = [(layer.dilated.weight[:, :, 0].t().contiguous(), layer.dilated.weight[:, :, 1].t().contiguous())
                     for layer in decoder.layers]

    def reset(self) -> None:
        """Back to the first step: empty queues (causal zero padding), silence as the previous sample."""
        for queue in self.queues:
            queue.zero_()
        self.position.zero_()
        self.index.zero_()
        self.previous.fill_(self.decoder.silence)

    def step(self) -> None:
        """One sample for every utterance: :meth:`WaveNet.step` and :func:`sample_inverse_cdf`, op for op."""
        from audio_vqvae.generation.engine import sample_inverse_cdf

        decoder = self.decoder
        biases = self.biases.index_select(0, self.index).squeeze(0)  # (L, B, G)
        slots = torch.remainder(self.position, self.dilations)  # (L,): each layer's ring-buffer slot
        x = decoder.input_embedding(self.previous)  # (B, R)
        skips = 0
        for number, (layer, queue, (tap_past, tap_now)) in enumerate(zip(decoder.layers, self.queues, self.taps)):
            slot = slots[number:number + 1]  # (1,) on the device: a Python int would be baked into the graph
            past = queue.index_select(2, slot).squeeze(2)  # (B, R): the layer's input `dilation` steps ago
            pre = past @ tap_past + x @ tap_now + biases[number]  # tap 0 sees t - dilation, tap 1 sees t
            queue.index_copy_(2, slot, x.unsqueeze(2))
            residual, skip = layer._gate(x.unsqueeze(2), pre.unsqueeze(2))
            x, skips = residual.squeeze(2), skips + skip.squeeze(2)
        logits = decoder.output(skips.unsqueeze(2)).squeeze(2)  # (B, Q)
        uniforms = self.uniforms.index_select(0, self.index).squeeze(0)  # (B,)
        sample = sample_inverse_cdf(logits, uniforms, self.temperature)  # (B,)
        self.samples.index_copy_(0, self.index, sample.unsqueeze(0))
        if self.keep_logits:
            self.logits.index_copy_(0, self.index, logits.unsqueeze(0))
        if self.use_teacher:
            self.previous.copy_(self.teacher_samples.index_select(0, self.index).squeeze(0))
        else:
            self.previous.copy_(sample)
        self.position.add_(1)
        self.index.add_(1)


def capture_step(step: GraphStep) -> "torch.cuda.CUDAGraph":
    """Capture ``step.step()`` in a CUDA graph; the state is reset afterwards (the warm-up advanced it)."""
    side = torch.cuda.Stream(device=step.position.device)
    side.wait_stream(torch.cuda.current_stream(step.position.device))
    with torch.cuda.stream(side):  # warm-up off the default stream, as torch.cuda.graphs recommends
        for _ in range(WARMUP_STEPS):
            step.index.zero_()
            step.step()
    torch.cuda.current_stream(step.position.device).wait_stream(side)
    step.reset()
    graph = torch.cuda.CUDAGraph()
    # thread_local: the training loader's pin-memory thread may allocate pinned memory meanwhile (the
    # trainer's audio round runs with the epoch's loader alive); only this thread's calls matter here.
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        step.step()
    step.reset()  # capture records kernels without running them, but reset anyway: the buffers are ours
    return graph


@torch.no_grad()
def generate_graph(decoder: WaveNet, conditioning: torch.Tensor, speaker: torch.Tensor, temperature: float,
                   uniforms: torch.Tensor, teacher: Optional[torch.Tensor] = None, return_logits: bool = False,
                   progress: Optional[Callable[[int], None]] = None, chunk_steps: int = 1024, *,
                   capture: Optional[bool] = None) -> GenerationOutput:
    """Generate with the captured step (CUDA) or the same step run eagerly (any device, for checks).

    Args:
        decoder: the WaveNet (eval mode), on the device of ``conditioning``.
        conditioning: Tensor[B x C x T] at the sample rate.
        speaker: LongTensor[B].
        temperature: softmax temperature; <= 0 is greedy.
        uniforms: DoubleTensor[B x T], one uniform number per step and utterance (any device).
        teacher: optional LongTensor[B x T] fed instead of the generated samples.
        return_logits: also return Tensor[B x Q x T].
        progress: called with the number of steps done after every chunk.
        chunk_steps: steps per chunk (the static bias buffer holds this many).
        capture: capture a CUDA graph (default: when ``conditioning`` is on CUDA); False runs the step eagerly.

    Returns:
        :class:`~audio_vqvae.wavenet.GenerationOutput` with ``samples`` LongTensor[B x T].
    """
    if capture is None:
        capture = conditioning.is_cuda
    batch, _, steps = conditioning.shape
    device = conditioning.device
    chunk_steps = max(1, min(chunk_steps, steps))
    state = GraphStep(decoder, batch, chunk_steps, temperature, teacher=teacher is not None,
                      return_logits=return_logits, device=device, dtype=conditioning.dtype)
    graph = capture_step(state) if capture else None
    samples = torch.empty(batch, steps, dtype=torch.long, device=device)
    logits_out = conditioning.new_empty(batch, decoder.quantization_channels, steps) if return_logits else None
    uniforms = uniforms.to(device)
    for start in range(0, steps, chunk_steps):
        stop = min(start + chunk_steps, steps)
        length = stop - start
        # The same biases as the PyTorch path computes for this chunk, copied into the static buffer.
        biases = torch.stack(decoder.layer_biases(conditioning[:, :, start:stop], speaker), dim=0)  # (L, B, G, T')
        state.biases[:length].copy_(biases.permute(3, 0, 1, 2))  # (T', L, B, G)
        state.uniforms[:length].copy_(uniforms[:, start:stop].t())
        if teacher is not None:
            state.teacher_samples[:length].copy_(teacher[:, start:stop].t())
        state.index.zero_()
        for _ in range(length):
            if graph is not None:
                graph.replay()
            else:
                state.step()
        samples[:, start:stop] = state.samples[:length].t()
        if logits_out is not None:
            logits_out[:, :, start:stop] = state.logits[:length].permute(1, 2, 0)
        if progress is not None:
            progress(stop)
    return GenerationOutput(samples=samples, logits=logits_out)
