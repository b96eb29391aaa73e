"""The report writers: JSON, the markdown summary, TensorBoard and the listening page, all from one table.

Every figure they show is a row of :data:`~audio_vqvae.evaluation.measures.MEASURES`; the markdown
summary is that table for one report, the sections that were not measured and the notes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
import torch

from audio_vqvae.atomic import atomic_write
from audio_vqvae.evaluation.listening import page_path, write_page
from audio_vqvae.evaluation.measures import MEASURES, SECTIONS, percent

if TYPE_CHECKING:
    from audio_vqvae.evaluation.evaluate import Evaluation

AUDIO_EXAMPLES = 2  # clips whose heard items go to TensorBoard


def markdown_path(out: Union[str, Path]) -> Path:
    """Where the markdown summary of ``out`` (a ``.json`` report) goes: ``report.json`` -> ``report.md``."""
    return Path(out).with_suffix(".md")


def write_report(evaluation: "Evaluation", out: Union[str, Path]) -> Path:
    """Write the report as JSON to ``out``, as markdown next to it and the listening page (``report.html`` and
    its folder ``report_files/``), each file atomically; return the markdown path."""
    out = Path(out)
    markdown = markdown_path(out)
    write_page(evaluation, page_path(out))
    atomic_write(out, lambda file: json.dump(evaluation.report, file, indent=1, ensure_ascii=False), text=True)
    atomic_write(markdown, lambda file: file.write(format_markdown(evaluation.report)), text=True)
    return markdown


def report_scalars(report: dict) -> dict[str, float]:
    """Every measured row of the table, as ``section/key`` -> value."""
    return {measure.tag: value for measure in MEASURES if (value := measure.value(report)) is not None}


def write_tensorboard(evaluation: "Evaluation", run_dir: Union[str, Path]) -> None:
    """Scalars ``eval/<section>/<key>`` and the heard items of the first clips as audio
    ``eval_audio/clip<i>_<utterance>/<order>_<kind>[_as_<speaker>]``, at the checkpoint's step."""
    from torch.utils.tensorboard import SummaryWriter

    step = evaluation.report.get("step") or 0
    writer = SummaryWriter(str(run_dir))
    try:
        for tag, value in report_scalars(evaluation.report).items():
            writer.add_scalar(f"eval/{tag}", value, step)
        for tag, audio in audio_examples(evaluation).items():
            writer.add_audio(f"eval_audio/{tag}", torch.from_numpy(np.asarray(audio, dtype=np.float32)).unsqueeze(0),
                             step, sample_rate=evaluation.sample_rate)
    finally:
        writer.close()


def audio_examples(evaluation: "Evaluation") -> dict[str, np.ndarray]:
    """TensorBoard tag -> audio of the first :data:`AUDIO_EXAMPLES` clips: truth, reconstruction, conversions
    and their f0 controls."""
    material = evaluation.material
    names = {"original": "truth", "reconstruction": "reconstruction", "conversion": "as", "control": "f0_control_as"}
    audio = {}
    for i, clip in enumerate(material.clips[:AUDIO_EXAMPLES]):
        items = [item for item in material.heard if item.clip == i]
        for order, item in enumerate(items):
            suffix = f"_{item.intended}" if item.kind in ("conversion", "control") else ""
            audio[f"clip{i}_{clip.name}/{order}_{names[item.kind]}{suffix}"] = item.audio
    return audio


def _generation(settings: dict) -> str:
    """How the report's audio was generated: the temperature, a ``--voiced-noise`` and a ``--part`` other than all."""
    text = f"temperature {settings['temperature']:g}"
    if settings.get("voiced_noise") is not None:
        text += f", voiced noise {settings['voiced_noise']:g}"
    part = settings.get("part", "all")
    if part == "deterministic":
        text += ", the deterministic part alone (the WaveNet's draws set to zero)"
    elif part == "noise":
        text += ", the parts on white noise in place of the WaveNet's draws"
    return text


def format_markdown(report: dict) -> str:
    """A readable summary: every measured row of the table next to its reference, then what was not measured."""
    corpus, settings = report["corpus"], report["settings"]
    step = f" (step {report['step']})" if report.get("step") is not None else ""
    lines = [
        f"# Evaluation of `{report['checkpoint']}`{step}",
        "",
        f"Held-out split of `{corpus['cache']}`: {corpus['utterances']} of {corpus['heldout_utterances']} utterances, "
        f"clips of up to {settings['seconds']:g} s, {corpus['conversions']} conversions "
        f"({settings['conversions']} per clip) and as many f0-only controls, {_generation(settings)}, "
        f"seed {settings['seed']}; {report['seconds']:.0f} s.",
        "",
        "| measure | value | reference | target |",
        "|---|---:|---|---|",
    ]
    for measure in MEASURES:
        if measure.value(report) is None and not _measured_section(report, measure.section):
            continue
        verdict = measure.meets(report)
        target = "" if measure.target is None else measure.target.text + (
            "" if verdict is None else (" ✓" if verdict else " ✗"))
        lines.append(f"| {measure.label} | {measure.cell(report)} | {measure.reference(report)} | {target} |")
    absent = [f"- {title}: not measured ({report[section]['reason']})" for section, title in SECTIONS.items()
              if isinstance(report.get(section), dict) and report[section].get("available") is False]
    notes = [f"- {note}" for note in report.get("notes", [])]
    if absent or notes:
        lines += ["", *absent, *notes]
    units = report.get("units") or {}
    if units.get("available") and units["phone_accuracy"].get("available"):
        lines += ["", _per_phone_table(units["phone_accuracy"])]
    return "\n".join(lines) + "\n"


def _measured_section(report: dict, section: str) -> bool:
    part = report.get(section)
    return isinstance(part, dict) and part.get("available") is not False


def _per_phone_table(accuracy: dict) -> str:
    """Per-phone accuracy of the code labelling on held-out frames, most frequent phones first."""
    rows = sorted(accuracy["per_phone"].items(), key=lambda item: -item[1]["frames"])
    lines = ["Phone accuracy of the codes per phone (held-out frames):", "", "| phone | frames | accuracy |",
             "|---|---:|---:|"]
    lines += [f"| {phone} | {entry['frames']:,} | {percent(entry['accuracy'])} |" for phone, entry in rows]
    return "\n".join(lines)
