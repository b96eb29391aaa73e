"""Evaluate a checkpoint on the held-out split of its corpus: likelihood, codes, reconstruction and conversion.

:func:`evaluate` reads the checkpoint (model, speaker table, data config), opens the prepared corpus
the training run used (or the one named), and measures on ``settings.utterances`` held-out utterances,
taken round-robin over speakers:

* ``teacher_forced``: bits per sample of the whole utterances given their own codes and speaker;
* ``codes``: codebook usage of the same utterances (:class:`~audio_vqvae.evaluation.metrics.CodeStatistics`);
* ``reconstruction``: the first ``settings.seconds`` of each utterance regenerated from its codes with
  its own speaker, against the original (MCD and LSD, time-paired); baseline: the original against
  the start of another utterance of the same speaker, held-out ones first (right voice, other content);
* ``speaker_id``: an independent classifier (:mod:`~audio_vqvae.evaluation.speaker_id`) trained on real
  training-split audio names the speaker of the real clips (its ceiling), of the reconstructions and
  of the conversions (each clip to ``settings.conversions`` other training speakers);
* ``units``: where the corpus has phone alignments, the codes as speech units
  (:func:`~audio_vqvae.evaluation.units.unit_report`): the paper's phone accuracy, linear probes before and
  after quantization, ABX error within and across speakers, and the speaker accuracy of a classifier on codes;
* ``parallel``: where the target speaker also read the clip's sentence (same transcript, any split), the
  DTW-aligned MCD of the conversion to that rendition, next to the unconverted source's, and the ratio
  of their median f0. Absent, with the reason, when the corpus has no such pairs.

Example:
    >>> result = evaluate("runs/vctk-demo/checkpoints/step-00001500.pt", corpus="demo")   # doctest: +SKIP
    >>> write_report(result, "runs/vctk-demo/eval/report.json")                          # doctest: +SKIP
    >>> result.report["speaker_id"]["conversion_target_accuracy"]                         # doctest: +SKIP
    0.25
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import re
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from audio_vqvae.atomic import atomic_write
from audio_vqvae.checkpoint import load_checkpoint, model_from_checkpoint
from audio_vqvae.config import DataConfig
from audio_vqvae.data import PreparedCorpus, ensure_prepared
from audio_vqvae.emphasis import preemphasis
from audio_vqvae.errors import InputError
from audio_vqvae.evaluation.metrics import (
    LEVELS,
    PitchTrack,
    analysis_frames,
    code_statistics,
    frame_levels,
    level_bits,
    log_spectral_distance,
    lpc_reference_bits,
    median_f0,
    mel_cepstral_distortion,
    pitch_track,
    voiced_share,
)
from audio_vqvae.evaluation.speaker_id import SpeakerClassifier, signal_features, window_features
from audio_vqvae.evaluation.units import unit_report, unit_scalars
from audio_vqvae.model import VQVAE
from audio_vqvae.options import resolve_device
from audio_vqvae.pitch import conversion_stats, generation_pitch

AUDIO_EXAMPLES = 2  # clips whose truth, reconstruction and conversions go to TensorBoard
GENERATION_BATCH = 64  # rows per decode call: bigger batches are faster per sample; 64 x 2 s needs about 2.5 GB


@dataclass
class EvaluationSettings:
    """How much to evaluate; CPU time grows with ``utterances × (1 + conversions) × seconds``.

    Attributes:
        utterances: held-out utterances used, taken round-robin over speakers (in name order).
        conversions: target speakers per utterance (other training speakers, spread over the table).
        seconds: length of the generated clips (the start of each utterance, whole frames).
        temperature: sampling temperature of the decoder (0 = greedy).
        seed: seed of the sampling.
        classifier_utterances: real training utterances per speaker the speaker classifier learns from.
    """

    utterances: int = 16
    conversions: int = 2
    seconds: float = 2.0
    temperature: float = 1.0
    seed: int = 0
    classifier_utterances: int = 24

    def validate(self) -> None:
        if self.utterances < 1:
            raise InputError(f"--utterances must be at least 1, got {self.utterances}")
        if self.conversions < 0:
            raise InputError(f"--conversions must be 0 or more, got {self.conversions}")
        if not self.seconds > 0:
            raise InputError(f"--seconds must be positive, got {self.seconds}")
        if self.temperature < 0:
            raise InputError(f"--temperature must be 0 or more, got {self.temperature}")
        if self.classifier_utterances < 1:
            raise InputError(f"--classifier-utterances must be at least 1, got {self.classifier_utterances}")


@dataclass
class Clip:
    """The start of one held-out utterance, as generated and measured."""

    utterance: int       # index into corpus.utterances
    name: str
    speaker: str
    speaker_id: int      # the model's id
    sentence: str        # normalised transcript ("" when unknown)
    length: int          # samples of the whole utterance
    audio: np.ndarray    # float32[L], L a multiple of the hop


@dataclass
class Evaluation:
    """What :func:`evaluate` returns.

    Attributes:
        report: the measurements, plain JSON data (see the module notes for the sections).
        audio: TensorBoard tag -> float32[T] audio of the first clips (truth, reconstruction, conversions).
        sample_rate: rate of ``audio``.
    """

    report: dict
    audio: dict[str, np.ndarray] = field(default_factory=dict)
    sample_rate: int = 16000


# ------------------------------------------------------------------ entry point


def evaluate(checkpoint: Union[str, Path], *, corpus: Optional[str] = None,
             data_root: Optional[Union[str, Path]] = None, cache: Optional[Union[str, Path]] = None,
             settings: Optional[EvaluationSettings] = None, device: str = "cpu", progress: bool = True) -> Evaluation:
    """Measure a checkpoint on the held-out split of a prepared corpus.

    Args:
        checkpoint: a checkpoint written by training (or ``save_checkpoint``).
        corpus, data_root: override the checkpoint's data config (then the default cache of that
            corpus is used, prepared if needed).
        cache: a prepared cache folder to read instead.
        settings: :class:`EvaluationSettings` (default: 16 utterances, 2 conversions each, 2 s clips).
        device: torch device of the model (``"auto"``: CUDA when available, else CPU).
        progress: progress bars on stderr.

    Returns:
        :class:`Evaluation`.

    Raises:
        CheckpointError: missing or unreadable checkpoint.
        InputError: no corpus, a corpus at another rate, or no held-out utterance of a known speaker.
    """
    settings = settings or EvaluationSettings()
    settings.validate()
    started = time.perf_counter()
    payload = load_checkpoint(checkpoint)
    model = model_from_checkpoint(payload, checkpoint, resolve_device(device))
    prepared = open_corpus(payload, checkpoint, corpus=corpus, data_root=data_root, cache=cache, progress=progress)
    rate, hop = model.config.sample_rate, model.hop_length
    if prepared.sample_rate != rate:
        raise InputError(f"{prepared.cache_dir}: the corpus is at {prepared.sample_rate} Hz but the model at {rate} Hz")
    known = {str(entry["name"]) for entry in model.speakers}
    heldout, train = utterances_by_speaker(prepared, "valid"), utterances_by_speaker(prepared, "train")
    utterances, notes = select_heldout(prepared, heldout, known, settings.utterances)
    timings: dict[str, float] = {}

    with _timed(timings, "teacher_forced"):
        teacher_forced, counts = _teacher_forced(model, prepared, utterances, progress)
        codes = code_statistics(counts, model.config.frame_rate).to_dict()

    sentences = [normalise_text(record.get("text") or "") for record in prepared.utterances]
    clips = [_clip(prepared, model, index, sentences[index], settings.seconds) for index in utterances]
    short = [clip.name for clip in clips if len(clip.audio) == 0]
    if short:
        notes.append(f"{len(short)} held-out utterance(s) shorter than one frame ({hop} samples) not generated: "
                     f"{', '.join(short[:5])}")
        clips = [clip for clip in clips if len(clip.audio)]
        if not clips:
            raise InputError(f"{prepared.cache_dir}: every selected held-out utterance is shorter than one frame")
    name_of = {int(entry["id"]): str(entry["name"]) for entry in model.speakers}
    train_speakers = sorted(set(train) & known)  # the model's speakers with training audio here
    train_ids = [model.speaker_id(name) for name in train_speakers]
    rows = [(i, clip.speaker_id) for i, clip in enumerate(clips)]  # reconstructions, then conversions
    rows += [(i, target) for i, clip in enumerate(clips)
             for target in _targets(clip.speaker_id, train_ids, settings.conversions, i)]

    with _timed(timings, "generation"):
        generated = _generate(model, prepared, clips, rows, settings, progress)
    reconstructions = generated[:len(clips)]
    conversions = [(i, target, audio) for (i, target), audio in zip(rows[len(clips):], generated[len(clips):])]
    with _timed(timings, "reconstruction_metrics"):
        originals = [pitch_track(clip.audio, rate) for clip in clips]  # voicing here, f0 in the parallel part
        others = {name: heldout.get(name, []) + train.get(name, []) for name in {clip.speaker for clip in clips}}
        reconstruction = _reconstruction(prepared, sentences, others, clips, originals, reconstructions,
                                         settings.seconds, progress)
    with _timed(timings, "speaker_id"):
        speaker_id = _speaker_id(prepared, {name: train[name] for name in train_speakers}, clips, reconstructions,
                                 conversions, name_of, settings, progress)
    with _timed(timings, "parallel"):
        parallel = _parallel(prepared, sentences, clips, originals, conversions, name_of, progress)
    with _timed(timings, "units"):
        # the whole held-out split, not just the generated clips: ABX needs many phone tokens
        units = unit_report(model, prepared, [i for name in train_speakers for i in train[name]],
                            [i for name in sorted(set(heldout) & known) for i in heldout[name]], seed=settings.seed)

    report = {
        "checkpoint": str(checkpoint),
        "step": payload.get("step"),
        "model": {"sample_rate": rate, "hop_length": hop, "num_codes": model.config.quantizer.num_codes,
                  "speakers": len(model.speakers), "training_speakers": len(train_speakers)},
        "corpus": {"cache": str(prepared.cache_dir), "layout": prepared.manifest.get("layout"),
                   "heldout_utterances": len(prepared.split("valid")), "utterances": len(utterances),
                   "clips": len(clips), "conversions": len(conversions)},
        "settings": asdict(settings),
        "teacher_forced": teacher_forced,
        "codes": codes,
        "reconstruction": reconstruction,
        "speaker_id": speaker_id,
        "parallel": parallel,
        "units": units,
        "notes": notes,
        "timings_s": timings,
        "seconds": round(time.perf_counter() - started, 2),
    }
    return Evaluation(report=_json_safe(report), audio=_examples(clips, reconstructions, conversions, name_of),
                      sample_rate=rate)


def open_corpus(payload: dict, checkpoint: Union[str, Path], *, corpus: Optional[str] = None,
                data_root: Optional[Union[str, Path]] = None, cache: Optional[Union[str, Path]] = None,
                progress: bool = True) -> PreparedCorpus:
    """The prepared corpus to evaluate on: ``cache`` if given, else the checkpoint's data config with
    ``corpus``/``data_root`` overriding it (prepared first if needed, exactly as training does)."""
    if cache is not None:
        return PreparedCorpus.open(cache)
    experiment = payload.get("experiment")
    if isinstance(experiment, dict) and isinstance(experiment.get("data"), dict):
        data = DataConfig.from_dict(experiment["data"], where=f"{checkpoint}: experiment.data")
    elif corpus is not None:
        data = DataConfig(corpus=corpus)
    else:
        raise InputError(f"{checkpoint}: the checkpoint holds no data config; pass --corpus (and --data-root) "
                         "or --cache")
    if corpus is not None and corpus != data.corpus:
        data = replace(data, corpus=corpus, data_root=None, cache_dir=None)
    if data_root is not None:
        data = replace(data, data_root=str(data_root), cache_dir=None)
    sample_rate = int(payload["config"]["sample_rate"])
    return ensure_prepared(data, sample_rate, progress=progress)


def utterances_by_speaker(corpus: PreparedCorpus, split: str) -> dict[str, list[int]]:
    """Indices into ``corpus.utterances`` of the ``split`` utterances, per speaker name, each list in name order."""
    groups: dict[str, list[int]] = defaultdict(list)
    for index in sorted(corpus.split(split).indices.tolist(), key=lambda i: corpus.utterances[i]["name"]):
        groups[corpus.utterances[index]["speaker"]].append(index)
    return dict(groups)


def select_heldout(corpus: PreparedCorpus, heldout: dict[str, list[int]], known: set[str],
                   count: int) -> tuple[list[int], list[str]]:
    """Up to ``count`` utterances of ``heldout`` (:func:`utterances_by_speaker` of ``"valid"``) whose speaker is
    in ``known``, round-robin over speakers in name order.

    Returns:
        ``(indices into corpus.utterances, notes)``; the notes name skipped speakers.

    Raises:
        InputError: the held-out split is empty or holds no speaker of ``known``.
    """
    if not heldout:
        raise InputError(f"{corpus.cache_dir}: no held-out utterances (the valid split is empty); "
                         "prepare the corpus with --valid-utterances 1 or more")
    unknown = sorted(set(heldout) - known)
    notes = []
    if unknown:
        more = " ..." if len(unknown) > 10 else ""
        notes.append(f"skipped {sum(len(heldout[name]) for name in unknown)} held-out utterance(s) of {len(unknown)} "
                     f"speaker(s) the model does not know: {', '.join(unknown[:10])}{more}")
    speakers = sorted(set(heldout) & known)
    if not speakers:
        raise InputError(f"{corpus.cache_dir}: none of the held-out utterances is of a speaker the model knows "
                         f"({', '.join(sorted(known)[:10])}); evaluate on the corpus the model was trained on")
    rounds = itertools.zip_longest(*(heldout[name] for name in speakers))
    return [index for group in rounds for index in group if index is not None][:count], notes


# ------------------------------------------------------------------ the measurements


@torch.no_grad()
def _teacher_forced(model: VQVAE, corpus: PreparedCorpus, utterances: Sequence[int],
                    progress: bool) -> tuple[dict, np.ndarray]:
    """Bits per sample of whole utterances given their codes and speaker, overall and by frame level next
    to the envelope-only reference (:func:`~audio_vqvae.evaluation.metrics.level_bits`), and the counts of the codes."""
    device = next(model.parameters()).device
    nats, samples, used = 0.0, 0, 0
    counts = np.zeros(model.config.quantizer.num_codes, dtype=np.int64)
    frame = analysis_frames(model.config.sample_rate)[0]
    levels, decoder_bits, reference_bits = [], [], []
    for index in tqdm(utterances, desc="teacher forced", unit="utt", disable=not progress, leave=False,
                      file=sys.stderr):
        audio = corpus.samples(index)
        if len(audio) < model.hop_length:
            continue
        used += 1
        speaker = torch.tensor([model.speaker_id(corpus.utterances[index]["speaker"])], device=device)
        waveform = torch.from_numpy(audio).unsqueeze(0).to(device)
        pitch = torch.from_numpy(corpus.pitch_rows(index)).unsqueeze(0).to(device) if model.needs_pitch else None
        out = model(waveform, speaker, pitch=pitch)
        targets = out.targets  # the excitation's classes for a source-filter decoder
        per_sample = F.cross_entropy(out.logits.float(), targets, reduction="none")[0]
        nats += float(per_sample.sum())
        samples += len(audio)
        counts += np.bincount(out.codes.flatten().cpu().numpy(), minlength=len(counts))
        # The reference scores the signal's classes in the decoder's domain (pre-emphasised, if it is); a
        # source-filter decoder scores its excitation's classes instead, another alphabet of the same size.
        levels.append(frame_levels(audio, frame))
        decoder_bits.append(per_sample.cpu().numpy() / math.log(2))
        reference_bits.append(lpc_reference_bits(preemphasis(waveform, model.config.preemphasis)[0].cpu().numpy(),
                                                 model.targets(waveform)[0].cpu().numpy(), frame,
                                                 quantization_channels=model.decoder.quantization_channels))
    quantization = model.decoder.quantization_channels
    by_level = level_bits(*(np.concatenate(parts) if parts else np.zeros(0)
                            for parts in (levels, decoder_bits, reference_bits)))
    return {"bits_per_sample": nats / max(samples, 1) / math.log(2), "chance_bits_per_sample": math.log2(quantization),
            "utterances": used, "seconds": samples / model.config.sample_rate, **by_level}, counts


def _clip(corpus: PreparedCorpus, model: VQVAE, index: int, sentence: str, seconds: float) -> Clip:
    record = corpus.utterances[index]
    wanted = min(int(seconds * model.config.sample_rate), int(record["length"])) // model.hop_length * model.hop_length
    return Clip(utterance=index, name=record["name"], speaker=record["speaker"],
                speaker_id=model.speaker_id(record["speaker"]), sentence=sentence,
                length=int(record["length"]), audio=corpus.samples(index, 0, wanted))


def normalise_text(text: str) -> str:
    """Lower case, punctuation dropped, single spaces: two readings of a sentence compare equal.

    Example:
        >>> normalise_text("  Glue the sheet,  to the DARK blue background. ")
        'glue the sheet to the dark blue background'
    """
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _targets(source: int, speakers: Sequence[int], count: int, position: int) -> list[int]:
    """``count`` target speakers for the clip at ``position``: the others in turn, so every speaker is used."""
    others = [speaker for speaker in speakers if speaker != source]
    count = min(count, len(others))
    return [others[(position * count + k) % len(others)] for k in range(count)]


def _row_pitch(model: VQVAE, corpus: PreparedCorpus, clip: Clip, speaker: int) -> np.ndarray:
    """The ``(phase, f0, voiced)`` rows a clip is generated with: its tracked f0, moved to ``speaker`` if another."""
    return generation_pitch(corpus.f0(clip.utterance), model.config.sample_rate, len(clip.audio),
                            corpus.pitch_hop, **conversion_stats(model.speakers, clip.speaker_id, speaker))


@torch.no_grad()
def _generate(model: VQVAE, corpus: PreparedCorpus, clips: Sequence[Clip], rows: Sequence[tuple[int, int]],
              settings: EvaluationSettings, progress: bool) -> list[np.ndarray]:
    """Audio of every (clip, speaker) row, generated from the clip's codes, batching rows of one clip length."""
    device = next(model.parameters()).device
    by_length: dict[int, list[int]] = defaultdict(list)
    for row, (clip, _) in enumerate(rows):
        by_length[len(clips[clip].audio)].append(row)
    batches = [members[start:start + GENERATION_BATCH] for _, members in sorted(by_length.items())
               for start in range(0, len(members), GENERATION_BATCH)]
    outputs: list[Optional[np.ndarray]] = [None] * len(rows)
    bar = tqdm(total=sum(len(clips[clip].audio) for clip, _ in rows), desc="generating", unit="sample",
               unit_scale=True, disable=not progress, leave=False, file=sys.stderr)
    with bar:
        for batch, members in enumerate(batches):
            sources = sorted({rows[row][0] for row in members})
            audio = torch.from_numpy(np.stack([clips[clip].audio for clip in sources])).to(device)
            codes = model.encode(audio)  # (clips, frames)
            position = {clip: i for i, clip in enumerate(sources)}
            speakers = torch.tensor([rows[row][1] for row in members], device=device)
            done = [0]

            def advance(steps: int) -> None:
                bar.update((steps - done[0]) * len(members))
                done[0] = steps

            pitch = (torch.from_numpy(np.stack([_row_pitch(model, corpus, clips[rows[row][0]], rows[row][1])
                                                for row in members])).to(device) if model.needs_pitch else None)
            waveforms = model.decode(codes[[position[rows[row][0]] for row in members]], speakers,
                                     temperature=settings.temperature,
                                     generator=torch.Generator().manual_seed(settings.seed + batch),
                                     progress=advance, pitch=pitch).float().cpu().numpy()
            for row, waveform in zip(members, waveforms):
                outputs[row] = waveform
    return outputs


def _reconstruction(corpus: PreparedCorpus, sentences: Sequence[str], utterances: dict[str, list[int]],
                    clips: Sequence[Clip], originals: Sequence[PitchTrack], reconstructions: Sequence[np.ndarray],
                    seconds: float, progress: bool) -> dict:
    """MCD and LSD of each reconstruction to its original, and of the original to the first utterance in
    ``utterances[speaker]`` with other content (the baseline); voiced shares of both (``originals``: the
    clips' pitch tracks)."""
    rate = corpus.sample_rate
    mcd, lsd, baseline_mcd, baseline_lsd, voiced, original_voiced = [], [], [], [], [], []
    for i, clip in enumerate(tqdm(clips, desc="reconstruction", unit="clip", disable=not progress, leave=False,
                                  file=sys.stderr)):
        mcd.append(mel_cepstral_distortion(clip.audio, reconstructions[i], rate))
        lsd.append(log_spectral_distance(clip.audio, reconstructions[i], rate))
        voiced.append(voiced_share(reconstructions[i], rate))
        original_voiced.append(originals[i].voiced_share)
        other = next((j for j in utterances[clip.speaker]
                      if j != clip.utterance and (not clip.sentence or sentences[j] != clip.sentence)), None)
        if other is not None:
            reference = corpus.samples(other, 0, len(clip.audio))
            baseline_mcd.append(mel_cepstral_distortion(clip.audio, reference, rate))
            baseline_lsd.append(log_spectral_distance(clip.audio, reference, rate))
    return {"mcd_db": _mean(mcd), "lsd_db": _mean(lsd), "baseline_mcd_db": _mean(baseline_mcd),
            "baseline_lsd_db": _mean(baseline_lsd), "voiced_share": _mean(voiced),
            "original_voiced_share": _mean(original_voiced), "clips": len(clips), "baseline_pairs": len(baseline_mcd),
            "clip_seconds": _mean([len(clip.audio) / rate for clip in clips]), "max_seconds": seconds}


def _speaker_id(corpus: PreparedCorpus, train: dict[str, list[int]], clips: Sequence[Clip],
                reconstructions: Sequence[np.ndarray], conversions: Sequence[tuple[int, int, np.ndarray]],
                name_of: dict[int, str], settings: EvaluationSettings, progress: bool) -> dict:
    """Train the classifier on real audio of the training speakers (``train``: name -> their training
    utterances); name the speakers of real, reconstructed and converted clips."""
    train_speakers = sorted(train)
    if len(train_speakers) < 2:
        return {"available": False, "reason": f"{len(train_speakers)} training speaker(s) known to the model; "
                                               "a speaker classifier needs two or more"}
    rate = corpus.sample_rate
    window = max(len(clip.audio) for clip in clips)
    features, labels = [], []
    for name in tqdm(train_speakers, desc="speaker classifier", unit="speaker", disable=not progress, leave=False,
                     file=sys.stderr):
        own = train[name]
        chosen = np.unique(np.linspace(0, len(own) - 1, min(len(own), settings.classifier_utterances)).round())
        for k in chosen.astype(int):
            rows = window_features(corpus.samples(own[k]), rate, window)
            features.append(rows)
            labels += [name] * len(rows)
    classifier = SpeakerClassifier.fit(np.concatenate(features), labels)
    classes = set(train_speakers)

    def predict(audio: Sequence[np.ndarray]) -> list[str]:
        return list(classifier.predict(np.stack([signal_features(a, rate) for a in audio]))) if audio else []

    def accuracy(predicted: Sequence[str], wanted: Sequence[str]) -> Optional[float]:
        return float(np.mean([p == w for p, w in zip(predicted, wanted)])) if predicted else None

    # Every clip is named once; the rows below compare those names with different wanted speakers.
    real = [i for i, clip in enumerate(clips) if clip.speaker in classes]
    reconstructed = predict([reconstructions[i] for i in real])
    converted = predict([audio for _, _, audio in conversions])
    confusable = [k for k, (i, _, _) in enumerate(conversions) if clips[i].speaker in classes]
    # Where the generated clips go: spread over the speakers, or all named as one (then the classifier
    # finds no speaker in them, whatever the accuracies say).
    named = Counter(reconstructed + converted)
    top_name, top_count = named.most_common(1)[0] if named else (None, 0)
    return {
        "available": True,
        "classes": len(train_speakers),
        "chance": 1.0 / len(train_speakers),
        "train_windows": len(labels),
        "real_heldout_accuracy": accuracy(predict([clips[i].audio for i in real]), [clips[i].speaker for i in real]),
        "real_heldout_clips": len(real),
        "reconstruction_accuracy": accuracy(reconstructed, [clips[i].speaker for i in real]),
        "conversion_target_accuracy": accuracy(converted, [name_of[target] for _, target, _ in conversions]),
        "conversion_source_confusion": accuracy([converted[k] for k in confusable],
                                                [clips[conversions[k][0]].speaker for k in confusable]),
        "conversions": len(conversions),
        "generated_top_prediction": top_name,
        "generated_top_share": top_count / sum(named.values()) if named else None,
        "generated_speakers_named": len(named),
    }


def _parallel(corpus: PreparedCorpus, sentences: Sequence[str], clips: Sequence[Clip],
              originals: Sequence[PitchTrack], conversions: Sequence[tuple[int, int, np.ndarray]],
              name_of: dict[int, str], progress: bool) -> dict:
    """Conversions against the target speaker's own reading of the same sentence (DTW-aligned MCD, f0)."""
    if not conversions:
        return {"available": False, "reason": "no conversions (one training speaker, or --conversions 0)"}
    rate = corpus.sample_rate
    readings: dict[tuple[str, str], int] = {}
    for index, record in enumerate(corpus.utterances):
        if sentences[index]:
            readings.setdefault((sentences[index], record["speaker"]), index)
    pairs = [(i, target, audio, readings[(clips[i].sentence, name_of[target])])
             for i, target, audio in conversions if (clips[i].sentence, name_of[target]) in readings]
    if not pairs:
        reason = ("the corpus has no transcripts" if not readings else
                  "no target speaker read the sentence of a converted clip (not a parallel corpus)")
        return {"available": False, "reason": reason}
    conversion_mcd, source_mcd, ratios, source_ratios = [], [], [], []  # f0 ratios: NaN where a side is unvoiced
    reading_f0: dict[tuple[int, int], float] = {}  # several clips are converted to the same target's reading

    for i, target, audio, reading in tqdm(pairs, desc="parallel", unit="pair", disable=not progress, leave=False,
                                          file=sys.stderr):
        clip = clips[i]
        # The same share of the sentence as the clip is of its utterance.
        length = corpus.utterances[reading]["length"]
        excerpt_length = min(length, round(len(clip.audio) * length / clip.length))
        reference = corpus.samples(reading, 0, excerpt_length)
        conversion_mcd.append(mel_cepstral_distortion(reference, audio, rate, dtw=True))
        source_mcd.append(mel_cepstral_distortion(reference, clip.audio, rate, dtw=True))
        if (reading, excerpt_length) not in reading_f0:
            reading_f0[(reading, excerpt_length)] = median_f0(reference, rate)
        target_f0 = reading_f0[(reading, excerpt_length)]
        ratios.append(median_f0(audio, rate) / target_f0)
        source_ratios.append(originals[i].median_f0 / target_f0)
    voiced = np.array([r for r in ratios if math.isfinite(r)])
    source_voiced = np.array([r for r in source_ratios if math.isfinite(r)])
    return {
        "available": True,
        "pairs": len(pairs),
        "conversion_mcd_db": _mean(conversion_mcd),
        "source_target_mcd_db": _mean(source_mcd),
        "f0_ratio_median": _median(voiced),
        "f0_error_semitones": _median(np.abs(12 * np.log2(voiced))),
        "source_f0_ratio_median": _median(source_voiced),
        "source_f0_error_semitones": _median(np.abs(12 * np.log2(source_voiced))),
        "f0_pairs": len(voiced),
        "source_f0_pairs": len(source_voiced),
    }


def _examples(clips: Sequence[Clip], reconstructions: Sequence[np.ndarray],
              conversions: Sequence[tuple[int, int, np.ndarray]], name_of: dict[int, str]) -> dict[str, np.ndarray]:
    audio = {}
    for i, clip in enumerate(clips[:AUDIO_EXAMPLES]):
        tag = f"clip{i}_{clip.name}"
        audio[f"{tag}/0_truth"] = clip.audio
        audio[f"{tag}/1_reconstruction"] = reconstructions[i]
        for order, (_, target, waveform) in enumerate(c for c in conversions if c[0] == i):
            audio[f"{tag}/{order + 2}_as_{name_of[target]}"] = waveform
    return audio


@contextlib.contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Record the wall time of the block in ``timings[name]`` (seconds, rounded to 10 ms)."""
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 2)


def _mean(values: Sequence[float]) -> Optional[float]:
    return float(np.mean(values)) if len(values) else None


def _median(values: Sequence[float]) -> Optional[float]:
    return float(np.median(values)) if len(values) else None


def _json_safe(value: Any) -> Any:
    """NaN and infinities become None (JSON has no NaN); numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ------------------------------------------------------------------ writers


def markdown_path(out: Union[str, Path]) -> Path:
    """Where the markdown summary of ``out`` (a ``.json`` report) goes: ``report.json`` -> ``report.md``."""
    return Path(out).with_suffix(".md")


def write_report(evaluation: Evaluation, out: Union[str, Path]) -> Path:
    """Write the report as JSON to ``out`` and as markdown next to it (both atomically); return the markdown path."""
    out = Path(out)
    markdown = markdown_path(out)
    atomic_write(out, lambda file: json.dump(evaluation.report, file, indent=1, ensure_ascii=False), text=True)
    atomic_write(markdown, lambda file: file.write(format_markdown(evaluation.report)), text=True)
    return markdown


def write_tensorboard(evaluation: Evaluation, run_dir: Union[str, Path]) -> None:
    """Scalars ``eval/<section>/<name>`` and audio ``eval_audio/<clip>/...`` at the checkpoint's step."""
    from torch.utils.tensorboard import SummaryWriter

    step = evaluation.report.get("step") or 0
    writer = SummaryWriter(str(run_dir))
    try:
        for tag, value in report_scalars(evaluation.report).items():
            writer.add_scalar(f"eval/{tag}", value, step)
        for tag, audio in evaluation.audio.items():
            writer.add_audio(f"eval_audio/{tag}", torch.from_numpy(np.asarray(audio, dtype=np.float32)).unsqueeze(0),
                             step, sample_rate=evaluation.sample_rate)
    finally:
        writer.close()


REPORT_SECTIONS = ("teacher_forced", "codes", "reconstruction", "speaker_id", "parallel")


def report_scalars(report: dict) -> dict[str, float]:
    """The numbers of the report's measurement sections, as ``section/name`` -> value."""
    scalars = {f"{section}/{name}": float(value)
               for section in REPORT_SECTIONS for name, value in report[section].items()
               if isinstance(value, (int, float)) and not isinstance(value, bool)}
    return {**scalars, **unit_scalars(report.get("units") or {})}


def format_markdown(report: dict) -> str:
    """A readable summary: every number next to its chance level or baseline."""
    tf, codes, rec, spk, par = (report[section] for section in REPORT_SECTIONS)
    corpus, settings = report["corpus"], report["settings"]
    step = f" (step {report['step']})" if report.get("step") is not None else ""
    lines = [
        f"# Evaluation of `{report['checkpoint']}`{step}",
        "",
        f"Held-out split of `{corpus['cache']}`: {corpus['utterances']} of {corpus['heldout_utterances']} utterances, "
        f"clips of up to {settings['seconds']:g} s, {corpus['conversions']} conversions "
        f"({settings['conversions']} per clip), temperature {settings['temperature']:g}, seed {settings['seed']}; "
        f"{report['seconds']:.0f} s.",
        "",
        "| measure | value | reference |",
        "|---|---:|---|",
        f"| teacher-forced bits per sample ({tf['utterances']} utterances, {tf['seconds']:.1f} s) | "
        f"{_number(tf['bits_per_sample'], '.3f')} | {tf['chance_bits_per_sample']:.0f} = uniform over the μ-law "
        "classes |",
        *_level_rows(tf),
        f"| codebook perplexity | {_number(codes['perplexity'], '.1f')} | {codes['num_codes']} at uniform use of "
        "every code |",
        f"| codes used | {codes['codes_used']} / {codes['num_codes']} ({_percent(codes['share_used'])}) | |",
        f"| code bitrate, entropy × frame rate | {_number(codes['bitrate'], ',.0f', ' bit/s')} | "
        f"{codes['bitrate_max']:,.0f} bit/s = log2 {codes['num_codes']} × {codes['frame_rate']:g} frames/s |",
        f"| reconstruction MCD ({rec['clips']} clips of {_number(rec['clip_seconds'], '.2f')} s) | "
        f"{_number(rec['mcd_db'], '.2f', ' dB')} | {_number(rec['baseline_mcd_db'], '.2f', ' dB')}: the original "
        "against another utterance of its speaker |",
        f"| reconstruction log-spectral distance | {_number(rec['lsd_db'], '.2f', ' dB')} | "
        f"{_number(rec['baseline_lsd_db'], '.2f', ' dB')}: the same baseline |",
        f"| reconstructions' frames voiced (pYIN) | {_percent(rec['voiced_share'])} | "
        f"{_percent(rec['original_voiced_share'])}: the originals; near 0 is noise without harmonics |",
    ]
    if spk["available"]:
        chance = f"chance {_percent(spk['chance'])} ({spk['classes']} speakers)"
        ceiling = f"ceiling {_percent(spk['real_heldout_accuracy'])}, {chance}"
        lines += [
            f"| speaker classifier on real held-out clips (its ceiling) | {_percent(spk['real_heldout_accuracy'])} | "
            f"{chance} |",
            f"| reconstructions named as their own speaker | {_percent(spk['reconstruction_accuracy'])} | {ceiling} |",
            f"| conversions named as the target speaker ({spk['conversions']}) | "
            f"{_percent(spk['conversion_target_accuracy'])} | {ceiling} |",
            f"| conversions named as the source speaker (confusion) | {_percent(spk['conversion_source_confusion'])} | "
            f"{chance}; lower is better |",
            f"| generated clips (reconstructions and conversions) named as the most common speaker | "
            f"{_percent(spk['generated_top_share'])} ({spk['generated_top_prediction']}; "
            f"{spk['generated_speakers_named']} of {spk['classes']} speakers named) | "
            f"about {_percent(spk['chance'])} if spread over the speakers; near 100 % means the classifier hears "
            "no speaker in generated audio |",
        ]
    if par["available"]:
        lines += [
            f"| conversion vs the target's reading, MCD, DTW ({par['pairs']} pairs) | "
            f"{_number(par['conversion_mcd_db'], '.2f', ' dB')} | "
            f"{_number(par['source_target_mcd_db'], '.2f', ' dB')}: the unconverted source against it |",
            f"| median-f0 ratio, conversion / target's reading, median of {par['f0_pairs']} voiced pairs | "
            f"{_number(par['f0_ratio_median'], '.2f')} | 1 is ideal; source / target: "
            f"{_number(par['source_f0_ratio_median'], '.2f')} |",
            f"| the same as a pitch error, median of abs(12 log2 ratio) | "
            f"{_number(par['f0_error_semitones'], '.1f', ' semitones')} | source / target: "
            f"{_number(par['source_f0_error_semitones'], '.1f', ' semitones')} |",
        ]
    units = report.get("units") or {"available": False, "reason": "not in this report"}
    lines += _unit_rows(units)
    parts = (("speaker identification", spk), ("parallel comparison", par), ("speech units", units))
    absent = [f"- {title}: not measured ({part['reason']})" for title, part in parts if not part["available"]]
    notes = [f"- {note}" for note in report["notes"]]
    if absent or notes:
        lines += ["", *absent, *notes]
    if units["available"] and units["phone_accuracy"].get("available"):
        lines += ["", _per_phone_table(units["phone_accuracy"])]
    return "\n".join(lines) + "\n"


def _unit_rows(units: dict) -> list[str]:
    """Markdown rows of the ``units`` section, each next to its chance level or baseline."""
    if not units["available"]:
        return []
    acc, abx, spk = units["phone_accuracy"], units["abx"], units["speaker"]
    rows = []
    if acc.get("available"):
        rows += [
            f"| phone accuracy of the codes, each labelled with its most frequent phone in training "
            f"({acc['frames']:,} held-out frames) | {_percent(acc['accuracy'])} | majority phone "
            f"({acc['majority_phone']}): {_percent(acc['majority_baseline'])}; chance {_percent(acc['chance'])} "
            f"({acc['phones']} phones) |",
            f"| linear probe of the phone from the encoder output, before / after quantization | "
            f"{_percent(units['probe_z_e_accuracy'])} / {_percent(units['probe_z_q_accuracy'])} | "
            f"majority phone: {_percent(acc['majority_baseline'])} |",
        ]
    if abx.get("available"):
        rows += [
            f"| ABX error within / across speakers, phone triplets in the same context ({abx['tokens']:,} tokens) | "
            f"{_percent(abx['within_speaker'])} / {_percent(abx['across_speaker'])} | 50 % = no phone "
            "information; 0 is perfect |",
            f"| ABX error within / across speakers, any context | {_percent(abx['within_speaker_any_context'])} / "
            f"{_percent(abx['across_speaker_any_context'])} | the same |",
        ]
    if spk.get("available"):
        rows.append(f"| speaker named from {spk['window_seconds']:.1f} s of codes (bag of codes, {spk['windows']} "
                    f"held-out windows) | {_percent(spk['accuracy'])} | chance {_percent(spk['chance'])} "
                    f"({spk['speakers']} speakers); lower means codes freer of the speaker |")
    return rows


def _per_phone_table(accuracy: dict) -> str:
    """Per-phone accuracy of the code labelling on held-out frames, most frequent phones first."""
    rows = sorted(accuracy["per_phone"].items(), key=lambda item: -item[1]["frames"])
    lines = ["Phone accuracy of the codes per phone (held-out frames):", "", "| phone | frames | accuracy |",
             "|---|---:|---:|"]
    lines += [f"| {phone} | {entry['frames']:,} | {_percent(entry['accuracy'])} |" for phone, entry in rows]
    return "\n".join(lines)


def _level_rows(tf: dict) -> list[str]:
    """Markdown rows of the teacher-forced bits by frame level, each next to the envelope-only reference."""
    rows = []
    for level in LEVELS:
        share = tf.get(f"{level}_share")
        if not share:
            continue
        reference = tf.get(f"{level}_lpc_bits_per_sample")
        against = ("frames below -50 dBFS" if level == "silence" or reference is None else
                   f"{_number(reference, '.2f')} (the decoder on the same samples: "
                   f"{_number(tf.get(f'{level}_scored_bits_per_sample'), '.2f')}): an order-16 linear predictor "
                   "fitted to each frame, which knows its envelope but not its pitch pulses")
        rows.append(f"| … in {level} frames ({_percent(share)} of the samples) | "
                    f"{_number(tf.get(f'{level}_bits_per_sample'), '.2f')} | {against} |")
    return rows


def _number(value: Optional[float], spec: str, unit: str = "") -> str:
    return "n/a" if value is None else format(value, spec) + unit


def _percent(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"
