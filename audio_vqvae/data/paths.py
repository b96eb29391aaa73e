"""Where the data folder is: corpora, the demo corpus and preprocessing caches live under it.

Nothing in this package downloads. Where each corpus goes inside the folder and where to get it are in
the corpus registry, :data:`audio_vqvae.data.corpora.CORPORA`.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV_VAR = "AUDIO_VQVAE_DATA"


def default_data_dir() -> Path:
    """Folder holding corpora, the demo corpus and preprocessing caches.

    ``$AUDIO_VQVAE_DATA`` if set; else the repository's ``data/`` folder when running from a
    checkout; else ``~/.cache/audio-vqvae``.
    """
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        return Path(env).expanduser()
    checkout_data = Path(__file__).resolve().parents[2] / "data"
    if checkout_data.is_dir():
        return checkout_data
    return Path.home() / ".cache" / "audio-vqvae"
