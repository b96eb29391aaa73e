"""Audio files in and out: any format soundfile reads, resampled and mixed to mono; atomic writes.

Example:
    >>> import tempfile, torch
    >>> path = tempfile.mkdtemp() + "/tone.wav"
    >>> save_audio(path, torch.zeros(800), 8000)
    >>> load_audio(path, 16000).shape                     # resampled to the model rate
    torch.Size([1600])
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
import soundfile
import torch

from audio_vqvae.atomic import atomic_write
from audio_vqvae.errors import InputError


def audio_extensions() -> set[str]:
    """File suffixes soundfile can read on this machine (``.wav``, ``.flac``, ``.ogg``, ...)."""
    return {f".{name.lower()}" for name in soundfile.available_formats()} | {".oga", ".opus"}


def load_audio(path: Union[str, Path], sample_rate: int) -> torch.Tensor:
    """Read a file as Tensor[T] float32 at ``sample_rate``: channels averaged, resampled with soxr.

    Raises:
        InputError: the file is missing, unreadable or empty.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: input file not found")
    try:
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise InputError(f"{path}: not a readable audio file ({str(err).splitlines()[0]})") from None
    if audio.shape[0] == 0:
        raise InputError(f"{path}: the audio file is empty")
    mono = audio.mean(axis=1)
    if rate != sample_rate:
        import librosa  # imported here: it is slow to import and only needed when rates differ

        mono = librosa.resample(mono, orig_sr=rate, target_sr=sample_rate, res_type="soxr_hq")
    return torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))


def save_audio(path: Union[str, Path], audio: torch.Tensor, sample_rate: int) -> None:
    """Write Tensor[T] in [-1, 1] to ``path`` (format from the suffix, 16-bit PCM for WAV) atomically:
    a temporary file in the same folder renamed into place, so an interrupted run leaves no partial file."""
    path = Path(path)
    kind = path.suffix.lstrip(".").upper()
    if kind not in soundfile.available_formats():
        raise InputError(f"{path}: cannot write audio with suffix {path.suffix!r}; use .wav or .flac")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = audio.detach().cpu().float().clamp(-1.0, 1.0).numpy()
    subtype = "PCM_16" if kind in ("WAV", "FLAC", "AIFF") else None
    atomic_write(path, lambda file: soundfile.write(file, data, sample_rate, format=kind, subtype=subtype))
