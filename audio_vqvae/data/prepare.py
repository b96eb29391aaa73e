"""Preprocess a corpus once into a compact cache that training reads without decoding again.

A cache folder holds:

* ``audio.npy``: every kept utterance, int16 at the model rate, back to back (memory-mapped on read);
* ``pitch.npy``: float32 (frames, 2), every utterance's pitch frames back to back, one per 10 ms
  (frame i centred on sample ``i * hop``): column 0 the f0 in Hz (0 where unvoiced), column 1 the phase
  of the fundamental measured in the audio (radians; :mod:`audio_vqvae.pitch`);
* ``utterances.json``: per utterance ``name``, ``speaker``, ``offset``, ``length``, ``text``, ``source``,
  ``pitch_offset``, ``pitch_frames``, ``trim_start`` (where the stored audio begins in the source file
  resampled to the cache rate) and ``source_length`` (that resampled file's length);
* ``phones.npy`` / ``phones.json`` (where the corpus has phone alignments): int32 (segments, 3) rows
  ``(start, stop, phone id)`` in samples of each utterance's stored audio, utterance after utterance, and
  the phone inventory, each utterance's ``[first row, rows]`` and the problems met
  (:func:`attach_alignments`);
* ``speakers.json``: the speaker table (``id`` 0..N-1 in name order, ``name``, corpus metadata, and
  ``log_f0_mean`` / ``log_f0_std``: ln f0 over the speaker's voiced frames, for pitch conversion);
* ``splits.json``: utterance indices of ``train`` and ``valid`` and the split settings;
* ``report.json`` / ``prepare.log``: rejected files with their reasons, warnings and notes;
* ``manifest.json``: settings, their hashes and totals. It is written last, so a folder without it
  is never mistaken for a finished cache.

Work happens in chunks of files, each written atomically to ``.work/`` by a worker process, so an
interrupted run resumes where it stopped. A finished cache is reused only when its processing hash
(corpus, root, rate, trimming, level, mic, subsets, version) and the list of source files match;
when only the split settings differ, the split is recomputed without decoding anything.

Example:
    >>> corpus = prepare_corpus("vctk", "data/demo/VCTK-Corpus-0.92", "/tmp/democache")  # doctest: +SKIP
    >>> corpus.sample_rate, len(corpus.speakers), len(corpus.split("valid"))              # doctest: +SKIP
    (16000, 8, 16)
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np
from tqdm import tqdm

from audio_vqvae.atomic import atomic_write
from audio_vqvae.config import DataConfig
from audio_vqvae.data.alignments import cache_segments, match_alignments, phone_inventory, read_alignments
from audio_vqvae.data.audio import Processed, process_file
from audio_vqvae.data.corpora import CorpusScan, SourceUtterance, count_reasons, locate_corpus, reader, scan_corpus
from audio_vqvae.data.corpus import CACHE_FORMAT, PreparedCorpus, read_json, write_json_atomic
from audio_vqvae.data.paths import default_data_dir
from audio_vqvae.errors import InputError
from audio_vqvae.pitch import TRACKER, log_f0_stats, measure_phase, track_pitch

logger = logging.getLogger(__name__)

PROCESSING_VERSION = 3   # bump when process_file's output changes for the same settings (2: pitch.npy, 3: trim_start)
CHUNK_FILES = 32
DEFAULT_LEVEL_DB = -24.0


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
        return _digest(asdict(self))


@dataclass(frozen=True)
class SplitSettings:
    """Everything that decides the train/valid split of a cache."""

    valid_utterances_per_speaker: int
    valid_speakers: tuple[str, ...]
    train_subsets: tuple[str, ...]
    valid_subsets: tuple[str, ...]

    def digest(self) -> str:
        return _digest(asdict(self))


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


def prepare_corpus(corpus: str, data_root: Optional[Union[str, Path]], out_dir: Optional[Union[str, Path]], *,
                   sample_rate: int = 16000, trim_silence_db: Optional[float] = 40.0,
                   valid_utterances_per_speaker: int = 2, valid_speakers: Sequence[str] = (),
                   train_subsets: Sequence[str] = ("train-clean-100",), valid_subsets: Sequence[str] = (),
                   mic: str = "mic1", num_workers: int = 2, progress: bool = True,
                   level_db: Optional[float] = DEFAULT_LEVEL_DB,
                   alignments: Optional[Union[str, Path]] = None) -> PreparedCorpus:
    """Decode, clean and store a corpus in ``out_dir``; reuse ``out_dir`` when it already holds it.

    Args:
        corpus: a name in :data:`~audio_vqvae.data.corpora.CORPORA`: ``"vctk"`` (0.92 or 0.80, detected from
            the tree), ``"librispeech"``, ``"folders"``, or ``"demo"`` (builds the demo corpus under
            ``data_root`` first, then reads it as VCTK).
        data_root: the extracted corpus (or the folder containing it); None: the corpus's default folder
            (:func:`~audio_vqvae.data.corpora.default_corpus_root`).
        out_dir: cache folder; created if needed. An existing cache made with other settings is rebuilt;
            a non-empty folder that is not a cache is refused. None: :func:`default_cache_dir`.
        sample_rate: model rate in Hz.
        trim_silence_db: trim leading/trailing audio this many dB below the loudest frame (None: no trim).
        valid_utterances_per_speaker: utterances of each training speaker held out for validation
            (at most all but one). Keys read by the most speakers go first, so on a parallel corpus
            every speaker holds out the same sentences.
        valid_speakers: speakers held out entirely (all their utterances go to ``valid``).
        train_subsets: LibriSpeech subsets for training.
        valid_subsets: LibriSpeech subsets for validation; when given, they replace the per-speaker hold-out.
        mic: VCTK 0.92 microphone (the other one is used where an utterance lacks it).
        num_workers: worker processes decoding files (0 or 1: in this process).
        progress: show a progress bar.
        level_db: RMS level of speech in dBFS after normalisation (None: keep the level).
        alignments: a folder (or file) of phone alignments, TextGrids or ``.item`` files
            (:mod:`audio_vqvae.data.alignments`). None keeps the alignments the cache already has, or
            uses ``<corpus root>/alignments`` where it exists (the demo corpus has one).

    Returns:
        The :class:`PreparedCorpus` in ``out_dir``; its ``report`` lists rejected files.

    Raises:
        InputError: missing or unrecognisable corpus, unknown held-out speaker, ``out_dir`` not a cache.
    """
    start_time = time.perf_counter()
    entry, data_root = locate_corpus(corpus, data_root, num_workers=num_workers)
    settings = processing_settings(entry.name, data_root, sample_rate=sample_rate, trim_silence_db=trim_silence_db,
                                   level_db=level_db, mic=mic, train_subsets=train_subsets, valid_subsets=valid_subsets)
    subsets = "subsets" in entry.options
    split = SplitSettings(valid_utterances_per_speaker=int(valid_utterances_per_speaker),
                          valid_speakers=tuple(valid_speakers),
                          train_subsets=tuple(train_subsets) if subsets else (),
                          valid_subsets=tuple(valid_subsets) if subsets else ())
    if split.valid_utterances_per_speaker < 0:
        raise InputError(f"valid utterances per speaker must be >= 0, got {valid_utterances_per_speaker}")
    scan = scan_corpus(entry.name, data_root, mic=mic, subsets=settings.subsets)
    out_dir = Path(out_dir).expanduser() if out_dir else default_cache_dir(corpus, settings)
    fingerprint = _source_fingerprint(scan)
    manifest = _read_manifest(out_dir)

    if (manifest is not None and manifest.get("processing_hash") == settings.digest()
            and manifest.get("source_fingerprint") == fingerprint):
        if manifest.get("split_hash") != split.digest():
            logger.info("%s: split settings changed; recomputing the split (audio is reused)", out_dir)
            _write_split(out_dir, manifest, split)
        else:
            logger.info("%s: cache is up to date", out_dir)
        attach_alignments(out_dir, _alignment_source(alignments, manifest, scan.root))
        prepared = PreparedCorpus.open(out_dir)
        _log_summary(prepared, skipped=False)
        return prepared

    _claim_out_dir(out_dir, manifest)
    if manifest is not None:
        logger.info("%s: cache was made with other settings or source files; rebuilding", out_dir)
    results = _process_all(scan, settings, out_dir / ".work", num_workers=num_workers, progress=progress)
    manifest = _assemble(scan, settings, fingerprint, results, out_dir, elapsed=time.perf_counter() - start_time)
    _write_split(out_dir, manifest, split)
    attach_alignments(out_dir, _alignment_source(alignments, None, scan.root))
    shutil.rmtree(out_dir / ".work", ignore_errors=True)
    prepared = PreparedCorpus.open(out_dir)
    _log_summary(prepared, skipped=True)
    return prepared


# --------------------------------------------------------------------------- worker side


@dataclass(frozen=True)
class _ChunkTask:
    paths: tuple[str, ...]
    out_path: str
    sample_rate: int
    trim_silence_db: Optional[float]
    level_db: Optional[float]


def _init_worker() -> None:
    # One thread per worker (the pool already uses the cores). Workers only run numpy, soxr and
    # libsndfile, never torch, so forking a parent that holds torch's thread pool is safe.
    os.environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")


def _pool_context() -> multiprocessing.context.BaseContext:
    """fork on Linux (fast, and no re-import of the caller's ``__main__``), spawn elsewhere."""
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def _process_chunk(task: _ChunkTask) -> list[dict]:
    """Process the files of one chunk; write their audio and metadata to ``task.out_path`` atomically."""
    pieces, pitches, meta = [], [], []
    for path in task.paths:
        result = process_file(path, sample_rate=task.sample_rate, trim_silence_db=task.trim_silence_db,
                              level_db=task.level_db)
        if isinstance(result, Processed):
            pieces.append(result.audio)
            pitches.append(_pitch_frames(result.audio, task.sample_rate))
            meta.append({"kept": True, "length": len(result.audio), "frames": len(pitches[-1]),
                         "source_rate": result.source_rate, "channels": result.channels,
                         "warnings": result.warnings, "trim_start": result.trim_start,
                         "source_length": result.resampled_length})
        else:
            meta.append({"kept": False, "reason": result.reason, "source_rate": result.source_rate,
                         "channels": result.channels})
    audio = np.concatenate(pieces) if pieces else np.zeros(0, np.int16)
    pitch = np.concatenate(pitches) if pitches else np.zeros((0, 2), np.float32)
    out_path = Path(task.out_path)
    atomic_write(out_path, lambda handle: np.savez(
        handle, audio=audio, pitch=pitch, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)))
    return meta


def _pitch_frames(pcm: np.ndarray, sample_rate: int) -> np.ndarray:
    """float32 (frames, 2): f0 in Hz (0 unvoiced) and the measured phase of the fundamental, per 10 ms frame."""
    audio = pcm.astype(np.float32) / 32768.0
    track = track_pitch(audio, sample_rate)
    phase = measure_phase(audio, track.f0, sample_rate, track.hop_length)
    return np.stack([track.f0, phase], axis=1).astype(np.float32)


def _read_chunk(path: Path) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    with np.load(path) as chunk:
        return chunk["audio"], chunk["pitch"], json.loads(chunk["meta"].tobytes().decode())


# --------------------------------------------------------------------------- main-process side


def _process_all(scan: CorpusScan, settings: ProcessingSettings, work_dir: Path, *, num_workers: int,
                 progress: bool) -> list[Path]:
    """Run every chunk that is not already in ``work_dir``; return the chunk files in corpus order."""
    work_dir.mkdir(parents=True, exist_ok=True)
    tasks = []
    for start in range(0, len(scan.utterances), CHUNK_FILES):
        items = scan.utterances[start:start + CHUNK_FILES]
        key = _digest({"settings": settings.digest(), "files": [(scan.relative(u.path), _size(u.path)) for u in items]})
        tasks.append(_ChunkTask(paths=tuple(str(u.path) for u in items), out_path=str(work_dir / f"{key}.npz"),
                                sample_rate=settings.sample_rate, trim_silence_db=settings.trim_silence_db,
                                level_db=settings.level_db))
    todo = [t for t in tasks if not Path(t.out_path).exists()]
    if len(todo) < len(tasks):
        logger.info("resuming: %d of %d chunks already processed", len(tasks) - len(todo), len(tasks))
    done = sum(len(t.paths) for t in tasks) - sum(len(t.paths) for t in todo)
    bar = tqdm(total=len(scan.utterances), initial=done, unit="file", desc="prepare", disable=not progress,
               dynamic_ncols=True)
    with bar:
        if num_workers <= 1:
            for task in todo:
                _process_chunk(task)
                bar.update(len(task.paths))
        else:
            with concurrent.futures.ProcessPoolExecutor(max_workers=num_workers, mp_context=_pool_context(),
                                                        initializer=_init_worker) as pool:
                futures = {pool.submit(_process_chunk, task): task for task in todo}
                for future in concurrent.futures.as_completed(futures):
                    future.result()
                    bar.update(len(futures[future].paths))
    return [Path(t.out_path) for t in tasks]


def _assemble(scan: CorpusScan, settings: ProcessingSettings, fingerprint: str, chunk_paths: list[Path],
              out_dir: Path, *, elapsed: float) -> dict:
    """Concatenate the chunks into ``audio.npy`` and write the index, report and manifest (last)."""
    metas = []
    total = total_frames = 0
    for path in chunk_paths:
        _, _, meta = _read_chunk(path)
        metas.extend(meta)
        total += sum(m["length"] for m in meta if m["kept"])
        total_frames += sum(m["frames"] for m in meta if m["kept"])
    assert len(metas) == len(scan.utterances)

    tmp_audio = out_dir / ".audio.npy.tmp"
    tmp_pitch = out_dir / ".pitch.npy.tmp"
    audio = np.lib.format.open_memmap(tmp_audio, mode="w+", dtype=np.int16, shape=(total,))
    pitch = np.lib.format.open_memmap(tmp_pitch, mode="w+", dtype=np.float32, shape=(total_frames, 2))
    utterances, rejected, warnings = [], [], []
    offset, position, frame_offset = 0, 0, 0
    voiced_f0: dict[str, list[np.ndarray]] = {}
    for path in chunk_paths:
        chunk_audio, chunk_pitch, meta = _read_chunk(path)
        cursor = frame_cursor = 0
        for item in meta:
            source: SourceUtterance = scan.utterances[position]
            relative = scan.relative(source.path)
            position += 1
            if not item["kept"]:
                rejected.append((relative, item["reason"]))
                continue
            length, frames = item["length"], item["frames"]
            audio[offset:offset + length] = chunk_audio[cursor:cursor + length]
            pitch[frame_offset:frame_offset + frames] = chunk_pitch[frame_cursor:frame_cursor + frames]
            voiced_f0.setdefault(source.speaker, []).append(chunk_pitch[frame_cursor:frame_cursor + frames, 0])
            utterances.append({"name": source.name, "speaker": source.speaker, "offset": offset, "length": length,
                               "text": source.text, "source": relative, "key": source.key, "subset": source.subset,
                               "pitch_offset": frame_offset, "pitch_frames": frames,
                               "trim_start": item["trim_start"], "source_length": item["source_length"]})
            warnings.extend((relative, w) for w in item["warnings"])
            cursor += length
            offset += length
            frame_cursor += frames
            frame_offset += frames
    audio.flush()
    pitch.flush()
    del audio, pitch
    os.replace(tmp_audio, out_dir / "audio.npy")
    os.replace(tmp_pitch, out_dir / "pitch.npy")
    write_json_atomic(out_dir / "utterances.json", utterances)

    rates = Counter(str(m["source_rate"]) for m in metas if m["source_rate"])
    channels = Counter(str(m["channels"]) for m in metas if m["channels"])
    skipped = scan.skipped + rejected
    report = {
        "layout": scan.layout, "root": str(scan.root), "files": len(scan.utterances) + len(scan.skipped),
        "kept": len(utterances), "kept_seconds": round(total / settings.sample_rate, 3),
        "rejected": [{"path": p, "reason": r} for p, r in skipped],
        "warnings": [{"path": p, "warning": w} for p, w in warnings],
        "notes": [{"path": p, "note": n} for p, n in scan.notes],
        "rejected_counts": dict(count_reasons(skipped)), "warning_counts": dict(count_reasons(warnings)),
        "note_counts": dict(count_reasons(scan.notes)),
        "source_sample_rates": dict(rates), "source_channels": dict(channels), "elapsed_s": round(elapsed, 2),
    }
    write_json_atomic(out_dir / "report.json", report)
    _write_log(out_dir / "prepare.log", report)
    counts, samples = Counter(), Counter()
    for utterance in utterances:
        counts[utterance["speaker"]] += 1
        samples[utterance["speaker"]] += utterance["length"]
    speakers = [{"id": index, "name": name, **scan.speakers.get(name, {}), "utterances": counts[name],
                 "seconds": round(samples[name] / settings.sample_rate, 3),
                 **_pitch_stats(np.concatenate(voiced_f0[name]))}
                for index, name in enumerate(sorted(counts))]
    write_json_atomic(out_dir / "speakers.json", speakers)
    return {
        "format": CACHE_FORMAT, "layout": scan.layout, "root": str(scan.root), "settings": asdict(settings),
        "processing_hash": settings.digest(), "source_fingerprint": fingerprint, "sample_rate": settings.sample_rate,
        "num_utterances": len(utterances), "num_speakers": len(speakers), "total_samples": total,
    }


def _pitch_stats(f0: np.ndarray) -> dict:
    """A speaker table's pitch entries: ln-f0 mean and spread over voiced frames (None when none is voiced)."""
    mean, std = log_f0_stats(f0)
    finite = np.isfinite(mean)
    return {"log_f0_mean": round(mean, 5) if finite else None, "log_f0_std": round(std, 5) if finite else None,
            "voiced_share": round(float(np.mean(f0 > 0)), 4) if f0.size else 0.0}


def _write_split(out_dir: Path, manifest: dict, split: SplitSettings) -> None:
    """Compute the train/valid split of the cached utterances; write ``splits.json`` then the manifest."""
    utterances = read_json(out_dir / "utterances.json")
    speakers = read_json(out_dir / "speakers.json")
    train, valid = assign_splits(utterances, split)
    held_out = set(split.valid_speakers)
    for speaker in speakers:
        speaker["held_out"] = speaker["name"] in held_out
    write_json_atomic(out_dir / "speakers.json", speakers)
    write_json_atomic(out_dir / "splits.json", {"split_hash": split.digest(), "settings": asdict(split),
                                                "train": train, "valid": valid})
    manifest = dict(manifest, split=asdict(split), split_hash=split.digest(),
                    settings_hash=_digest([manifest["processing_hash"], split.digest()]),
                    num_train=len(train), num_valid=len(valid))
    write_json_atomic(out_dir / "manifest.json", manifest)


def assign_splits(utterances: Sequence[dict], split: SplitSettings) -> tuple[list[int], list[int]]:
    """Deterministic train/valid split of utterance records (dicts with ``name``, ``speaker``, ``key``, ``subset``).

    Rules, in order: utterances of ``split.valid_speakers`` go to valid; with LibriSpeech
    ``valid_subsets``, the subset decides; otherwise each speaker holds out
    ``min(valid_utterances_per_speaker, n - 1)`` utterances, choosing the keys read by the most
    speakers first (ties: a hash of the key), so parallel corpora hold out the same sentences.

    Returns:
        ``(train, valid)``: sorted lists of indices into ``utterances``.
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


# --------------------------------------------------------------------------- alignments


def _alignment_source(asked: Optional[Union[str, Path]], manifest: Optional[dict], root: Path) -> Optional[Path]:
    """The alignments to attach: the ones asked for, else those the cache was made with, else ``root/alignments``."""
    if asked is not None:
        path = Path(asked).expanduser().resolve()
        if not path.exists():
            raise InputError(f"--alignments {asked}: no such folder or file")
        return path
    previous = ((manifest or {}).get("alignments") or {}).get("source")
    if previous and Path(previous).exists():
        return Path(previous)
    default = root / "alignments"
    return default.resolve() if default.is_dir() else None


def attach_alignments(out_dir: Path, source: Optional[Path]) -> None:
    """Read the alignments under ``source``, move them onto the cached utterances and store them.

    Writes ``phones.npy`` (int32 rows ``(start, stop, phone id)``, samples of each utterance's stored
    audio) and ``phones.json`` (``inventory``, per utterance ``[first row, rows]`` or None, ``problems``),
    then records them in the manifest. Nothing is decoded; unchanged alignment files are not read again.
    Every alignment that matches no utterance, names one twice or whose times fall outside the audio
    is left out with one logged line (also in ``phones.json`` and ``prepare.log``).
    """
    manifest = read_json(out_dir / "manifest.json")
    if source is None:
        if manifest.get("alignments"):
            write_json_atomic(out_dir / "manifest.json", {k: v for k, v in manifest.items() if k != "alignments"})
        return
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*")
                                                     if p.suffix.lower() in (".textgrid", ".item"))
    digest = _digest({"processing": manifest["processing_hash"], "source": str(source),
                      "files": [(str(p), _size(p), p.stat().st_mtime_ns) for p in files]})
    if (manifest.get("alignments") or {}).get("hash") == digest:
        return
    utterances = read_json(out_dir / "utterances.json")
    rate = int(manifest["sample_rate"])
    matched, problems = match_alignments(read_alignments(source), utterances, rate)
    phone_ids: dict[str, int] = {}
    rows, index_rows, row = [], [], 0
    for index, record in enumerate(utterances):
        if index not in matched:
            index_rows.append(None)
            continue
        segments = cache_segments(matched[index].segments, sample_rate=rate, trim_start=record["trim_start"],
                                  length=record["length"], phone_ids=phone_ids)
        rows.append(segments)
        index_rows.append([row, len(segments)])
        row += len(segments)
    table = np.concatenate(rows) if rows else np.zeros((0, 3), np.int32)
    atomic_write(out_dir / "phones.npy", lambda handle: np.save(handle, table))
    for path, problem in problems:
        logger.warning("alignment %s: %s", path, problem)
    write_json_atomic(out_dir / "phones.json", {"hash": digest, "source": str(source),
                                                "inventory": phone_inventory(phone_ids), "utterances": index_rows,
                                                "problems": [{"path": p, "problem": q} for p, q in problems]})
    with open(out_dir / "prepare.log", "a", encoding="utf-8") as log:
        log.writelines(f"alignment\t{path}\t{problem}\n" for path, problem in problems)
    aligned = len(matched)
    logger.info("alignments from %s: %d of %d utterances, %d phones, %d problem(s)", source, aligned,
                len(utterances), len(phone_ids), len(problems))
    write_json_atomic(out_dir / "manifest.json", dict(manifest, alignments={
        "hash": digest, "source": str(source), "aligned_utterances": aligned, "phones": len(phone_ids),
        "problems": len(problems)}))


# --------------------------------------------------------------------------- helpers


def _claim_out_dir(out_dir: Path, manifest: Optional[dict]) -> None:
    """Make ``out_dir`` ready for a (re)build; refuse to write into a folder that is not a cache."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: cache path exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    ours = {"manifest.json", "audio.npy", "pitch.npy", "utterances.json", "speakers.json", "splits.json", "report.json",
            "prepare.log", ".work", "phones.npy", "phones.json"}
    foreign = [p.name for p in out_dir.iterdir() if p.name not in ours and not p.name.endswith(".tmp")]
    if foreign and manifest is None:
        raise InputError(f"{out_dir}: folder is not empty and is not an audio-vqvae cache "
                         f"(found {', '.join(sorted(foreign)[:3])}); choose an empty or new --out folder")
    # The manifest goes first: from here on the folder no longer looks like a finished cache.
    (out_dir / "manifest.json").unlink(missing_ok=True)


def _read_manifest(out_dir: Path) -> Optional[dict]:
    try:
        manifest = read_json(out_dir / "manifest.json")
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == CACHE_FORMAT else None


def _source_fingerprint(scan: CorpusScan) -> str:
    """Hash of the candidate files (relative path and size) and scan outcome: new or changed files invalidate."""
    return _digest({"files": [(scan.relative(u.path), _size(u.path), u.speaker, u.text) for u in scan.utterances],
                    "skipped": scan.skipped, "speakers": scan.speakers})


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _digest(data: Any) -> str:
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def _write_log(path: Path, report: dict) -> None:
    lines = [f"# audio-vqvae prepare: {report['root']} ({report['layout']})",
             f"# kept {report['kept']} files ({report['kept_seconds'] / 60:.1f} min), "
             f"rejected {len(report['rejected'])}, warnings {len(report['warnings'])}, notes {len(report['notes'])}"]
    lines += [f"rejected\t{item['path']}\t{item['reason']}" for item in report["rejected"]]
    lines += [f"warning\t{item['path']}\t{item['warning']}" for item in report["warnings"]]
    lines += [f"note\t{item['path']}\t{item['note']}" for item in report["notes"]]
    atomic_write(path, lambda handle: handle.write("\n".join(lines) + "\n"), text=True)


def _log_summary(prepared: PreparedCorpus, *, skipped: bool) -> None:
    """Log the one-line reason of every skipped file (``skipped``), then the summary."""
    if skipped:
        for item in prepared.report["rejected"]:
            logger.warning("skipped %s: %s", item["path"], item["reason"])
    for line in format_summary(prepared):
        logger.info("%s", line)


def format_summary(prepared: PreparedCorpus) -> Iterable[str]:
    """Human-readable lines summarising a prepared corpus (for the CLI)."""
    report = prepared.report
    manifest = prepared.manifest
    yield (f"{prepared.cache_dir}: {report['kept']} utterances, {report['kept_seconds'] / 60:.1f} min, "
           f"{len(prepared.speakers)} speakers, {prepared.sample_rate} Hz ({report['layout']})")
    yield (f"split: {manifest['num_train']} train, {manifest['num_valid']} valid utterances; "
           f"settings {manifest['settings_hash']}")
    for title, counts in (("rejected", report["rejected_counts"]), ("warnings", report["warning_counts"]),
                          ("notes", report["note_counts"])):
        if counts:
            yield f"{title}: " + ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
    aligned = manifest.get("alignments")
    if aligned:
        yield (f"alignments: {aligned['aligned_utterances']} of {manifest['num_utterances']} utterances, "
               f"{aligned['phones']} phones, {aligned['problems']} alignment(s) left out ({aligned['source']})")
    rates = report["source_sample_rates"]
    if len(rates) > 1:
        yield "mixed source sample rates (Hz: files): " + ", ".join(
            f"{rate}: {n}" for rate, n in sorted(rates.items(), key=lambda item: int(item[0])))
    if report["rejected"] or report["warnings"] or report["notes"]:
        yield f"details: {prepared.cache_dir / 'prepare.log'}"


def default_cache_dir(corpus: str, settings: ProcessingSettings) -> Path:
    """``default_data_dir()/cache/<corpus>-<processing hash>``, ``corpus`` as asked for (``demo``, not ``vctk``)."""
    return default_data_dir() / "cache" / f"{corpus}-{settings.digest()}"


def ensure_prepared(data: DataConfig, sample_rate: int, *, progress: bool = True) -> PreparedCorpus:
    """Return the prepared corpus a training run asks for, preparing it first if needed.

    ``data.corpus == "demo"`` builds (or reuses) the demo corpus under ``data.data_root`` (default
    ``default_data_dir()/demo``) and prepares it as VCTK. ``data.data_root`` None means the corpus's
    default folder under :func:`default_data_dir`; ``data.cache_dir`` None means
    :func:`default_cache_dir`.

    Raises:
        InputError: the corpus is missing (the message names the expected layout and where to download
            it; the caller adds its own way out, e.g. the recipes' ``--demo``), or its settings are invalid.
    """
    return prepare_corpus(data.corpus, data.data_root, data.cache_dir, sample_rate=sample_rate,
                          trim_silence_db=data.trim_silence_db,
                          valid_utterances_per_speaker=data.valid_utterances_per_speaker,
                          valid_speakers=data.valid_speakers, train_subsets=data.train_subsets,
                          valid_subsets=data.valid_subsets, mic=data.mic, num_workers=data.num_workers,
                          progress=progress)
