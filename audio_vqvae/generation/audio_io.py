"""Audio files in and out: any format soundfile reads, mixed to mono, resampled and level-normalised as
training audio is; atomic writes.

Example:
    >>> import tempfile, torch
    >>> path = tempfile.mkdtemp() + "/tone.wav"
    >>> save_audio(path, torch.zeros(800), 8000)
    >>> load_audio(path, 16000).shape                     # resampled to the model rate
    torch.Size([1600])
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Optional, Union

import numpy as np
import soundfile
import torch

from audio_vqvae.atomic import atomic_write_bytes
from audio_vqvae.data.audio import model_input
from audio_vqvae.errors import InputError


def audio_extensions() -> set[str]:
    """File suffixes soundfile can read on this machine (``.wav``, ``.flac``, ``.ogg``, ...)."""
    return {f".{name.lower()}" for name in soundfile.available_formats()} | {".oga", ".opus"}


def load_audio(path: Union[str, Path], sample_rate: int, *, level_db: Optional[float] = None) -> torch.Tensor:
    """Read a file as Tensor[T] float32 at ``sample_rate`` the way ``prepare`` stores training audio: channels
    averaged, resampled with soxr, speech scaled to ``level_db`` dBFS (None: as recorded), rounded to 16 bits
    (:func:`audio_vqvae.data.audio.model_input`; silence is not trimmed).

    Raises:
        InputError: the file is missing, unreadable, empty, or holds NaN or infinite samples.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: input file not found")
    try:
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # (T, C)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise InputError(f"{path}: not a readable audio file ({str(err).splitlines()[0]})") from None
    if audio.shape[0] == 0:
        raise InputError(f"{path}: the audio file is empty")
    finite = np.isfinite(audio)
    if not finite.all():
        raise InputError(f"{path}: {audio.size - int(finite.sum()):,} of {audio.size:,} samples are NaN or infinite; "
                         "expected finite audio")
    prepared = model_input(audio.mean(axis=1), rate, sample_rate=sample_rate, trim_silence_db=None, level_db=level_db)
    return torch.from_numpy(prepared.pcm.astype(np.float32) / 32768.0)  # as the cache is read (PreparedCorpus)


def save_audio(path: Union[str, Path], audio: torch.Tensor, sample_rate: int) -> None:
    """Write Tensor[T] in [-1, 1] to ``path`` (format from the suffix, 16-bit PCM for WAV) atomically:
    a temporary file in the same folder renamed into place, so an interrupted run leaves no partial file."""
    path = Path(path)
    kind = path.suffix.lstrip(".").upper()
    if kind not in soundfile.available_formats():
        raise InputError(f"{path}: cannot write audio with suffix {path.suffix!r}; use .wav or .flac")
    data = audio.detach().cpu().float().clamp(-1.0, 1.0).numpy()
    subtype = "PCM_16" if kind in ("WAV", "FLAC", "AIFF") else None
    encoded = io.BytesIO()  # in memory first: a full disk is then one line that says how much the file needs
    soundfile.write(encoded, data, sample_rate, format=kind, subtype=subtype)
    atomic_write_bytes(path, encoded.getbuffer())
