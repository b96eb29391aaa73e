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
  (:func:`~audio_vqvae.data.alignments.attach_alignments`);
* ``speakers.json``: the speaker table (``id`` 0..N-1 in name order, ``name``, corpus metadata, and
  ``log_f0_mean`` / ``log_f0_std``: ln f0 over the speaker's voiced frames, for pitch conversion);
* ``splits.json``: utterance indices of ``train`` and ``valid`` and the split settings
  (:mod:`audio_vqvae.data.splits`);
* ``report.json`` / ``prepare.log``: rejected files with their reasons, warnings and notes;
* ``manifest.json``: settings, their hashes and totals. It is written last, so a folder without it
  is never mistaken for a finished cache.

Work happens in chunks of files, each written atomically to ``.work/`` by a worker process
(:mod:`audio_vqvae.data.workers`), so an interrupted run resumes where it stopped; this module assembles the
chunks into the cache. A finished cache is reused only when its processing hash (corpus, root, rate, trimming,
level, mic, subsets, version) and the list of source files match; when only the split settings differ, the
split is recomputed without decoding anything (:mod:`audio_vqvae.data.settings`).

Example:
    >>> corpus = prepare_corpus("vctk", "data/demo/VCTK-Corpus-0.92", "/tmp/democache")  # doctest: +SKIP
    >>> corpus.sample_rate, len(corpus.speakers), len(corpus.split("valid"))              # doctest: +SKIP
    (16000, 8, 16)
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import time
import zlib
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np

from audio_vqvae.atomic import TEMPORARY_SUFFIX, atomic_write
from audio_vqvae.config import DataConfig
from audio_vqvae.data.alignments import alignment_source, attach_alignments
from audio_vqvae.data.audio import DEFAULT_LEVEL_DB
from audio_vqvae.data.cache_check import CORE_FILES, check_cache, file_record
from audio_vqvae.data.corpora import CorpusScan, SourceUtterance, count_reasons, locate_corpus, scan_corpus
from audio_vqvae.data.corpus import CACHE_FORMAT, PreparedCorpus, read_json, write_json_atomic
from audio_vqvae.data.settings import (
    ProcessingSettings,
    SplitSettings,
    default_cache_dir,
    processing_settings,
    settings_differences,
    source_fingerprint,
    split_settings,
)
from audio_vqvae.data.splits import write_split
from audio_vqvae.data.workers import decode_chunks, read_chunk
from audio_vqvae.errors import InputError
from audio_vqvae.filesystem import check_free_space, check_writable, disk_full_cause, disk_full_error
from audio_vqvae.folder_lock import LOCK_NAME, hold_folder
from audio_vqvae.pitch import log_f0_stats

logger = logging.getLogger(__name__)

# The files (and folder) a cache folder may hold; anything else means the folder is not a cache.
CACHE_NAMES = {"manifest.json", "audio.npy", "pitch.npy", "utterances.json", "speakers.json", "splits.json",
               "report.json", "prepare.log", ".work", "phones.npy", "phones.json", LOCK_NAME}
NPY_HEADER_BYTES = 128


def prepare_corpus(corpus: str, data_root: Optional[Union[str, Path]], cache_dir: Optional[Union[str, Path]], *,
                   sample_rate: int = 16000, trim_silence_db: Optional[float] = 40.0,
                   level_db: Optional[float] = DEFAULT_LEVEL_DB, valid_utterances_per_speaker: int = 2,
                   valid_speakers: Sequence[str] = (), train_subsets: Sequence[str] = ("train-clean-100",),
                   valid_subsets: Sequence[str] = (), mic: str = "mic1", prepare_workers: int = 2,
                   alignments: Optional[Union[str, Path]] = None, progress: bool = True,
                   rebuild: bool = True) -> PreparedCorpus:
    """Decode, clean and store a corpus in ``cache_dir``; reuse ``cache_dir`` when it already holds it.

    The keyword arguments are the ``data`` settings of a training config (:class:`~audio_vqvae.config.DataConfig`)
    of the same names, and the flags of ``audio-vqvae prepare`` (``--trim-silence-db``, ...).

    Args:
        corpus: a name in :data:`~audio_vqvae.data.corpora.CORPORA`: ``"vctk"`` (0.92 or 0.80, detected from
            the tree), ``"librispeech"``, ``"folders"``, or ``"demo"`` (builds the demo corpus under
            ``data_root`` first, then reads it as VCTK).
        data_root: the extracted corpus (or the folder containing it); None: the corpus's default folder
            (:func:`~audio_vqvae.data.corpora.default_corpus_root`).
        cache_dir: cache folder; created if needed. An existing cache made with other settings is rebuilt;
            a non-empty folder that is not a cache is refused. None:
            :func:`~audio_vqvae.data.settings.default_cache_dir`.
        sample_rate: model rate in Hz.
        trim_silence_db: trim leading/trailing audio this many dB below the loudest frame (None: no trim).
        level_db: RMS level of speech in dBFS after normalisation (None: keep the level).
        valid_utterances_per_speaker: utterances of each training speaker held out for validation
            (at most all but one). Keys read by the most speakers go first, so on a parallel corpus
            every speaker holds out the same sentences.
        valid_speakers: speakers held out entirely (all their utterances go to ``valid``).
        train_subsets: LibriSpeech subsets for training.
        valid_subsets: LibriSpeech subsets for validation; when given, they replace the per-speaker hold-out.
        mic: VCTK 0.92 microphone (the other one is used where an utterance lacks it).
        prepare_workers: worker processes decoding files, and building the demo corpus (0 or 1: decoding in
            this process).
        alignments: a folder (or file) of phone alignments, TextGrids or ``.item`` files
            (:mod:`audio_vqvae.data.alignments`). None keeps the alignments the cache already has, or
            uses ``<corpus root>/alignments`` where it exists (the demo corpus has one).
        progress: show a progress bar.
        rebuild: rebuild a cache in ``cache_dir`` made with other processing settings (False: refuse in one line;
            training and evaluation never rebuild a cache the user named under settings of their own).

    A finished cache is checked first, every byte against the checksums in its manifest: a damaged split or
    alignment file is written again, damaged audio, pitch or index files rebuild the cache. One ``prepare`` at
    a time writes a cache folder (a second waits, then finds it ready).

    Returns:
        The :class:`PreparedCorpus` in ``cache_dir``; its ``report`` lists rejected files.

    Raises:
        InputError: missing or unrecognisable corpus, unknown held-out speaker, ``cache_dir`` not a cache or not
            writable, or (without ``rebuild``) a cache of other settings.
        DiskFullError: the cache does not fit (what it needs and what is free; temporary files removed).
    """
    start_time = time.perf_counter()
    entry, data_root = locate_corpus(corpus, data_root, num_workers=prepare_workers)
    settings = processing_settings(entry.name, data_root, sample_rate=sample_rate, trim_silence_db=trim_silence_db,
                                   level_db=level_db, mic=mic, train_subsets=train_subsets, valid_subsets=valid_subsets)
    split = split_settings(entry.name, valid_utterances_per_speaker=valid_utterances_per_speaker,
                           valid_speakers=valid_speakers, train_subsets=train_subsets, valid_subsets=valid_subsets)
    cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir(corpus, settings)
    check_writable(cache_dir, folder=True)  # before the scan, and the decoding
    scan = scan_corpus(entry.name, data_root, mic=mic, subsets=settings.subsets)
    fingerprint = source_fingerprint(scan)

    def waiting(holder: dict) -> None:
        logger.info("%s: waiting for process %s, which is preparing this cache", cache_dir, holder.get("pid", "?"))

    with hold_folder(cache_dir, waiting=waiting):
        manifest = _read_manifest(cache_dir)
        if manifest is not None and manifest.get("processing_hash") != settings.digest() and not rebuild:
            differences = settings_differences(manifest.get("settings") or {}, asdict(settings))
            raise InputError(f"{cache_dir}: this cache was prepared with other settings "
                             f"({differences}); it is not rebuilt "
                             "under different ones: point data.cache_dir at another folder, or run "
                             "`audio-vqvae prepare --out` on it to rebuild it deliberately")
        if (manifest is not None and manifest.get("processing_hash") == settings.digest()
                and manifest.get("source_fingerprint") == fingerprint):
            prepared = _reuse(cache_dir, manifest, split, alignment_source(alignments, manifest, scan.root))
            if prepared is not None:
                _log_summary(prepared, skipped=False)
                return prepared
            manifest = {}  # damaged beyond the split and alignments: rebuilt below

        _claim_cache_dir(cache_dir, manifest)
        if manifest:
            logger.info("%s: cache was made with other settings or source files; rebuilding", cache_dir)
        elif manifest is not None:
            logger.info("%s: rebuilding the damaged cache", cache_dir)
        chunks = decode_chunks(scan, settings, cache_dir / ".work", prepare_workers=prepare_workers,
                               progress=progress)
        manifest = _assemble(scan, settings, fingerprint, chunks, cache_dir, elapsed=time.perf_counter() - start_time)
        manifest = write_split(cache_dir, manifest, split)
        manifest = attach_alignments(cache_dir, alignment_source(alignments, None, scan.root), manifest)
        _write_manifest(cache_dir, manifest)  # last: only now is the folder a finished cache
        shutil.rmtree(cache_dir / ".work", ignore_errors=True)
        prepared = PreparedCorpus.open(cache_dir)
    _log_summary(prepared, skipped=True)
    return prepared


def _reuse(cache_dir: Path, manifest: dict, split: SplitSettings,
           alignments: Optional[Path]) -> Optional[PreparedCorpus]:
    """A finished cache of the same settings and sources: checked against its checksums, its split and alignments
    brought up to date (and written again where damaged). None when its audio or index is damaged (rebuild)."""
    _remove_leftovers(cache_dir)
    try:
        utterances = read_json(cache_dir / "utterances.json")
    except (OSError, ValueError):
        utterances = None
    legacy = "files" not in manifest  # written before caches recorded their files: checked by structure only
    problems = check_cache(cache_dir, manifest, utterances, checksums=True)
    if utterances is None:
        problems.setdefault("utterances.json", "not readable as JSON")
    for name, problem in problems.items():
        logger.warning("%s: damaged cache file: %s", cache_dir / name, problem)
    if any(name in CORE_FILES for name in problems):
        return None
    updated = dict(manifest)
    if manifest.get("split_hash") != split.digest() or "splits.json" in problems:
        logger.info("%s: %s; recomputing the split (audio is reused)", cache_dir,
                    "splits.json is damaged" if "splits.json" in problems else "split settings changed")
        updated = write_split(cache_dir, updated, split)
    updated = attach_alignments(cache_dir, alignments, updated,
                                force=bool({"phones.npy", "phones.json"} & set(problems)))
    if legacy:
        updated["files"] = {name: file_record(cache_dir / name) for name in _cache_files(cache_dir)}
    if updated != manifest:
        _write_manifest(cache_dir, updated)
    else:
        logger.info("%s: cache is up to date", cache_dir)
    return PreparedCorpus.open(cache_dir)


def _assemble(scan: CorpusScan, settings: ProcessingSettings, fingerprint: str, chunk_paths: list[Path],
              cache_dir: Path, *, elapsed: float) -> dict:
    """Concatenate the chunks into ``audio.npy`` and write the index, report and manifest (last)."""
    metas = []
    total = total_frames = 0
    for path in chunk_paths:
        _, _, meta = read_chunk(path)
        metas.extend(meta)
        total += sum(m["length"] for m in meta if m["kept"])
        total_frames += sum(m["frames"] for m in meta if m["kept"])
    assert len(metas) == len(scan.utterances)

    # Written through ordinary writes, not a memory map: on a full disk a write fails with ENOSPC, where a
    # memory-mapped sparse file dies of SIGBUS. The space is checked first, with a margin for the index files.
    needed = 2 * total + 8 * total_frames + 2 * NPY_HEADER_BYTES + 512 * len(metas) + 2**20
    check_free_space(cache_dir, needed)
    arrays = _ArrayWriters(cache_dir, needed, {"audio.npy": (np.int16, (total,)),
                                             "pitch.npy": (np.float32, (total_frames, 2))})
    utterances, rejected, warnings = [], [], []
    offset, position, frame_offset = 0, 0, 0
    voiced_f0: dict[str, list[np.ndarray]] = {}
    for path in chunk_paths:
        chunk_audio, chunk_pitch, meta = read_chunk(path)
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
    write_json_atomic(cache_dir / "utterances.json", utterances)

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
    write_json_atomic(cache_dir / "report.json", report)
    _write_log(cache_dir / "prepare.log", report)
    counts, samples = Counter(), Counter()
    for utterance in utterances:
        counts[utterance["speaker"]] += 1
        samples[utterance["speaker"]] += utterance["length"]
    speakers = [{"id": index, "name": name, **scan.speakers.get(name, {}), "utterances": counts[name],
                 "seconds": round(samples[name] / settings.sample_rate, 3),
                 **_pitch_stats(np.concatenate(voiced_f0[name]))}
                for index, name in enumerate(sorted(counts))]
    write_json_atomic(cache_dir / "speakers.json", speakers)
    return {
        "format": CACHE_FORMAT, "layout": scan.layout, "root": str(scan.root), "settings": asdict(settings),
        "processing_hash": settings.digest(), "source_fingerprint": fingerprint, "sample_rate": settings.sample_rate,
        "num_utterances": len(utterances), "num_speakers": len(speakers), "total_samples": total,
        "total_frames": total_frames, "files": files,
    }


class _ArrayWriters:
    """``.npy`` files written front to back into temporary files, checksummed on the way, renamed by
    :meth:`finish`; on any failure the temporary files are removed (a full disk becomes a one-line error)."""

    def __init__(self, cache_dir: Path, needed: int, arrays: dict[str, tuple[Any, tuple]]):
        self.cache_dir, self.needed = cache_dir, needed
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
        return self.cache_dir / f".{name}{TEMPORARY_SUFFIX}"

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
                os.replace(self._temporary(name), self.cache_dir / name)
        except BaseException as err:
            self._fail(err)
        return {name: file_record(self.cache_dir / name, self.crcs[name]) for name in self.handles}

    def _fail(self, err: BaseException) -> None:
        for name, handle in self.handles.items():
            try:
                handle.close()
            except OSError:
                pass  # closing flushes, which may fail again on a full disk: the file goes anyway
            self._temporary(name).unlink(missing_ok=True)
        if disk_full_cause(err) is not None:
            raise disk_full_error(self.cache_dir, self.needed) from err
        raise err


def _pitch_stats(f0: np.ndarray) -> dict:
    """A speaker table's pitch entries: ln-f0 mean and spread over voiced frames (None when none is voiced)."""
    mean, std = log_f0_stats(f0)
    finite = np.isfinite(mean)
    return {"log_f0_mean": round(mean, 5) if finite else None, "log_f0_std": round(std, 5) if finite else None,
            "voiced_share": round(float(np.mean(f0 > 0)), 4) if f0.size else 0.0}


# --------------------------------------------------------------------------- helpers


def _claim_cache_dir(cache_dir: Path, manifest: Optional[dict]) -> None:
    """Make ``cache_dir`` ready for a (re)build; refuse to write into a folder that is not a cache."""
    if cache_dir.exists() and not cache_dir.is_dir():
        raise InputError(f"{cache_dir}: cache path exists and is not a folder")
    cache_dir.mkdir(parents=True, exist_ok=True)
    foreign = [p.name for p in cache_dir.iterdir()
               if p.name not in CACHE_NAMES and not p.name.endswith(TEMPORARY_SUFFIX)]
    if foreign and manifest is None:
        raise InputError(f"{cache_dir}: folder is not empty and is not an audio-vqvae cache "
                         f"(found {', '.join(sorted(foreign)[:3])}); choose an empty or new --out folder")
    # The manifest goes first: from here on the folder no longer looks like a finished cache.
    (cache_dir / "manifest.json").unlink(missing_ok=True)
    _remove_leftovers(cache_dir, keep_work=True)


def _remove_leftovers(cache_dir: Path, *, keep_work: bool = False) -> None:
    """What a killed ``prepare`` left: temporary files, and (once the cache is finished) its ``.work`` chunks.
    Only under the cache's lock, when no other ``prepare`` writes here."""
    for leftover in cache_dir.glob(f".*{TEMPORARY_SUFFIX}"):
        leftover.unlink(missing_ok=True)
    if not keep_work and (cache_dir / ".work").exists():
        logger.info("%s: removing .work, left by an interrupted prepare", cache_dir)
        shutil.rmtree(cache_dir / ".work", ignore_errors=True)


def _cache_files(cache_dir: Path) -> list[str]:
    """The files of a finished cache that its manifest records (sizes and checksums)."""
    return [name for name in ("audio.npy", "pitch.npy", "utterances.json", "speakers.json", "splits.json",
                              "report.json", "phones.npy", "phones.json") if (cache_dir / name).is_file()]


def _write_manifest(cache_dir: Path, manifest: dict) -> None:
    """The manifest, with every file it records; written last, so that it marks a finished cache."""
    files = manifest.get("files") or {}
    missing = [name for name in _cache_files(cache_dir) if name not in files]
    if missing:  # report.json and the index files written outside the steps that record their own
        files = dict(files, **{name: file_record(cache_dir / name) for name in missing})
    write_json_atomic(cache_dir / "manifest.json", dict(manifest, files=files))


def _read_manifest(cache_dir: Path) -> Optional[dict]:
    try:
        manifest = read_json(cache_dir / "manifest.json")
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == CACHE_FORMAT else None


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


def ensure_prepared(data: DataConfig, sample_rate: int, *, progress: bool = True) -> PreparedCorpus:
    """Return the prepared corpus a training run asks for, preparing it first if needed.

    ``data.corpus == "demo"`` builds (or reuses) the demo corpus under ``data.data_root`` (default
    ``default_data_dir()/demo``) and prepares it as VCTK. ``data.data_root`` None means the corpus's
    default folder under :func:`~audio_vqvae.data.paths.default_data_dir`; ``data.cache_dir`` None means
    :func:`~audio_vqvae.data.settings.default_cache_dir`. A cache the user named (``data.cache_dir``) is never
    rebuilt under other settings: a resume whose config went astray stops in one line instead of overwriting it.

    Raises:
        InputError: the corpus is missing (the message names the expected layout and where to download
            it; the caller adds its own way out, e.g. the recipes' ``--demo``), or its settings are invalid.
    """
    return prepare_corpus(data.corpus, data.data_root, data.cache_dir, sample_rate=sample_rate,
                          trim_silence_db=data.trim_silence_db, level_db=data.level_db,
                          valid_utterances_per_speaker=data.valid_utterances_per_speaker,
                          valid_speakers=data.valid_speakers, train_subsets=data.train_subsets,
                          valid_subsets=data.valid_subsets, mic=data.mic, prepare_workers=data.prepare_workers,
                          progress=progress, rebuild=data.cache_dir is None)
