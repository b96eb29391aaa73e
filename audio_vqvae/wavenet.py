"""WaveNet decoder (van den Oord et al. 2016) with local conditioning on upsampled codes and global
conditioning on a speaker embedding, plus the one-step update of incremental generation with per-layer
queues (Paine et al. 2016, "Fast Wavenet Generation Algorithm"), which :mod:`audio_vqvae.generation.engine`
runs.

Layout is (B, C, T) everywhere; during generation a single time step is (B, C).

Example:
    >>> import torch
    >>> from audio_vqvae.config import WaveNetConfig
    >>> cfg = WaveNetConfig(stacks=1, layers_per_stack=3, residual_channels=8, gate_channels=8,
    ...                     skip_channels=8, conditioning_channels=4, speaker_dim=4)
    >>> net = WaveNet(cfg, num_speakers=2, code_dim=3, upsample_factors=(2, 2))
    >>> conditioning = net.upsample(torch.randn(1, 3, 5))          # (B, C, T) at the sample rate
    >>> net(torch.randint(0, 256, (1, 20)), conditioning, torch.tensor([1])).shape
    torch.Size([1, 256, 20])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from audio_vqvae.config import WaveNetConfig
from audio_vqvae.excitation import SourceExcitation
from audio_vqvae.harmonic import HarmonicPart
from audio_vqvae.lpc import SourceFilter
from audio_vqvae.noise import NoiseEnvelope
from audio_vqvae.parts import DecoderPart


class ConditioningUpsampler(nn.Module):
    """Codes at the frame rate to conditioning at the sample rate, Tensor[B x D x T'] -> Tensor[B x C x T' * hop].

    A 3-wide convolution over frames, then for every encoder stride (last first) a nearest-neighbour
    repeat by the stride followed by a learned ``2 * stride + 1``-wide smoothing convolution. This is
    equivalent to a learned transposed convolution but works for any stride and gives exactly
    ``stride`` times as many steps. It is not causal: the whole code sequence is known before generation.
    """

    def __init__(self, code_dim: int, channels: int, factors: Sequence[int]):
        super().__init__()
        self.factors = tuple(factors)
        self.input = nn.Conv1d(code_dim, channels, kernel_size=3, padding=1)
        self.smoothing = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size=2 * s + 1, padding=s) for s in self.factors)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        x = self.input(codes)
        for factor, smooth in zip(self.factors, self.smoothing):
            x = smooth(x.repeat_interleave(factor, dim=2))
        return x


@torch.no_grad()
def ordinal_embedding_(weight: torch.Tensor, max_frequency: float = 64.0) -> torch.Tensor:
    """Initialise a Tensor[Q x R] class embedding so that neighbouring μ-law classes start out close.

    Row q holds random Fourier features ``cos(ω_r x_q + φ_r)`` of the class's companded amplitude
    ``x_q ∈ [-1, 1]``, with frequencies ω_r spaced geometrically from π/2 to ``max_frequency`` and
    random phases, scaled to unit variance. A default N(0, 1) embedding treats the 256 classes as
    unrelated symbols, and the decoder must learn from data that class 128 sounds like class 129;
    with this start the first layer sees amplitude structure from step 0. (On the demo corpus the
    first 50 training steps went the same either way; it is a prior, not a measured speed-up.) The
    embedding is still learned.
    """
    classes, channels = weight.shape
    x = torch.linspace(-1.0, 1.0, classes, dtype=torch.float64).unsqueeze(1)
    omega = torch.logspace(math.log10(math.pi / 2), math.log10(max_frequency), channels, dtype=torch.float64)
    phase = torch.rand(channels, dtype=torch.float64) * 2 * math.pi
    weight.copy_((math.sqrt(2.0) * torch.cos(x * omega + phase)).to(weight.dtype))
    return weight


class ResidualLayer(nn.Module):
    """One gated, dilated, causal layer: Tensor[B x R x T] -> (residual Tensor[B x R x T], skip Tensor[B x S x T])."""

    def __init__(self, config: WaveNetConfig, dilation: int):
        super().__init__()
        self.dilation = dilation
        gate = config.gate_channels
        self.dilated = nn.Conv1d(config.residual_channels, gate, kernel_size=2, dilation=dilation)
        self.conditioning = nn.Conv1d(config.conditioning_channels, gate, kernel_size=1, bias=False)
        self.speaker = nn.Linear(config.speaker_dim, gate, bias=False)
        self.residual = nn.Conv1d(gate // 2, config.residual_channels, kernel_size=1)
        self.skip = nn.Conv1d(gate // 2, config.skip_channels, kernel_size=1)

    def bias(self, conditioning: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
        """Everything in the gate that does not depend on the audio: Tensor[B x G x T]."""
        return self.conditioning(conditioning) + self.speaker(speaker).unsqueeze(2) + self.dilated.bias.view(1, -1, 1)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Causal padding happens here and only here: output t sees inputs t - dilation and t.
        pre = F.conv1d(F.pad(x, (self.dilation, 0)), self.dilated.weight, dilation=self.dilation) + bias
        return self._gate(x, pre)

    def _gate(self, x: torch.Tensor, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        filter_part, gate_part = pre.chunk(2, dim=1)
        z = torch.tanh(filter_part) * torch.sigmoid(gate_part)
        return (x + self.residual(z)) * math.sqrt(0.5), self.skip(z)


@dataclass
class GenerationState:
    """Per-layer input queues for incremental generation, made fresh for every call.

    ``queues[l]`` is Tensor[B x R x dilation_l]: the inputs of layer l at the last ``dilation_l``
    steps, used as a ring buffer indexed by ``position % dilation_l``. Zeros at the start match the
    causal zero padding of the parallel forward pass.
    """

    queues: list[torch.Tensor]
    position: int = 0

    @classmethod
    def create(cls, dilations: Sequence[int], batch: int, channels: int, device: torch.device,
               dtype: torch.dtype = torch.float32) -> "GenerationState":
        return cls([torch.zeros(batch, channels, d, device=device, dtype=dtype) for d in dilations])


@dataclass
class GenerationOutput:
    """Result of a generation: ``samples`` LongTensor[B x T] of μ-law classes and, if asked for,
    ``logits`` Tensor[B x Q x T] (the distribution each sample was drawn from). For a decoder with a
    synthesis (``lpc_order``, ``harmonics``) the classes are the excitation's and ``signal`` holds the synthesised
    Tensor[B x T] signal ``p + e`` (in the decoder's domain: still pre-emphasised, if the model is)."""

    samples: torch.Tensor
    logits: Optional[torch.Tensor] = field(default=None)
    signal: Optional[torch.Tensor] = field(default=None)


class WaveNet(nn.Module):
    """Autoregressive decoder over μ-law classes.

    Args:
        config: the decoder's part of the model config.
        num_speakers: rows of the speaker embedding (global conditioning).
        code_dim: size of the quantized code vectors (local conditioning input).
        upsample_factors: the encoder's strides; their product is the hop length.
    """

    def __init__(self, config: WaveNetConfig, num_speakers: int, code_dim: int, upsample_factors: Sequence[int]):
        super().__init__()
        config.validate()
        self.config = config
        self.quantization_channels = config.quantization_channels
        self.silence = config.quantization_channels // 2  # μ-law class of 0.0: the "previous sample" at t = 0
        self.input_embedding = nn.Embedding(config.quantization_channels, config.residual_channels)
        ordinal_embedding_(self.input_embedding.weight)
        self.speaker_embedding = nn.Embedding(num_speakers, config.speaker_dim)
        self.upsample = ConditioningUpsampler(code_dim, config.conditioning_channels, upsample_factors)
        self.layers = nn.ModuleList(ResidualLayer(config, d) for d in config.dilations)
        self.output = nn.Sequential(
            nn.ReLU(), nn.Conv1d(config.skip_channels, config.skip_channels, kernel_size=1),
            nn.ReLU(), nn.Conv1d(config.skip_channels, config.quantization_channels, kernel_size=1))
        # The optional parts (audio_vqvae.parts), each made only when on and after everything above, so the
        # paper's model is initialised exactly as before; their creation order is part of the initialisation.
        # Source excitation: the f0's harmonics added to the upsampled codes (audio_vqvae.excitation).
        self.excitation = (SourceExcitation(config.excitation_harmonics, config.conditioning_channels)
                           if config.excitation_harmonics else None)
        # Source-filter split (audio_vqvae.lpc): the envelope network; the WaveNet models its excitation.
        self.envelope = (SourceFilter(code_dim, config.speaker_dim, config.lpc_order, loss_weight=config.lpc_weight)
                         if config.lpc_order else None)
        # What the synthesis parts predict, p[t] (μ-law classes), is embedded and added to the embedded
        # previous sample.
        self.prediction_embedding = None
        if config.lpc_order or config.harmonics:
            self.prediction_embedding = nn.Embedding(config.quantization_channels, config.residual_channels)
            ordinal_embedding_(self.prediction_embedding.weight)
        # The harmonic part (audio_vqvae.harmonic): h from the codes, the speaker and f0.
        self.harmonic = (HarmonicPart(code_dim, config.speaker_dim, config.harmonics,
                                      loss_weight=config.harmonic_weight,
                                      spectral_weight=config.harmonic_spectral_weight) if config.harmonics else None)
        # The noise envelope (audio_vqvae.noise): the scale of the excitation the WaveNet draws.
        self.noise = (NoiseEnvelope(code_dim, config.speaker_dim, loss_weight=config.noise_weight,
                                    voiced_scale=config.voiced_noise)
                      if config.noise_envelope else None)

    @property
    def parts(self) -> list[DecoderPart]:
        """The decoder's optional parts that are on: conditioning parts first, then :attr:`synthesis_parts`, then the
        noise envelope."""
        return [part for part in (self.excitation, *self.synthesis_parts, self.noise) if part is not None]

    @property
    def synthesis_parts(self) -> list[DecoderPart]:
        """The synthesis parts in the order they explain the signal: the harmonic part ``h`` first, then the LPC
        split on what it leaves (``s − h``)."""
        return [part for part in (self.harmonic, self.envelope) if part is not None]

    @property
    def receptive_field(self) -> int:
        return self.config.receptive_field

    def embed_inputs(self, samples: torch.Tensor) -> torch.Tensor:
        """Embed the samples and shift them one step right, so that position t holds sample t − 1.

        Args:
            samples: LongTensor[B x T] of μ-law classes, or a float Tensor[B x Q x T] of one-hot (or soft)
                class vectors (differentiable, used to test causality).

        Returns:
            Tensor[B x R x T].
        """
        if samples.is_floating_point():
            embedded = torch.einsum("bqt,qr->brt", samples, self.input_embedding.weight)
        else:
            embedded = self.input_embedding(samples).transpose(1, 2)
        start = self.input_embedding.weight[self.silence].view(1, -1, 1).expand(embedded.shape[0], -1, 1)
        return torch.cat([start.to(embedded.dtype), embedded[:, :, :-1]], dim=2)

    def layer_biases(self, conditioning: torch.Tensor, speaker: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer gate biases from conditioning Tensor[B x C x T] and speaker LongTensor[B]: L x Tensor[B x G x T].
        """
        speaker_vector = self.speaker_embedding(speaker)
        return [layer.bias(conditioning, speaker_vector) for layer in self.layers]

    def forward(self, samples: torch.Tensor, conditioning: torch.Tensor, speaker: torch.Tensor,
                prediction: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Teacher-forced logits: position t predicts ``samples[:, t]`` from ``samples[:, :t]``.

        Args:
            samples: LongTensor[B x T] of μ-law classes (or float Tensor[B x Q x T], see :meth:`embed_inputs`).
            conditioning: Tensor[B x C x T] from :attr:`upsample`.
            speaker: LongTensor[B].
            prediction: LongTensor[B x T], the μ-law class of the prediction ``p[t]`` (known before sample t:
                the linear prediction and/or the harmonic part), required with ``lpc_order`` or ``harmonics``
                (the logits are then the excitation's).

        Returns:
            Tensor[B x Q x T] of logits.
        """
        x = self.embed_inputs(samples)
        if self.prediction_embedding is not None:
            if prediction is None:
                raise ValueError("this decoder models an LPC excitation: pass the prediction classes")
            x = x + self.prediction_embedding(prediction).transpose(1, 2).to(x.dtype)
        skips = 0
        for layer, bias in zip(self.layers, self.layer_biases(conditioning, speaker)):
            x, skip = layer(x, bias)
            skips = skips + skip
        return self.output(skips)

    # ------------------------------------------------------------------ incremental generation

    def new_state(self, batch: int, device: torch.device, dtype: torch.dtype = torch.float32) -> GenerationState:
        return GenerationState.create(self.config.dilations, batch, self.config.residual_channels, device, dtype)

    def step(self, state: GenerationState, previous: torch.Tensor, biases: Sequence[torch.Tensor],
             prediction: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One generation step with the per-layer queues: O(layers) work, not O(receptive field).

        Args:
            state: queues from :meth:`new_state`, advanced in place.
            previous: LongTensor[B], the sample generated at the previous step.
            biases: L x Tensor[B x G], this step's slice of :meth:`layer_biases`.
            prediction: LongTensor[B], the class of this step's prediction (``lpc_order`` or ``harmonics`` only).

        Returns:
            Tensor[B x Q] of logits for the current sample.
        """
        x = self.input_embedding(previous)  # (B, R)
        if self.prediction_embedding is not None:
            x = x + self.prediction_embedding(prediction)
        skips = 0
        for layer, queue, bias in zip(self.layers, state.queues, biases):
            slot = state.position % layer.dilation
            past = queue[:, :, slot]  # layer input `dilation` steps ago (zero before the start)
            weight = layer.dilated.weight  # (G, R, 2): tap 0 sees t − dilation, tap 1 sees t
            pre = past @ weight[:, :, 0].t() + x @ weight[:, :, 1].t() + bias
            queue[:, :, slot] = x
            residual, skip = layer._gate(x.unsqueeze(2), pre.unsqueeze(2))
            x, skips = residual.squeeze(2), skips + skip.squeeze(2)
        state.position += 1
        return self.output(skips.unsqueeze(2)).squeeze(2)
