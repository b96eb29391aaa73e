"""Generation jobs of the ``reconstruct``, ``convert`` and ``decode`` commands: what to generate, with which
speaker and pitch, into which file; :func:`run_jobs` generates them (batched by similar length,
:func:`~audio_vqvae.generation.batched.decode_rows`) and writes each output file atomically.

Speaker of an input file: its name must start with a training speaker's name followed by ``_``, ``-`` or
the end of the name (``p225_001.wav`` -> ``p225``); the longest matching name wins
(:func:`speaker_from_file_name`).

Pitch, for a model whose decoder takes a source excitation (``decoder.excitation_harmonics``): the
input's f0 is moved from the source's ln-f0 distribution to the target speaker's when the output speaker
differs (the source's statistics come from the speaker table when the file name names a training
speaker, otherwise from the file itself), unless the source's contour is kept; a shift in semitones
applies either way (:func:`job_pitch`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from audio_vqvae.errors import InputError
from audio_vqvae.generation.batched import DecodeRow, decode_rows
from audio_vqvae.generation.codes_file import Encoded, encode_file

PROGRESS_MIN_SECONDS = 1.0  # progress bars only for generations longer than this much audio


@dataclass
class Job:
    """One utterance to generate: its codes, the target speaker, where the audio goes and, for a model
    with a source excitation, the ``(phase, f0, voiced)`` rows to speak with."""

    codes: torch.Tensor  # LongTensor[T']
    speaker: int
    output: Path
    seed: int
    pitch: Optional[np.ndarray] = None  # float32[3 x T' * hop]


def speaker_names(model: Any) -> list[str]:
    """The names of the model's speaker table, in id order."""
    return [str(entry["name"]) for entry in model.speakers]


def speaker_from_file_name(model: Any, path: Path) -> Optional[str]:
    """The longest speaker name that the file name starts with, followed by ``_``, ``-`` or nothing."""
    stem = path.stem
    matches = [name for name in speaker_names(model)
               if stem == name or stem.startswith(name + "_") or stem.startswith(name + "-")]
    return max(matches, key=len) if matches else None


def table_log_f0(model: Any, speaker: int) -> Optional[tuple[float, float]]:
    """The speaker's ln-f0 mean and spread from the model's speaker table; None where the table has none."""
    from audio_vqvae.pitch import speaker_log_f0

    try:
        return speaker_log_f0(model.speakers[speaker])
    except ValueError:
        return None


def job_pitch(model: Any, encoded: Encoded, speaker: int, *, keep_pitch: bool, semitones: float,
              source_stats: Optional[tuple[float, float]] = None) -> Optional[np.ndarray]:
    """The rows a job speaks with: the input's f0, moved to ``speaker`` unless it is the source's own or
    ``keep_pitch``, shifted by ``semitones``; None for a model without a source excitation."""
    from audio_vqvae.pitch import generation_pitch, pitch_hop, speaker_log_f0

    if not model.needs_pitch:
        return None
    rate = model.config.sample_rate
    length = encoded.codes.shape[0] * model.hop_length
    stats = {}
    source = source_stats or encoded.log_f0
    if not keep_pitch and source is not None and source != table_log_f0(model, speaker):
        try:
            stats = {"source": source, "target": speaker_log_f0(model.speakers[speaker])}
        except ValueError as err:
            raise InputError(f"the checkpoint's speaker table: {err}") from None
    return generation_pitch(encoded.f0, rate, length, pitch_hop(rate), semitones=semitones, **stats)


def conversion_jobs(model: Any, files: Sequence[Path], targets: Sequence[tuple[str, int]],
                    destination: Callable[[Path, str], Path], *, seed: int, keep_pitch: bool, semitones: float,
                    level_db: Optional[float]) -> list[Job]:
    """Every input file converted to every target speaker: one job per (file, target), in that order.

    Args:
        model: the VQ-VAE.
        files: input audio files; all are encoded before anything is generated.
        targets: ``(name, id)`` of each target speaker.
        destination: the output path of an input file converted to the named speaker.
        seed: the first job's seed; each next job's is one more.
        keep_pitch: speak with the source's f0 contour (else moved to each target's range).
        semitones: shift of the f0 spoken with.
        level_db: the speech level inputs are read at (:func:`~audio_vqvae.generation.codes_file.encode_file`).
    """
    jobs = []
    for path in files:
        encoded = encode_file(model, path, level_db)
        known = speaker_from_file_name(model, path)
        source_stats = table_log_f0(model, model.speaker_id(known)) if known else None
        for name, speaker in targets:
            jobs.append(Job(encoded.codes, speaker, destination(path, name), seed + len(jobs),
                            job_pitch(model, encoded, speaker, keep_pitch=keep_pitch, semitones=semitones,
                                      source_stats=source_stats)))
    return jobs


def run_jobs(model: Any, jobs: Sequence[Job], temperature: float, method: str, batch_size: int,
             progress: bool) -> None:
    """Generate every job (batched by similar length) and write each output file atomically."""
    from audio_vqvae.generation.audio_io import save_audio

    rate = model.config.sample_rate
    total = sum(job.codes.shape[0] * model.hop_length for job in jobs)
    bar = None
    if progress and total / rate > PROGRESS_MIN_SECONDS:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="sample", unit_scale=True, desc="generating", file=sys.stderr, leave=False)
    rows = [DecodeRow(job.speaker, codes=job.codes, seed=job.seed) for job in jobs]
    try:
        # One utterance per row, each on its own codes and length (mixed_lengths: conditioned alone, so its
        # samples do not depend on the other jobs or on --batch-size).
        for index, audio in decode_rows(model, rows, batch_size=batch_size, mixed_lengths=True,
                                        pitch=lambda index: jobs[index].pitch, temperature=temperature, method=method,
                                        progress=None if bar is None else bar.update):
            save_audio(jobs[index].output, audio, rate)
    finally:
        if bar is not None:
            bar.close()
