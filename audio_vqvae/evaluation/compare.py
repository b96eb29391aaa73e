"""Evaluation reports side by side: one column per checkpoint, its seeds joined with `` / ``.

``audio-vqvae compare`` reads the JSON reports that ``audio-vqvae evaluate`` writes and prints the
table that an ablation needs: the headline rows of the one table of measures
(:data:`~audio_vqvae.evaluation.measures.HEADLINE`) for every model, each seed's value, the reference
of the first report, and whether every seed of a column meets the demo's targets
(:data:`~audio_vqvae.evaluation.measures.DEMO_TARGETS`), as the results page's ablation tables have it.
A report from before a judge existed shows ``—`` in that judge's rows; a row no report has is left out.

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
from typing import Optional, Sequence

from audio_vqvae.errors import InputError
from audio_vqvae.evaluation.measures import DEMO_TARGETS, HEADLINE, Measure

# The settings that must agree within a column (the seed is what varies), with the value a report written before
# the setting existed had.
_SAME_SETTINGS = {"utterances": None, "conversions": None, "seconds": None, "temperature": None, "part": "all",
                  "voiced_noise": None}


@dataclass
class Column:
    """The reports of one checkpoint under one set of evaluation settings, in seed order."""

    heading: str
    reports: list[dict] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)  # the file of each report

    @property
    def seeds(self) -> list[int]:
        return [report["settings"]["seed"] for report in self.reports]


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
        key = (label, str(report["checkpoint"]), tuple(settings.get(name, old) for name, old in _SAME_SETTINGS.items()))
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
    by_heading: dict[str, list[tuple]] = {}
    for key, column in columns.items():
        by_heading.setdefault(column.heading, []).append(key)
    for keys in by_heading.values():
        if len(keys) > 1:  # the same run and step under other settings: name those that differ
            differ = [i for i in range(len(_SAME_SETTINGS)) if len({key[2][i] for key in keys}) > 1]
            names = list(_SAME_SETTINGS)
            for key in keys:
                columns[key].heading += " (" + ", ".join(f"{names[i]} {key[2][i]}" for i in differ) + ")"
    return list(columns.values())


def cell(measure: Measure, column: Column) -> str:
    """Each seed's value, `` / ``-joined, then the unit; ``—`` where no seed measured it."""
    values = [measure.value(report) for report in column.reports]
    if all(value is None for value in values):
        return "—"
    return " / ".join("n/a" if value is None else measure.format(value) for value in values) + measure.unit


def meets(measure: Measure, column: Column) -> Optional[bool]:
    """Whether every seed meets the measure's target; None when it has no target or a seed did not measure it."""
    verdicts = [measure.meets(report) for report in column.reports]
    if measure.target is None or any(verdict is None for verdict in verdicts):
        return None
    return all(verdicts)


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
    for measure in HEADLINE:
        row = [cell(measure, column) for column in columns]
        if all(text == "—" for text in row):
            continue  # a judge none of the reports has
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
