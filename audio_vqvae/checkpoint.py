"""Self-describing checkpoints: config as plain data, the speaker table and the weights.

A checkpoint loads with ``torch.load(path, weights_only=True)``; :func:`load_model` rebuilds the
model from the file alone. A training run's checkpoints (``<run>/checkpoints/step-00001000.pt``) add
the experiment config, the optimizer, scheduler and every rank's random states, from which
:func:`load_training_state` continues exactly; they are listed, rotated and picked for a resume here too.

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

import io
import pickle
import random
import re
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np
import torch

from audio_vqvae.atomic import atomic_write_bytes
from audio_vqvae.config import ConfigError, ExperimentConfig, ModelConfig
from audio_vqvae.errors import CheckpointError, InputError
from audio_vqvae.model import VQVAE

FORMAT = "audio-vqvae"
VERSION = 1
CHECKPOINT_DIR = "checkpoints"  # of a run directory
_CHECKPOINT_NAME = re.compile(r"^step-(\d+)\.pt$")


def atomic_torch_save(obj: Any, path: Union[str, Path]) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: never a half-written file.

    Serialised in memory first, so that a full disk is known before anything is written and its one-line
    error says how much the checkpoint needs (:class:`~audio_vqvae.filesystem.DiskFullError`).
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


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


# ---------------------------------------------------------------------- a training run's checkpoints


@dataclass
class TrainingState:
    """Where a training checkpoint left its run (what :func:`load_training_state` restored besides the weights).

    Attributes:
        step: optimizer steps taken.
        epoch: the epoch in progress.
        batch_in_epoch: batches of ``epoch`` already trained on.
        rng: this rank's random states (:func:`get_rng_state`), or None when the checkpoint was written by a
            different number of processes (the random streams are then reseeded).
    """

    step: int
    epoch: int
    batch_in_epoch: int
    rng: Optional[dict]


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}.pt"


def list_checkpoints(run_dir: Union[str, Path]) -> list[Path]:
    """Checkpoints of a run directory, oldest first (by step)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT_NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: Union[str, Path]) -> Optional[Path]:
    """The newest checkpoint of a run directory, or None."""
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def resume_checkpoint(run_dir: Path, resume: bool) -> Optional[Path]:
    """The checkpoint a run continues from: the newest in ``run_dir`` with ``resume``, None for a new run.

    Raises:
        InputError: ``resume`` and ``run_dir`` holds no checkpoint (a mistyped ``--out`` must not silently
            start a new full-length run), or not ``resume`` and it holds some (never overwritten).
    """
    newest = latest_checkpoint(run_dir)
    if resume:
        if newest is None:
            where = "does not exist" if not run_dir.exists() else "holds no checkpoint"
            raise InputError(f"--resume: {run_dir} {where} (looked for "
                             f"{run_dir / CHECKPOINT_DIR / 'step-*.pt'}); check --out, or leave out --resume "
                             "to start a new run")
        return newest
    if newest is not None:
        raise InputError(f"{run_dir} already holds checkpoints (newest: {newest.name}); "
                         "pass --resume to continue that run, or choose another --out")
    return None


def check_resume_compatible(payload: dict, path: Path, config: ExperimentConfig, speakers: list[dict]) -> list[str]:
    """Refuse a training checkpoint of another model or speaker table; returns notes on changed batching.

    Raises:
        CheckpointError: ``payload`` holds no experiment config (not a training checkpoint).
        InputError: the model config or the speaker table differs from this run's.
    """
    saved = payload.get("experiment")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: not a training checkpoint (no experiment config); cannot resume from it")
    # Through the dataclass, so that a checkpoint written before a model option existed has its default.
    saved_model, model = ModelConfig.from_dict(saved["model"]).to_dict(), config.model.to_dict()
    if saved_model != model:
        changed = sorted(k for k in saved_model.keys() | model.keys() if saved_model.get(k) != model.get(k))
        raise InputError(f"{path}: the model config differs from this run's ({', '.join(changed)}); "
                         "a run can only be resumed with the same model")
    names = [entry["name"] for entry in payload["speakers"]]
    if names != [entry["name"] for entry in speakers]:
        raise InputError(f"{path}: the checkpoint's speaker table differs from the prepared corpus'; "
                         "resume with the same corpus and data settings")
    return [f"note: data.{key} changed since the checkpoint ({saved['data'].get(key)} -> "
            f"{getattr(config.data, key)}); batches will differ from an uninterrupted run"
            for key in ("segment_length", "batch_size") if saved["data"].get(key) != getattr(config.data, key)]


def save_training_checkpoint(run_dir: Path, model: VQVAE, optimizer: torch.optim.Optimizer, scheduler: Any, *,
                             experiment: ExperimentConfig, step: int, epoch: int, batch_in_epoch: int,
                             rng: list[dict], valid: dict, keep: int) -> Path:
    """Write ``checkpoints/step-<step>.pt`` of ``run_dir`` and delete all but the newest ``keep``.

    Args:
        step, epoch, batch_in_epoch: where the run stands (:class:`TrainingState`).
        rng: every rank's random states (:func:`get_rng_state`), in rank order: a resume with as many
            processes continues each rank's streams.
        valid: the last validation metrics.

    Returns:
        The path written.
    """
    path = run_dir / CHECKPOINT_DIR / checkpoint_name(step)
    save_checkpoint(path, model, extra={
        "experiment": experiment.to_dict(),
        "step": step,
        "epoch": epoch,
        "batch_in_epoch": batch_in_epoch,
        "world_size": len(rng),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng,
        "valid": dict(valid),
    })
    for old in list_checkpoints(run_dir)[:-max(1, keep)]:
        old.unlink(missing_ok=True)
    return path


def load_training_state(payload: dict, model: VQVAE, optimizer: torch.optim.Optimizer, scheduler: Any, *,
                        rank: int, world_size: int) -> TrainingState:
    """Load a training checkpoint's weights, optimizer and scheduler states; return where the run stood."""
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    states = payload.get("rng", [])
    same_processes = payload.get("world_size") == world_size and rank < len(states)
    return TrainingState(step=int(payload["step"]), epoch=int(payload["epoch"]),
                         batch_in_epoch=int(payload["batch_in_epoch"]), rng=states[rank] if same_processes else None)


# ---------------------------------------------------------------------- random states (exact resumes)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_rng_state(device: torch.device) -> dict:
    """Random states as tensors and plain data, so that checkpoints load with ``weights_only=True``."""
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": {"keys": torch.from_numpy(numpy_state[1].astype(np.int64)), "position": int(numpy_state[2]),
                  "has_gauss": int(numpy_state[3]), "cached_gaussian": float(numpy_state[4])},
        "python": [python_state[0], list(python_state[1]), python_state[2]],
    }


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["position"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


@contextmanager
def isolated_rng(device: torch.device) -> Iterator[None]:
    """Validation and generation must not move the training random streams (resume exactness)."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda" if devices else "cpu"):
        yield
