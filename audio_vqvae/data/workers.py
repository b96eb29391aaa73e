"""The decoding side of ``prepare``: source files in chunks, each decoded by a worker process into ``.work/``.

A chunk is :data:`CHUNK_FILES` source files, named by the hash of the processing settings and of its files, and
written atomically by one worker (audio, pitch frames and per-file metadata in one ``.npz``), so an interrupted
``prepare`` resumes from the chunks already written. Workers die with their parent (``PR_SET_PDEATHSIG``).

Example:
    >>> chunks = decode_chunks(scan, settings, cache_dir / ".work", prepare_workers=2, progress=False)  # doctest: +SKIP
    >>> audio, pitch, meta = read_chunk(chunks[0])                                                    # doctest: +SKIP
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import multiprocessing
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm import tqdm

from audio_vqvae.atomic import TEMPORARY_SUFFIX, atomic_write
from audio_vqvae.data.audio import Processed, process_file
from audio_vqvae.data.corpora import CorpusScan
from audio_vqvae.data.settings import ProcessingSettings, digest, file_size
from audio_vqvae.filesystem import DiskFullError, disk_full_error
from audio_vqvae.pitch import measure_phase, track_pitch

logger = logging.getLogger(__name__)

CHUNK_FILES = 32


@dataclass(frozen=True)
class ChunkTask:
    """One chunk of source files and where its worker writes it."""

    paths: tuple[str, ...]
    out_path: str
    sample_rate: int
    trim_silence_db: Optional[float]
    level_db: Optional[float]


def decode_chunks(scan: CorpusScan, settings: ProcessingSettings, work_dir: Path, *, prepare_workers: int,
                  progress: bool) -> list[Path]:
    """Decode every chunk that is not already in ``work_dir``; return the chunk files in corpus order.

    Args:
        prepare_workers: worker processes (0 or 1: in this process).
        progress: show a progress bar.

    Raises:
        DiskFullError: the chunks do not fit (with an estimate of what the whole preparation needs).
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    for leftover in work_dir.glob(f".*{TEMPORARY_SUFFIX}"):  # a chunk being written when a worker was killed
        leftover.unlink(missing_ok=True)
    tasks = []
    for start in range(0, len(scan.utterances), CHUNK_FILES):
        items = scan.utterances[start:start + CHUNK_FILES]
        key = digest({"settings": settings.digest(),
                      "files": [(scan.relative(u.path), file_size(u.path)) for u in items]})
        tasks.append(ChunkTask(paths=tuple(str(u.path) for u in items), out_path=str(work_dir / f"{key}.npz"),
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
            _run_chunks(todo, bar, prepare_workers)
    except DiskFullError:
        raise disk_full_error(work_dir.parent, _estimated_bytes(tasks), estimate=True) from None
    return [Path(t.out_path) for t in tasks]


def read_chunk(path: Path) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """A chunk's int16 audio (samples,), float32 pitch frames (frames, 2) and per-file metadata (kept or not)."""
    with np.load(path) as chunk:
        return chunk["audio"], chunk["pitch"], json.loads(chunk["meta"].tobytes().decode())


# --------------------------------------------------------------------------- main-process side


def _run_chunks(todo: list[ChunkTask], bar: tqdm, prepare_workers: int) -> None:
    if prepare_workers <= 1:
        for task in todo:
            _process_chunk(task)
            bar.update(len(task.paths))
        return
    with concurrent.futures.ProcessPoolExecutor(max_workers=prepare_workers, mp_context=_pool_context(),
                                                initializer=_init_worker, initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(_process_chunk, task): task for task in todo}
        try:
            for future in concurrent.futures.as_completed(futures):
                future.result()
                bar.update(len(futures[future].paths))
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # e.g. a full disk: the other chunks would fail too
            raise


def _pool_context() -> multiprocessing.context.BaseContext:
    """fork on Linux (fast, and no re-import of the caller's ``__main__``), spawn elsewhere."""
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def _estimated_bytes(tasks: list[ChunkTask]) -> Optional[int]:
    """About what a whole preparation needs on disk, extrapolated from the chunks done: chunks plus the cache."""
    done = [(Path(t.out_path).stat().st_size, len(t.paths)) for t in tasks if Path(t.out_path).exists()]
    files = sum(n for _, n in done)
    if not files:
        return None
    return 2 * sum(size for size, _ in done) * sum(len(t.paths) for t in tasks) // files


# --------------------------------------------------------------------------- worker side


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


def _process_chunk(task: ChunkTask) -> list[dict]:
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
