"""The training loop shared by every recipe.

``train(config, run_dir)`` prepares the corpus, builds the model with the corpus' speaker table
and trains it: Adam with warm-up and cosine decay, gradient clipping, bf16 autocast on CUDA,
periodic validation, TensorBoard scalars, audio and images, and atomic, self-describing
checkpoints from which ``resume=True`` continues exactly (same batches, same random numbers).

A run directory holds::

    config.yaml          the resolved experiment config (num_speakers set from the corpus)
    speakers.json        the speaker table
    train.log            a short human-readable log (progress, timing, validation, checkpoints)
    metrics.jsonl        one JSON record per step and per validation, full float precision
    events.out.tfevents.*  TensorBoard
    checkpoints/step-00001000.pt  the last ``train.keep_checkpoints`` checkpoints

Under ``torchrun`` every process trains on its shard with DistributedDataParallel; only rank 0
validates and writes. SIGINT/SIGTERM finish the current step, write a checkpoint and return. Every
rank leaves ``fit()`` together, after the same collectives, and without the DistributedDataParallel
wrapper (see :meth:`Trainer._release_ddp`), so the process group can be torn down cleanly.
"""

from __future__ import annotations

import gc
import inspect
import json
import math
import os
import random
import re
import signal
import threading
import time
import traceback
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from audio_vqvae.checkpoint import load_checkpoint, save_checkpoint
from audio_vqvae.config import ExperimentConfig, ModelConfig
from audio_vqvae.errors import AudioVQVAEError, CheckpointError, InputError
from audio_vqvae.evaluation.metrics import code_statistics
from audio_vqvae.evaluation.units import validation_phone_accuracy
from audio_vqvae.model import VQVAE
from audio_vqvae.pitch import conversion_stats, generation_pitch
from audio_vqvae.training.distributed import (
    DistributedContext,
    any_rank,
    barrier,
    gather_objects,
    init_distributed,
    mean_over_ranks,
    shutdown_distributed,
)
from audio_vqvae.training.logs import MetricsFile, RunLog, mel_image, usage_image
from audio_vqvae.training.schedule import make_scheduler

CHECKPOINT_DIR = "checkpoints"
_CHECKPOINT_NAME = re.compile(r"^step-(\d+)\.pt$")


class NonFiniteLossError(AudioVQVAEError):
    """The loss or the gradient norm became NaN or infinite; the run stopped without writing a checkpoint."""


@dataclass
class TrainingResult:
    """How a call to :func:`train` ended.

    Attributes:
        run_dir: the run directory.
        step: optimizer steps taken in total (including those before a resume).
        status: ``"finished"`` (reached ``train.max_steps``), ``"interrupted"`` (SIGINT/SIGTERM) or
            ``"time-limited"`` (stopped after ``train.max_minutes``).
        checkpoint: the checkpoint written last, if any.
        valid: the last validation metrics (``bits_per_sample``, ``perplexity``, ...), empty if none ran.
    """

    run_dir: Path
    step: int
    status: str
    checkpoint: Optional[Path]
    valid: dict = field(default_factory=dict)


def list_checkpoints(run_dir: Union[str, Path]) -> list[Path]:
    """Checkpoints of a run directory, oldest first (by step)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT_NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: Union[str, Path]) -> Optional[Path]:
    """The newest checkpoint of a run directory, or None."""
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def train(config: ExperimentConfig, run_dir: Union[str, Path], *, resume: bool = False, progress: bool = True,
          corpus: Any = None) -> TrainingResult:
    """Train a VQ-VAE as ``config`` says, writing everything into ``run_dir``.

    Args:
        config: model, data and training settings; ``model.num_speakers`` is replaced by the corpus'
            speaker count.
        run_dir: run directory (created if needed).
        resume: continue from the newest checkpoint in ``run_dir`` (an error if there is none: a mistyped
            ``--out`` must not silently start a fresh full-length run).
        progress: show progress bars on rank 0.
        corpus: an already prepared corpus (default: ``ensure_prepared(config.data, ...)``).

    Returns:
        :class:`TrainingResult`.

    Raises:
        InputError: missing corpus, ``run_dir`` holds checkpoints and ``resume`` is false, or ``resume`` is
            true and it holds none.
        ConfigError: a config value is out of range.
        NonFiniteLossError: the loss became NaN or infinite.
    """
    config.validate()  # before any work: a bad value is one line, not a failure an hour in
    context = init_distributed(config.train.device, timeout_minutes=120)
    try:
        trainer = Trainer(config, run_dir, resume=resume, progress=progress, corpus=corpus, context=context)
        return trainer.fit()
    except BaseException as err:
        if context.enabled:
            # The traceback's frames (e.g. of DistributedDataParallel.forward) may hold the DDP wrapper:
            # free them while the process group still exists (see Trainer._release_ddp).
            traceback.clear_frames(err.__traceback__)
        raise
    finally:
        shutdown_distributed()


class Trainer:
    """One training run; see :func:`train` for the arguments. ``fit()`` runs it."""

    def __init__(self, config: ExperimentConfig, run_dir: Union[str, Path], *, resume: bool = False,
                 progress: bool = True, corpus: Any = None, context: Optional[DistributedContext] = None):
        self.context = context or init_distributed(config.train.device)
        self.device = self.context.device
        self.is_main = self.context.is_main
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.config = config = ExperimentConfig.from_dict(config.to_dict())  # a private copy
        self.log = RunLog(self.run_dir / "train.log" if self.is_main else None, echo=self.is_main)
        self.metrics = MetricsFile(self.run_dir / "metrics.jsonl" if self.is_main else None)
        self.writer = None

        resume_from = self._resume_checkpoint(resume)
        payload = load_checkpoint(resume_from) if resume_from else None

        self.corpus = corpus if corpus is not None else self._prepare_corpus()
        if self.corpus.sample_rate != config.model.sample_rate:
            raise InputError(f"the prepared corpus is at {self.corpus.sample_rate} Hz but model.sample_rate is "
                             f"{config.model.sample_rate}")
        self.speakers = [_plain_speaker(entry) for entry in self.corpus.speakers]
        config.model.num_speakers = len(self.speakers)
        if payload is not None:
            self._check_resume_compatible(payload, resume_from)

        # Same initial weights on every rank (DDP also broadcasts them), then one random stream per rank.
        _seed_everything(config.train.seed)
        self.model = VQVAE(config.model, speakers=self.speakers).to(self.device)
        _seed_everything(config.train.seed + self.context.rank)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.train.learning_rate)
        self.scheduler = make_scheduler(self.optimizer, config.train)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0  # batches of ``epoch`` already trained on
        self._pending_rng: Optional[dict] = None
        if payload is not None:
            self._load_state(payload)
            self.log(f"resumed from {resume_from} at step {self.step} "
                     f"(epoch {self.epoch}, batch {self.batch_in_epoch})")
        self.use_bf16 = config.train.bf16 and self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if config.train.compile:
            # In place (nn.Module.compile), so the state dict keeps its keys; only the teacher-forced
            # forward is compiled, generation (WaveNet.step) stays eager.
            self.model.decoder.compile()

        self._build_data()
        self._choose_audio_clips()
        self._stop_signal: Optional[str] = None
        self._loop_started = 0.0  # perf_counter at the start of fit's loop (train.max_minutes counts from it)
        self.last_checkpoint: Optional[Path] = resume_from
        self.last_valid: dict = {}
        # Last: nothing after it may raise and leave a half-built trainer holding a DDP reducer.
        self.train_model: torch.nn.Module = _TrainingOutputs(self.model)
        if self.context.enabled:
            self.train_model = _wrap_ddp(self.model, self.device)

    # ------------------------------------------------------------------ setup

    def _resume_checkpoint(self, resume: bool) -> Optional[Path]:
        newest = latest_checkpoint(self.run_dir)
        if resume:
            if newest is None:
                where = "does not exist" if not self.run_dir.exists() else "holds no checkpoint"
                raise InputError(f"--resume: {self.run_dir} {where} (looked for "
                                 f"{self.run_dir / CHECKPOINT_DIR / 'step-*.pt'}); check --out, or leave out --resume "
                                 "to start a new run")
            return newest
        if newest is not None:
            raise InputError(f"{self.run_dir} already holds checkpoints (newest: {newest.name}); "
                             "pass --resume to continue that run, or choose another --out")
        return None

    def _prepare_corpus(self):
        from audio_vqvae.data import ensure_prepared

        data, rate = self.config.data, self.config.model.sample_rate
        if self.is_main:
            corpus = ensure_prepared(data, rate, progress=self.progress)
        barrier(self.context)  # the other ranks open the cache rank 0 has finished
        if not self.is_main:
            corpus = ensure_prepared(data, rate, progress=False)
        return corpus

    def _check_resume_compatible(self, payload: dict, path: Path) -> None:
        saved = payload.get("experiment")
        if not isinstance(saved, dict):
            raise CheckpointError(f"{path}: not a training checkpoint (no experiment config); cannot resume from it")
        # Through the dataclass, so that a checkpoint written before a model option existed has its default.
        saved_model, model = ModelConfig.from_dict(saved["model"]).to_dict(), self.config.model.to_dict()
        if saved_model != model:
            changed = sorted(k for k in saved_model.keys() | model.keys() if saved_model.get(k) != model.get(k))
            raise InputError(f"{path}: the model config differs from this run's ({', '.join(changed)}); "
                             "a run can only be resumed with the same model")
        names = [entry["name"] for entry in payload["speakers"]]
        if names != [entry["name"] for entry in self.speakers]:
            raise InputError(f"{path}: the checkpoint's speaker table differs from the prepared corpus'; "
                             "resume with the same corpus and data settings")
        for key in ("segment_length", "batch_size"):
            if saved["data"].get(key) != getattr(self.config.data, key):
                self.log(f"note: data.{key} changed since the checkpoint ({saved['data'].get(key)} -> "
                         f"{getattr(self.config.data, key)}); batches will differ from an uninterrupted run")

    def _build_data(self) -> None:
        from audio_vqvae.data import SegmentDataset, make_loader

        data, train = self.config.data, self.config.train
        hop = self.model.hop_length
        pitch = self.model.needs_pitch
        self.train_set = SegmentDataset(self.corpus, "train", data.segment_length, hop_length=hop, seed=train.seed,
                                        pitch=pitch)
        self.train_loader = make_loader(self.train_set, data.batch_size, shuffle=True, num_workers=data.num_workers,
                                        seed=train.seed, distributed=self.context.enabled, drop_last=True)
        if len(self.train_loader) == 0:
            raise InputError(f"the training split has {len(self.train_set)} usable utterances, fewer than one batch "
                             f"of {data.batch_size}{' per process' if self.context.enabled else ''}; "
                             "use a smaller data.batch_size")
        self.valid_loader: Optional[DataLoader] = None
        if self.is_main and len(self.corpus.split("valid")) > 0:
            try:
                valid_set = SegmentDataset(self.corpus, "valid", data.segment_length, hop_length=hop,
                                           seed=train.seed + 1, pitch=pitch)
            except ValueError as err:
                self.log(f"note: no validation ({err})")
            else:
                self.valid_loader = make_loader(valid_set, data.batch_size, shuffle=False, num_workers=0,
                                                drop_last=False)

    def _choose_audio_clips(self) -> None:
        """Fixed validation clips (one per speaker first) and, for each, the training speakers to convert it to."""
        self.clips: list[dict] = []
        if not self.is_main or self.config.train.audio_clips <= 0:
            return
        train = self.config.train
        rate, hop = self.corpus.sample_rate, self.model.hop_length
        split = self.corpus.split("valid")
        if len(split) == 0:
            split = self.corpus.split("train")
        wanted = max(hop, int(train.audio_seconds * rate) // hop * hop)
        lengths = np.asarray(split.lengths)
        # Longest-enough utterances, visiting speakers round-robin so the clips are of different voices.
        order = sorted(range(len(split)), key=lambda i: (int(split.speaker_ids[i]), -int(lengths[i])))
        by_speaker: dict[int, list[int]] = {}
        for i in order:
            by_speaker.setdefault(int(split.speaker_ids[i]), []).append(i)
        chosen: list[int] = []
        while len(chosen) < train.audio_clips and any(by_speaker.values()):
            for queue in by_speaker.values():
                if queue and len(chosen) < train.audio_clips:
                    chosen.append(queue.pop(0))
        train_speakers = sorted({int(s) for s in self.corpus.split("train").speaker_ids})
        for i in chosen:
            item = split.utterance(i)
            audio = item["audio"]
            length = min(wanted, len(audio) // hop * hop)
            if length < hop:
                continue
            start = min(len(audio) - length, int(0.1 * rate))  # skip a little leading silence if there is room
            source = int(item["speaker"])
            others = [s for s in train_speakers if s != source]
            count = min(train.conversion_speakers, len(others))
            # Evenly spaced through the speaker table, so the targets are varied voices.
            targets = [others[(k * len(others)) // count] for k in range(count)] if count else []
            self.clips.append({"name": item["name"], "speaker": source,
                               "audio": torch.from_numpy(np.ascontiguousarray(audio[start:start + length])),
                               "targets": targets, "f0": self.corpus.f0(int(split.indices[i])), "start": start})

    def _load_state(self, payload: dict) -> None:
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.step = int(payload["step"])
        self.epoch = int(payload["epoch"])
        self.batch_in_epoch = int(payload["batch_in_epoch"])
        states = payload.get("rng", [])
        if payload.get("world_size") == self.context.world_size and self.context.rank < len(states):
            # Restored after the epoch's DataLoader iterator exists: creating it draws one random number.
            self._pending_rng = states[self.context.rank]
        else:
            self.log("note: different number of processes than when the checkpoint was written; "
                     "random streams are reseeded")
            _seed_everything(self.config.train.seed + 7919 * self.step + self.context.rank)

    # ------------------------------------------------------------------ the loop

    def fit(self) -> TrainingResult:
        train = self.config.train
        if self.is_main:
            self._write_run_files()
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir))
            self._log_start()
            if self.step == 0:
                self._log_truth()
        status = "finished"
        handlers = self._install_signal_handlers()
        bar = tqdm(total=train.max_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True,
                   disable=not (self.is_main and self.progress))
        samples_per_step = self.config.data.batch_size * self.config.data.segment_length * self.context.world_size
        self._loop_started = time.perf_counter()
        try:
            while status == "finished" and self.step < train.max_steps:
                status = self._run_epoch(self._epoch_batches(), bar, samples_per_step)
                if status == "finished" and self.step < train.max_steps:  # the epoch ran out of batches
                    self.epoch += 1
                    self.batch_in_epoch = 0
            if status == "interrupted":
                self.log(f"{self._stop_signal or 'stop signal'} received: stopping after step {self.step}")
                self._save_checkpoint()
                self.log(f"interrupted at step {self.step}; continue with --resume (same --out)")
            elif status == "time-limited":
                self.log(f"time limit train.max_minutes={train.max_minutes:g} reached: stopping after step {self.step}")
                self._save_checkpoint()
                self.log(f"stopped at step {self.step} by the time limit; continue with --resume (same --out)")
            else:
                self.log(f"finished: {self.step} steps")
            # Leave together: the other ranks wait while rank 0 writes the last checkpoint, and the
            # collective runs on every rank in both endings (finished or interrupted).
            barrier(self.context)
        finally:
            bar.close()
            self._restore_signal_handlers(handlers)
            if self.writer is not None:
                self.writer.close()
            self._release_ddp()
        return TrainingResult(self.run_dir, self.step, status, self.last_checkpoint, dict(self.last_valid))

    def _run_epoch(self, batches: Iterator[dict], bar: tqdm, samples_per_step: int) -> str:
        """Train on ``batches`` until they run out or ``max_steps``; ``"interrupted"`` after a stop signal,
        ``"time-limited"`` after the first step that ends ``train.max_minutes`` into the loop."""
        train = self.config.train
        window = _Window()
        while self.step < train.max_steps:
            started = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                break
            except RuntimeError:
                if self._stop_signal:  # DataLoader workers killed by the same Ctrl-C
                    return "interrupted"
                raise
            fetched = time.perf_counter()
            stats = self._train_step(batch)
            finished = time.perf_counter()
            self.step += 1
            self.batch_in_epoch += 1
            stats.update(data_s=fetched - started, compute_s=finished - fetched)
            self.metrics.write({"kind": "train", "step": self.step, **stats})
            window.add(stats)
            bar.update(1)
            bar.set_postfix(loss=f"{stats['loss']:.3f}", bits=f"{stats['bits_per_sample']:.3f}",
                            sps=f"{samples_per_step / max(stats['data_s'] + stats['compute_s'], 1e-9):,.0f}")
            if self.step % train.log_every == 0 or self.step == train.max_steps:
                self._log_window(window, samples_per_step)
                window = _Window()
            self._periodic(final=self.step == train.max_steps)
            time_up = train.max_minutes > 0 and time.perf_counter() - self._loop_started >= 60 * train.max_minutes
            # Every rank stops after the same step: one collective per step, a second only when stopping.
            if any_rank(self.context, self._stop_signal is not None or time_up):
                return "interrupted" if any_rank(self.context, self._stop_signal is not None) else "time-limited"
        return "finished"

    def _epoch_batches(self) -> Iterator[dict]:
        """Batches of the current epoch from ``batch_in_epoch`` on; skipped batches are never loaded."""
        from audio_vqvae.data import set_loader_epoch

        loader = self.train_loader
        set_loader_epoch(loader, self.epoch)
        if self.batch_in_epoch == 0:
            iterator = iter(loader)
        else:
            remaining = list(loader.batch_sampler)[self.batch_in_epoch:]
            iterator = iter(DataLoader(loader.dataset, batch_sampler=remaining, num_workers=loader.num_workers,
                                       collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                                       worker_init_fn=loader.worker_init_fn,
                                       prefetch_factor=loader.prefetch_factor if loader.num_workers > 0 else None))
        if self._pending_rng is not None:
            _set_rng_state(self._pending_rng, self.device)
            self._pending_rng = None
        return iterator

    def _train_step(self, batch: dict) -> dict:
        train = self.config.train
        audio = batch["audio"].to(self.device, non_blocking=True)      # (B, T)
        speaker = batch["speaker"].to(self.device, non_blocking=True)  # (B,)
        pitch = batch["pitch"].to(self.device, non_blocking=True) if self.model.needs_pitch else None  # (B, 3, T)
        self.train_model.train()
        with self._autocast():
            out = self.train_model(audio, speaker, pitch)
        parts = torch.stack([out["loss"].detach().float(), out["reconstruction"].detach().float(),
                             out["quantizer"].detach().float(), out["envelope"].detach().float()])
        parts = mean_over_ranks(self.context, parts).cpu()
        loss, reconstruction, quantizer_loss, envelope = (float(v) for v in parts)
        if not math.isfinite(loss):
            self._non_finite("loss", loss)
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        max_norm = train.grad_clip if train.grad_clip > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        if not math.isfinite(grad_norm):
            self._non_finite("gradient norm", grad_norm)
        learning_rate = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        return {"loss": loss, "reconstruction": reconstruction, "quantizer": quantizer_loss, "envelope": envelope,
                "bits_per_sample": reconstruction / math.log(2), "perplexity": float(out["perplexity"]),
                "codes_used": int(out["codes_used"]), "learning_rate": learning_rate, "grad_norm": grad_norm}

    def _non_finite(self, what: str, value: float) -> None:
        where = (f"the last good checkpoint, {self.last_checkpoint}, is intact; resume from it with --resume"
                 if self.last_checkpoint else "no checkpoint had been written yet")
        message = (f"non-finite {what} ({value}) at step {self.step + 1}; training stopped without writing a "
                   f"checkpoint ({where}). Try a lower train.learning_rate, a smaller train.grad_clip or "
                   "train.bf16=false.")
        self.log(f"error: {message}")
        raise NonFiniteLossError(message)

    def _periodic(self, final: bool) -> None:
        """Validation, audio and checkpoints that fall due after this step (rank 0 validates, all ranks wait)."""
        train = self.config.train
        if self.is_main:
            if self.valid_loader is not None and (final or self.step % train.valid_every == 0):
                self._validate()
            if self.clips and (final or self.step % train.audio_every == 0):
                self._log_audio()
        barrier(self.context)
        if final or self.step % train.checkpoint_every == 0:
            self._save_checkpoint()

    @contextmanager
    def _autocast(self):
        if self.use_bf16:
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
                yield
        else:
            yield

    @contextmanager
    def _isolated_rng(self):
        """Validation and generation must not move the training random streams (resume exactness)."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, device_type="cuda" if devices else "cpu"):
            yield

    # ------------------------------------------------------------------ validation and TensorBoard

    @torch.no_grad()
    def _validate(self) -> dict:
        model, train = self.model, self.config.train
        model.eval()
        nats, samples = 0.0, 0
        counts = torch.zeros(model.config.quantizer.num_codes, dtype=torch.long)
        started = time.perf_counter()
        with self._isolated_rng():
            for index, batch in enumerate(self.valid_loader):
                if index >= train.valid_batches:
                    break
                audio = batch["audio"].to(self.device)
                pitch = batch["pitch"].to(self.device) if model.needs_pitch else None
                with self._autocast():
                    out = model(audio, batch["speaker"].to(self.device), pitch=pitch)
                nats += float(out.reconstruction) * audio.numel()
                samples += audio.numel()
                counts += torch.bincount(out.codes.flatten().cpu(), minlength=counts.numel())
            # The paper's unit test (§4.3) where the corpus has phone alignments: the encoder only, no generation.
            phone_accuracy = validation_phone_accuracy(model, self.corpus)
        model.train()
        usage = code_statistics(counts.numpy(), model.config.frame_rate)
        metrics = {"bits_per_sample": nats / max(samples, 1) / math.log(2), "perplexity": usage.perplexity,
                   "codes_used": usage.codes_used, "bitrate": usage.bitrate, "bitrate_max": usage.bitrate_max}
        if phone_accuracy is not None:
            metrics["phone_accuracy"] = phone_accuracy
        self.last_valid = metrics
        self.metrics.write({"kind": "valid", "step": self.step, **metrics})
        for name, value in metrics.items():
            self.writer.add_scalar(f"valid/{name}", value, self.step)
        codes = torch.repeat_interleave(torch.arange(counts.numel()), counts)
        if codes.numel():
            self.writer.add_histogram("valid/code_usage", codes, self.step, bins=np.arange(counts.numel() + 1) - 0.5)
        self.writer.add_image("codebook/usage_sorted", usage_image(counts.numpy()), self.step)
        self.log(f"valid step {self.step}: {metrics['bits_per_sample']:.4f} bits/sample | perplexity "
                 f"{metrics['perplexity']:.1f} | {metrics['codes_used']}/{counts.numel()} codes | code bitrate "
                 f"{metrics['bitrate']:.0f} bit/s (max {metrics['bitrate_max']:.0f}) | "
                 f"{time.perf_counter() - started:.1f} s")
        if phone_accuracy is not None:
            self.log(f"valid step {self.step}: phone accuracy of the codes {100 * phone_accuracy:.1f} % (each code "
                     "labelled with its most frequent phone on training utterances)")
        self.writer.flush()
        return metrics

    def _clip_tag(self, index: int) -> str:
        clip = self.clips[index]
        return f"clip{index}_{self.speakers[clip['speaker']]['name']}"

    def _log_truth(self) -> None:
        rate = self.corpus.sample_rate
        for index, clip in enumerate(self.clips):
            tag = self._clip_tag(index)
            self.writer.add_audio(f"audio/{tag}/0_truth", clip["audio"].unsqueeze(0), 0, sample_rate=rate)
            self.writer.add_image(f"mel/{tag}/0_truth", mel_image(clip["audio"].numpy(), rate), 0)
        self.writer.flush()

    @torch.no_grad()
    def _log_audio(self) -> None:
        """Reconstruct every clip from its codes and convert it to its target speakers, in one batched decode."""
        model, rate = self.model, self.corpus.sample_rate
        model.eval()
        # The fused generator's numba threads follow torch's thread budget (1 per process under
        # torchrun): with more, their idle worker keeps spinning after the audio round and takes a
        # core from the other training process for the rest of the run (measured: 1.8 -> 2.7 s/step).
        os.environ.setdefault("NUMBA_NUM_THREADS", str(torch.get_num_threads()))
        started = time.perf_counter()
        rows: list[tuple[int, int, str]] = []  # (clip, speaker, tag suffix)
        for index, clip in enumerate(self.clips):
            rows.append((index, clip["speaker"], "1_reconstruction"))
            for order, target in enumerate(clip["targets"]):
                rows.append((index, target, f"{order + 2}_as_{self.speakers[target]['name']}"))
        length = max(len(clip["audio"]) for clip in self.clips)
        audio = torch.stack([F.pad(c["audio"], (0, length - len(c["audio"]))) for c in self.clips]).to(self.device)
        with self._isolated_rng():
            codes = model.encode(audio)  # (clips, frames)
            # On the CPU whatever the device: it only draws the utterances' seeds (a CUDA generator cannot,
            # for CPU tensors), and then a round's samples depend on the seed alone, not on the device.
            generator = torch.Generator().manual_seed(self.config.train.seed)
            total = len(rows) * length
            bar = tqdm(total=total, desc="generating audio", unit="sample", unit_scale=True, leave=False,
                       disable=not self.progress, dynamic_ncols=True)
            done = [0]

            def advance(samples: int) -> None:
                bar.update(samples * len(rows) - done[0])
                done[0] = samples * len(rows)

            pitch = self._clip_pitch(rows, length) if model.needs_pitch else None
            speakers = torch.tensor([r[1] for r in rows], device=self.device)
            generated = model.decode(codes[[r[0] for r in rows]], speakers,
                                     temperature=1.0, generator=generator, progress=advance, pitch=pitch).float().cpu()
            bar.close()
        model.train()
        for (index, _, suffix), waveform in zip(rows, generated):
            waveform = waveform[:len(self.clips[index]["audio"])]
            tag = self._clip_tag(index)
            self.writer.add_audio(f"audio/{tag}/{suffix}", waveform.unsqueeze(0), self.step, sample_rate=rate)
            self.writer.add_image(f"mel/{tag}/{suffix}", mel_image(waveform.numpy(), rate), self.step)
        self.writer.flush()
        seconds = time.perf_counter() - started
        self.log(f"audio step {self.step}: {len(rows)} clips of {length / rate:.2f} s generated in {seconds:.1f} s")

    def _clip_pitch(self, rows: list[tuple[int, int, str]], length: int) -> torch.Tensor:
        """Each row's ``(phase, f0, voiced)`` rows, Tensor[R x 3 x length]: its clip's f0, moved to its speaker."""
        rate, hop = self.corpus.sample_rate, self.corpus.pitch_hop
        pitches = []
        for index, speaker, _ in rows:
            clip = self.clips[index]
            stats = conversion_stats(self.speakers, clip["speaker"], speaker)
            pitches.append(generation_pitch(clip["f0"], rate, length, hop, start=clip["start"], **stats))
        return torch.from_numpy(np.stack(pitches)).to(self.device)

    def _log_window(self, window: "_Window", samples_per_step: int) -> None:
        means = window.means()
        step_seconds = means["data_s"] + means["compute_s"]
        throughput = samples_per_step / max(step_seconds, 1e-9)
        if self.is_main:
            for name in ("loss", "reconstruction", "quantizer", "bits_per_sample", "perplexity", "codes_used",
                         "grad_norm"):
                self.writer.add_scalar(f"train/{name}", means[name], self.step)
            if self.model.source_filter:  # the envelope network's loss (audio_vqvae.lpc)
                self.writer.add_scalar("train/envelope", means["envelope"], self.step)
            self.writer.add_scalar("train/learning_rate", means["learning_rate"], self.step)
            self.writer.add_scalar("time/samples_per_second", throughput, self.step)
            self.writer.add_scalar("time/data_seconds_per_step", means["data_s"], self.step)
            self.writer.add_scalar("time/compute_seconds_per_step", means["compute_s"], self.step)
        self.log(f"step {self.step}/{self.config.train.max_steps} | loss {means['loss']:.4f} | "
                 f"{means['bits_per_sample']:.4f} bits/sample | perplexity {means['perplexity']:.1f} | "
                 f"{means['codes_used']:.0f} codes | lr {means['learning_rate']:.2e} | grad {means['grad_norm']:.3f} | "
                 f"{throughput:,.0f} samples/s | data {means['data_s']:.3f} s + compute {means['compute_s']:.3f} s "
                 "per step")

    def _log_start(self) -> None:
        parameters = sum(p.numel() for p in self.model.parameters())
        data, model = self.config.data, self.config.model
        self.log(f"run directory {self.run_dir}")
        self.log(f"device {self.device}{' (bf16 autocast)' if self.use_bf16 else ''}, "
                 f"{self.context.world_size} process(es), torch {torch.__version__}, {torch.get_num_threads()} threads")
        self.log(f"corpus {getattr(self.corpus, 'cache_dir', '?')}: {len(self.speakers)} speakers, "
                 f"{len(self.corpus.split('train'))} train / {len(self.corpus.split('valid'))} valid utterances")
        self.log(f"model: {parameters / 1e6:.2f} M parameters, hop {model.hop_length}, "
                 f"{model.quantizer.num_codes} codes, receptive field {model.decoder.receptive_field} samples")
        self.log(f"batches of {data.batch_size} x {data.segment_length} samples per process, "
                 f"{len(self.train_loader)} batches per epoch; {self.config.train.max_steps} steps"
                 + (f", at most {self.config.train.max_minutes:g} min" if self.config.train.max_minutes else "")
                 + (" (decoder compiled)" if self.config.train.compile else ""))

    def _write_run_files(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.step == 0:  # a fresh start: records of an earlier attempt that never checkpointed are stale
            (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)
        self.config.to_yaml(self.run_dir / "config.yaml")
        (self.run_dir / "speakers.json").write_text(json.dumps(self.speakers, indent=1, ensure_ascii=False) + "\n")

    # ------------------------------------------------------------------ checkpoints and signals

    def _save_checkpoint(self) -> None:
        rng_states = gather_objects(self.context, _get_rng_state(self.device))  # collective: every rank
        if not self.is_main:
            return
        if self.last_checkpoint is not None and self.last_checkpoint.name == _checkpoint_name(self.step) \
                and self.last_checkpoint.exists():
            return  # already written at this step (e.g. a signal right after a periodic checkpoint)
        path = self.run_dir / CHECKPOINT_DIR / _checkpoint_name(self.step)
        save_checkpoint(path, self.model, extra={
            "experiment": self.config.to_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "world_size": self.context.world_size,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_states,
            "valid": dict(self.last_valid),
        })
        self.last_checkpoint = path
        for old in list_checkpoints(self.run_dir)[:-max(1, self.config.train.keep_checkpoints)]:
            old.unlink(missing_ok=True)
        self.log(f"checkpoint {path}")

    def _release_ddp(self) -> None:
        """Drop the DistributedDataParallel wrapper while the process group is still registered.

        The wrapper's C++ reducer holds a reference to the process group. Freed after
        ``destroy_process_group`` (when ``train()`` returned and the trainer went), the reducer was the
        group's last owner: gloo's destructor then ran inside the reducer's deallocation, with the GIL
        held, and joined gloo's worker threads, one of which could still be freeing the tensors of the
        last collective and needed the GIL for that. A deadlock: that rank slept forever after training
        and ``torchrun`` never returned. Freed here, the reducer is not the last owner, and the group
        goes later through its Python handle, which releases the GIL first.
        """
        if not isinstance(self.train_model, DistributedDataParallel):
            return
        wrapper = weakref.ref(self.train_model)
        self.train_model = _TrainingOutputs(self.model)
        if wrapper() is not None:  # held by a reference cycle
            gc.collect()

    def _install_signal_handlers(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}

        def request_stop(signum, frame):
            name = signal.Signals(signum).name
            if self._stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C aborts at once
            self._stop_signal = name
            if self.is_main:
                tqdm.write(f"{name}: finishing this step and writing a checkpoint (Ctrl-C again to abort)")

        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, request_stop)
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# ---------------------------------------------------------------------- helpers


class _Window:
    """Running sums of per-step statistics between two log lines."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, stats: dict) -> None:
        for key, value in stats.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)
        self.count += 1

    def means(self) -> dict:
        return {key: value / max(self.count, 1) for key, value in self.sums.items()}


class _TrainingOutputs(torch.nn.Module):
    """The VQ-VAE's teacher-forced pass returning a dict of tensors.

    DistributedDataParallel finds a forward's output tensors with ``torch.utils._pytree``, which sees a
    dataclass such as :class:`~audio_vqvae.model.VQVAEOutput` as one opaque leaf; with a static graph the
    first step's gradients would then never be all-reduced. A dict is traversed.
    """

    def __init__(self, model: VQVAE):
        super().__init__()
        self.model = model

    def forward(self, audio: torch.Tensor, speaker: torch.Tensor,
                pitch: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        out = self.model(audio, speaker, pitch=pitch)
        return {"loss": out.loss, "reconstruction": out.reconstruction, "quantizer": out.quantizer,
                "perplexity": out.perplexity, "codes_used": out.codes_used, "envelope": out.envelope}


def _wrap_ddp(model: VQVAE, device: torch.device) -> DistributedDataParallel:
    """DistributedDataParallel for the VQ-VAE (called as ``wrapped(audio, speaker) -> dict``).

    Buffers are broadcast from rank 0 once, at construction; after that the quantizer all-reduces its
    own statistics, so no per-forward broadcast is needed. ``static_graph``: the last WaveNet layer's
    residual projection feeds nothing (only its skip output is used), and a static graph lets DDP
    learn that once instead of searching the graph for unused parameters on every step.
    """
    options: dict = {"device_ids": [device.index] if device.type == "cuda" else None, "static_graph": True}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        options["forward_sync_buffers"] = False  # torch >= 2.13: still syncs once at construction
    else:
        options["broadcast_buffers"] = False
    return DistributedDataParallel(_TrainingOutputs(model), **options)


def _checkpoint_name(step: int) -> str:
    return f"step-{step:08d}.pt"


def _plain_speaker(entry: dict) -> dict:
    """A speaker-table entry reduced to JSON scalars (checkpoints must load with weights_only=True)."""
    return {key: value for key, value in entry.items() if isinstance(value, (str, int, float, bool)) or value is None}


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _get_rng_state(device: torch.device) -> dict:
    """Random states as tensors and plain data, so that checkpoints load with ``weights_only=True``."""
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": {"keys": torch.from_numpy(numpy_state[1].astype(np.int64)), "position": int(numpy_state[2]),
                  "has_gauss": int(numpy_state[3]), "cached_gaussian": float(numpy_state[4])},
        "python": [python_state[0], list(python_state[1]), python_state[2]],
    }


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["position"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
