"""Linear prediction for a source-filter decoder (LPCNet, Valin & Skoglund 2019).

A WaveNet asked to model raw samples spends its first thousands of steps learning the spectral
envelope. With ``decoder.lpc_order`` M > 0 it is not asked to: a small frame-rate network predicts
an all-pole envelope from the codes and the speaker, the prediction ``p[t] = Σ_i c_i · s[t − i]``
(i = 1..M, the coefficients of the sample's frame) is computed from the signal so far, and the
WaveNet models only the excitation ``e[t] = s[t] − p[t]`` in μ-law classes, with ``p[t]`` as an
extra input. Generation draws ``e[t]`` and adds it back, ``s[t] = p[t] + e[t]``, so the sampling
noise passes through the synthesis filter ``1 / A(z)``: it is shaped like the envelope and sits
under the formants instead of filling the gaps between them.

The envelope network predicts the reflection coefficients ``k_m = tanh(u_m)`` (every |k| < 1, so
the synthesis filter is stable) and is trained to match the coefficients of the true frame by a
squared error on ``u = atanh k`` (log-area ratios up to a factor −2, the standard domain for
quantising them). The WaveNet sees the predicted envelope, detached, both when training and when
generating, so the two match. Everything here runs in float64, the generation paths too: the
prediction of a teacher-forced pass and of generation then agree to the last bit in practice.

Example:
    >>> import torch
    >>> k = torch.tensor([[0.5, -0.25]], dtype=torch.float64)
    >>> prediction_coefficients(k)                   # p[t] = c1 s[t-1] + c2 s[t-2]
    tensor([[-0.3750,  0.2500]], dtype=torch.float64)
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from audio_vqvae.parts import DecoderPart, PartInputs, Split

LAG_WINDOW_HZ = 60.0  # Gaussian lag window: widens every pole's bandwidth a little (robust, as in speech codecs)
WHITE_NOISE = 1e-4  # r0 *= 1 + WHITE_NOISE: a -40 dB noise floor keeps the normal equations well conditioned
MAX_REFLECTION = 0.999  # the targets' |k| is clipped here so that atanh stays finite (|u| <= 3.8)


def analysis_window(hop: int) -> int:
    """Samples in the window of one frame's analysis: four hops (32 ms at 8 kHz for the demo's hop of 64)."""
    return 4 * hop


def frame_autocorrelation(signal: torch.Tensor, hop: int, order: int, sample_rate: int) -> torch.Tensor:
    """Windowed autocorrelation of every frame of Tensor[B x T]: DoubleTensor[B x T // hop x (order + 1)].

    Frame j's Hann window of :func:`analysis_window` samples is centred on the frame's centre
    ``j · hop + hop / 2`` (zeros beyond the ends); a Gaussian lag window and a white-noise correction follow.
    """
    frames = signal.shape[1] // hop
    window = analysis_window(hop)
    left = window // 2 - hop // 2
    padded = F.pad(signal.double(), (left, window - left))
    pieces = padded.unfold(1, window, hop)[:, :frames] * torch.hann_window(window, periodic=False,
                                                                          dtype=torch.float64,
                                                                          device=signal.device)
    lags = torch.stack([(pieces[..., :window - k] * pieces[..., k:]).sum(-1) for k in range(order + 1)], dim=-1)
    k = torch.arange(order + 1, dtype=torch.float64, device=signal.device)
    lag_window = torch.exp(-0.5 * (2 * math.pi * LAG_WINDOW_HZ * k / sample_rate) ** 2)
    lags = lags * lag_window
    lags[..., 0] = lags[..., 0] * (1 + WHITE_NOISE) + 1e-10  # never singular, digital silence included
    return lags


def levinson(autocorrelation: torch.Tensor) -> torch.Tensor:
    """Reflection coefficients k_1..k_M of DoubleTensor[... x (M + 1)] autocorrelations (Levinson-Durbin).

    Convention: ``A(z) = 1 + Σ a_i z^-i`` and ``a_m = k_m`` at step m (:func:`prediction_coefficients`).
    """
    order = autocorrelation.shape[-1] - 1
    error = autocorrelation[..., 0]
    a = autocorrelation.new_zeros(autocorrelation.shape[:-1] + (0,))
    reflections = []
    for m in range(1, order + 1):
        acc = autocorrelation[..., m] + (a * autocorrelation[..., 1:m].flip(-1)).sum(-1)
        k = -acc / error
        a = torch.cat([a + k.unsqueeze(-1) * a.flip(-1), k.unsqueeze(-1)], dim=-1)
        error = error * (1 - k * k)
        reflections.append(k)
    return torch.stack(reflections, dim=-1)


def prediction_coefficients(reflections: torch.Tensor) -> torch.Tensor:
    """Reflection coefficients Tensor[... x M] -> prediction coefficients c (``p[t] = Σ c_i s[t − i]``), differentiable.

    The step-up recursion ``a_i ← a_i + k_m a_{m−i}``, ``a_m = k_m``; then ``c = −a``.
    """
    a = reflections[..., :0]
    for m in range(reflections.shape[-1]):
        k = reflections[..., m:m + 1]
        a = torch.cat([a + k * a.flip(-1), k], dim=-1)
    return -a


def frame_reflections(signal: torch.Tensor, hop: int, order: int, sample_rate: int) -> torch.Tensor:
    """The true envelope of every frame of Tensor[B x T]: reflection coefficients DoubleTensor[B x T // hop x order]."""
    return levinson(frame_autocorrelation(signal, hop, order, sample_rate))


def per_sample(frame_coefficients: torch.Tensor, hop: int, length: int) -> torch.Tensor:
    """Tensor[B x T' x M] per frame -> Tensor[B x length x M] per sample (each frame's held; the last one held on)."""
    expanded = frame_coefficients.repeat_interleave(hop, dim=1)
    if expanded.shape[1] < length:
        expanded = torch.cat([expanded, expanded[:, -1:].expand(-1, length - expanded.shape[1], -1)], dim=1)
    return expanded[:, :length]


def predict(signal: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """Teacher-forced prediction ``p[t] = Σ_i c[t, i] · s[t − i]`` (zeros before the start): DoubleTensor[B x T].

    Args:
        signal: Tensor[B x T].
        coefficients: Tensor[B x T x M] per sample (:func:`per_sample`).
    """
    order = coefficients.shape[-1]
    history = F.pad(signal.double(), (order, 0)).unfold(1, order, 1)[:, :signal.shape[1]].flip(-1)  # s[t-1..t-M]
    return (history * coefficients.double()).sum(-1)


class SourceFilter(DecoderPart, nn.Module):
    """The LPC split as a synthesis part: codes and speaker to the frame's envelope, Tensor[B x D x T'],
    Tensor[B x S] -> u = atanh k, Tensor[B x T' x M]; the prediction ``p`` on the residual it is given, and
    :func:`envelope_loss`.

    Two 3-wide convolutions over frames (ReLU) and a 1x1 output; the speaker vector joins every frame.

    Args:
        code_dim, speaker_dim: D and S.
        order: M, the prediction order (``decoder.lpc_order``).
        hidden: channels of the two hidden convolutions.
        loss_weight: the weight of :func:`envelope_loss` in the total (``decoder.lpc_weight``).
    """

    synthesises = True
    loss_name = "envelope"

    def __init__(self, code_dim: int, speaker_dim: int, order: int, hidden: int = 128, loss_weight: float = 1.0):
        super().__init__()
        self.loss_weight = loss_weight
        self.input = nn.Conv1d(code_dim + speaker_dim, hidden, kernel_size=3, padding=1)
        self.hidden = nn.Conv1d(hidden, hidden, kernel_size=3, padding=1)
        self.output = nn.Conv1d(hidden, order, kernel_size=1)

    def forward(self, codes: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
        x = torch.cat([codes, speaker.unsqueeze(2).expand(-1, -1, codes.shape[2]).to(codes)], dim=1)
        x = torch.relu(self.hidden(torch.relu(self.input(x))))
        return self.output(x).transpose(1, 2)

    def coefficients(self, inputs: PartInputs) -> torch.Tensor:
        """Per-sample prediction coefficients from the codes and speakers: DoubleTensor[B x T x M]."""
        return sample_coefficients(self(inputs.vectors, inputs.speaker), inputs.hop, inputs.length)

    def split(self, inputs: PartInputs, signal: torch.Tensor, residual: torch.Tensor) -> Split:
        """``p[t] = Σ_i c_i · residual[t − i]`` on what earlier parts left (the signal itself without a harmonic
        part), and the envelope network's loss against that residual's true frames."""
        raw = self(inputs.vectors, inputs.speaker)
        loss = envelope_loss(raw.float(), residual.float(), inputs.hop, inputs.sample_rate)
        return Split(predict(residual, sample_coefficients(raw, inputs.hop, inputs.length)), loss, output=raw)


def reflections_from(raw: torch.Tensor) -> torch.Tensor:
    """The predictor's raw output u -> reflection coefficients tanh(u), every |k| < 1 (a stable synthesis filter)."""
    return torch.tanh(raw.clamp(-4.0, 4.0))


def sample_coefficients(raw: torch.Tensor, hop: int, length: int) -> torch.Tensor:
    """The envelope network's raw output Tensor[B x T' x M] (detached) -> per-sample prediction coefficients,
    DoubleTensor[B x length x M]: what the WaveNet's synthesis uses, in training and in generation alike."""
    return per_sample(prediction_coefficients(reflections_from(raw.detach()).double()), hop, length)


def synthesis_rows(offset: Optional[torch.Tensor], coefficients: Optional[torch.Tensor],
                   gain: Optional[torch.Tensor] = None) -> torch.Tensor:
    """What generation's synthesis needs per sample: DoubleTensor[B x T x (2 + M)], column 0 a known offset
    ``h[t]`` (the harmonic part, :mod:`audio_vqvae.harmonic`; zero without one), column 1 the gain ``g[t]`` the
    drawn excitation is scaled by (the noise envelope, :mod:`audio_vqvae.noise`; one without it) and columns
    2..M+1 the prediction coefficients (none without ``lpc_order``).

    Every generation path then computes ``p[t] = Σ_i c_i u[t − i] + h[t]`` (clamped to [-1, 1]) on the
    residual ``u = s − h`` of the samples so far, and emits ``s[t] = p[t] + g[t] e[t]``; without an offset
    ``u = s`` (the LPC split), without coefficients ``p = h``. A gain of one multiplies exactly, so a decoder
    without a noise envelope makes the samples it made before the gain existed.

    Args:
        offset: Tensor[B x T] or None.
        coefficients: Tensor[B x T x M] (:func:`sample_coefficients`) or None; not both None.
        gain: Tensor[B x T] or None.
    """
    if offset is None and coefficients is None:
        raise ValueError("synthesis_rows needs an offset, coefficients or both")
    if coefficients is None:
        coefficients = offset.new_zeros(offset.shape + (0,), dtype=torch.float64)
    if offset is None:
        offset = coefficients.new_zeros(coefficients.shape[:2], dtype=torch.float64)
    if gain is None:
        gain = torch.ones(offset.shape, dtype=torch.float64, device=offset.device)
    return torch.cat([offset.double().unsqueeze(2), gain.double().unsqueeze(2), coefficients.double()], dim=2)


class Synthesis:
    """Generation's synthesis, one sample at a time, in float64 (the PyTorch generation path's; the fused
    kernels do the same arithmetic): ``p[t] = Σ_i c[t, i] u[t − i] + h[t]`` on the residual ``u = s − h`` and
    ``s[t] = p[t] + g[t] e[t]``, both clamped to [-1, 1] (:func:`synthesis_rows`).

    The signal is rounded to float32 as it is made, so that a teacher-forced pass over the float32 output
    (:func:`predict`) sees exactly the values generation continued from.
    """

    def __init__(self, rows: torch.Tensor):
        self.offset = rows[:, :, 0].double()
        self.gain = rows[:, :, 1].double()
        self.coefficients = rows[:, :, 2:].double()
        batch, steps, order = self.coefficients.shape
        self.history = torch.zeros(batch, order, dtype=torch.float64, device=rows.device)  # u[t-1], ..., u[t-M]
        self.signal = torch.zeros(batch, steps, dtype=torch.float32, device=rows.device)
        self.prediction = None

    def predict(self, t: int) -> torch.Tensor:
        """``p[t]``, DoubleTensor[B]."""
        self.prediction = ((self.history * self.coefficients[:, t]).sum(-1) + self.offset[:, t]).clamp(-1.0, 1.0)
        return self.prediction

    def advance(self, t: int, excitation: torch.Tensor, teacher: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Add the gain times the excitation value Tensor[B] to the prediction; the value fed on, DoubleTensor[B]:
        the new sample, or ``teacher[t]`` where one is given."""
        value = (self.prediction + self.gain[:, t] * excitation.double()).clamp(-1.0, 1.0).float()
        self.signal[:, t] = value
        fed = (teacher if teacher is not None else value).float().double()
        residual = (fed - self.offset[:, t]).unsqueeze(1)
        self.history = torch.cat([residual, self.history[:, :-1]], dim=1)[:, :self.history.shape[1]]
        return fed


def synthesise(rows: torch.Tensor, excitation: torch.Tensor) -> torch.Tensor:
    """:class:`Synthesis` of a given excitation: DoubleTensor[B x T x (2 + M)] rows (:func:`synthesis_rows`) and
    Tensor[B x T] ``e`` -> FloatTensor[B x T] signal, so that the excitation a WaveNet drew gives back the samples
    it made. With an excitation of white noise it is the parts without the WaveNet
    (:meth:`audio_vqvae.model.VQVAE.parts_on_noise`)."""
    synthesis = Synthesis(rows)
    for t in range(rows.shape[1]):
        synthesis.predict(t)
        synthesis.advance(t, excitation[:, t])
    return synthesis.signal


def envelope_loss(raw: torch.Tensor, signal: torch.Tensor, hop: int, sample_rate: int) -> torch.Tensor:
    """Mean squared error of the predictor's u against atanh of the true frames' reflection coefficients."""
    frames = raw.shape[1]
    with torch.no_grad():
        target = frame_reflections(signal, hop, raw.shape[2], sample_rate)[:, :frames]
        target = torch.atanh(target.clamp(-MAX_REFLECTION, MAX_REFLECTION)).to(raw.dtype)
    return F.mse_loss(raw, target)
