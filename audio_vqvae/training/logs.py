"""What a run writes besides checkpoints: the text log, the metrics file and TensorBoard.

TensorBoard gets the training scalars averaged over each log window (:func:`log_train_window`),
validation rounds (:func:`validation_round`: teacher-forced bits per sample, code usage and bitrate, phone
accuracy of the codes) and audio rounds (:class:`AudioRounds`): fixed clips reconstructed from their codes
and converted to other speakers, as audio and spectrograms.
matplotlib is not a dependency, so spectrograms and the codebook-usage chart are rendered here as
uint8 arrays (CHW, RGB) for ``SummaryWriter.add_image``.

Example:
    >>> import numpy as np
    >>> mel_image(np.sin(np.arange(16000) * 0.2).astype("float32"), 16000).shape   # (3, mels * 2, frames * 2)
    (3, 160, 252)
    >>> usage_image(np.array([5, 0, 3, 1])).shape
    (3, 120, 256)
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from audio_vqvae.checkpoint import isolated_rng
from audio_vqvae.config import ExperimentConfig, TrainConfig
from audio_vqvae.evaluation.metrics import code_statistics
from audio_vqvae.evaluation.units import validation_phone_accuracy
from audio_vqvae.generation.batched import DecodeRow, decode_rows
from audio_vqvae.pitch import conversion_stats, generation_pitch

# Anchors of matplotlib's "viridis" colormap (dark blue -> green -> yellow), linearly interpolated.
_VIRIDIS = np.array([
    [68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
    [31, 158, 137], [53, 183, 121], [110, 206, 88], [181, 222, 43], [253, 231, 37],
], dtype=np.float32)

_MEL_TRANSFORMS: dict = {}


def colorize(values: np.ndarray) -> np.ndarray:
    """Map float[H x W] in [0, 1] to uint8[3 x H x W] with a viridis-like colormap."""
    scaled = np.clip(values, 0.0, 1.0) * (len(_VIRIDIS) - 1)
    low = np.floor(scaled).astype(np.int64).clip(0, len(_VIRIDIS) - 2)
    fraction = (scaled - low)[..., None]
    rgb = _VIRIDIS[low] * (1 - fraction) + _VIRIDIS[low + 1] * fraction  # (H, W, 3)
    return rgb.round().astype(np.uint8).transpose(2, 0, 1)


def log_mel(audio: Union[np.ndarray, torch.Tensor], sample_rate: int, n_mels: int = 80) -> np.ndarray:
    """Log-mel spectrogram in dB, float[n_mels x frames] (hop 8 ms, window 64 ms at 16 kHz)."""
    import torchaudio  # imported here: only the pure-Python transforms are needed

    key = (sample_rate, n_mels)
    if key not in _MEL_TRANSFORMS:
        hop = max(1, sample_rate // 125)
        _MEL_TRANSFORMS[key] = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=4 * hop * 2, hop_length=hop, n_mels=n_mels, power=2.0)
    waveform = torch.as_tensor(np.asarray(audio, dtype=np.float32)).reshape(1, -1)
    with torch.no_grad():
        mel = _MEL_TRANSFORMS[key](waveform)[0]  # (n_mels, frames)
    return (10.0 * torch.log10(mel.clamp(min=1e-10))).numpy()


def mel_image(audio: Union[np.ndarray, torch.Tensor], sample_rate: int, *, dynamic_range_db: float = 80.0,
              scale: int = 2) -> np.ndarray:
    """Spectrogram picture of ``audio`` (float[T]) as uint8[3 x H x W], low frequencies at the bottom.

    Each picture spans ``dynamic_range_db`` below its own peak, so quiet and loud clips both show structure.
    """
    db = log_mel(audio, sample_rate)
    normalised = (db - (db.max() - dynamic_range_db)) / dynamic_range_db
    image = colorize(normalised[::-1])  # row 0 is the top of the picture: the highest mel band
    return image.repeat(scale, axis=1).repeat(scale, axis=2)


def usage_image(counts: np.ndarray, height: int = 120, min_width: int = 256) -> np.ndarray:
    """Bar chart of code counts sorted from most to least used, log-scaled, as uint8[3 x H x W].

    Unused codes are the flat dark tail on the right; a healthy codebook has a long, gently falling curve.
    """
    counts = np.sort(np.asarray(counts, dtype=np.float64))[::-1]
    heights = np.log1p(counts) / max(np.log1p(counts.max()), 1e-12)
    bar = max(1, math.ceil(min_width / len(counts)))
    width = bar * len(counts)
    rows = np.arange(height)[::-1][:, None] / height  # 1 at the top, 0 at the bottom
    columns = np.repeat(heights, bar)[None, :]
    image = np.zeros((3, height, width), dtype=np.uint8) + 30
    filled = rows < columns  # (H, W)
    image[:, filled] = np.array([53, 183, 121], dtype=np.uint8)[:, None]
    return image


class RunLog:
    """The short human-readable log of a run (``train.log``), echoed to the terminal above the progress bar."""

    def __init__(self, path: Optional[Path], echo: bool = True):
        self.path = path
        self.echo = echo

    def __call__(self, message: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"
        if self.path is not None:
            # Created with the first line, not before: a run that stops on bad input leaves no empty folder.
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        if self.echo:
            tqdm.write(message)


class MetricsFile:
    """Append-only JSON lines (``metrics.jsonl``), one per training step or validation, full float precision."""

    def __init__(self, path: Optional[Path]):
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def log_run_start(log: RunLog, config: ExperimentConfig, *, run_dir: Path, device: torch.device, bf16: bool,
                  world_size: int, corpus: Any, parameters: int, batches_per_epoch: int) -> None:
    """The run log's opening lines: where, on what, which corpus, which model, how many batches and steps."""
    data, model, train = config.data, config.model, config.train
    log(f"run directory {run_dir}")
    log(f"device {device}{' (bf16 autocast)' if bf16 else ''}, "
        f"{world_size} process(es), torch {torch.__version__}, {torch.get_num_threads()} threads")
    log(f"corpus {getattr(corpus, 'cache_dir', '?')}: {len(corpus.speakers)} speakers, "
        f"{len(corpus.split('train'))} train / {len(corpus.split('valid'))} valid utterances")
    log(f"model: {parameters / 1e6:.2f} M parameters, hop {model.hop_length}, "
        f"{model.quantizer.num_codes} codes, receptive field {model.decoder.receptive_field} samples")
    log(f"batches of {data.batch_size} x {data.segment_length} samples per process, "
        f"{batches_per_epoch} batches per epoch; {train.max_steps} steps"
        + (f", at most {train.max_minutes:g} min" if train.max_minutes else "")
        + (" (decoder compiled)" if train.compile else ""))


def read_metrics(path: Union[str, Path], kind: Optional[str] = None) -> list[dict]:
    """Records of a ``metrics.jsonl`` file, optionally only those with ``"kind": kind`` (``train``/``valid``)."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                if kind is None or record.get("kind") == kind:
                    records.append(record)
    return records


# ---------------------------------------------------------------------- TensorBoard rounds


class StepWindow:
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


def log_train_window(writer: Any, log: RunLog, window: StepWindow, *, step: int, max_steps: int,
                     samples_per_step: int, losses: Sequence[str]) -> None:
    """A log window's mean training scalars to TensorBoard (``writer``, None on ranks > 0) and one ``log`` line.

    Args:
        samples_per_step: audio samples of one step over all processes (for the throughput).
        losses: the names of the model's loss terms (:attr:`audio_vqvae.model.VQVAEOutput.losses`), each logged
            as ``train/<name>``: ``reconstruction``, ``quantizer``, and ``envelope`` / ``harmonic`` for those parts.
    """
    means = window.means()
    step_seconds = means["data_s"] + means["compute_s"]
    throughput = samples_per_step / max(step_seconds, 1e-9)
    if writer is not None:
        for name in ("loss", *losses, "bits_per_sample", "perplexity", "codes_used", "grad_norm"):
            writer.add_scalar(f"train/{name}", means[name], step)
        writer.add_scalar("train/learning_rate", means["learning_rate"], step)
        writer.add_scalar("time/samples_per_second", throughput, step)
        writer.add_scalar("time/data_seconds_per_step", means["data_s"], step)
        writer.add_scalar("time/compute_seconds_per_step", means["compute_s"], step)
    parts = "".join(f"{name} {means[name]:.4f} | " for name in losses if name not in ("reconstruction", "quantizer"))
    log(f"step {step}/{max_steps} | loss {means['loss']:.4f} | {parts}"
        f"{means['bits_per_sample']:.4f} bits/sample | perplexity {means['perplexity']:.1f} | "
        f"{means['codes_used']:.0f} codes | lr {means['learning_rate']:.2e} | grad {means['grad_norm']:.3f} | "
        f"{throughput:,.0f} samples/s | data {means['data_s']:.3f} s + compute {means['compute_s']:.3f} s "
        "per step")


@torch.no_grad()
def validation_round(writer: Any, log: RunLog, model: Any, loader: Any, corpus: Any, *, step: int, batches: int,
                     bf16: bool) -> dict:
    """Measure the model on the first ``batches`` batches of ``loader``; write the metrics to TensorBoard and the log.

    Returns:
        ``bits_per_sample`` (teacher forced), ``perplexity``, ``codes_used``, ``bitrate`` and ``bitrate_max`` of the
        codes, and ``phone_accuracy`` where the corpus has phone alignments.
    """
    device = next(model.parameters()).device
    model.eval()
    nats, samples = 0.0, 0
    counts = torch.zeros(model.config.quantizer.num_codes, dtype=torch.long)
    started = time.perf_counter()
    with isolated_rng(device):
        for index, batch in enumerate(loader):
            if index >= batches:
                break
            audio = batch["audio"].to(device)
            pitch = batch["pitch"].to(device) if model.needs_pitch else None
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
                out = model(audio, batch["speaker"].to(device), pitch=pitch)
            nats += float(out.reconstruction) * audio.numel()
            samples += audio.numel()
            counts += torch.bincount(out.codes.flatten().cpu(), minlength=counts.numel())
        # The paper's unit test (§4.3) where the corpus has phone alignments: the encoder only, no generation.
        phone_accuracy = validation_phone_accuracy(model, corpus)
    model.train()
    usage = code_statistics(counts.numpy(), model.config.frame_rate)
    metrics = {"bits_per_sample": nats / max(samples, 1) / math.log(2), "perplexity": usage.perplexity,
               "codes_used": usage.codes_used, "bitrate": usage.bitrate, "bitrate_max": usage.bitrate_max}
    if phone_accuracy is not None:
        metrics["phone_accuracy"] = phone_accuracy
    _log_validation(writer, log, step, metrics, counts, time.perf_counter() - started)
    return metrics


def _log_validation(writer: Any, log: RunLog, step: int, metrics: dict, counts: torch.Tensor, seconds: float) -> None:
    """Validation ``metrics`` and the code usage ``counts`` (LongTensor[K]) to TensorBoard and the run log."""
    for name, value in metrics.items():
        writer.add_scalar(f"valid/{name}", value, step)
    codes = torch.repeat_interleave(torch.arange(counts.numel()), counts)
    if codes.numel():
        writer.add_histogram("valid/code_usage", codes, step, bins=np.arange(counts.numel() + 1) - 0.5)
    writer.add_image("codebook/usage_sorted", usage_image(counts.numpy()), step)
    log(f"valid step {step}: {metrics['bits_per_sample']:.4f} bits/sample | perplexity "
        f"{metrics['perplexity']:.1f} | {metrics['codes_used']}/{counts.numel()} codes | code bitrate "
        f"{metrics['bitrate']:.0f} bit/s (max {metrics['bitrate_max']:.0f}) | {seconds:.1f} s")
    if "phone_accuracy" in metrics:
        log(f"valid step {step}: phone accuracy of the codes {100 * metrics['phone_accuracy']:.1f} % (each code "
            "labelled with its most frequent phone on training utterances)")
    writer.flush()


@dataclass
class AudioClip:
    """A fixed excerpt of an audio round: ``audio`` (Tensor[T]) from sample ``start`` of utterance ``name``
    by speaker ``speaker``, the utterance's f0 (float32[F], Hz per 10 ms frame), and the training speakers
    it is converted to."""

    name: str
    speaker: int
    audio: torch.Tensor
    targets: list[int]
    f0: np.ndarray
    start: int


class AudioRounds:
    """TensorBoard audio rounds: fixed clips reconstructed from their codes and converted to other speakers.

    Clips come from the validation split (else the training split), one per speaker first, each converted
    to ``train.conversion_speakers`` training speakers spread through the speaker table; ``train.audio_clips``
    of ``train.audio_seconds``. Tags are ``audio/clip<i>_<speaker>/<k>_<what>`` and ``mel/...`` alike, with
    ``0_truth`` (logged once), ``1_reconstruction`` and ``<k>_as_<target>``.
    """

    def __init__(self, corpus: Any, speakers: list[dict], train: TrainConfig, hop_length: int):
        self.corpus = corpus
        self.speakers = speakers
        self.seed = train.seed
        self.clips = choose_clips(corpus, train, hop_length) if train.audio_clips > 0 else []

    def log_truth(self, writer: Any) -> None:
        rate = self.corpus.sample_rate
        for index, clip in enumerate(self.clips):
            tag = self._tag(index)
            writer.add_audio(f"audio/{tag}/0_truth", clip.audio.unsqueeze(0), 0, sample_rate=rate)
            writer.add_image(f"mel/{tag}/0_truth", mel_image(clip.audio.numpy(), rate), 0)
        writer.flush()

    @torch.no_grad()
    def log_round(self, writer: Any, log: RunLog, model: Any, step: int, *, progress: bool) -> None:
        """Reconstruct every clip from its codes and convert it to its target speakers, in one batched decode."""
        rate, device = self.corpus.sample_rate, next(model.parameters()).device
        model.eval()
        # The fused generator's numba threads follow torch's thread budget (1 per process under
        # torchrun): with more, their idle worker keeps spinning after the audio round and takes a
        # core from the other training process for the rest of the run (measured: 1.8 -> 2.7 s/step).
        os.environ.setdefault("NUMBA_NUM_THREADS", str(torch.get_num_threads()))
        started = time.perf_counter()
        rows: list[tuple[int, int, str]] = []  # (clip, speaker, tag suffix)
        for index, clip in enumerate(self.clips):
            rows.append((index, clip.speaker, "1_reconstruction"))
            for order, target in enumerate(clip.targets):
                rows.append((index, target, f"{order + 2}_as_{self.speakers[target]['name']}"))
        length = max(len(clip.audio) for clip in self.clips)
        # Every clip padded to the longest and every row in one batch, its seeds drawn from self.seed: the
        # generator is on the CPU whatever the device, so a round's samples depend on the seed alone.
        clips = [F.pad(clip.audio, (0, length - len(clip.audio))) for clip in self.clips]
        decoded = [DecodeRow(speaker, clip=index) for index, speaker, _ in rows]
        generated: list[torch.Tensor] = [torch.empty(0)] * len(rows)
        with isolated_rng(device), tqdm(total=len(rows) * length, desc="generating audio", unit="sample",
                                        unit_scale=True, leave=False, disable=not progress, dynamic_ncols=True) as bar:
            for row, waveform in decode_rows(model, decoded, batch_size=len(rows), clips=clips, seed=self.seed,
                                             pitch=lambda row: self._pitch(rows[row], length), progress=bar.update):
                generated[row] = waveform
        model.train()
        for (index, _, suffix), waveform in zip(rows, generated):
            waveform = waveform[:len(self.clips[index].audio)]
            tag = self._tag(index)
            writer.add_audio(f"audio/{tag}/{suffix}", waveform.unsqueeze(0), step, sample_rate=rate)
            writer.add_image(f"mel/{tag}/{suffix}", mel_image(waveform.numpy(), rate), step)
        writer.flush()
        seconds = time.perf_counter() - started
        log(f"audio step {step}: {len(rows)} clips of {length / rate:.2f} s generated in {seconds:.1f} s")

    def _tag(self, index: int) -> str:
        return f"clip{index}_{self.speakers[self.clips[index].speaker]['name']}"

    def _pitch(self, row: tuple[int, int, str], length: int) -> np.ndarray:
        """A row's ``(phase, f0, voiced)`` rows, float32[3 x length]: its clip's f0, moved to its speaker."""
        index, speaker, _ = row
        clip = self.clips[index]
        stats = conversion_stats(self.speakers, clip.speaker, speaker)
        return generation_pitch(clip.f0, self.corpus.sample_rate, length, self.corpus.pitch_hop, start=clip.start,
                                **stats)


def choose_clips(corpus: Any, train: TrainConfig, hop_length: int) -> list[AudioClip]:
    """Fixed validation clips (one per speaker first) and, for each, the training speakers to convert it to."""
    rate, hop = corpus.sample_rate, hop_length
    split = corpus.split("valid")
    if len(split) == 0:
        split = corpus.split("train")
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
    train_speakers = sorted({int(s) for s in corpus.split("train").speaker_ids})
    clips = []
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
        clips.append(AudioClip(name=item["name"], speaker=source,
                               audio=torch.from_numpy(np.ascontiguousarray(audio[start:start + length])),
                               targets=targets, f0=corpus.f0(int(split.indices[i])), start=start))
    return clips
