"""f0 and the decoder's source excitation: tracking, phase, harmonics, and the speaker transform.

The WaveNet decoder can be handed the pitch of the speech it generates (``decoder.excitation_harmonics``):
a few harmonics of the glottal cycle, ``v cos kφ`` and ``v sin kφ`` at the sample rate, with the
voicing ``v`` and the log-f0 (source-filter vocoders, and NSF's sine source, Wang et al. 2019). A
plain WaveNet must discover the pulses of voiced speech from the waveform alone, which takes far
more samples than a CPU budget sees; with the cycle's phase as an input it learns where each pulse
falls as a local, aligned cue.

What is stored and what is computed:

* ``prepare`` tracks every utterance once (:func:`track_pitch`, one frame per 10 ms) and stores per
  frame the f0 in Hz (0 where unvoiced) and the phase of the fundamental *measured in the audio*
  (:func:`measure_phase`): training inputs are aligned with the pulses really in the waveform.
* Generation knows only f0 (from the source recording, moved to the target speaker by
  :func:`convert_f0`); its phase is the integral of f0 (:func:`sample_pitch` without phases).
* :func:`sample_pitch` turns either into sample-rate ``(phase, f0, voiced)`` rows, and
  :func:`excitation` into the decoder's input channels.

Example:
    >>> import numpy as np
    >>> rate = 8000
    >>> t = np.arange(rate) / rate
    >>> tone = sum(np.cos(2 * np.pi * 120 * k * t) / k for k in range(1, 9)).astype(np.float32) * 0.1
    >>> track = track_pitch(tone, rate)
    >>> bool(abs(np.median(track.f0[track.voiced]) - 120) < 1.2), track.hop_length
    (True, 80)
    >>> rows = sample_pitch(track.f0, rate, len(tone), track.hop_length)   # (3, T): phase, f0, voiced
    >>> rows.shape
    (3, 8000)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

F0_MIN, F0_MAX = 60.0, 500.0  # Hz: the range every tracker call uses (speech, male bass to child)
FRAME_SECONDS = 0.01  # one pitch frame per 10 ms, at every sample rate
PHASE_WINDOW_SECONDS = 0.025  # low-pass of the heterodyned fundamental in measure_phase
TRACKER = "praat-ac"  # stored in the cache's settings: a different tracker is a different cache


def pitch_hop(sample_rate: int) -> int:
    """Samples per pitch frame (10 ms)."""
    return max(1, round(FRAME_SECONDS * sample_rate))


def num_pitch_frames(length: int, hop_length: int) -> int:
    """Frames of a ``length``-sample signal: frame i is centred on sample ``i * hop_length``."""
    return length // hop_length + 1


@dataclass(frozen=True)
class PitchTrack:
    """f0 per 10 ms frame: ``f0`` float[F] in Hz (0 where unvoiced), ``voiced`` bool[F], ``hop_length``.

    Made by :func:`track_pitch` (Praat: the model's pitch inputs) or by
    :func:`audio_vqvae.evaluation.metrics.track_pitch_pyin` (pYIN: the evaluation's measures).
    """

    f0: np.ndarray
    voiced: np.ndarray
    hop_length: int

    @property
    def median_f0(self) -> float:
        """Median f0 in Hz of the voiced frames; NaN when none is."""
        return float(np.median(self.f0[self.voiced])) if self.voiced.any() else math.nan

    @property
    def voiced_share(self) -> float:
        """Share of the frames called voiced (0 for audio shorter than one frame)."""
        return float(self.voiced.mean()) if self.voiced.size else 0.0


def track_pitch(audio: np.ndarray, sample_rate: int) -> PitchTrack:
    """Track f0 of float[T] audio with Praat's autocorrelation method (Boersma 1993), 60-500 Hz.

    Chosen by measurement against synthetic signals of known f0 and against the other trackers that
    install here (``scripts/bench_pitch.py``; figures in docs/results.md). Frame i is centred on sample
    ``i * hop``; frames Praat does not analyse (the edges) are unvoiced.

    Raises:
        ValueError: audio that is empty or not finite.
    """
    import parselmouth  # imported here: only prepare and generation track pitch

    audio = np.asarray(audio, dtype=np.float64).reshape(-1)
    if audio.size == 0 or not np.isfinite(audio).all():
        raise ValueError("pitch tracking needs non-empty, finite audio")
    hop = pitch_hop(sample_rate)
    frames = num_pitch_frames(len(audio), hop)
    f0 = np.zeros(frames, np.float32)
    if len(audio) >= 3 * sample_rate / F0_MIN:  # Praat needs three periods of the lowest pitch
        sound = parselmouth.Sound(audio, sampling_frequency=float(sample_rate))
        pitch = sound.to_pitch_ac(time_step=hop / sample_rate, pitch_floor=F0_MIN, pitch_ceiling=F0_MAX)
        values = pitch.selected_array["frequency"]  # 0 where unvoiced
        times = pitch.xs()  # Praat's frame centres, not on our grid: interpolate onto it
        ours = np.arange(frames) * hop / sample_rate
        edge = hop / sample_rate  # frames within one hop of Praat's first and last keep its decision
        voicing = np.interp(ours, np.concatenate([[times[0] - edge], times, [times[-1] + edge]]),
                            np.concatenate([[0.0], (values > 0).astype(np.float64), [0.0]]))
        if (values > 0).any():
            contour = np.interp(ours, times[values > 0], values[values > 0])
            f0 = np.where(voicing >= 0.5, contour, 0.0).astype(np.float32)
    return PitchTrack(f0=f0, voiced=f0 > 0, hop_length=hop)


def _held_f0(f0: np.ndarray) -> np.ndarray:
    """Frame f0 with unvoiced frames filled from the nearest voiced one (a phase needs some rate), float64[F]."""
    f0 = np.asarray(f0, dtype=np.float64)
    voiced = np.flatnonzero(f0 > 0)
    if voiced.size == 0:
        return np.full(f0.shape, 100.0)
    return np.interp(np.arange(len(f0)), voiced, f0[voiced])


def _frame_to_samples(values: np.ndarray, hop_length: int, length: int) -> np.ndarray:
    """Linear interpolation of per-frame values (frame i at sample i * hop) to float64[length]."""
    return np.interp(np.arange(length, dtype=np.float64), np.arange(len(values)) * float(hop_length), values)


def _integrated_phase(f0_samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """φ(t) = 2π Σ_{s<t} f0(s) / sr in float64: 0 at the first sample, continuous everywhere."""
    increments = 2 * np.pi * f0_samples / sample_rate
    return np.concatenate([[0.0], np.cumsum(increments[:-1])]) if len(increments) else increments


def measure_phase(audio: np.ndarray, f0: np.ndarray, sample_rate: int, hop_length: int) -> np.ndarray:
    """Phase of the fundamental in the audio at every frame centre, float32[F] in [-π, π) (0 where unvoiced).

    The audio is heterodyned with the phase integrated from f0, ``z = lowpass(x e^{-iφ})``; near the
    fundamental ``x ≈ A cos(φ_true)``, so ``φ + arg z = φ_true``: the tracked contour's drift is
    corrected by the signal itself, and the training excitation lines up with the pulses in the audio.
    """
    audio = np.asarray(audio, dtype=np.float64).reshape(-1)
    frames = len(f0)
    f0_samples = _frame_to_samples(_held_f0(f0), hop_length, len(audio))
    phase = _integrated_phase(f0_samples, sample_rate)
    window = np.hanning(max(3, round(PHASE_WINDOW_SECONDS * sample_rate)))
    mixed = audio * np.exp(-1j * phase)
    smooth = np.convolve(mixed, window, mode="same")
    centres = np.minimum(np.arange(frames) * hop_length, len(audio) - 1)
    measured = phase[centres] + np.angle(smooth[centres])
    measured = np.mod(measured + np.pi, 2 * np.pi) - np.pi
    return np.where(np.asarray(f0) > 0, measured, 0.0).astype(np.float32)


def sample_pitch(f0: np.ndarray, sample_rate: int, length: int, hop_length: int,
                 phase: Optional[np.ndarray] = None, start: int = 0) -> np.ndarray:
    """Per-frame f0 (and measured phases) -> float32[3 x length] rows ``(phase, f0, voiced)`` at the sample rate.

    Args:
        f0: float[F] in Hz per frame, 0 where unvoiced; frame i is centred on sample ``i * hop_length``
            of the whole utterance.
        sample_rate: Hz.
        length: samples wanted, from sample ``start`` of the utterance.
        hop_length: samples per frame.
        phase: optional float[F] measured phases (:func:`measure_phase`); the rows' phase then passes
            through them (the shortest way round between frames). Without it the phase is the integral of
            f0 from ``start`` (generation).
        start: first sample of the utterance wanted (a training crop).

    Returns:
        ``phase`` in radians (any real value: only its sine and cosine matter), ``f0`` in Hz (held
        through unvoiced stretches), ``voiced`` in [0, 1] (linear between frames).
    """
    if length <= 0:
        return np.zeros((3, 0), np.float32)
    positions = np.arange(start, start + length, dtype=np.float64)
    frame_positions = np.arange(len(f0)) * float(hop_length)
    held = _held_f0(f0)
    f0_samples = np.interp(positions, frame_positions, held)
    voiced = np.interp(positions, frame_positions, (np.asarray(f0) > 0).astype(np.float64))
    rows = np.empty((3, length), np.float32)
    integrated = _integrated_phase(f0_samples, sample_rate)
    if phase is not None:
        # Offset of the measured phase from the integral at every frame centre around the crop, unwrapped
        # across frames, then interpolated: the phase runs at f0 and meets each measured value exactly at
        # its frame centre. The integral runs over a span that holds those centres and the crop.
        first = start // hop_length
        last = min(len(f0), (start + length - 1) // hop_length + 2)
        origin = first * hop_length
        span = np.arange(origin, max(start + length, (last - 1) * hop_length + 1), dtype=np.float64)
        around = _integrated_phase(np.interp(span, frame_positions, held), sample_rate)
        centres = np.arange(first, last)
        offsets = np.unwrap(np.asarray(phase, dtype=np.float64)[first:last] - around[centres * hop_length - origin])
        integrated = (around[start - origin:start - origin + length]
                      + np.interp(positions, centres * float(hop_length), offsets))
    rows[0] = integrated
    rows[1] = f0_samples
    rows[2] = voiced
    return rows


def excitation(pitch: torch.Tensor, harmonics: int, sample_rate: int) -> torch.Tensor:
    """The decoder's source inputs from ``(phase, f0, voiced)`` rows: Tensor[B x 3 x T] -> Tensor[B x 2K+2 x T].

    Channels: ``v cos kφ`` and ``v sin kφ`` for k = 1..K (zero above 0.45 sr, where a harmonic would
    alias), then ``v`` and ``v log2(f0 / 200 Hz)``.
    """
    if pitch.dim() != 3 or pitch.shape[1] != 3:
        raise ValueError(f"pitch must have shape (B, 3, T) (phase, f0, voiced), got {tuple(pitch.shape)}")
    phase, f0, voiced = pitch[:, 0:1], pitch[:, 1:2], pitch[:, 2:3]
    k = torch.arange(1, harmonics + 1, device=pitch.device, dtype=pitch.dtype).view(1, -1, 1)
    below_nyquist = (k * f0 < 0.45 * sample_rate).to(pitch.dtype) * voiced
    # float64 for the multiples: a phase of 10^5 rad in float32 is off by 10^-2 rad.
    angles = (phase.double() * k.double()).remainder(2 * math.pi).to(pitch.dtype)
    log_f0 = voiced * torch.log2(f0.clamp(min=F0_MIN) / 200.0)
    return torch.cat([below_nyquist * torch.cos(angles), below_nyquist * torch.sin(angles), voiced, log_f0], dim=1)


def log_f0_stats(f0: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of ln f0 over the voiced frames of float[F] (NaN, NaN when none is)."""
    voiced = np.asarray(f0, dtype=np.float64)
    voiced = voiced[voiced > 0]
    if voiced.size == 0:
        return math.nan, math.nan
    logs = np.log(voiced)
    return float(logs.mean()), float(logs.std())


def convert_f0(f0: np.ndarray, source: tuple[float, float], target: tuple[float, float],
               semitones: float = 0.0) -> np.ndarray:
    """Move voiced frames of f0 from the source speaker's ln-f0 distribution to the target's, then shift.

    The standard Gaussian transform of voice conversion: ``ln f0' = μ_t + (σ_t / σ_s)(ln f0 − μ_s)``,
    then ``semitones`` (12 per octave). Unvoiced frames stay 0. ``source``/``target`` are (mean, std)
    of ln f0 (:func:`log_f0_stats`); a source spread of 0 maps every frame to the target's mean.
    """
    f0 = np.asarray(f0, dtype=np.float64)
    (mean_s, std_s), (mean_t, std_t) = source, target
    if not all(math.isfinite(v) for v in (mean_s, std_s, mean_t, std_t)):
        raise ValueError("convert_f0 needs finite ln-f0 statistics for both speakers")
    scale = std_t / std_s if std_s > 0 else 0.0
    voiced = f0 > 0
    logs = np.log(np.where(voiced, f0, 1.0))
    moved = mean_t + scale * (logs - mean_s) + semitones * math.log(2) / 12
    return np.where(voiced, np.exp(moved), 0.0).astype(np.float32)


def shift_f0(f0: np.ndarray, semitones: float) -> np.ndarray:
    """Voiced frames of f0 shifted by ``semitones``; unvoiced frames stay 0."""
    f0 = np.asarray(f0, dtype=np.float64)
    return np.where(f0 > 0, f0 * 2.0 ** (semitones / 12), 0.0).astype(np.float32)


def speaker_log_f0(entry: dict) -> tuple[float, float]:
    """(mean, std) of ln f0 from a speaker-table entry (written by ``prepare``).

    Raises:
        ValueError: the entry has no pitch statistics (a cache or checkpoint from before them, or a
            speaker with no voiced frame).
    """
    mean, std = entry.get("log_f0_mean"), entry.get("log_f0_std")
    if mean is None or std is None:
        raise ValueError(f"speaker {entry.get('name')!r} has no pitch statistics in the speaker table; "
                         "prepare the corpus again to track them")
    return float(mean), float(std)


def conversion_stats(speakers: list[dict], source: int, target: int) -> dict:
    """``generation_pitch``'s ``source``/``target`` arguments for speaker ids of a speaker table: none when the
    utterance keeps its own speaker, else both speakers' ln-f0 statistics (:func:`speaker_log_f0`)."""
    if source == target:
        return {}
    return {"source": speaker_log_f0(speakers[source]), "target": speaker_log_f0(speakers[target])}


def generation_pitch(f0: np.ndarray, sample_rate: int, length: int, hop_length: int, *,
                     source: Optional[tuple[float, float]] = None, target: Optional[tuple[float, float]] = None,
                     semitones: float = 0.0, start: int = 0) -> np.ndarray:
    """The ``(phase, f0, voiced)`` rows a decoder speaks with: float32[3 x length], phase integrated from f0.

    With ``source`` and ``target`` ln-f0 statistics the contour is first moved to the target speaker
    (:func:`convert_f0`); ``semitones`` shifts it either way.
    """
    if source is not None and target is not None:
        f0 = convert_f0(f0, source, target, semitones)
    elif semitones:
        f0 = shift_f0(f0, semitones)
    return sample_pitch(f0, sample_rate, length, hop_length, start=start)
