"""Where corpora and caches live, and where to get the corpora.

Nothing in this package downloads: the official addresses below are quoted in error messages and
the README so a user knows what to fetch and where to extract it.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV_VAR = "AUDIO_VQVAE_DATA"

VCTK_URL = "https://datashare.ed.ac.uk/handle/10283/3443"
LIBRISPEECH_URL = "https://www.openslr.org/12"

# Folder name each corpus has after extraction, relative to ``default_data_dir()``.
DEFAULT_CORPUS_FOLDERS = {
    "vctk": "VCTK-Corpus-0.92",
    "librispeech": "LibriSpeech",
    "folders": "speakers",
}

EXPECTED_LAYOUTS = {
    "vctk": ("VCTK 0.92: VCTK-Corpus-0.92/{wav48_silence_trimmed/<spk>/<spk>_<utt>_mic1.flac, txt/<spk>/<spk>_<utt>.txt, "
             "speaker-info.txt} or VCTK 0.80: VCTK-Corpus/{wav48/<spk>/<spk>_<utt>.wav, txt/, speaker-info.txt}; "
             f"download VCTK from {VCTK_URL}"),
    "librispeech": ("LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac with "
                    "<speaker>-<chapter>.trans.txt and LibriSpeech/SPEAKERS.TXT; "
                    f"download e.g. train-clean-100.tar.gz and dev-clean.tar.gz from {LIBRISPEECH_URL}"),
    "folders": "<root>/<speaker>/**/*.wav|flac|ogg, one folder per speaker (optional <utt>.txt transcript next to each file)",
}


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


def default_corpus_root(corpus: str) -> Path:
    """Where ``corpus`` is looked for when no ``data_root`` is given (``demo``: the demo corpus)."""
    if corpus == "demo":
        return default_data_dir() / "demo"
    return default_data_dir() / DEFAULT_CORPUS_FOLDERS[corpus]
