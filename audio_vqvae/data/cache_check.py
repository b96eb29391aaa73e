"""Is a prepared cache what its manifest says it is? Sizes and checksums of its files, and the index's structure.

``manifest.json`` records every other file of the cache with its size and CRC-32 (``files``). Opening a cache
(:meth:`~audio_vqvae.data.corpus.PreparedCorpus.open`) checks the cheap part: sizes, the ``.npy`` headers
against the totals, and that the utterance index tiles the arrays; ``prepare`` (and so every training start)
also reads every byte against the checksums and rebuilds what is damaged. Reading is the cost: CRC-32 runs
at about 1.7 GB/s, 2.7 s for a VCTK-sized cache (40 h of int16 at 16 kHz, 4.6 GB) from the page cache
(docs/corpora.md has the measurement).

Example:
    >>> problems = check_cache(Path("/tmp/democache"), manifest, utterances, checksums=True)  # doctest: +SKIP
    >>> problems                                                                           # doctest: +SKIP
    {'audio.npy': 'contents differ from the CRC-32 that manifest.json records (overwritten or damaged)'}
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Optional

import numpy as np

from audio_vqvae.errors import InputError

BLOCK_BYTES = 1 << 24
# Damage to one of these needs the audio decoded again; the others are rebuilt from them (split, alignments).
CORE_FILES = ("audio.npy", "pitch.npy", "utterances.json", "speakers.json", "report.json")


def crc32_file(path: Path) -> int:
    """CRC-32 of a file's bytes (zlib's, as ``crc32`` of a zip archive)."""
    crc = 0
    with open(path, "rb", buffering=0) as handle:
        while block := handle.read(BLOCK_BYTES):
            crc = zlib.crc32(block, crc)
    return crc


def file_record(path: Path, crc: Optional[int] = None) -> dict:
    """What the manifest records of a file: ``{"bytes": size, "crc32": checksum}`` (``crc`` when already known)."""
    return {"bytes": path.stat().st_size, "crc32": crc32_file(path) if crc is None else crc}


def check_cache(cache_dir: Path, manifest: dict, utterances: Optional[list], *, checksums: bool) -> dict[str, str]:
    """The damaged files of a cache, by name, with what is wrong with each (empty: all is well).

    Args:
        manifest: the cache's ``manifest.json``.
        utterances: its ``utterances.json`` (None when unreadable: its own record reports it).
        checksums: also read every file against its CRC-32 (else sizes and structure only).
    """
    problems: dict[str, str] = {}
    for name, record in (manifest.get("files") or {}).items():
        path = cache_dir / name
        if not path.is_file():
            problems[name] = "missing"
            continue
        size = path.stat().st_size
        if size != record["bytes"]:
            problems[name] = (f"{size:,} bytes where manifest.json records {record['bytes']:,} "
                              "(cut short, overwritten or replaced)")
        elif checksums and crc32_file(path) != record["crc32"]:
            problems[name] = "contents differ from the CRC-32 that manifest.json records (overwritten or damaged)"
    total_samples = int(manifest.get("total_samples", -1))
    arrays = {"audio.npy": (np.int16, (total_samples,)), "pitch.npy": (np.float32, (None, 2))}
    shapes = {}
    for name, (dtype, shape) in arrays.items():
        if name in problems:
            continue
        problem, shape_held = _npy_problem(cache_dir / name, np.dtype(dtype), shape)
        if problem:
            problems[name] = problem
        else:
            shapes[name] = shape_held
    if utterances is not None and "utterances.json" not in problems:
        problem = _index_problem(utterances, total_samples, shapes["pitch.npy"][0] if "pitch.npy" in shapes else None)
        if problem:
            problems["utterances.json"] = problem
    return problems


def raise_if_damaged(cache_dir: Path, manifest: dict, utterances: list) -> None:
    """:func:`check_cache` without checksums, as one :class:`InputError` naming the first damaged file."""
    problems = check_cache(cache_dir, manifest, utterances, checksums=False)
    if problems:
        name, problem = next(iter(problems.items()))
        raise InputError(f"{cache_dir / name}: damaged cache file: {problem}; run `audio-vqvae prepare` again with "
                         "the same settings (it rebuilds what is damaged)")


def _npy_problem(path: Path, dtype: np.dtype, shape: tuple) -> tuple[Optional[str], tuple]:
    """What is wrong with a ``.npy`` file's header and size (None if nothing), and the shape it holds."""
    if not path.is_file():
        return "missing", (0,)
    try:
        array = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as err:  # a damaged header, or data shorter than the header says
        return f"not a readable .npy file ({str(err).splitlines()[0][:80]})", (0,)
    expected = tuple(array.shape[i] if wanted is None else wanted for i, wanted in enumerate(shape))
    if array.dtype != dtype or array.shape != expected:
        return f"holds {array.dtype} {array.shape}, expected {dtype} {expected}", (0,)
    return None, array.shape


def _index_problem(utterances: list, total_samples: int, total_frames: Optional[int]) -> Optional[str]:
    """Does the utterance index tile the audio and pitch arrays (None: unknown, not checked) one after the other?"""
    try:
        columns = {key: np.asarray([u[key] for u in utterances], dtype=np.int64)
                   for key in ("offset", "length", "pitch_offset", "pitch_frames")}
    except (KeyError, TypeError, ValueError) as err:
        return f"an utterance record is incomplete or not numeric ({err})"
    for offset, length, total, what in (("offset", "length", total_samples, "samples"),
                                        ("pitch_offset", "pitch_frames", total_frames, "pitch frames")):
        if total is None:
            continue
        starts, lengths = columns[offset], columns[length]
        expected = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else lengths
        wrong = np.flatnonzero((starts != expected) | (lengths < 0))
        if len(wrong):
            i = int(wrong[0])
            return (f"utterance {i} ({utterances[i].get('name', '?')}): {offset} {starts[i]}, expected {expected[i]} "
                    "(the index no longer tiles the arrays)")
        if int(lengths.sum()) != total:
            return f"the utterances hold {int(lengths.sum()):,} {what}, the arrays {total:,}"
    return None
