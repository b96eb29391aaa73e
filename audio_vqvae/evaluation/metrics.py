"""Objective measures of generated speech and of the code stream.

Spectral measures share one analysis: a Hann-windowed STFT of about 32 ms (a power of two, 512
samples at 16 kHz) every 5 ms.

* **Mel-cepstrum** (:func:`mel_cepstrum`): the DCT-II of the natural-log *amplitude* of a 40-band
  mel spectrum, scaled like a real cepstrum (``log|X|(band) = c0 + 2 Σ_d c_d cos(π d (band + ½) / bands)``),
  coefficients ``c0..c24``. It is the mel-cepstrum of the mel-warped log spectrum (as MFCCs are,
  without their dB scale and orthonormal DCT), so the usual MCD formula keeps its meaning.
* **Mel-cepstral distortion** (Kubichek 1993): per frame ``10 / ln 10 · sqrt(2 Σ_{d=1}^{24} (Δc_d)²)``
  dB, ``c0`` (level) excluded, averaged over frames paired by time or along a DTW path.
* **Log-spectral distance**: per frame the RMS over STFT bins of the difference of the power spectra
  in dB, averaged over frames (time-paired). Both spectra are floored 80 dB below the reference's
  loudest bin, so bands the reference leaves empty count as "quiet", not as -300 dB.
* **Median f0**: pYIN (Mauch & Dixon 2014, :func:`track_pitch_pyin`) over the frames it calls voiced,
  50-500 Hz in steps of 0.2 semitone (3x faster than librosa's default 0.1, within 0.6 % on harmonic tones).
* **Voiced share**: the share of pYIN's frames (10 ms hop) that it calls voiced. Generated audio
  that has the right loudness contour but no harmonic structure (what an undertrained WaveNet
  produces) scores near 0; the original speech it should reproduce scores well above.
* **Bits by level** (:func:`level_bits`): teacher-forced bits per sample split by the RMS of each
  32 ms frame of the original (silence below -50 dBFS, quiet up to -30 dBFS, loud above), next to an
  *envelope-only reference* (:func:`lpc_reference_bits`): an order-16 linear predictor fitted to
  that very frame (autocorrelation method, Hann window) predicts each sample from the true past, and
  a Gaussian with the frame's residual spread scores the same μ-law class. That predictor knows the
  frame's spectral envelope exactly and nothing of its pitch pulses, so a decoder near the
  reference in loud (voiced) frames has learned the envelope but not the excitation, and generates
  formant-coloured noise rather than harmonics.
* **Code stream**: unigram entropy ``H`` of code usage in bits; perplexity ``2^H``; bitrates
  ``H × frame rate`` and ``log2 K × frame rate`` (the rate at uniform use of all K codes).

Example:
    >>> import numpy as np
    >>> tone = np.sin(2 * np.pi * 200 * np.arange(8000) / 16000).astype(np.float32)
    >>> mel_cepstrum(tone, 16000).shape                       # (order + 1, frames)
    (25, 101)
    >>> mel_cepstral_distortion(tone, tone, 16000)
    0.0
    >>> noise = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1
    >>> round(log_spectral_distance(noise, 0.5 * noise, 16000), 2)  # a gain of 2 is 20 log10 2 dB
    6.02
    >>> code_statistics(np.array([5, 5, 0, 0]), frame_rate=250.0).bitrate
    250.0
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import librosa
import numpy as np
import scipy.fft
import scipy.linalg
import scipy.special
import torch

from audio_vqvae.mulaw import mu_law_class_bounds
from audio_vqvae.pitch import PitchTrack

CEPSTRUM_ORDER = 24    # c1..c24 enter the distortion
MEL_BANDS = 40
F0_RANGE = (50.0, 500.0)
F0_RESOLUTION = 0.2    # semitones
POWER_FLOOR = 1e-10    # -100 dB: keeps log spectra of digital silence finite
LSD_RANGE_DB = 80.0
MCD_SCALE = 10.0 / math.log(10.0) * math.sqrt(2.0)
LPC_ORDER = 16
LEVEL_EDGES_DB = (-50.0, -30.0)  # frame RMS (dBFS): silence below the first, quiet up to the second, loud above
LEVELS = ("silence", "quiet", "loud")
SILENT_BELOW_DB = 40.0  # silence_floor: a frame this far below the clip's loudest is a pause
MIN_PROBABILITY = 2.0 ** -40     # bits of a sample capped at 40


def analysis_frames(sample_rate: int) -> tuple[int, int]:
    """``(n_fft, hop_length)`` of the spectral measures: about 32 ms windows every 5 ms."""
    return 2 ** round(math.log2(0.032 * sample_rate)), max(1, sample_rate // 200)


def power_spectrum(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """|STFT|² of float[T] audio -> float[bins x frames]."""
    n_fft, hop = analysis_frames(sample_rate)
    return np.abs(librosa.stft(np.asarray(audio, dtype=np.float32), n_fft=n_fft, hop_length=hop)) ** 2


def mel_cepstrum(audio: np.ndarray, sample_rate: int, order: int = CEPSTRUM_ORDER) -> np.ndarray:
    """Mel-cepstrum ``c0..c_order`` of float[T] audio -> float[(order + 1) x frames] (see the module notes)."""
    n_fft, _ = analysis_frames(sample_rate)
    mel = librosa.feature.melspectrogram(S=power_spectrum(audio, sample_rate), sr=sample_rate, n_fft=n_fft,
                                         n_mels=MEL_BANDS)
    log_amplitude = 0.5 * np.log(np.maximum(mel, POWER_FLOOR))  # (bands, frames)
    return (scipy.fft.dct(log_amplitude, type=2, axis=0) / (2 * MEL_BANDS))[:order + 1]


def cepstral_distortion(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Per-frame MCD in dB of two float[(order + 1) x N] cepstra, column by column, ``c0`` excluded."""
    difference = reference[1:] - other[1:]
    return MCD_SCALE * np.sqrt((difference ** 2).sum(axis=0))


def dtw_path(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """DTW path int[L x 2] (frame of ``reference``, frame of ``other``) between two cepstra, ``c0`` excluded."""
    _, path = librosa.sequence.dtw(X=reference[1:], Y=other[1:], metric="euclidean")
    return path[::-1]


def mel_cepstral_distortion(reference: np.ndarray, other: np.ndarray, sample_rate: int, *, dtw: bool = False) -> float:
    """Mean MCD in dB between two float[T] signals.

    Args:
        reference, other: the two signals at ``sample_rate``.
        dtw: pair frames along a DTW path (different renditions); otherwise frame t with frame t,
            over the shorter signal's frames (a signal and its reconstruction).
    """
    a, b = mel_cepstrum(reference, sample_rate), mel_cepstrum(other, sample_rate)
    if dtw:
        path = dtw_path(a, b)
        a, b = a[:, path[:, 0]], b[:, path[:, 1]]
    else:
        frames = min(a.shape[1], b.shape[1])
        a, b = a[:, :frames], b[:, :frames]
    return float(cepstral_distortion(a, b).mean())


def log_spectral_distance(reference: np.ndarray, other: np.ndarray, sample_rate: int) -> float:
    """Mean over time-paired frames of the RMS (over bins) difference of the dB power spectra (see the notes)."""
    a, b = power_spectrum(reference, sample_rate), power_spectrum(other, sample_rate)
    frames = min(a.shape[1], b.shape[1])
    floor = max(float(a.max()), POWER_FLOOR) * 10.0 ** (-LSD_RANGE_DB / 10.0)
    difference = 10.0 * np.log10(np.maximum(a[:, :frames], floor) / np.maximum(b[:, :frames], floor))
    return float(np.sqrt((difference ** 2).mean(axis=0)).mean())


def track_pitch_pyin(audio: np.ndarray, sample_rate: int) -> PitchTrack:
    """Track f0 with pYIN, 50-500 Hz in steps of 0.2 semitone, one frame per 10 ms (0 Hz where unvoiced).

    The evaluation's tracker, not the model's (:func:`audio_vqvae.pitch.track_pitch`, Praat): Praat calls
    far more frames of noisy speech voiced (docs/results.md, "Pitch tracker"), so measuring generated audio
    with it would change ``voiced_share`` and the f0 ratios, and recorded evaluations would stop being
    comparable.
    """
    frame_length = 2 ** round(math.log2(0.064 * sample_rate))  # two periods of the lowest f0
    hop_length = max(1, sample_rate // 100)
    f0, voiced, _ = librosa.pyin(np.asarray(audio, dtype=np.float32), fmin=F0_RANGE[0], fmax=F0_RANGE[1],
                                 sr=sample_rate, frame_length=frame_length, hop_length=hop_length,
                                 resolution=F0_RESOLUTION)
    return PitchTrack(f0=np.where(voiced, f0, 0.0), voiced=voiced, hop_length=hop_length)


def median_f0(audio: np.ndarray, sample_rate: int) -> float:
    """Median f0 in Hz of the frames pYIN calls voiced; NaN when none is."""
    return track_pitch_pyin(audio, sample_rate).median_f0


def voiced_share(audio: np.ndarray, sample_rate: int) -> float:
    """Share of the frames pYIN calls voiced (0 for audio shorter than one frame)."""
    return track_pitch_pyin(audio, sample_rate).voiced_share


@dataclass
class CodeStatistics:
    """Usage of a codebook over a stream of codes.

    Attributes:
        num_codes: codebook size K.
        frames: codes counted.
        codes_used: distinct codes that occurred.
        share_used: ``codes_used / K``.
        entropy_bits: unigram entropy of the codes in bits per frame.
        perplexity: ``2 ** entropy_bits`` (K at uniform use).
        frame_rate: frames per second.
        bitrate: ``entropy_bits × frame_rate``: bits/s an ideal entropy coder of single codes needs.
        bitrate_max: ``log2 K × frame_rate``: bits/s at fixed-length coding.
    """

    num_codes: int
    frames: int
    codes_used: int
    share_used: float
    entropy_bits: float
    perplexity: float
    frame_rate: float
    bitrate: float
    bitrate_max: float

    def to_dict(self) -> dict:
        return asdict(self)


def lpc_reference_bits(signal: np.ndarray, classes: np.ndarray, frame: int, order: int = LPC_ORDER,
                       quantization_channels: int = 256) -> np.ndarray:
    """Bits of each μ-law class under a per-frame linear predictor of float[T] ``signal`` -> float[T].

    For every whole frame of ``frame`` samples that has ``order`` samples of past, the order-``order``
    predictor of the Hann-windowed frame (autocorrelation method) predicts each sample from the true
    previous ones; the sample's class gets the probability mass that a Gaussian centred on the
    prediction, with the standard deviation of the frame's prediction error, puts on the class's
    amplitude interval. Samples outside such frames, and all-zero frames, are not scored (NaN).
    """
    signal = np.asarray(signal, dtype=np.float64)
    bits = np.full(len(signal), np.nan)
    window = np.hanning(frame)
    lows, highs = (bound.numpy() for bound in mu_law_class_bounds(torch.as_tensor(classes), quantization_channels))
    for start in range(order, len(signal) - frame + 1, frame):
        piece = signal[start:start + frame]
        windowed = piece * window
        correlation = np.correlate(windowed, windowed, "full")[frame - 1:frame + order]
        if correlation[0] <= 0:
            continue
        correlation[0] *= 1.0 + 1e-9  # white-noise correction: keeps the Toeplitz system regular
        coefficients = scipy.linalg.solve_toeplitz(correlation[:order], correlation[1:order + 1])
        past = np.stack([signal[start - k:start + frame - k] for k in range(1, order + 1)], axis=1)
        prediction = past @ coefficients
        spread = max(float(np.std(piece - prediction)), 1e-6)
        low, high = lows[start:start + frame], highs[start:start + frame]
        mass = (scipy.special.ndtr((high - prediction) / spread) - scipy.special.ndtr((low - prediction) / spread))
        bits[start:start + frame] = -np.log2(np.maximum(mass, MIN_PROBABILITY))
    return bits


def frame_levels(audio: np.ndarray, frame: int) -> np.ndarray:
    """int[T]: the level (index into :data:`LEVELS`) of the ``frame``-sample frame each sample of float[T] lies in."""
    audio = np.asarray(audio, dtype=np.float64)
    levels = np.empty(len(audio), dtype=np.int64)
    for start in range(0, len(audio), frame):
        piece = audio[start:start + frame]
        level_db = 10.0 * math.log10(max(float(np.mean(piece ** 2)), 1e-20))
        levels[start:start + frame] = int(np.searchsorted(LEVEL_EDGES_DB, level_db))
    return levels


def silence_floor(reference: np.ndarray, audio: np.ndarray, sample_rate: int) -> Optional[tuple[float, float]]:
    """Levels in the reference's silent frames: ``(reference, audio)`` medians in dB relative to the reference's
    loudest frame, over the 32 ms frames (:func:`analysis_frames`' window, not overlapping) of float[T] that lie
    more than :data:`SILENT_BELOW_DB` below it; None where it has none. ``audio`` is time-aligned with
    ``reference`` (a reconstruction): its level there is the noise floor a listener hears in the pauses.
    """
    frame = analysis_frames(sample_rate)[0]
    count = min(len(reference), len(audio)) // frame
    if count == 0:
        return None

    def levels(signal: np.ndarray) -> np.ndarray:
        frames = np.asarray(signal[:count * frame], dtype=np.float64).reshape(count, frame)
        return 10.0 * np.log10(np.maximum(np.mean(frames ** 2, axis=1), 1e-12))  # digital silence: -120 dB

    original, other = levels(reference), levels(audio)
    loudest = float(original.max())
    silent = original < loudest - SILENT_BELOW_DB
    if not silent.any():
        return None
    return float(np.median(original[silent])) - loudest, float(np.median(other[silent])) - loudest


def level_bits(levels: np.ndarray, decoder_bits: np.ndarray, reference_bits: np.ndarray) -> dict:
    """Per level of :data:`LEVELS`: ``{level}_share`` of the samples, the decoder's mean ``{level}_bits_per_sample``
    and ``{level}_lpc_bits_per_sample``, the reference's mean over the level's scored samples and the decoder's
    over the same samples as ``{level}_scored_bits_per_sample`` (None where nothing was scored).

    Example:
        >>> split = level_bits(np.array([0, 2, 2]), np.array([0.5, 4.0, 6.0]), np.array([np.nan, 5.0, np.nan]))
        >>> split["loud_bits_per_sample"], split["loud_scored_bits_per_sample"], split["loud_lpc_bits_per_sample"]
        (5.0, 4.0, 5.0)
    """
    levels, decoder_bits, reference_bits = (np.asarray(a) for a in (levels, decoder_bits, reference_bits))
    result: dict = {}
    for index, name in enumerate(LEVELS):
        members = levels == index
        scored = members & np.isfinite(reference_bits)
        result[f"{name}_share"] = float(members.mean()) if len(levels) else 0.0
        result[f"{name}_bits_per_sample"] = float(decoder_bits[members].mean()) if members.any() else None
        result[f"{name}_scored_bits_per_sample"] = float(decoder_bits[scored].mean()) if scored.any() else None
        result[f"{name}_lpc_bits_per_sample"] = float(reference_bits[scored].mean()) if scored.any() else None
    return result


def code_statistics(counts: np.ndarray, frame_rate: float) -> CodeStatistics:
    """:class:`CodeStatistics` of int[K] code counts (``np.bincount(codes, minlength=K)``)."""
    counts = np.asarray(counts, dtype=np.float64)
    probabilities = counts[counts > 0] / max(counts.sum(), 1.0)
    entropy_bits = max(0.0, float(-(probabilities * np.log2(probabilities)).sum()))
    used = int((counts > 0).sum())
    return CodeStatistics(num_codes=len(counts), frames=int(counts.sum()), codes_used=used,
                          share_used=used / len(counts), entropy_bits=entropy_bits, perplexity=2.0 ** entropy_bits,
                          frame_rate=float(frame_rate), bitrate=frame_rate * entropy_bits,
                          bitrate_max=frame_rate * math.log2(len(counts)))
