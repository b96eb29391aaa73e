"""The f0-only control: a real clip with only its pitch moved to another speaker's.

For every conversion the evaluation also makes its *control*: the source clip, resynthesised by
Praat's PSOLA (pitch-synchronous overlap-add, through parselmouth) with every pitch point multiplied
by the ratio of the target speaker's median f0 (``exp`` of the speaker table's ln-f0 mean) to the
clip's own median f0. PSOLA moves the pulses and keeps the spectral envelope (formants, tilt), the
timing and the noise: the control has the target's pitch and the source's voice. Every judge names
the controls too; one that names them as the target is hearing f0, not the voice, and its conversion
figures mean no more than its control figures.

Example:
    >>> import numpy as np
    >>> t = np.arange(8000) / 8000
    >>> tone = sum(np.sin(2 * np.pi * 120 * k * t) / k for k in range(1, 20)).astype(np.float32) * 0.1
    >>> moved = shift_pitch(tone, 8000, 1.5)
    >>> len(moved) == len(tone)
    True
"""

from __future__ import annotations

import math

import numpy as np
import parselmouth
from parselmouth.praat import call

PITCH_FLOOR, PITCH_CEILING = 60.0, 500.0  # Hz: Praat's analysis range for speech (manipulation and median)


def median_pitch(audio: np.ndarray, sample_rate: int) -> float:
    """Median f0 in Hz of the voiced frames of float[T] audio by Praat's autocorrelation tracker; NaN if none."""
    sound = parselmouth.Sound(np.asarray(audio, dtype=np.float64), sampling_frequency=sample_rate)
    value = call(sound.to_pitch(0.01, PITCH_FLOOR, PITCH_CEILING), "Get quantile", 0, 0, 0.5, "Hertz")
    return float(value) if value == value else math.nan


def shift_pitch(audio: np.ndarray, sample_rate: int, ratio: float) -> np.ndarray:
    """float32[T] audio with every f0 point multiplied by ``ratio`` (PSOLA; envelope, timing and length kept).

    Audio without a voiced frame comes back unchanged.
    """
    sound = parselmouth.Sound(np.asarray(audio, dtype=np.float64), sampling_frequency=sample_rate)
    manipulation = call(sound, "To Manipulation", 0.01, PITCH_FLOOR, PITCH_CEILING)
    tier = call(manipulation, "Extract pitch tier")
    if call(tier, "Get number of points") == 0:
        return np.asarray(audio, dtype=np.float32).copy()
    call(tier, "Multiply frequencies", sound.xmin, sound.xmax, float(ratio))
    call([tier, manipulation], "Replace pitch tier")
    moved = call(manipulation, "Get resynthesis (overlap-add)").values[0]
    out = np.zeros(len(audio), dtype=np.float32)
    out[:min(len(out), len(moved))] = moved[:len(out)]
    return out


def f0_control(audio: np.ndarray, sample_rate: int, target_median_f0: float) -> np.ndarray:
    """The clip with its median f0 moved to ``target_median_f0`` Hz (unchanged where either is unknown)."""
    own = median_pitch(audio, sample_rate)
    if not (math.isfinite(own) and own > 0 and math.isfinite(target_median_f0) and target_median_f0 > 0):
        return np.asarray(audio, dtype=np.float32).copy()
    return shift_pitch(audio, sample_rate, target_median_f0 / own)


def speaker_median_f0(entry: dict) -> float:
    """A speaker table entry's typical f0: ``exp`` of its ln-f0 mean (the median of a log-normal), NaN if unknown."""
    value = entry.get("log_f0_mean")
    return math.exp(float(value)) if value is not None else math.nan
