"""Codes files, what ``audio-vqvae encode`` writes and ``decode`` reads: an audio file's codes and, for a
model with pitch input, its f0.

A model without pitch input writes ``.npy``: int64 codes, one per frame. A model with it (``needs_pitch``)
writes ``.npz``: ``codes`` int64[T'], ``f0`` float32[F] in Hz per 10 ms frame (0 where unvoiced, frame i
centred on sample ``i * sample_rate / 100``), ``log_f0`` float64[2] (the source's ln-f0 mean and spread)
and ``sample_rate``. :func:`read_codes_file` reads either and checks it against the model, with one-line
:class:`~audio_vqvae.errors.InputError` messages.

Example:
    >>> import tempfile, torch
    >>> from types import SimpleNamespace
    >>> model = SimpleNamespace(needs_pitch=False, config=SimpleNamespace(sample_rate=16000,
    ...                         quantizer=SimpleNamespace(num_codes=4)))
    >>> path = Path(tempfile.mkdtemp()) / "codes.npy"
    >>> check_codes_path(model, path)
    >>> write_codes_file(model, path, Encoded(torch.tensor([0, 3, 3, 1])))
    >>> read_codes_file(model, path).codes
    tensor([0, 3, 3, 1])
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from audio_vqvae.errors import InputError


@dataclass
class Encoded:
    """An input file's codes and, for a model with a source excitation, its f0 track and ln-f0 statistics."""

    codes: torch.Tensor  # LongTensor[T']
    f0: Optional[np.ndarray] = None  # float32[F], Hz per 10 ms frame, 0 unvoiced
    log_f0: Optional[tuple[float, float]] = None


def encode_file(model: Any, path: Path, level_db: Optional[float]) -> Encoded:
    """Codes (and f0) of an audio file, read as training audio was prepared: at speech level ``level_db``."""
    from audio_vqvae.generation.audio_io import load_audio
    from audio_vqvae.pitch import log_f0_stats, track_pitch

    audio = load_audio(path, model.config.sample_rate, level_db=level_db)
    if audio.shape[0] < model.hop_length:
        raise InputError(f"{path}: too short: {audio.shape[0]} samples, the model needs at least {model.hop_length}")
    codes = model.encode(audio.unsqueeze(0).to(next(model.parameters()).device))[0].cpu()
    if not model.needs_pitch:
        return Encoded(codes)
    f0 = track_pitch(audio.numpy(), model.config.sample_rate).f0
    if not (f0 > 0).any():
        raise InputError(f"{path}: no voiced frame found (the model speaks with the input's pitch; "
                         "unvoiced-only audio such as whisper or noise has none)")
    return Encoded(codes, f0, log_f0_stats(f0))


def check_codes_path(model: Any, path: Path) -> None:
    """Refuse an output name whose suffix is not the model's kind of codes file (``.npz`` with pitch input)."""
    wanted = ".npz" if model.needs_pitch else ".npy"
    if path.suffix != wanted:
        raise InputError(f"{path}: this model's codes file is {wanted} "
                         f"({'codes and f0' if model.needs_pitch else 'codes only'}); name the output *{wanted}")


def write_codes_file(model: Any, path: Path, encoded: Encoded) -> None:
    """Write ``encoded`` atomically as the model's kind of codes file (see the module docstring)."""
    from audio_vqvae.atomic import atomic_write_bytes

    codes = encoded.codes.numpy().astype(np.int64)
    buffer = io.BytesIO()
    if model.needs_pitch:
        np.savez(buffer, codes=codes, f0=encoded.f0.astype(np.float32), log_f0=np.asarray(encoded.log_f0, np.float64),
                 sample_rate=np.asarray(model.config.sample_rate, np.int64))
    else:
        np.save(buffer, codes)
    atomic_write_bytes(path, buffer.getbuffer())


def read_codes_file(model: Any, path: Path) -> Encoded:
    """A codes file written by ``encode``, checked against ``model``: ``.npy`` codes, or ``.npz`` codes with f0.

    Raises:
        InputError: one line naming the file and what is wrong with it.
    """
    if not path.is_file():
        raise InputError(f"{path}: codes file not found")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise InputError(f"{path}: not a codes file written by encode ({str(err).splitlines()[0]})") from None
    pitch = None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        if model.needs_pitch:
            raise InputError(f"{path}: holds codes only, but this model speaks with the source's f0; "
                             "encode the audio again with this checkpoint (it writes codes and f0 to a .npz)")
        codes = loaded
    else:
        with loaded:
            missing = {"codes", "f0", "log_f0", "sample_rate"} - set(loaded.files)
            if missing:
                raise InputError(f"{path}: a codes file needs arrays codes, f0, log_f0 and sample_rate; "
                                 f"missing {', '.join(sorted(missing))}")
            codes, f0, log_f0 = loaded["codes"], loaded["f0"], loaded["log_f0"]
            rate = int(loaded["sample_rate"])
            pitch = f0, log_f0
    if codes.ndim != 1 or codes.size == 0 or not np.issubdtype(codes.dtype, np.integer):
        raise InputError(f"{path}: expected a non-empty 1-D integer array of codes, got {codes.dtype} {codes.shape}")
    if pitch is not None:
        if rate != model.config.sample_rate:
            raise InputError(f"{path}: written for a {rate} Hz model, "
                             f"this checkpoint runs at {model.config.sample_rate} Hz")
        if f0.ndim != 1 or not np.isfinite(f0).all() or (f0 < 0).any() or log_f0.shape != (2,) \
                or not np.isfinite(log_f0).all():
            raise InputError(f"{path}: f0 must be a 1-D array of finite Hz values >= 0 and log_f0 two finite numbers")
    num_codes = model.config.quantizer.num_codes
    if codes.min() < 0 or codes.max() >= num_codes:
        raise InputError(f"{path}: codes must lie in [0, {num_codes}), got {codes.min()}..{codes.max()}")
    codes = torch.from_numpy(codes.astype(np.int64))
    if pitch is None or not model.needs_pitch:
        return Encoded(codes)
    return Encoded(codes, f0.astype(np.float32), (float(log_f0[0]), float(log_f0[1])))
