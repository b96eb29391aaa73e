"""Self-describing checkpoints: config as plain data, the speaker table and the weights.

A checkpoint loads with ``torch.load(path, weights_only=True)``; :func:`load_model` rebuilds the
model from the file alone.

Example:
    >>> import tempfile, torch
    >>> from audio_vqvae.config import ModelConfig
    >>> from audio_vqvae.model import VQVAE
    >>> cfg = ModelConfig.preset("small"); cfg.num_speakers = 2
    >>> path = tempfile.mkdtemp() + "/model.pt"
    >>> save_checkpoint(path, VQVAE(cfg, speakers=[{"id": 0, "name": "p225"}, {"id": 1, "name": "p226"}]))
    >>> load_model(path).speaker_id("p226")
    1
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, Optional, Union

import torch

from audio_vqvae.atomic import atomic_write
from audio_vqvae.config import ConfigError, ModelConfig
from audio_vqvae.errors import CheckpointError
from audio_vqvae.model import VQVAE

FORMAT = "audio-vqvae"
VERSION = 1


def atomic_torch_save(obj: Any, path: Union[str, Path]) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: never a half-written file."""
    atomic_write(path, lambda file: torch.save(obj, file))


def save_checkpoint(path: Union[str, Path], model: VQVAE, extra: Optional[dict] = None) -> None:
    """Write ``model`` (config, speaker table, weights and buffers) and optional ``extra`` entries.

    ``extra`` must hold plain data and tensors only (e.g. step, optimizer state), so that the
    file keeps loading with ``weights_only=True``.
    """
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config.to_dict(),
        "speakers": [dict(entry) for entry in model.speakers],
        "model": {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()},
    }
    reserved = set(payload) & set(extra or {})
    if reserved:
        raise ValueError(f"extra entries may not override {sorted(reserved)}")
    payload.update(extra or {})
    atomic_torch_save(payload, path)


def load_checkpoint(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> dict:
    """Read a checkpoint's contents (plain data and tensors) with ``weights_only=True``.

    ``path`` may also name a model shipped inside the package (``"demo"``, :mod:`audio_vqvae.pretrained`)
    when no file of that name exists.
    """
    from audio_vqvae.pretrained import SHIPPED, shipped_path

    path = Path(path)
    if not path.exists() and str(path) in SHIPPED:
        shipped = shipped_path(str(path))
        if shipped is None:
            raise CheckpointError(f"{path}: no file of that name, and this installation has no shipped "
                                  f"{path} model (it ships in the package's models/ folder)")
        path = shipped
    if path.is_dir():
        inside = list(path.glob("*.pt")) or list(path.glob("checkpoints/*.pt"))  # a run directory's are in checkpoints/
        newest = max(inside, key=lambda candidate: candidate.stat().st_mtime) if inside else None
        hint = f"; the newest in it is {newest}" if newest else "; it holds no .pt file"
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file; pass one .pt file{hint}")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    _check_complete(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError) as err:
        # PyTorch's own messages run to several sentences of internals; the first clause says enough.
        reason = str(err).splitlines()[0].split(". ")[0][:100] or type(err).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an audio-vqvae checkpoint (expected a file written by save_checkpoint)")
    if payload.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {payload['version']} is newer than this audio-vqvae "
                              f"understands ({VERSION}); upgrade the package")
    return payload


def _check_complete(path: Path) -> None:
    """Name a checkpoint cut short (an interrupted copy or download) as that, before torch.load fails obscurely.

    ``torch.save`` writes a zip archive, whose directory is at the end of the file: a file that starts like
    a zip archive but whose end is missing is incomplete.
    """
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes); copy the checkpoint again or use another one")
    with open(path, "rb") as handle:
        starts_like_zip = handle.read(4) == b"PK\x03\x04"
    if starts_like_zip and not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: the file is incomplete ({size:,} bytes, the end of the archive is missing: "
                              "cut short while being written or copied); copy it again or use another checkpoint")


def load_model(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> VQVAE:
    """Rebuild a :class:`VQVAE` in eval mode from a checkpoint file alone."""
    return model_from_checkpoint(load_checkpoint(path, map_location), path, map_location)


def model_from_checkpoint(payload: dict, path: Union[str, Path],
                          map_location: Union[str, torch.device] = "cpu") -> VQVAE:
    """Rebuild a :class:`VQVAE` in eval mode from what :func:`load_checkpoint` read from ``path``."""
    try:
        config = ModelConfig.from_dict(payload["config"], where=f"{path}: config")
        model = VQVAE(config, speakers=payload["speakers"])
        model.load_state_dict(payload["model"])
    except (ConfigError, KeyError, RuntimeError, ValueError) as err:
        reason = str(err).splitlines()[0]
        raise CheckpointError(f"{path}: checkpoint does not describe a valid model ({reason})") from None
    return model.to(map_location).eval()
