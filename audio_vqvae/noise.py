"""The decoder's noise envelope: the scale of what the WaveNet draws, predicted per frame from the codes and
the speaker (``decoder.noise_envelope``).

With a synthesis part (the harmonic part, the LPC split) the WaveNet draws the excitation ``e = s − p`` that
the parts' prediction ``p`` leaves, in μ-law classes of a fixed scale. At temperature 1 its draws keep a
broadband floor wherever it is unsure, loud or silent: on the demo, reconstructions' silent frames sit at
−36 dB from the peak where the originals are digitally silent (−103 dB). A noise envelope makes the scale a
prediction, as a vocoder's gain or a codec's excitation gain does:

* a frame-rate network (:class:`NoiseEnvelope`) maps the code vectors and the speaker embedding to ``log σ``
  per code frame, trained by the squared error against the log RMS of the excitation in that frame
  (:func:`noise_loss`, floored at :data:`FLOOR`);
* ``log σ`` is interpolated linearly to the sample rate and the WaveNet models ``e / g`` with the gain
  ``g = HEADROOM · σ`` (detached): its targets are the classes of the scaled excitation, so a frame the
  network expects to be quiet is drawn on a fine scale;
* generation emits ``s[t] = p[t] + g[t] e[t]`` (the gain is a column of
  :func:`audio_vqvae.lpc.synthesis_rows`, one without this part, which multiplies exactly);
* in generation only, the gain of voiced samples (the f0 rows' voicing) is multiplied by
  ``decoder.voiced_noise`` (:attr:`NoiseEnvelope.voiced_scale`). In voiced frames most of what the parts leave
  is periodic energy the harmonic part did not explain, which the WaveNet cannot place and draws as noise,
  louder than the truth (``scripts/probe_drawn_excitation.py``); drawn softer there, the harmonics come through,
  as a harmonic-plus-noise vocoder's noise is weaker in voiced speech. (A lower sampling temperature in voiced
  samples, LPCNet's way, was measured instead: it keeps that energy; docs/results.md.)

``g`` depends only on the codes and the speaker, so it is computed for the whole utterance before the sample
loop, like ``h``.

Example:
    >>> import torch
    >>> part = NoiseEnvelope(code_dim=8, speaker_dim=4)
    >>> part(torch.randn(2, 8, 10), torch.randn(2, 4)).shape          # log σ per code frame
    torch.Size([2, 10])
    >>> per_sample_gain(torch.zeros(2, 10), hop=64, length=640).shape
    torch.Size([2, 640])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from audio_vqvae.parts import DecoderPart, PartInputs, frame_means, frames_to_samples

HEADROOM = 8.0  # g = 8σ: the scaled excitation's frames have an RMS of 1/8, so peaks to 8σ keep their class
FLOOR = 1e-4  # the least RMS a frame's target has (−80 dB full scale): digital silence is not −∞
INITIAL_LOG_SIGMA = math.log(0.02)  # the output starts near a typical excitation level of the demo's speech
OUTPUT_SCALE = 0.1


class NoiseEnvelope(DecoderPart, nn.Module):
    """Codes and speaker to the excitation's log RMS per code frame: Tensor[B x D x T'], Tensor[B x S]
    -> Tensor[B x T'].

    Two 3-wide convolutions over frames (ReLU) and a 1x1 output, like the harmonic part's network
    (:class:`audio_vqvae.harmonic.HarmonicPart`); the speaker vector joins every frame.

    Args:
        code_dim, speaker_dim: D and S.
        hidden: channels of the two hidden convolutions.
        loss_weight: the weight of :func:`noise_loss` in the total (``decoder.noise_weight``).
        voiced_scale: the gain's factor in voiced samples when generating (``decoder.voiced_noise``; 1: none).
    """

    loss_name = "noise"

    def __init__(self, code_dim: int, speaker_dim: int, hidden: int = 128, loss_weight: float = 1.0,
                 voiced_scale: float = 1.0):
        super().__init__()
        self.loss_weight = loss_weight
        self.voiced_scale = voiced_scale
        self.input = nn.Conv1d(code_dim + speaker_dim, hidden, kernel_size=3, padding=1)
        self.hidden = nn.Conv1d(hidden, hidden, kernel_size=3, padding=1)
        self.output = nn.Conv1d(hidden, 1, kernel_size=1)
        with torch.no_grad():
            self.output.weight.mul_(OUTPUT_SCALE)
            self.output.bias.fill_(INITIAL_LOG_SIGMA)

    def forward(self, codes: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
        frames = codes.shape[2]
        x = torch.cat([codes, speaker.unsqueeze(2).expand(-1, -1, frames).to(codes)], dim=1)
        x = torch.relu(self.hidden(torch.relu(self.input(x))))
        return self.output(x)[:, 0]

    def gain(self, inputs: PartInputs) -> torch.Tensor:
        """What generation scales the drawn excitation by: ``g = HEADROOM · σ``, times :attr:`voiced_scale` in
        voiced samples (``g · (1 − (1 − voiced_scale) v)`` for the pitch rows' voicing v), DoubleTensor[B x T]."""
        gain = per_sample_gain(self(inputs.vectors, inputs.speaker), inputs.hop, inputs.length)
        if self.voiced_scale != 1.0:
            if inputs.pitch is None:
                raise ValueError("decoder.voiced_noise scales the noise in voiced samples: it needs the f0 rows")
            voiced = inputs.pitch[:, 2, :inputs.length].to(gain)
            gain = gain * (1.0 - (1.0 - self.voiced_scale) * voiced)
        return gain

    def scale(self, inputs: PartInputs, excitation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forced: the gain DoubleTensor[B x T] (detached) that ``excitation`` DoubleTensor[B x T], what
        the synthesis parts leave, is divided by for the WaveNet's targets, :func:`noise_loss`, and the network's
        ``log σ`` Tensor[B x T'] with its gradient (for :mod:`audio_vqvae.rendering`)."""
        log_sigma = self(inputs.vectors, inputs.speaker)
        loss = noise_loss(log_sigma.float(), excitation, inputs.hop)
        return per_sample_gain(log_sigma.detach(), inputs.hop, inputs.length), loss, log_sigma


def per_sample_gain(log_sigma: torch.Tensor, hop: int, length: int) -> torch.Tensor:
    """Tensor[B x T'] log σ per code frame -> DoubleTensor[B x length] gain ``HEADROOM · σ``: each frame's value
    holds at the centre of its ``hop`` samples and is interpolated linearly (in the log) between centres, held
    beyond the first and last."""
    return HEADROOM * torch.exp(frames_to_samples(log_sigma.double().unsqueeze(1), hop, length)[:, 0])


def frame_log_rms(excitation: torch.Tensor, hop: int, frames: int) -> torch.Tensor:
    """Log RMS of Tensor[B x T] per ``hop`` samples, floored at :data:`FLOOR`: Tensor[B x frames] (a signal shorter
    than ``frames * hop`` is padded with its last sample)."""
    energy = frame_means((excitation.double() ** 2).unsqueeze(1), hop, frames)[:, 0]
    return 0.5 * torch.log(energy + FLOOR ** 2)


def noise_loss(log_sigma: torch.Tensor, excitation: torch.Tensor, hop: int) -> torch.Tensor:
    """Mean squared error of Tensor[B x T'] predicted log σ against the log RMS of Tensor[B x T] ``excitation``
    per code frame (:func:`frame_log_rms`)."""
    with torch.no_grad():
        target = frame_log_rms(excitation, hop, log_sigma.shape[1]).to(log_sigma.dtype)
    return F.mse_loss(log_sigma, target)
