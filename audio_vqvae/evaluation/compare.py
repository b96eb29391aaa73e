"""Evaluation reports side by side: one column per checkpoint, its seeds joined with `` / ``.

``audio-vqvae compare`` reads the JSON reports that ``audio-vqvae evaluate`` writes and prints the
table that an ablation needs: the same measures for every model, each seed's value, the reference
of the first report, and whether every seed of a column meets the demo's targets
(:data:`DEMO_TARGETS`), as the results page's ablation tables have it.

    >>> report = {"checkpoint": "runs/a/checkpoints/step-00000010.pt", "step": 10,
    ...           "settings": {"seed": 0, "utterances": 16, "conversions": 2, "seconds": 2.0, "temperature": 1.0},
    ...           "reconstruction": {"voiced_share": 0.5, "original_voiced_share": 0.8}}
    >>> [column.heading for column in group_reports([(None, Path("a.json"), report)])]
    ['a @ 10']
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from audio_vqvae.errors import InputError

# The settings that must agree within a column (the seed is what varies).
_SAME_SETTINGS = ("utterances", "conversions", "seconds", "temperature")


@dataclass(frozen=True)
class Target:
    """What a measure must meet on every seed: ``check(value, report)``, described by ``text``."""

    text: str
    check: Callable[[float, dict], bool]


@dataclass(frozen=True)
class Measure:
    """One row: where its value is in a report, how it prints, and what it is compared with."""

    label: str
    value: Callable[[dict], Optional[float]]
    format: Callable[[float], str]  # the number, without its unit
    unit: str
    reference: Callable[[dict], str]
    target: Optional[Target] = None


@dataclass
class Column:
    """The reports of one checkpoint under one set of evaluation settings, in seed order."""

    heading: str
    reports: list[dict] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)  # the file of each report

    @property
    def seeds(self) -> list[int]:
        return [report["settings"]["seed"] for report in self.reports]


def _get(report: dict, *keys: str) -> Optional[float]:
    """``report[k1][k2]...`` or None where a section is absent or not measured."""
    value = report
    for key in keys:
        if not isinstance(value, dict) or value.get("available") is False or key not in value:
            return None
        value = value[key]
    return None if value is None or isinstance(value, bool) else float(value)


def _share(value: float) -> str:
    return f"{100 * value:.1f}"


def _percent(value: float) -> str:
    return _share(value) + " %"


def _db(value: float) -> str:
    return f"{value:.2f} dB"


def _reference(text: Callable[[dict], str]) -> Callable[[dict], str]:
    """A reference text that reads the first report, or '' where the figures it needs are absent."""

    def read(report: dict) -> str:
        try:
            return text(report)
        except (KeyError, TypeError, ValueError):
            return ""

    return read


_NUMBER, _PRECISE = "{:.2f}".format, "{:.3f}".format

MEASURES: tuple[Measure, ...] = (
    Measure("teacher-forced bits per sample (the decoder's own targets)",
            lambda r: _get(r, "teacher_forced", "bits_per_sample"), _PRECISE, "",
            _reference(lambda r: f"{r['teacher_forced']['chance_bits_per_sample']:.0f}: uniform")),
    Measure("reconstruction MCD", lambda r: _get(r, "reconstruction", "mcd_db"), _NUMBER, " dB",
            _reference(lambda r: f"{_db(r['reconstruction']['baseline_mcd_db'])}: another utterance of the speaker")),
    Measure("reconstruction log-spectral distance", lambda r: _get(r, "reconstruction", "lsd_db"), _NUMBER, " dB",
            _reference(lambda r: f"{_db(r['reconstruction']['baseline_lsd_db'])}: the same baseline")),
    Measure("reconstructions' frames voiced (pYIN)", lambda r: _get(r, "reconstruction", "voiced_share"),
            _share, " %", _reference(lambda r: f"originals {_percent(r['reconstruction']['original_voiced_share'])}"),
            Target("≥ 60 %", lambda v, r: v >= 0.60)),
    Measure("reconstructions named as their own speaker", lambda r: _get(r, "speaker_id", "reconstruction_accuracy"),
            _share, " %", _reference(lambda r: f"ceiling {_percent(r['speaker_id']['real_heldout_accuracy'])}")),
    Measure("conversions named as their target", lambda r: _get(r, "speaker_id", "conversion_target_accuracy"),
            _share, " %", _reference(lambda r: f"chance {_percent(r['speaker_id']['chance'])}"),
            Target("≥ 60 %", lambda v, r: v >= 0.60)),
    Measure("generated clips named as the most common speaker", lambda r: _get(r, "speaker_id", "generated_top_share"),
            _share, " %", _reference(lambda r: f"{_percent(1 / r['speaker_id']['classes'])} if spread evenly"),
            Target("≤ 30 %", lambda v, r: v <= 0.30)),
    Measure("conversion vs the target's reading, MCD (DTW)", lambda r: _get(r, "parallel", "conversion_mcd_db"),
            _NUMBER, " dB",
            _reference(lambda r: f"{_db(r['parallel']['source_target_mcd_db'])}: the unconverted source"),
            Target("below the source's", lambda v, r: v < r["parallel"]["source_target_mcd_db"])),
    Measure("median f0, conversion vs the target's reading", lambda r: _get(r, "parallel", "f0_error_semitones"),
            "{:.1f}".format, " semitones",
            _reference(lambda r: f"the source {r['parallel']['source_f0_error_semitones']:.1f} semitones"),
            Target("≤ 1 semitone", lambda v, r: v <= 1.0 + 1e-9)),
    Measure("phone accuracy of the codes", lambda r: _get(r, "units", "phone_accuracy", "accuracy"), _share, " %",
            _reference(lambda r: f"majority phone {_percent(r['units']['phone_accuracy']['majority_baseline'])}")),
    Measure("ABX error across speakers, any context", lambda r: _get(r, "units", "abx", "across_speaker_any_context"),
            _share, " %", _reference(lambda r: "50 % = no phone information")),
    Measure("speaker named from 1 s of codes", lambda r: _get(r, "units", "speaker", "accuracy"), _share, " %",
            _reference(lambda r: f"chance {_percent(r['units']['speaker']['chance'])}; lower is freer of the speaker")),
    Measure("code bitrate (entropy × frame rate)", lambda r: _get(r, "codes", "bitrate"), "{:,.0f}".format, " bit/s",
            _reference(lambda r: f"{r['codes']['bitrate_max']:,.0f} bit/s at uniform use")),
)
"""The rows of the table. The targets are the demo's (docs/results.md): what an audible conversion needs."""

DEMO_TARGETS = tuple(measure for measure in MEASURES if measure.target is not None)


def load_reports(arguments: Sequence[str]) -> list[tuple[Optional[str], Path, dict]]:
    """``[LABEL=]PATH`` arguments -> (label or None, file, report) for every report they name.

    A PATH is a report (``.json``) or a folder, read for every ``*.json`` in it.
    """
    loaded = []
    for argument in arguments:
        label, path_text = None, argument
        if "=" in argument and not Path(argument).exists():
            label, _, path_text = argument.partition("=")
        if label == "":
            raise InputError(f"{argument}: the label before '=' is empty; pass LABEL=PATH or PATH")
        path = Path(path_text)
        if path.is_dir():
            files = sorted(path.glob("*.json"))
            if not files:
                raise InputError(f"{path}: no evaluation reports (*.json) in this folder")
        elif path.is_file():
            files = [path]
        else:
            raise InputError(f"{path}: no such report or folder (expected a .json written by audio-vqvae evaluate)")
        for file in files:
            loaded.append((label, file, read_report(file)))
    return loaded


def read_report(path: Path) -> dict:
    """One report, checked to be what ``audio-vqvae evaluate`` writes."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not a readable JSON evaluation report ({err})") from None
    if not isinstance(report, dict) or "checkpoint" not in report or "settings" not in report \
            or not isinstance(report["settings"], dict) or "seed" not in report["settings"]:
        raise InputError(f"{path}: not an evaluation report (expected the JSON that audio-vqvae evaluate writes, "
                         "with 'checkpoint' and 'settings')")
    return report


def run_name(report: dict) -> str:
    """``runs/vctk-demo/checkpoints/step-00010000.pt`` -> ``vctk-demo``; any other checkpoint -> its file stem."""
    checkpoint = Path(str(report["checkpoint"]))
    return checkpoint.parent.parent.name if checkpoint.parent.name == "checkpoints" else checkpoint.stem


def group_reports(loaded: Sequence[tuple[Optional[str], Path, dict]]) -> list[Column]:
    """Reports -> columns: one per (label, checkpoint, settings other than the seed), in the order first seen.

    Without a label a column is headed ``<run> @ <step>``; a label that names reports of several checkpoints
    or settings, or a column with one seed twice, is an error (the table would mix them silently).
    """
    columns: dict[tuple, Column] = {}
    for label, path, report in loaded:
        settings = report["settings"]
        key = (label, str(report["checkpoint"]), tuple(settings.get(name) for name in _SAME_SETTINGS))
        if label is not None:
            clash = next((other for other in columns if other[0] == label and other != key), None)
            if clash is not None:
                raise InputError(f"{path}: the label {label!r} already names reports of {clash[1]} with other "
                                 "settings; give each checkpoint and setting its own label")
        step = report.get("step")
        heading = label if label is not None else run_name(report) + (f" @ {step:,}" if step is not None else "")
        column = columns.setdefault(key, Column(heading))
        if settings["seed"] in column.seeds:
            raise InputError(f"{path}: seed {settings['seed']} of {report['checkpoint']} is already in "
                             f"{column.paths[column.seeds.index(settings['seed'])]}")
        column.reports.append(report)
        column.paths.append(path)
    for column in columns.values():
        order = sorted(range(len(column.reports)), key=lambda i: column.reports[i]["settings"]["seed"])
        column.reports, column.paths = [column.reports[i] for i in order], [column.paths[i] for i in order]
    headings = [column.heading for column in columns.values()]
    for column in columns.values():
        if headings.count(column.heading) > 1:  # the same run and step under other settings
            settings = column.reports[0]["settings"]
            column.heading += " (" + ", ".join(f"{name} {settings.get(name)}" for name in _SAME_SETTINGS) + ")"
    return list(columns.values())


def cell(measure: Measure, column: Column) -> str:
    """Each seed's value, `` / ``-joined, then the unit; ``—`` where no seed measured it."""
    values = [measure.value(report) for report in column.reports]
    if all(value is None for value in values):
        return "—"
    return " / ".join("n/a" if value is None else measure.format(value) for value in values) + measure.unit


def meets(measure: Measure, column: Column) -> Optional[bool]:
    """Whether every seed meets the measure's target; None when it has no target or a seed did not measure it."""
    if measure.target is None:
        return None
    values = [(measure.value(report), report) for report in column.reports]
    if any(value is None for value, _ in values):
        return None
    return all(measure.target.check(value, report) for value, report in values)


def format_table(columns: Sequence[Column]) -> str:
    """The markdown comparison: a seeds row, one row per measure, then the count of targets met per column."""
    if not columns:
        raise InputError("no evaluation reports to compare")
    first = columns[0].reports[0]
    lines = [
        "| measure | " + " | ".join(column.heading for column in columns) + " | target | reference |",
        "|---|" + "---:|" * len(columns) + "---|---|",
        "| seeds | " + " | ".join(" / ".join(map(str, column.seeds)) for column in columns) + " | | |",
    ]
    for measure in MEASURES:
        row = [cell(measure, column) for column in columns]
        lines.append(f"| {measure.label} | " + " | ".join(row) + " | "
                     + (measure.target.text if measure.target else "") + f" | {measure.reference(first)} |")
    met = []
    for column in columns:
        verdicts = [meets(measure, column) for measure in DEMO_TARGETS]
        known = [verdict for verdict in verdicts if verdict is not None]
        met.append(f"{sum(known)} of {len(DEMO_TARGETS)}" + ("" if len(known) == len(verdicts) else
                                                              f" ({len(verdicts) - len(known)} not measured)"))
    lines.append("| targets met on every seed | " + " | ".join(met) + " | | |")
    return "\n".join(lines) + "\n"
