"""The training loop shared by every recipe.

``train(config, run_dir)`` prepares the corpus, builds the model with the corpus' speaker table
and trains it: Adam with warm-up and cosine decay, gradient clipping, bf16 autocast on CUDA (on a CPU
with ``train.cpu_bf16``), periodic validation, TensorBoard scalars, audio and images, and atomic, self-describing
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
wrapper (see :meth:`~audio_vqvae.training.distributed.DistributedModel.release`), so the process group
can be torn down cleanly.

The loop is here; around it, :mod:`audio_vqvae.checkpoint` writes, lists, rotates and resumes the
checkpoints with their random states, :mod:`audio_vqvae.training.logs` writes the log, the metrics and
the TensorBoard rounds, and :mod:`audio_vqvae.training.distributed` wraps the model for DDP.
"""

from __future__ import annotations

import math
import os
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import torch
from tqdm import tqdm

from audio_vqvae.checkpoint import (
    check_resume_compatible,
    checkpoint_name,
    get_rng_state,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_training_state,
    resume_checkpoint,
    save_training_checkpoint,
    seed_everything,
    set_rng_state,
)
from audio_vqvae.config import ExperimentConfig
from audio_vqvae.errors import AudioVQVAEError, InputError
from audio_vqvae.filesystem import DiskFullError, disk_full_cause, disk_full_error
from audio_vqvae.model import VQVAE
from audio_vqvae.training.batches import epoch_batches, make_loaders, prepared_corpus
from audio_vqvae.training.distributed import (
    DistributedContext,
    DistributedModel,
    any_rank,
    barrier,
    gather_objects,
    init_distributed,
    mean_over_ranks,
    shutdown_distributed,
)
from audio_vqvae.training.logs import (
    AudioRounds,
    MetricsFile,
    RunLog,
    StepWindow,
    log_run_start,
    log_train_window,
    validation_round,
)
from audio_vqvae.training.run_dir import hold_run_directory, remove_temporaries, trim_metrics, write_run_files
from audio_vqvae.training.schedule import make_scheduler
from audio_vqvae.training.signals import StopRequest

# list_checkpoints and latest_checkpoint live in audio_vqvae.checkpoint; still importable from here.
__all__ = ["train", "Trainer", "TrainingResult", "NonFiniteLossError", "list_checkpoints", "latest_checkpoint"]


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

    The main process holds ``run_dir`` for the whole call (:func:`~audio_vqvae.training.run_dir.hold_run_directory`):
    a second run into the same folder stops at once.

    Raises:
        InputError: missing corpus, ``run_dir`` holds checkpoints and ``resume`` is false, or ``resume`` is
            true and it holds none, or another run holds ``run_dir`` (``RunDirectoryBusyError``), or it cannot be
            written.
        DiskFullError: a file of the run (or of the corpus cache) did not fit; the checkpoints written before
            are intact.
        ConfigError: a config value is out of range.
        NonFiniteLossError: the loss became NaN or infinite.
    """
    config.validate()  # before any work: a bad value is one line, not a failure an hour in
    run_dir = Path(run_dir)
    if resume:  # a mistyped --out is named as such, before the lock creates the folder
        resume_checkpoint(run_dir, True)
    # Only the main process owns the folder (the others write nothing there); RANK is known before the process group.
    with hold_run_directory(run_dir) if int(os.environ.get("RANK", "0")) == 0 else nullcontext():
        context = init_distributed(config.train.device, timeout_minutes=120)
        try:
            trainer = Trainer(config, run_dir, resume=resume, progress=progress, corpus=corpus, context=context)
            return trainer.fit()
        except BaseException as err:
            if context.enabled:
                # The traceback's frames (e.g. of DistributedDataParallel.forward) may hold the DDP wrapper:
                # free them while the process group still exists (see DistributedModel.release).
                traceback.clear_frames(err.__traceback__)
            cause = disk_full_cause(err)
            if cause is not None and not isinstance(err, DiskFullError):
                # train.log, metrics.jsonl or TensorBoard's event file: an OSError deep in a library's traceback.
                raise disk_full_error(cause.filename or run_dir) from err
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

        resume_from = resume_checkpoint(self.run_dir, resume)
        payload = load_checkpoint(resume_from) if resume_from else None
        if self.is_main:
            self._clean_up_after_interruption(int(payload["step"]) if payload else 0)

        self.corpus = corpus if corpus is not None else prepared_corpus(config, self.context, progress=progress)
        if self.corpus.sample_rate != config.model.sample_rate:
            raise InputError(f"the prepared corpus is at {self.corpus.sample_rate} Hz but model.sample_rate is "
                             f"{config.model.sample_rate}")
        self.speakers = [_plain_speaker(entry) for entry in self.corpus.speakers]
        config.model.num_speakers = len(self.speakers)
        for note in check_resume_compatible(payload, resume_from, config, self.speakers) if payload else []:
            self.log(note)

        # Same initial weights on every rank (DDP also broadcasts them), then one random stream per rank.
        seed_everything(config.train.seed)
        self.model = VQVAE(config.model, speakers=self.speakers).to(self.device)
        seed_everything(config.train.seed + self.context.rank)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.train.learning_rate)
        self.scheduler = make_scheduler(self.optimizer, config.train)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0  # batches of ``epoch`` already trained on
        self._pending_rng: Optional[dict] = None
        if payload is not None:
            state = load_training_state(payload, self.model, self.optimizer, self.scheduler,
                                        rank=self.context.rank, world_size=self.context.world_size)
            self.step, self.epoch, self.batch_in_epoch = state.step, state.epoch, state.batch_in_epoch
            # Restored after the epoch's DataLoader iterator exists: creating it draws one random number.
            self._pending_rng = state.rng
            if state.rng is None:
                self.log("note: different number of processes than when the checkpoint was written; "
                         "random streams are reseeded")
                seed_everything(config.train.seed + 7919 * self.step + self.context.rank)
            self.log(f"resumed from {resume_from} at step {self.step} "
                     f"(epoch {self.epoch}, batch {self.batch_in_epoch})")
        self.use_bf16 = config.train.bf16 and (torch.cuda.is_bf16_supported() if self.device.type == "cuda"
                                               else self.device.type == "cpu" and config.train.cpu_bf16)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if config.train.compile:
            # In place (nn.Module.compile), so the state dict keeps its keys; only the teacher-forced
            # forward is compiled, generation (WaveNet.step) stays eager.
            self.model.decoder.compile()

        loaders = make_loaders(self.corpus, config, self.context, hop_length=self.model.hop_length,
                               pitch=self.model.needs_pitch, log=self.log)
        self.train_loader, self.valid_loader = loaders.train, loaders.valid
        self.audio_rounds = AudioRounds(self.corpus, self.speakers, config.train, self.model.hop_length) \
            if self.is_main else None
        self.stop = StopRequest(announce=self.is_main)  # SIGINT/SIGTERM: finish the step, checkpoint, return
        self._loop_started = 0.0  # perf_counter at the start of fit's loop (train.max_minutes counts from it)
        self.last_checkpoint: Optional[Path] = resume_from
        self.last_valid: dict = {}
        self.loss_terms: tuple = ()  # the model's loss names (VQVAEOutput.losses), known after the first step
        self.valid_step = -1  # the step last_valid measured
        # Last: nothing after it may raise and leave a half-built trainer holding a DDP reducer.
        self.train_model = DistributedModel(self.model, self.context)

    # ------------------------------------------------------------------ the loop

    def fit(self) -> TrainingResult:
        train = self.config.train
        if self.is_main:
            write_run_files(self.run_dir, self.config, self.speakers, fresh=self.step == 0)
            from torch.utils.tensorboard import SummaryWriter

            # A resume's purge_step tells TensorBoard to drop the events an interrupted attempt wrote after the
            # checkpoint: those steps are trained again.
            self.writer = SummaryWriter(str(self.run_dir), purge_step=self.step + 1 if self.step else None)
            log_run_start(self.log, self.config, run_dir=self.run_dir, device=self.device, bf16=self.use_bf16,
                          world_size=self.context.world_size, corpus=self.corpus,
                          parameters=sum(p.numel() for p in self.model.parameters()),
                          batches_per_epoch=len(self.train_loader))
            if self.step == 0:
                self.audio_rounds.log_truth(self.writer)
        status = "finished"
        self.stop.install()
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
                self.log(f"{self.stop.signal or 'stop signal'} received: stopping after step {self.step}")
                self._save_checkpoint()
                self.log(f"interrupted at step {self.step}; continue with --resume (same --out)")
            elif status == "time-limited":
                self.log(f"time limit train.max_minutes={train.max_minutes:g} reached: stopping after step {self.step}")
                # A time box is a planned end: the checkpoint it leaves is measured like a finished run's last one.
                # (An interrupt is not: Ctrl-C wants out now.)
                if self.is_main and self.valid_loader is not None and self.valid_step != self.step:
                    self._validate()
                barrier(self.context)
                self._save_checkpoint()
                self.log(f"stopped at step {self.step} by the time limit; continue with --resume (same --out)")
            else:
                self.log(f"finished: {self.step} steps")
            # Leave together: the other ranks wait while rank 0 writes the last checkpoint, and the
            # collective runs on every rank in both endings (finished or interrupted).
            barrier(self.context)
        finally:
            bar.close()
            self.stop.restore()
            if self.writer is not None:
                self.writer.close()
            self.train_model.release()
        return TrainingResult(self.run_dir, self.step, status, self.last_checkpoint, dict(self.last_valid))

    def _run_epoch(self, batches: Iterator[dict], bar: tqdm, samples_per_step: int) -> str:
        """Train on ``batches`` until they run out or ``max_steps``; ``"interrupted"`` after a stop signal,
        ``"time-limited"`` after the first step that ends ``train.max_minutes`` into the loop."""
        train = self.config.train
        window = StepWindow()
        while self.step < train.max_steps:
            started = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                break
            except RuntimeError:
                if self.stop.signal:  # DataLoader workers killed by the same Ctrl-C
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
                log_train_window(self.writer, self.log, window, step=self.step, max_steps=train.max_steps,
                                 samples_per_step=samples_per_step, losses=self.loss_terms)
                window = StepWindow()
            self._periodic(final=self.step == train.max_steps)
            time_up = train.max_minutes > 0 and time.perf_counter() - self._loop_started >= 60 * train.max_minutes
            # Every rank stops after the same step: one collective per step, a second only when stopping.
            if any_rank(self.context, self.stop.signal is not None or time_up):
                return "interrupted" if any_rank(self.context, self.stop.signal is not None) else "time-limited"
        return "finished"

    def _epoch_batches(self) -> Iterator[dict]:
        batches = epoch_batches(self.train_loader, self.epoch, self.batch_in_epoch)
        if self._pending_rng is not None:  # a resume's random states, once the iterator has drawn its number
            set_rng_state(self._pending_rng, self.device)
            self._pending_rng = None
        return batches

    def _train_step(self, batch: dict) -> dict:
        train = self.config.train
        audio = batch["audio"].to(self.device, non_blocking=True)      # (B, T)
        speaker = batch["speaker"].to(self.device, non_blocking=True)  # (B,)
        pitch = batch["pitch"].to(self.device, non_blocking=True) if self.model.needs_pitch else None  # (B, 3, T)
        self.train_model.train()
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            out = self.train_model(audio, speaker, pitch)
        # The model's named loss terms (VQVAEOutput.losses: reconstruction, quantizer, and one per decoder part).
        names = [key for key in out if key.startswith("losses/")]
        parts = torch.stack([out["loss"].detach().float()] + [out[key].detach().float() for key in names])
        loss, *values = (float(v) for v in mean_over_ranks(self.context, parts).cpu())
        terms = {key.split("/", 1)[1]: value for key, value in zip(names, values)}
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
        self.loss_terms = tuple(terms)
        return {"loss": loss, **terms, "bits_per_sample": terms["reconstruction"] / math.log(2),
                "perplexity": float(out["perplexity"]),
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
            if self.audio_rounds.clips and (final or self.step % train.audio_every == 0):
                self.audio_rounds.log_round(self.writer, self.log, self.model, self.step, progress=self.progress)
        barrier(self.context)
        if final or self.step % train.checkpoint_every == 0:
            self._save_checkpoint()

    def _clean_up_after_interruption(self, step: int) -> None:
        """What a killed attempt left: temporary checkpoint files, and metrics of the steps after ``step`` (the
        checkpoint resumed from, 0 for a new run) that are about to be trained again. Under the run's lock."""
        for removed in remove_temporaries(self.run_dir):
            self.log(f"removed {removed}, left by an interrupted run")
        if step:
            dropped, last = trim_metrics(self.run_dir / "metrics.jsonl", step)
            if dropped:
                self.log(f"metrics.jsonl: dropped {dropped} record(s) of an interrupted attempt after step {step}"
                         + (f" (up to step {last})" if last else "") + "; those steps are trained again")

    # ------------------------------------------------------------------ validation

    def _validate(self) -> None:
        # On a CPU, bf16 (train.cpu_bf16) is a training-speed option: validation stays float32, so that a bf16 run's
        # curve is measured exactly as its float32 twin's. On CUDA validation runs in the training precision.
        metrics = validation_round(self.writer, self.log, self.model, self.valid_loader, self.corpus, step=self.step,
                                   batches=self.config.train.valid_batches,
                                   bf16=self.use_bf16 and self.device.type == "cuda")
        self.last_valid, self.valid_step = metrics, self.step
        self.metrics.write({"kind": "valid", "step": self.step, **metrics})

    # ------------------------------------------------------------------ checkpoints

    def _save_checkpoint(self) -> None:
        rng_states = gather_objects(self.context, get_rng_state(self.device))  # collective: every rank
        if not self.is_main:
            return
        if self.last_checkpoint is not None and self.last_checkpoint.name == checkpoint_name(self.step) \
                and self.last_checkpoint.exists():
            return  # already written at this step (e.g. a signal right after a periodic checkpoint)
        self.last_checkpoint = save_training_checkpoint(
            self.run_dir, self.model, self.optimizer, self.scheduler, experiment=self.config, step=self.step,
            epoch=self.epoch, batch_in_epoch=self.batch_in_epoch, rng=rng_states, valid=self.last_valid,
            keep=self.config.train.keep_checkpoints)
        self.log(f"checkpoint {self.last_checkpoint}")


def _plain_speaker(entry: dict) -> dict:
    """A speaker-table entry reduced to JSON scalars (checkpoints must load with weights_only=True)."""
    return {key: value for key, value in entry.items() if isinstance(value, (str, int, float, bool)) or value is None}
