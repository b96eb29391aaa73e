"""The train/valid split of a cache: which utterances validation holds out, written to ``splits.json``.

The split depends on :class:`~audio_vqvae.data.settings.SplitSettings` alone, so a change of them recomputes it
from the cached index without decoding anything.

Example:
    >>> split = SplitSettings(valid_utterances_per_speaker=1, valid_speakers=(), train_subsets=(), valid_subsets=())
    >>> utterances = [{"name": f"a_{i}", "speaker": "a", "key": str(i), "subset": ""} for i in range(3)]
    >>> train, valid = assign_splits(utterances, split)
    >>> len(train), len(valid)
    (2, 1)
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from audio_vqvae.data.cache_check import file_record
from audio_vqvae.data.corpus import read_json, write_json_atomic
from audio_vqvae.data.settings import SplitSettings, digest
from audio_vqvae.errors import InputError


def write_split(cache_dir: Path, manifest: dict, split: SplitSettings) -> dict:
    """Compute the train/valid split of the cached utterances; write ``splits.json`` (and the speakers' ``held_out``
    in ``speakers.json``); returns the manifest with the split (the caller writes it, last)."""
    utterances = read_json(cache_dir / "utterances.json")
    speakers = read_json(cache_dir / "speakers.json")
    train, valid = assign_splits(utterances, split)
    held_out = set(split.valid_speakers)
    for speaker in speakers:
        speaker["held_out"] = speaker["name"] in held_out
    write_json_atomic(cache_dir / "speakers.json", speakers)
    write_json_atomic(cache_dir / "splits.json", {"split_hash": split.digest(), "settings": asdict(split),
                                                  "train": train, "valid": valid})
    files = dict(manifest.get("files") or {}, **{name: file_record(cache_dir / name)
                                                 for name in ("speakers.json", "splits.json")})
    return dict(manifest, split=asdict(split), split_hash=split.digest(),
                settings_hash=digest([manifest["processing_hash"], split.digest()]),
                num_train=len(train), num_valid=len(valid), files=files)


def assign_splits(utterances: Sequence[dict], split: SplitSettings) -> tuple[list[int], list[int]]:
    """Deterministic train/valid split of utterance records (dicts with ``name``, ``speaker``, ``key``, ``subset``).

    Rules, in order: utterances of ``split.valid_speakers`` go to valid; with LibriSpeech
    ``valid_subsets``, the subset decides; otherwise each speaker holds out
    ``min(valid_utterances_per_speaker, n - 1)`` utterances, choosing the keys read by the most
    speakers first (ties: a hash of the key), so parallel corpora hold out the same sentences.

    Returns:
        ``(train, valid)``: sorted lists of indices into ``utterances``.

    Raises:
        InputError: a held-out speaker is not in the corpus.
    """
    names = {u["speaker"] for u in utterances}
    unknown = sorted(set(split.valid_speakers) - names)
    if unknown:
        raise InputError(f"held-out speaker(s) {', '.join(unknown)} not in the corpus; "
                         f"known: {', '.join(sorted(names)[:20])}{' ...' if len(names) > 20 else ''}")
    held_out = set(split.valid_speakers)
    train, valid = [], []
    if split.valid_subsets:
        for index, utterance in enumerate(utterances):
            in_valid = utterance["subset"] in split.valid_subsets or utterance["speaker"] in held_out
            (valid if in_valid else train).append(index)
        return train, valid
    readers = Counter(u["key"] for u in utterances)
    by_speaker: dict[str, list[int]] = {}
    for index, utterance in enumerate(utterances):
        if utterance["speaker"] in held_out:
            valid.append(index)
        else:
            by_speaker.setdefault(utterance["speaker"], []).append(index)
    for indices in by_speaker.values():
        ranked = sorted(indices, key=lambda i: (-readers[utterances[i]["key"]],
                                                hashlib.sha1(utterances[i]["key"].encode()).hexdigest(),
                                                utterances[i]["name"]))
        count = min(split.valid_utterances_per_speaker, len(indices) - 1)
        valid.extend(ranked[:count])
        train.extend(ranked[count:])
    return sorted(train), sorted(valid)
