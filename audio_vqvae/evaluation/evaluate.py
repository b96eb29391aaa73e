"""Evaluate a checkpoint on the held-out split of its corpus: running an evaluation.

:func:`evaluate` reads the checkpoint (model, speaker table, data config), opens the prepared corpus
the training run used (or the one named), and measures on ``settings.utterances`` held-out utterances,
taken round-robin over speakers. The model's own measures come first (:mod:`~audio_vqvae.evaluation.likelihood`:
``teacher_forced`` and ``codes``; :mod:`~audio_vqvae.evaluation.units`: ``units``). Then the first
``settings.seconds`` of each utterance are regenerated from its codes with its own speaker (the
reconstruction) and with ``settings.conversions`` other training speakers (the conversions); for every
conversion the f0-only control is made (:mod:`~audio_vqvae.evaluation.controls`). Every judge in
:data:`JUDGES` hears all of it (a :class:`~audio_vqvae.evaluation.material.Material`) and writes one
section of the report; :mod:`~audio_vqvae.evaluation.measures` is the table of the figures the report
writers show (:mod:`~audio_vqvae.evaluation.report`, :mod:`~audio_vqvae.evaluation.listening`).

A new judge is a module with a function ``judge(material) -> Judgement``, one entry in :data:`JUDGES`
and its rows in :data:`~audio_vqvae.evaluation.measures.MEASURES`.

Example:
    >>> result = evaluate("runs/vctk-demo/checkpoints/step-00001500.pt", corpus="demo")   # doctest: +SKIP
    >>> write_report(result, "runs/vctk-demo/eval/report.json")                          # doctest: +SKIP
    >>> result.report["speaker_encoder"]["conversion_target_accuracy"]                    # doctest: +SKIP
    0.5
"""

from __future__ import annotations

import itertools
import re
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
from tqdm import tqdm

from audio_vqvae.checkpoint import load_checkpoint, model_from_checkpoint
from audio_vqvae.config import ConfigError, DataConfig
from audio_vqvae.data import PreparedCorpus, ensure_prepared
from audio_vqvae.errors import InputError
from audio_vqvae.evaluation.controls import f0_control, speaker_median_f0
from audio_vqvae.evaluation.likelihood import likelihood
from audio_vqvae.evaluation.material import Clip, Heard, Judgement, Material, absent, json_safe, timed
from audio_vqvae.evaluation.parallel import parallel_judge
from audio_vqvae.evaluation.phone_recognizer import phone_judge
from audio_vqvae.evaluation.quality import quality_judge
from audio_vqvae.evaluation.reconstruction import reconstruction_judge
from audio_vqvae.evaluation.report import write_report
from audio_vqvae.evaluation.speaker_encoder import encoder_judge
from audio_vqvae.evaluation.speaker_id import multicondition_classifier, plain_classifier
from audio_vqvae.evaluation.units import unit_report
from audio_vqvae.generation.batched import DecodeRow, decode_rows
from audio_vqvae.model import VQVAE
from audio_vqvae.options import resolve_device
from audio_vqvae.pitch import conversion_stats, generation_pitch

__all__ = ["JUDGES", "Evaluation", "EvaluationSettings", "evaluate", "open_corpus", "select_heldout",
           "utterances_by_speaker", "write_report"]

PARTS = ("all", "deterministic", "noise")  # what of the decoder generates (EvaluationSettings.part)
GENERATION_BATCH = 64  # rows per decode call: bigger batches are faster per sample; 64 x 2 s needs about 2.5 GB

JUDGES: tuple[tuple[str, Callable[[Material], Judgement]], ...] = (
    ("reconstruction", reconstruction_judge),
    ("speaker_id", plain_classifier),                       # noise-sensitive; kept for the history
    ("speaker_id_multicondition", multicondition_classifier),
    ("speaker_encoder", encoder_judge),
    ("quality", quality_judge),
    ("intelligibility", phone_judge),
    ("parallel", parallel_judge),
)
"""Report section -> the judge that writes it, in the order they run."""


@dataclass
class EvaluationSettings:
    """How much to evaluate; CPU time grows with ``utterances × (1 + conversions) × seconds``.

    Attributes:
        utterances: held-out utterances used, taken round-robin over speakers (in name order).
        conversions: target speakers per utterance (other training speakers, spread over the table).
        seconds: length of the generated clips (the start of each utterance, whole frames).
        temperature: sampling temperature of the decoder (0 = greedy).
        seed: seed of the sampling.
        classifier_utterances: real training utterances per speaker the speaker classifiers learn from.
        skip: sections of :data:`JUDGES` not measured (reported as absent): every judge runs by default.
        part: ``"all"`` (the decoder as it generates); ``"deterministic"``: its deterministic part alone, the
            WaveNet's draws set to zero (the harmonic part, :meth:`audio_vqvae.model.VQVAE.deterministic`), only
            for a model with ``decoder.harmonics``; or ``"noise"``: its parts with white noise of the predicted
            level in place of the WaveNet's draws (:meth:`audio_vqvae.model.VQVAE.parts_on_noise`), only for a
            model with ``decoder.noise_envelope``. The two show what the WaveNet adds.
        voiced_noise: generate with this ``decoder.voiced_noise`` instead of the checkpoint's (None: the
            checkpoint's; :meth:`audio_vqvae.model.VQVAE.set_voiced_noise`).
    """

    utterances: int = 16
    conversions: int = 2
    seconds: float = 2.0
    temperature: float = 1.0
    seed: int = 0
    classifier_utterances: int = 24
    skip: tuple[str, ...] = ()
    part: str = "all"
    voiced_noise: Optional[float] = None

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
        if self.part not in PARTS:
            raise InputError(f"--part must be one of {', '.join(PARTS)}, got {self.part!r}")
        unknown = sorted(set(self.skip) - {section for section, _ in JUDGES})
        if unknown:
            raise InputError(f"--skip: no judge named {', '.join(unknown)}; expected some of "
                             f"{', '.join(section for section, _ in JUDGES)}")


@dataclass
class Evaluation:
    """What :func:`evaluate` returns.

    Attributes:
        report: the measurements, plain JSON data (sections named as in :data:`JUDGES`, and the model's own).
        material: the clips and every heard item (audio at ``material.sample_rate``), with the judges' verdicts
            in ``report["clips"]``.
    """

    report: dict
    material: Material

    @property
    def sample_rate(self) -> int:
        return self.material.sample_rate


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
        InputError: no corpus, a corpus at another rate, no held-out utterance of a known speaker, or
            ``part="deterministic"`` for a model without a harmonic part, ``part="noise"`` for one without a noise
            envelope.
    """
    settings = settings or EvaluationSettings()
    settings.validate()
    started = time.perf_counter()
    payload = load_checkpoint(checkpoint)
    model = model_from_checkpoint(payload, checkpoint, resolve_device(device))
    if settings.part == "deterministic" and model.decoder.harmonic is None:
        raise InputError(f"{checkpoint}: --part deterministic needs a model with a harmonic part (decoder.harmonics); "
                         "this one's output is all WaveNet")
    if settings.voiced_noise is not None:
        try:
            model.set_voiced_noise(settings.voiced_noise)
        except ConfigError as err:
            raise InputError(f"{checkpoint}: --voiced-noise: {err}") from None
    if settings.part == "noise" and model.decoder.noise is None:
        raise InputError(f"{checkpoint}: --part noise needs a model with a noise envelope (decoder.noise_envelope), "
                         "which gives the noise its level")
    prepared = open_corpus(payload, checkpoint, corpus=corpus, data_root=data_root, cache=cache, progress=progress)
    rate, hop = model.config.sample_rate, model.hop_length
    if prepared.sample_rate != rate:
        raise InputError(f"{prepared.cache_dir}: the corpus is at {prepared.sample_rate} Hz but the model at {rate} Hz")
    known = {str(entry["name"]) for entry in model.speakers}
    heldout, train = utterances_by_speaker(prepared, "valid"), utterances_by_speaker(prepared, "train")
    utterances, notes = select_heldout(prepared, heldout, known, settings.utterances)
    timings: dict[str, float] = {}

    with timed(timings, "teacher_forced"):
        teacher_forced, codes = likelihood(model, prepared, utterances, progress)

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

    with timed(timings, "generation"):
        generated = _generate(model, prepared, clips, rows, settings, progress)
    heard = [Heard("original", i, clip.speaker, clip.audio) for i, clip in enumerate(clips)]
    heard += [Heard("reconstruction" if k < len(clips) else "conversion", i, name_of[speaker], audio)
              for k, ((i, speaker), audio) in enumerate(zip(rows, generated))]
    with timed(timings, "controls"):
        heard += _controls(prepared, clips, [item for item in heard if item.kind == "conversion"], progress)
    material = Material(corpus=prepared, clips=clips, heard=heard, train={name: train[name] for name in train_speakers},
                        model=model, sentences=sentences, heldout=heldout, train_all=train, seconds=settings.seconds,
                        classifier_utterances=settings.classifier_utterances, progress=progress)
    sections: dict[str, dict] = {}
    verdicts: dict[int, dict[str, str]] = defaultdict(dict)
    for section, judge in JUDGES:
        if section in settings.skip:
            sections[section] = absent("skipped (--skip)").section
            continue
        with timed(timings, section):
            judgement = judge(material)
        sections[section] = judgement.section
        for index, text in judgement.verdicts.items():
            verdicts[index][section] = text
    with timed(timings, "units"):
        # the whole held-out split, not just the generated clips: ABX needs many phone tokens
        units = unit_report(model, prepared, [i for name in train_speakers for i in train[name]],
                            [i for name in sorted(set(heldout) & known) for i in heldout[name]], seed=settings.seed)
    notes += units.pop("notes", [])

    report = {
        "checkpoint": str(checkpoint),
        "step": payload.get("step"),
        "model": {"sample_rate": rate, "hop_length": hop, "num_codes": model.config.quantizer.num_codes,
                  "speakers": len(model.speakers), "training_speakers": len(train_speakers)},
        "corpus": {"cache": str(prepared.cache_dir), "layout": prepared.manifest.get("layout"),
                   "heldout_utterances": len(prepared.split("valid")), "utterances": len(utterances),
                   "clips": len(clips), "conversions": len(rows) - len(clips)},
        "settings": asdict(settings),
        "teacher_forced": teacher_forced,
        "codes": codes,
        **sections,
        "units": units,
        "clips": _clip_verdicts(material, verdicts),
        "notes": notes,
        "timings_s": timings,
        "seconds": round(time.perf_counter() - started, 2),
    }
    return Evaluation(report=json_safe(report), material=material)


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



# ------------------------------------------------------------------ clips, generation and controls


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


def _generate(model: VQVAE, corpus: PreparedCorpus, clips: Sequence[Clip], rows: Sequence[tuple[int, int]],
              settings: EvaluationSettings, progress: bool) -> list[np.ndarray]:
    """Audio of every (clip, speaker) row, generated from the clip's codes, batching rows of one clip length
    (:data:`GENERATION_BATCH` at most; batch ``b`` draws its seeds from ``settings.seed + b``)."""
    decoded = [DecodeRow(speaker, clip=clip) for clip, speaker in rows]

    def pitch(row: int) -> np.ndarray:
        return _row_pitch(model, corpus, clips[rows[row][0]], rows[row][1])

    outputs: list[Optional[np.ndarray]] = [None] * len(rows)
    with tqdm(total=sum(len(clips[clip].audio) for clip, _ in rows), desc="generating", unit="sample",
              unit_scale=True, disable=not progress, leave=False, file=sys.stderr) as bar:
        for row, waveform in decode_rows(model, decoded, batch_size=GENERATION_BATCH,
                                         clips=[clip.audio for clip in clips], pitch=pitch,
                                         temperature=settings.temperature,
                                         seed=settings.seed, part=settings.part,
                                         progress=bar.update):
            outputs[row] = waveform.numpy()
    return outputs


def _controls(corpus: PreparedCorpus, clips: Sequence[Clip], conversions: Sequence[Heard],
              progress: bool) -> list[Heard]:
    """The f0-only control of every conversion: its source clip with the median f0 of its target speaker."""
    table = {str(entry["name"]): entry for entry in corpus.speakers}
    controls = []
    for item in tqdm(conversions, desc="f0 controls", unit="clip", disable=not progress, leave=False, file=sys.stderr):
        target_f0 = speaker_median_f0(table.get(item.intended, {}))
        controls.append(Heard("control", item.clip, item.intended,
                              f0_control(clips[item.clip].audio, corpus.sample_rate, target_f0)))
    return controls


def _clip_verdicts(material: Material, verdicts: dict[int, dict[str, str]]) -> list[dict]:
    """The report's ``clips``: per held-out clip, each heard item made from it with every judge's verdict."""
    out = [{"name": clip.name, "speaker": clip.speaker, "seconds": len(clip.audio) / material.sample_rate,
            "items": []} for clip in material.clips]
    for index, item in enumerate(material.heard):
        out[item.clip]["items"].append({"kind": item.kind, "intended": item.intended,
                                        "verdicts": verdicts.get(index, {})})
    return out
