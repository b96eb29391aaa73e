"""The decoder's optional parts around the WaveNet, each owning its inputs, its loss and what generation
precomputes for it.

The WaveNet (:mod:`audio_vqvae.wavenet`) is the paper's decoder. A part adds something computed from the
code vectors, the speaker and the f0 for the whole utterance, before any sample is drawn:

* a **conditioning part** adds channels to the upsampled codes: the source excitation
  (:class:`audio_vqvae.excitation.SourceExcitation`, ``decoder.excitation_harmonics``);
* a **synthesis part** predicts part of the signal, so that the WaveNet models only what is left: the harmonic
  part (:class:`audio_vqvae.harmonic.HarmonicPart`, ``decoder.harmonics``) and the LPC split
  (:class:`audio_vqvae.lpc.SourceFilter`, ``decoder.lpc_order``).
* a **scaling part** predicts the scale of what is left, which the WaveNet draws on: the noise envelope
  (:class:`audio_vqvae.noise.NoiseEnvelope`, ``decoder.noise_envelope``).

Synthesis parts run in :attr:`audio_vqvae.wavenet.WaveNet.synthesis_parts` order; each one's
:meth:`DecoderPart.split` predicts from the residual the earlier ones leave (the harmonic part from the
signal ``s``, the LPC split from ``s − h``), with its own loss. The WaveNet's targets are the classes of
the last residual; its prediction input is the class of the predictions' sum. Generation needs the same
predictions sample by sample; :func:`audio_vqvae.lpc.synthesis_rows` lays out what the parts precompute for it
(the harmonic part's offset ``h[t]``, the noise envelope's gain, the LPC split's coefficients), one row per
sample, which every generation path turns into ``p[t]`` in one place.

A new part is one class here in its own module (its network, :meth:`~DecoderPart.split` or
:meth:`~DecoderPart.condition`, its loss's name and weight), its test, its config field, and one line in
:class:`audio_vqvae.wavenet.WaveNet`'s constructor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F


@dataclass
class PartInputs:
    """What every part may read, for one batch of utterances.

    Attributes:
        vectors: Tensor[B x D x T'], the code vectors (quantized, time-jittered in training).
        speaker: Tensor[B x S], the speaker embedding vectors.
        pitch: Tensor[B x 3 x T] ``(phase, f0, voiced)`` rows at the sample rate, or None for a decoder
            whose parts need no f0 (:attr:`DecoderPart.needs_pitch`).
        hop: samples per code frame.
        sample_rate: Hz.
        length: T, samples to make.
    """

    vectors: torch.Tensor
    speaker: torch.Tensor
    pitch: Optional[torch.Tensor]
    hop: int
    sample_rate: int
    length: int


@dataclass
class Split:
    """What a synthesis part explains of the residual it is given.

    Attributes:
        prediction: DoubleTensor[B x T], detached: subtracted from the residual before the next part, and
            part of the WaveNet's prediction input.
        loss: the part's own training loss (unweighted), named by :attr:`DecoderPart.loss_name`.
        extra_losses: further losses of the part, name -> (unweighted loss, weight).
        output: the part network's output with its gradient (the harmonic part's ``h``, the envelope network's
            ``u``), for a loss on the parts together (:mod:`audio_vqvae.rendering`).
    """

    prediction: torch.Tensor
    loss: torch.Tensor
    extra_losses: dict[str, tuple[torch.Tensor, float]] = field(default_factory=dict)
    output: Optional[torch.Tensor] = None


class DecoderPart:
    """The interface of a decoder part, mixed into its ``nn.Module``; the defaults are a part that does nothing.

    Attributes:
        needs_pitch: whether its inputs include the f0 rows (then every call to the model needs them).
        synthesises: whether it is a synthesis part (:meth:`split`).
        loss_name: the name of its loss in :attr:`audio_vqvae.model.VQVAEOutput.losses` (synthesis parts).
        loss_weight: the loss's weight in the total (its config's ``*_weight``).
    """

    needs_pitch: bool = False
    synthesises: bool = False
    loss_name: Optional[str] = None
    loss_weight: float = 1.0

    def condition(self, upsampled: torch.Tensor, inputs: PartInputs) -> torch.Tensor:
        """The conditioning Tensor[B x C x T] after this part: the upsampled codes unchanged by default."""
        return upsampled

    def split(self, inputs: PartInputs, signal: torch.Tensor, residual: torch.Tensor) -> Split:
        """Teacher-forced: predict part of ``residual`` DoubleTensor[B x T] (what earlier parts left of ``signal``
        Tensor[B x T], the decoder's signal) and score the prediction by the part's loss."""
        raise NotImplementedError(f"{type(self).__name__} is not a synthesis part")


def frame_means(rows: torch.Tensor, hop: int, frames: int) -> torch.Tensor:
    """Tensor[B x C x T] at the sample rate -> Tensor[B x C x frames]: the mean over each code frame's ``hop``
    samples (a signal shorter than ``frames * hop`` is padded with its last sample)."""
    wanted = frames * hop
    if rows.shape[2] < wanted:
        rows = F.pad(rows, (0, wanted - rows.shape[2]), mode="replicate")
    return F.avg_pool1d(rows[:, :, :wanted], hop)


def frames_to_samples(values: torch.Tensor, hop: int, length: int) -> torch.Tensor:
    """Tensor[B x C x T'] per code frame -> Tensor[B x C x length] at the sample rate: frame j's value holds at the
    centre of its ``hop`` samples and is interpolated linearly between centres (held beyond the first and last)."""
    per_sample = F.interpolate(values, size=values.shape[2] * hop, mode="linear", align_corners=False)
    if per_sample.shape[2] < length:
        per_sample = F.pad(per_sample, (0, length - per_sample.shape[2]), mode="replicate")
    return per_sample[:, :, :length]
