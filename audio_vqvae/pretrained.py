"""Models that ship inside the package, addressed by name: ``audio-vqvae convert --checkpoint demo ...``.

A shipped model is an ordinary checkpoint reduced to what generation needs (config, speaker table and
weights, floating-point weights stored as float16 to stay small) and written by :func:`export_model`;
it loads back to float32 like any checkpoint. A file of the same name in the working directory wins
over a shipped model.

Example:
    >>> sorted(SHIPPED)
    ['demo']
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch

MODEL_DIR = Path(__file__).resolve().parent / "models"
SHIPPED = {"demo": "demo.pt"}  # name -> file in MODEL_DIR


def shipped_path(name: Union[str, Path]) -> Optional[Path]:
    """The packaged file of a shipped model's name, or None when ``name`` is not one (or is not installed)."""
    file = SHIPPED.get(str(name))
    if file is None or not (MODEL_DIR / file).is_file():
        return None
    return MODEL_DIR / file


def export_model(checkpoint: Union[str, Path], out: Union[str, Path], *,
                 dtype: torch.dtype = torch.float16) -> dict:
    """Write ``checkpoint`` reduced to config, speaker table and weights (floating point as ``dtype``).

    Returns the written payload. The file loads with :func:`audio_vqvae.checkpoint.load_model`.
    """
    from audio_vqvae.checkpoint import FORMAT, VERSION, atomic_torch_save, load_checkpoint

    payload = load_checkpoint(checkpoint)
    weights = {name: tensor.to(dtype) if tensor.is_floating_point() else tensor
               for name, tensor in payload["model"].items()}
    reduced = {"format": FORMAT, "version": VERSION, "config": payload["config"], "speakers": payload["speakers"],
               "model": weights, "step": payload.get("step"), "source": Path(checkpoint).name}
    atomic_torch_save(reduced, out)
    return reduced
