"""The settings a cache is made with, and the hashes that decide when a cache is reused.

Two sets of settings: :class:`ProcessingSettings` decide the audio (their hash names the default cache folder,
and a change rebuilds the cache), :class:`SplitSettings` decide only the train/valid split (a change recomputes
the split without decoding anything). The source files are hashed too (:func:`source_fingerprint`): a new or
changed file rebuilds the cache.

Example:
    >>> settings = processing_settings("vctk", "data/demo/VCTK-Corpus-0.92")  # doctest: +SKIP
    >>> default_cache_dir("demo", settings).name == f"demo-{settings.digest()}"  # doctest: +SKIP
    True
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from audio_vqvae.data.audio import DEFAULT_LEVEL_DB
from audio_vqvae.data.corpora import CorpusScan, reader
from audio_vqvae.data.paths import default_data_dir
from audio_vqvae.errors import InputError
from audio_vqvae.pitch import TRACKER

PROCESSING_VERSION = 3   # bump when process_file's output changes for the same settings (2: pitch.npy, 3: trim_start)


@dataclass(frozen=True)
class ProcessingSettings:
    """Everything that decides the audio in a cache; its hash names the default cache folder."""

    corpus: str
    data_root: str
    sample_rate: int
    trim_silence_db: Optional[float]
    level_db: Optional[float]
    mic: str
    subsets: tuple[str, ...]
    pitch_tracker: str = TRACKER
    version: int = PROCESSING_VERSION

    def digest(self) -> str:
        return digest(asdict(self))


@dataclass(frozen=True)
class SplitSettings:
    """Everything that decides the train/valid split of a cache."""

    valid_utterances_per_speaker: int
    valid_speakers: tuple[str, ...]
    train_subsets: tuple[str, ...]
    valid_subsets: tuple[str, ...]

    def digest(self) -> str:
        return digest(asdict(self))


def processing_settings(corpus: str, data_root: Union[str, Path], *, sample_rate: int = 16000,
                        trim_silence_db: Optional[float] = 40.0, level_db: Optional[float] = DEFAULT_LEVEL_DB,
                        mic: str = "mic1", train_subsets: Sequence[str] = ("train-clean-100",),
                        valid_subsets: Sequence[str] = ()) -> ProcessingSettings:
    """The :class:`ProcessingSettings` of a ``prepare_corpus`` call (same arguments; a built corpus, demo,
    with the root it was built in). Only the options the corpus's scanner takes are recorded."""
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise InputError(f"sample rate must be a positive integer, got {sample_rate!r}")
    entry = reader(corpus)
    subsets = tuple(dict.fromkeys([*train_subsets, *valid_subsets])) if "subsets" in entry.options else ()
    return ProcessingSettings(
        corpus=entry.name, data_root=str(Path(data_root).expanduser().resolve()), sample_rate=sample_rate,
        trim_silence_db=None if trim_silence_db is None else float(trim_silence_db),
        level_db=None if level_db is None else float(level_db),
        mic=mic if "mic" in entry.options else "", subsets=subsets)


def split_settings(corpus: str, *, valid_utterances_per_speaker: int = 2, valid_speakers: Sequence[str] = (),
                   train_subsets: Sequence[str] = ("train-clean-100",),
                   valid_subsets: Sequence[str] = ()) -> SplitSettings:
    """The :class:`SplitSettings` of a ``prepare_corpus`` call; subsets only where the corpus has them."""
    subsets = "subsets" in reader(corpus).options
    split = SplitSettings(valid_utterances_per_speaker=int(valid_utterances_per_speaker),
                          valid_speakers=tuple(valid_speakers),
                          train_subsets=tuple(train_subsets) if subsets else (),
                          valid_subsets=tuple(valid_subsets) if subsets else ())
    if split.valid_utterances_per_speaker < 0:
        raise InputError(f"valid utterances per speaker must be >= 0, got {valid_utterances_per_speaker}")
    return split


def settings_differences(old: dict, new: dict) -> str:
    """``sample_rate 8000 -> 16000, level_db -24.0 -> None``: the settings that differ."""
    def plain(value: Any) -> Any:  # the manifest's JSON has lists where the settings have tuples
        return tuple(value) if isinstance(value, (list, tuple)) else value

    changed = [key for key in new if key != "data_root" and plain(old.get(key)) != plain(new[key])]
    return ", ".join(f"{key} {plain(old.get(key))!r} -> {plain(new[key])!r}" for key in changed) \
        or "its corpus root differs"


def source_fingerprint(scan: CorpusScan) -> str:
    """Hash of the candidate files (relative path and size) and scan outcome: new or changed files invalidate."""
    return digest({"files": [(scan.relative(u.path), file_size(u.path), u.speaker, u.text) for u in scan.utterances],
                   "skipped": scan.skipped, "speakers": scan.speakers})


def default_cache_dir(corpus: str, settings: ProcessingSettings) -> Path:
    """``default_data_dir()/cache/<corpus>-<processing hash>``, ``corpus`` as asked for (``demo``, not ``vctk``)."""
    return default_data_dir() / "cache" / f"{corpus}-{settings.digest()}"


def digest(data: Any) -> str:
    """12 hex digits of the SHA-1 of ``data`` as sorted JSON: the hashes in manifests and chunk names."""
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def file_size(path: Path) -> int:
    """``path``'s size in bytes as hashed with it; -1 when it cannot be read."""
    try:
        return path.stat().st_size
    except OSError:
        return -1
