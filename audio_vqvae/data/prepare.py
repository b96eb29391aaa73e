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
import io
import json
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np
from tqdm import tqdm

from audio_vqvae.atomic import TEMPORARY_SUFFIX, atomic_write
from audio_vqvae.config import DataConfig
from audio_vqvae.data.alignments import cache_segments, match_alignments, phone_inventory, read_alignments
from audio_vqvae.data.audio import DEFAULT_LEVEL_DB, Processed, process_file
from audio_vqvae.data.cache_check import CORE_FILES, check_cache, file_record
from audio_vqvae.data.corpora import CorpusScan, SourceUtterance, count_reasons, locate_corpus, reader, scan_corpus
from audio_vqvae.data.corpus import CACHE_FORMAT, PreparedCorpus, read_json, write_json_atomic
from audio_vqvae.data.paths import default_data_dir
from audio_vqvae.errors import InputError
from audio_vqvae.filesystem import DiskFullError, check_free_space, check_writable, disk_full_cause, disk_full_error
from audio_vqvae.folder_lock import LOCK_NAME, hold_folder
from audio_vqvae.pitch import TRACKER, log_f0_stats, measure_phase, track_pitch

logger = logging.getLogger(__name__)

# The files (and folder) a cache folder may hold; anything else means the folder is not a cache.
CACHE_NAMES = {"manifest.json", "audio.npy", "pitch.npy", "utterances.json", "speakers.json", "splits.json",
               "report.json", "prepare.log", ".work", "phones.npy", "phones.json", LOCK_NAME}
NPY_HEADER_BYTES = 128
PROCESSING_VERSION = 3   # bump when process_file's output changes for the same settings (2: pitch.npy, 3: trim_start)
CHUNK_FILES = 32


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
                   alignments: Optional[Union[str, Path]] = None, rebuild: bool = True) -> PreparedCorpus:
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
        rebuild: rebuild a cache in ``out_dir`` made with other processing settings (False: refuse in one line;
            training and evaluation never rebuild a cache the user named under settings of their own).

    A finished cache is checked first, every byte against the checksums in its manifest: a damaged split or
    alignment file is written again, damaged audio, pitch or index files rebuild the cache. One ``prepare`` at
    a time writes a cache folder (a second waits, then finds it ready).

    Returns:
        The :class:`PreparedCorpus` in ``out_dir``; its ``report`` lists rejected files.

    Raises:
        InputError: missing or unrecognisable corpus, unknown held-out speaker, ``out_dir`` not a cache or not
            writable, or (without ``rebuild``) a cache of other settings.
        DiskFullError: the cache does not fit (what it needs and what is free; temporary files removed).
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
    out_dir = Path(out_dir).expanduser() if out_dir else default_cache_dir(corpus, settings)
    check_writable(out_dir, folder=True)  # before the scan, and the decoding
    scan = scan_corpus(entry.name, data_root, mic=mic, subsets=settings.subsets)
    fingerprint = _source_fingerprint(scan)

    def waiting(holder: dict) -> None:
        logger.info("%s: waiting for process %s, which is preparing this cache", out_dir, holder.get("pid", "?"))

    with hold_folder(out_dir, waiting=waiting):
        manifest = _read_manifest(out_dir)
        if manifest is not None and manifest.get("processing_hash") != settings.digest() and not rebuild:
            raise InputError(f"{out_dir}: this cache was prepared with other settings "
                             f"({_differences(manifest.get('settings') or {}, asdict(settings))}); it is not rebuilt "
                             "under different ones: point data.cache_dir at another folder, or run "
                             "`audio-vqvae prepare --out` on it to rebuild it deliberately")
        if (manifest is not None and manifest.get("processing_hash") == settings.digest()
                and manifest.get("source_fingerprint") == fingerprint):
            prepared = _reuse(out_dir, manifest, split, _alignment_source(alignments, manifest, scan.root))
            if prepared is not None:
                _log_summary(prepared, skipped=False)
                return prepared
            manifest = {}  # damaged beyond the split and alignments: rebuilt below

        _claim_out_dir(out_dir, manifest)
        if manifest:
            logger.info("%s: cache was made with other settings or source files; rebuilding", out_dir)
        elif manifest is not None:
            logger.info("%s: rebuilding the damaged cache", out_dir)
        results = _process_all(scan, settings, out_dir / ".work", num_workers=num_workers, progress=progress)
        manifest = _assemble(scan, settings, fingerprint, results, out_dir, elapsed=time.perf_counter() - start_time)
        manifest = _write_split(out_dir, manifest, split)
        manifest = attach_alignments(out_dir, _alignment_source(alignments, None, scan.root), manifest)
        _write_manifest(out_dir, manifest)  # last: only now is the folder a finished cache
        shutil.rmtree(out_dir / ".work", ignore_errors=True)
        prepared = PreparedCorpus.open(out_dir)
    _log_summary(prepared, skipped=True)
    return prepared


def _reuse(out_dir: Path, manifest: dict, split: SplitSettings, alignments: Optional[Path]) -> Optional[PreparedCorpus]:
    """A finished cache of the same settings and sources: checked against its checksums, its split and alignments
    brought up to date (and written again where damaged). None when its audio or index is damaged (rebuild)."""
    _remove_leftovers(out_dir)
    try:
        utterances = read_json(out_dir / "utterances.json")
    except (OSError, ValueError):
        utterances = None
    legacy = "files" not in manifest  # written before caches recorded their files: checked by structure only
    problems = check_cache(out_dir, manifest, utterances, checksums=True)
    if utterances is None:
        problems.setdefault("utterances.json", "not readable as JSON")
    for name, problem in problems.items():
        logger.warning("%s: damaged cache file: %s", out_dir / name, problem)
    if any(name in CORE_FILES for name in problems):
        return None
    updated = dict(manifest)
    if manifest.get("split_hash") != split.digest() or "splits.json" in problems:
        logger.info("%s: %s; recomputing the split (audio is reused)", out_dir,
                    "splits.json is damaged" if "splits.json" in problems else "split settings changed")
        updated = _write_split(out_dir, updated, split)
    updated = attach_alignments(out_dir, alignments, updated,
                                force=bool({"phones.npy", "phones.json"} & set(problems)))
    if legacy:
        updated["files"] = {name: file_record(out_dir / name) for name in _cache_files(out_dir)}
    if updated != manifest:
        _write_manifest(out_dir, updated)
    else:
        logger.info("%s: cache is up to date", out_dir)
    return PreparedCorpus.open(out_dir)


def _differences(old: dict, new: dict) -> str:
    """``sample_rate 8000 -> 16000, level_db -24.0 -> None``: the settings that differ."""
    def plain(value: Any) -> Any:  # the manifest's JSON has lists where the settings have tuples
        return tuple(value) if isinstance(value, (list, tuple)) else value

    changed = [key for key in new if key != "data_root" and plain(old.get(key)) != plain(new[key])]
    return ", ".join(f"{key} {plain(old.get(key))!r} -> {plain(new[key])!r}" for key in changed) \
        or "its corpus root differs"


# --------------------------------------------------------------------------- worker side


@dataclass(frozen=True)
class _ChunkTask:
    paths: tuple[str, ...]
    out_path: str
    sample_rate: int
    trim_silence_db: Optional[float]
    level_db: Optional[float]


def _init_worker(parent: int) -> None:
    # One thread per worker (the pool already uses the cores). Workers only run numpy, soxr and
    # libsndfile, never torch, so forking a parent that holds torch's thread pool is safe.
    os.environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    _die_with_parent(parent)


def _die_with_parent(parent: int) -> None:
    """A worker whose parent is killed (``kill -9``) dies too, instead of writing chunks for nobody."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


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
    for leftover in work_dir.glob(f".*{TEMPORARY_SUFFIX}"):  # a chunk being written when a worker was killed
        leftover.unlink(missing_ok=True)
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
    try:
        with bar:
            _run_chunks(todo, bar, num_workers)
    except DiskFullError:
        raise disk_full_error(work_dir.parent, _estimated_bytes(tasks), estimate=True) from None
    return [Path(t.out_path) for t in tasks]


def _run_chunks(todo: list[_ChunkTask], bar: tqdm, num_workers: int) -> None:
    if num_workers <= 1:
        for task in todo:
            _process_chunk(task)
            bar.update(len(task.paths))
        return
    with concurrent.futures.ProcessPoolExecutor(max_workers=num_workers, mp_context=_pool_context(),
                                                initializer=_init_worker, initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(_process_chunk, task): task for task in todo}
        try:
            for future in concurrent.futures.as_completed(futures):
                future.result()
                bar.update(len(futures[future].paths))
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # e.g. a full disk: the other chunks would fail too
            raise


def _estimated_bytes(tasks: list[_ChunkTask]) -> Optional[int]:
    """About what a whole preparation needs on disk, extrapolated from the chunks done: chunks plus the cache."""
    done = [(Path(t.out_path).stat().st_size, len(t.paths)) for t in tasks if Path(t.out_path).exists()]
    files = sum(n for _, n in done)
    if not files:
        return None
    return 2 * sum(size for size, _ in done) * sum(len(t.paths) for t in tasks) // files


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

    # Written through ordinary writes, not a memory map: on a full disk a write fails with ENOSPC, where a
    # memory-mapped sparse file dies of SIGBUS. The space is checked first, with a margin for the index files.
    needed = 2 * total + 8 * total_frames + 2 * NPY_HEADER_BYTES + 512 * len(metas) + 2**20
    check_free_space(out_dir, needed)
    arrays = _ArrayWriters(out_dir, needed, {"audio.npy": (np.int16, (total,)),
                                             "pitch.npy": (np.float32, (total_frames, 2))})
    utterances, rejected, warnings = [], [], []
    offset, position, frame_offset = 0, 0, 0
    voiced_f0: dict[str, list[np.ndarray]] = {}
    for path in chunk_paths:
        chunk_audio, chunk_pitch, meta = _read_chunk(path)
        # A chunk holds its kept utterances back to back, in corpus order: it is appended whole.
        arrays.append("audio.npy", chunk_audio)
        arrays.append("pitch.npy", chunk_pitch)
        cursor = frame_cursor = 0
        for item in meta:
            source: SourceUtterance = scan.utterances[position]
            relative = scan.relative(source.path)
            position += 1
            if not item["kept"]:
                rejected.append((relative, item["reason"]))
                continue
            length, frames = item["length"], item["frames"]
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
    files = arrays.finish()
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
        "total_frames": total_frames, "files": files,
    }


class _ArrayWriters:
    """``.npy`` files written front to back into temporary files, checksummed on the way, renamed by
    :meth:`finish`; on any failure the temporary files are removed (a full disk becomes a one-line error)."""

    def __init__(self, out_dir: Path, needed: int, arrays: dict[str, tuple[Any, tuple]]):
        self.out_dir, self.needed = out_dir, needed
        self.expected = {name: np.dtype(dtype) for name, (dtype, _) in arrays.items()}
        self.handles, self.crcs = {}, {}
        try:
            for name, (dtype, shape) in arrays.items():
                self.handles[name] = open(self._temporary(name), "wb")
                header = io.BytesIO()
                np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                              "fortran_order": False, "shape": shape})
                self.crcs[name] = 0
                self._write(name, header.getvalue())
        except BaseException as err:
            self._fail(err)

    def _temporary(self, name: str) -> Path:
        return self.out_dir / f".{name}{TEMPORARY_SUFFIX}"

    def _write(self, name: str, data: bytes) -> None:
        self.handles[name].write(data)
        self.crcs[name] = zlib.crc32(data, self.crcs[name])

    def append(self, name: str, array: np.ndarray) -> None:
        try:
            self._write(name, np.ascontiguousarray(array, dtype=self.expected[name]).tobytes())
        except BaseException as err:
            self._fail(err)

    def finish(self) -> dict:
        """Flush, sync and rename into place; returns the manifest's records of the files."""
        try:
            for name, handle in self.handles.items():
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()
            for name in self.handles:
                os.replace(self._temporary(name), self.out_dir / name)
        except BaseException as err:
            self._fail(err)
        return {name: file_record(self.out_dir / name, self.crcs[name]) for name in self.handles}

    def _fail(self, err: BaseException) -> None:
        for name, handle in self.handles.items():
            try:
                handle.close()
            except OSError:
                pass  # closing flushes, which may fail again on a full disk: the file goes anyway
            self._temporary(name).unlink(missing_ok=True)
        if disk_full_cause(err) is not None:
            raise disk_full_error(self.out_dir, self.needed) from err
        raise err


def _pitch_stats(f0: np.ndarray) -> dict:
    """A speaker table's pitch entries: ln-f0 mean and spread over voiced frames (None when none is voiced)."""
    mean, std = log_f0_stats(f0)
    finite = np.isfinite(mean)
    return {"log_f0_mean": round(mean, 5) if finite else None, "log_f0_std": round(std, 5) if finite else None,
            "voiced_share": round(float(np.mean(f0 > 0)), 4) if f0.size else 0.0}


def _write_split(out_dir: Path, manifest: dict, split: SplitSettings) -> dict:
    """Compute the train/valid split of the cached utterances; write ``splits.json``; returns the manifest with
    the split (the caller writes it, last)."""
    utterances = read_json(out_dir / "utterances.json")
    speakers = read_json(out_dir / "speakers.json")
    train, valid = assign_splits(utterances, split)
    held_out = set(split.valid_speakers)
    for speaker in speakers:
        speaker["held_out"] = speaker["name"] in held_out
    write_json_atomic(out_dir / "speakers.json", speakers)
    write_json_atomic(out_dir / "splits.json", {"split_hash": split.digest(), "settings": asdict(split),
                                                "train": train, "valid": valid})
    files = dict(manifest.get("files") or {}, **{name: file_record(out_dir / name)
                                                 for name in ("speakers.json", "splits.json")})
    return dict(manifest, split=asdict(split), split_hash=split.digest(),
                settings_hash=_digest([manifest["processing_hash"], split.digest()]),
                num_train=len(train), num_valid=len(valid), files=files)


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


def attach_alignments(out_dir: Path, source: Optional[Path], manifest: dict, *, force: bool = False) -> dict:
    """Read the alignments under ``source``, move them onto the cached utterances and store them.

    Writes ``phones.npy`` (int32 rows ``(start, stop, phone id)``, samples of each utterance's stored
    audio) and ``phones.json`` (``inventory``, per utterance ``[first row, rows]`` or None, ``problems``),
    and returns ``manifest`` recording them (the caller writes it, last). Nothing is decoded; unchanged
    alignment files are not read again unless ``force`` (the stored ones are damaged).
    Every alignment that matches no utterance, names one twice or whose times fall outside the audio
    is left out with one logged line (also in ``phones.json`` and ``prepare.log``).
    """
    if source is None:
        for name in ("phones.npy", "phones.json"):
            (out_dir / name).unlink(missing_ok=True)
        files = {k: v for k, v in (manifest.get("files") or {}).items() if k not in ("phones.npy", "phones.json")}
        return dict({k: v for k, v in manifest.items() if k != "alignments"}, files=files)
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*")
                                                     if p.suffix.lower() in (".textgrid", ".item"))
    digest = _digest({"processing": manifest["processing_hash"], "source": str(source),
                      "files": [(str(p), _size(p), p.stat().st_mtime_ns) for p in files]})
    if (manifest.get("alignments") or {}).get("hash") == digest and not force:
        return manifest
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
    files = dict(manifest.get("files") or {}, **{name: file_record(out_dir / name)
                                                 for name in ("phones.npy", "phones.json")})
    return dict(manifest, files=files, alignments={
        "hash": digest, "source": str(source), "aligned_utterances": aligned, "phones": len(phone_ids),
        "problems": len(problems)})


# --------------------------------------------------------------------------- helpers


def _claim_out_dir(out_dir: Path, manifest: Optional[dict]) -> None:
    """Make ``out_dir`` ready for a (re)build; refuse to write into a folder that is not a cache."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: cache path exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    foreign = [p.name for p in out_dir.iterdir() if p.name not in CACHE_NAMES and not p.name.endswith(TEMPORARY_SUFFIX)]
    if foreign and manifest is None:
        raise InputError(f"{out_dir}: folder is not empty and is not an audio-vqvae cache "
                         f"(found {', '.join(sorted(foreign)[:3])}); choose an empty or new --out folder")
    # The manifest goes first: from here on the folder no longer looks like a finished cache.
    (out_dir / "manifest.json").unlink(missing_ok=True)
    _remove_leftovers(out_dir, keep_work=True)


def _remove_leftovers(out_dir: Path, *, keep_work: bool = False) -> None:
    """What a killed ``prepare`` left: temporary files, and (once the cache is finished) its ``.work`` chunks.
    Only under the cache's lock, when no other ``prepare`` writes here."""
    for leftover in out_dir.glob(f".*{TEMPORARY_SUFFIX}"):
        leftover.unlink(missing_ok=True)
    if not keep_work and (out_dir / ".work").exists():
        logger.info("%s: removing .work, left by an interrupted prepare", out_dir)
        shutil.rmtree(out_dir / ".work", ignore_errors=True)


def _cache_files(out_dir: Path) -> list[str]:
    """The files of a finished cache that its manifest records (sizes and checksums)."""
    return [name for name in ("audio.npy", "pitch.npy", "utterances.json", "speakers.json", "splits.json",
                              "report.json", "phones.npy", "phones.json") if (out_dir / name).is_file()]


def _write_manifest(out_dir: Path, manifest: dict) -> None:
    """The manifest, with every file it records; written last, so that it marks a finished cache."""
    files = manifest.get("files") or {}
    missing = [name for name in _cache_files(out_dir) if name not in files]
    if missing:  # report.json and the index files written outside the steps that record their own
        files = dict(files, **{name: file_record(out_dir / name) for name in missing})
    write_json_atomic(out_dir / "manifest.json", dict(manifest, files=files))


def _read_manifest(out_dir: Path) -> Optional[dict]:
    try:
        manifest = read_json(out_dir / "manifest.json")
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError, json.JSONDecodeError):
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
    :func:`default_cache_dir`. A cache the user named (``data.cache_dir``) is never rebuilt under other settings:
    a resume whose config went astray stops in one line instead of overwriting it.

    Raises:
        InputError: the corpus is missing (the message names the expected layout and where to download
            it; the caller adds its own way out, e.g. the recipes' ``--demo``), or its settings are invalid.
    """
    return prepare_corpus(data.corpus, data.data_root, data.cache_dir, sample_rate=sample_rate,
                          trim_silence_db=data.trim_silence_db, level_db=data.level_db,
                          valid_utterances_per_speaker=data.valid_utterances_per_speaker,
                          valid_speakers=data.valid_speakers, train_subsets=data.train_subsets,
                          valid_subsets=data.valid_subsets, mic=data.mic, num_workers=data.num_workers,
                          progress=progress, rebuild=data.cache_dir is None)
