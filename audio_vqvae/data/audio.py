"""Decode one file and turn it into model-ready audio: mono, resampled, trimmed, level-normalised.

Every defect of an input file ends in a :class:`Rejected` with a one-line reason instead of an
exception, so one bad file never aborts a whole preprocessing job. What is rejected and what is
kept with a warning:

=====================================================  ===================================
input                                                  outcome
=====================================================  ===================================
0-byte file                                            rejected: ``empty file (0 bytes)``
garbage bytes / a text file with an audio extension    rejected: ``cannot decode (...)``
valid header but no frames                             rejected: ``no audio samples``
NaN or infinite samples                                rejected: ``non-finite samples``
peak below -60 dBFS (digital silence)                  rejected: ``silent (...)``
more than 1% of samples at full scale                  rejected: ``severely clipped (...)``
sample rate below the target rate                      rejected: ``sample rate ... below ...``
shorter than 0.1 s once silence is trimmed             rejected: ``too short after trimming ...``
more than 0.01% (and at most 1%) samples at full scale  kept, warning ``clipped (...)``
stereo / multi-channel                                 kept, mixed to mono (counted)
any sample rate at or above the target                 kept, resampled (rates counted)
=====================================================  ===================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
import soundfile
import soxr

SILENCE_PEAK_DB = -60.0
CLIP_LEVEL = 32766 / 32768   # a sample this close to full scale sits on the rail
CLIP_WARN_FRACTION = 1e-4
CLIP_REJECT_FRACTION = 1e-2
MIN_SECONDS = 0.1
TRIM_MARGIN_SECONDS = 0.05   # kept either side of the speech so onsets and releases survive trimming
FRAME_SECONDS = 0.025
HOP_SECONDS = 0.010
LEVEL_ESTIMATE_DB = 40.0     # frames within this many dB of the loudest count as speech for the level
PEAK_LIMIT = 0.99
DEFAULT_LEVEL_DB = -24.0     # speech RMS in dBFS that prepare scales every utterance to


@dataclass
class Processed:
    """A file that passed: ``audio`` int16[T] at the target rate, plus what was noticed on the way.

    ``trim_start`` is where ``audio`` begins in the resampled file and ``resampled_length`` that file's
    length (samples at the target rate): what moves a time alignment of the source file onto ``audio``.
    """

    audio: np.ndarray
    source_rate: int
    channels: int
    warnings: list[str] = field(default_factory=list)
    trim_start: int = 0
    resampled_length: int = 0


@dataclass
class Rejected:
    """A file that was skipped, with a one-line ``reason``."""

    reason: str
    source_rate: int = 0
    channels: int = 0


def process_file(path: Union[str, Path], *, sample_rate: int, trim_silence_db: Optional[float],
                 level_db: Optional[float]) -> Union[Processed, Rejected]:
    """Decode ``path`` and prepare it for training.

    Args:
        path: an audio file soundfile can read (WAV, FLAC, OGG; any channel count and rate).
        sample_rate: target rate in Hz; higher rates are resampled with soxr's high-quality filter.
        trim_silence_db: trim leading and trailing frames quieter than the loudest frame by this many
            dB (keeping a 50 ms margin); ``None`` keeps the whole file.
        level_db: scale the speech (frames within 40 dB of the loudest) to this RMS level in dBFS,
            limited so the peak stays below 0.99; ``None`` keeps the level.

    Returns:
        :class:`Processed` with int16[T] audio, or :class:`Rejected` with the reason.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return Rejected("empty file (0 bytes)")
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # (T, C)
    except (soundfile.LibsndfileError, RuntimeError, ValueError, OSError) as err:
        message = getattr(err, "error_string", None) or str(err).replace(str(path), "").strip(" :'")
        return Rejected(f"cannot decode ({message})")
    frames, channels = audio.shape
    if frames == 0:
        return Rejected("no audio samples", rate, channels)
    if not np.isfinite(audio).all():
        return Rejected("non-finite samples", rate, channels)
    if rate < sample_rate:
        return Rejected(f"sample rate {rate} Hz is below the target {sample_rate} Hz", rate, channels)
    warnings = []
    clipped = np.count_nonzero(np.abs(audio) >= CLIP_LEVEL) / audio.size
    if clipped > CLIP_REJECT_FRACTION:
        return Rejected(f"severely clipped ({clipped:.1%} of samples at full scale)", rate, channels)
    if clipped > CLIP_WARN_FRACTION:
        warnings.append(f"clipped ({clipped:.2%} of samples at full scale)")
    mono = audio.mean(axis=1) if channels > 1 else audio[:, 0]
    peak = float(np.abs(mono).max())
    if peak < 10 ** (SILENCE_PEAK_DB / 20):
        peak_db = 20 * math.log10(peak) if peak > 0 else -math.inf
        return Rejected(f"silent (peak {peak_db:.0f} dBFS)", rate, channels)
    prepared = model_input(mono, rate, sample_rate=sample_rate, trim_silence_db=trim_silence_db, level_db=level_db)
    if len(prepared.pcm) < MIN_SECONDS * sample_rate:
        return Rejected(f"too short after trimming silence ({len(prepared.pcm) / sample_rate:.2f} s < {MIN_SECONDS} s)",
                        rate, channels)
    return Processed(audio=prepared.pcm, source_rate=rate, channels=channels, warnings=warnings,
                     trim_start=prepared.trim_start, resampled_length=prepared.resampled_length)


@dataclass
class ModelInput:
    """Audio as the model is trained on it: ``pcm`` int16[T] (read as ``pcm / 32768``), where it begins in the
    resampled file (``trim_start``) and that file's length (``resampled_length``), samples at the model rate."""

    pcm: np.ndarray
    trim_start: int
    resampled_length: int


def model_input(mono: np.ndarray, rate: int, *, sample_rate: int, trim_silence_db: Optional[float],
                level_db: Optional[float]) -> ModelInput:
    """Resample, trim and level-normalise float[T] mono audio at ``rate``, then round it to 16 bits.

    The one transformation behind both ``prepare`` (every training utterance, trimmed) and the generation
    commands (a user's recording, untrimmed): the encoder meets speech at the level it was trained on,
    however loud or quiet the recording. Resampling is soxr's high-quality filter.
    """
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ").astype(np.float32)
    resampled_length, start = len(mono), 0
    if trim_silence_db is not None:
        frame_db = frame_levels_db(mono, sample_rate)
        start, stop = speech_bounds(frame_db, sample_rate, len(mono), top_db=trim_silence_db)
        mono = mono[start:stop]
    if level_db is not None and len(mono):
        mono = normalise_level(mono, sample_rate, level_db)
    pcm = np.round(np.clip(mono, -1.0, 1.0) * 32767).astype(np.int16)
    return ModelInput(pcm, start, resampled_length)


def frame_levels_db(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """RMS level in dBFS of 25 ms frames every 10 ms: float[T] -> float[num_frames]."""
    frame = max(1, round(FRAME_SECONDS * sample_rate))
    hop = max(1, round(HOP_SECONDS * sample_rate))
    padded = np.pad(audio.astype(np.float64), (0, max(0, frame - len(audio))))
    windows = np.lib.stride_tricks.sliding_window_view(padded, frame)[::hop]  # (num_frames, frame)
    power = np.mean(windows * windows, axis=1)
    return 10 * np.log10(np.maximum(power, 1e-20))


def speech_bounds(frame_db: np.ndarray, sample_rate: int, length: int, *, top_db: float) -> tuple[int, int]:
    """Sample range ``[start, stop)`` from the first to the last frame within ``top_db`` of the loudest."""
    frame = max(1, round(FRAME_SECONDS * sample_rate))
    hop = max(1, round(HOP_SECONDS * sample_rate))
    margin = round(TRIM_MARGIN_SECONDS * sample_rate)
    active = np.flatnonzero(frame_db > frame_db.max() - top_db)
    start = max(0, int(active[0]) * hop - margin)
    stop = min(length, int(active[-1]) * hop + frame + margin)
    return start, stop


def normalise_level(audio: np.ndarray, sample_rate: int, level_db: float) -> np.ndarray:
    """Scale float[T] so its speech frames have RMS ``level_db`` dBFS and its peak stays below 0.99."""
    frame_db = frame_levels_db(audio, sample_rate)
    speech = frame_db[frame_db > frame_db.max() - LEVEL_ESTIMATE_DB]
    speech_db = 10 * np.log10(np.mean(10 ** (speech / 10)))
    gain = 10 ** ((level_db - speech_db) / 20)
    peak = float(np.abs(audio).max())
    gain = min(gain, PEAK_LIMIT / peak) if peak > 0 else 1.0
    return (audio * gain).astype(np.float32)
