"""What a run writes besides checkpoints: the text log, the metrics file and TensorBoard images.

matplotlib is not a dependency, so spectrograms and the codebook-usage chart are rendered here as
uint8 arrays (CHW, RGB) for ``SummaryWriter.add_image``.

Example:
    >>> import numpy as np
    >>> mel_image(np.sin(np.arange(16000) * 0.2).astype("float32"), 16000).shape   # (3, mels * 2, frames * 2)
    (3, 160, 252)
    >>> usage_image(np.array([5, 0, 3, 1])).shape
    (3, 120, 256)
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from tqdm import tqdm

# Anchors of matplotlib's "viridis" colormap (dark blue -> green -> yellow), linearly interpolated.
_VIRIDIS = np.array([
    [68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
    [31, 158, 137], [53, 183, 121], [110, 206, 88], [181, 222, 43], [253, 231, 37],
], dtype=np.float32)

_MEL_TRANSFORMS: dict = {}


def colorize(values: np.ndarray) -> np.ndarray:
    """Map float[H x W] in [0, 1] to uint8[3 x H x W] with a viridis-like colormap."""
    scaled = np.clip(values, 0.0, 1.0) * (len(_VIRIDIS) - 1)
    low = np.floor(scaled).astype(np.int64).clip(0, len(_VIRIDIS) - 2)
    fraction = (scaled - low)[..., None]
    rgb = _VIRIDIS[low] * (1 - fraction) + _VIRIDIS[low + 1] * fraction  # (H, W, 3)
    return rgb.round().astype(np.uint8).transpose(2, 0, 1)


def log_mel(audio: Union[np.ndarray, torch.Tensor], sample_rate: int, n_mels: int = 80) -> np.ndarray:
    """Log-mel spectrogram in dB, float[n_mels x frames] (hop 8 ms, window 64 ms at 16 kHz)."""
    import torchaudio  # imported here: only the pure-Python transforms are needed

    key = (sample_rate, n_mels)
    if key not in _MEL_TRANSFORMS:
        hop = max(1, sample_rate // 125)
        _MEL_TRANSFORMS[key] = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=4 * hop * 2, hop_length=hop, n_mels=n_mels, power=2.0)
    waveform = torch.as_tensor(np.asarray(audio, dtype=np.float32)).reshape(1, -1)
    with torch.no_grad():
        mel = _MEL_TRANSFORMS[key](waveform)[0]  # (n_mels, frames)
    return (10.0 * torch.log10(mel.clamp(min=1e-10))).numpy()


def mel_image(audio: Union[np.ndarray, torch.Tensor], sample_rate: int, *, dynamic_range_db: float = 80.0,
              scale: int = 2) -> np.ndarray:
    """Spectrogram picture of ``audio`` (float[T]) as uint8[3 x H x W], low frequencies at the bottom.

    Each picture spans ``dynamic_range_db`` below its own peak, so quiet and loud clips both show structure.
    """
    db = log_mel(audio, sample_rate)
    normalised = (db - (db.max() - dynamic_range_db)) / dynamic_range_db
    image = colorize(normalised[::-1])  # row 0 is the top of the picture: the highest mel band
    return image.repeat(scale, axis=1).repeat(scale, axis=2)


def usage_image(counts: np.ndarray, height: int = 120, min_width: int = 256) -> np.ndarray:
    """Bar chart of code counts sorted from most to least used, log-scaled, as uint8[3 x H x W].

    Unused codes are the flat dark tail on the right; a healthy codebook has a long, gently falling curve.
    """
    counts = np.sort(np.asarray(counts, dtype=np.float64))[::-1]
    heights = np.log1p(counts) / max(np.log1p(counts.max()), 1e-12)
    bar = max(1, math.ceil(min_width / len(counts)))
    width = bar * len(counts)
    rows = np.arange(height)[::-1][:, None] / height  # 1 at the top, 0 at the bottom
    columns = np.repeat(heights, bar)[None, :]
    image = np.zeros((3, height, width), dtype=np.uint8) + 30
    filled = rows < columns  # (H, W)
    image[:, filled] = np.array([53, 183, 121], dtype=np.uint8)[:, None]
    return image


class RunLog:
    """The short human-readable log of a run (``train.log``), echoed to the terminal above the progress bar."""

    def __init__(self, path: Optional[Path], echo: bool = True):
        self.path = path
        self.echo = echo

    def __call__(self, message: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"
        if self.path is not None:
            # Created with the first line, not before: a run that stops on bad input leaves no empty folder.
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        if self.echo:
            tqdm.write(message)


class MetricsFile:
    """Append-only JSON lines (``metrics.jsonl``), one per training step or validation, full float precision."""

    def __init__(self, path: Optional[Path]):
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def read_metrics(path: Union[str, Path], kind: Optional[str] = None) -> list[dict]:
    """Records of a ``metrics.jsonl`` file, optionally only those with ``"kind": kind`` (``train``/``valid``)."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                if kind is None or record.get("kind") == kind:
                    records.append(record)
    return records
