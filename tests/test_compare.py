"""``audio-vqvae compare``: evaluation reports side by side, seeds in order, against the demo's targets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from audio_vqvae.evaluation.compare import DEMO_TARGETS, group_reports, load_reports

from helpers import run


def fake_report(checkpoint: str, seed: int, *, step: Optional[int] = 10000, voiced: float = 0.40,
                target: float = 0.20, top: float = 0.90, conversion_mcd: float = 4.90, source_mcd: float = 5.17,
                f0_error: float = 0.2, temperature: float = 1.0, parallel: bool = True, control: float = 0.125,
                encoder: bool = True) -> dict:
    """The sections of an ``audio-vqvae evaluate`` report that ``compare`` reads, with chosen values."""
    return {
        "checkpoint": checkpoint, "step": step,
        "settings": {"utterances": 16, "conversions": 2, "seconds": 2.0, "temperature": temperature, "seed": seed},
        "teacher_forced": {"bits_per_sample": 4.5 + seed / 100, "chance_bits_per_sample": 8.0},
        "codes": {"bitrate": 944.0, "bitrate_max": 1000.0},
        "reconstruction": {"mcd_db": 5.0, "lsd_db": 16.0, "baseline_mcd_db": 7.2, "baseline_lsd_db": 18.64,
                           "voiced_share": voiced, "original_voiced_share": 0.775},
        "speaker_id": {"available": True, "classes": 8, "chance": 0.125, "real_heldout_accuracy": 1.0,
                       "reconstruction_accuracy": 0.25, "conversion_target_accuracy": 0.2,
                       "generated_top_share": 0.9},
        **({"speaker_encoder": {"available": True, "classes": 8, "chance": 0.125, "real_heldout_accuracy": 1.0,
                                "conversion_target_accuracy": target, "control_target_accuracy": control,
                                "generated_top_share": top, "generated_top_prediction": "d01",
                                "conversion_secs_intended": 0.75, "control_secs_intended": 0.70}}
           if encoder else {}),
        "parallel": ({"available": True, "conversion_mcd_db": conversion_mcd, "source_target_mcd_db": source_mcd,
                      "f0_error_semitones": f0_error, "source_f0_error_semitones": 13.0}
                     if parallel else {"available": False, "reason": "the corpus has no transcripts"}),
        "units": {"available": False, "reason": "no alignments"},
    }


def save(folder: Path, name: str, report: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(report))
    return path


def table_lines(output: str) -> dict[str, list[str]]:
    """Markdown table -> {measure: [cells...]}."""
    rows = {}
    for line in output.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_columns_group_by_checkpoint_and_order_seeds(tmp_path, capsys):
    demo = "runs/vctk-demo/checkpoints/step-00010000.pt"
    save(tmp_path / "demo", "seed2.json", fake_report(demo, 2, voiced=0.394))
    save(tmp_path / "demo", "seed0.json", fake_report(demo, 0, voiced=0.422))
    save(tmp_path / "demo", "seed1.json", fake_report(demo, 1, voiced=0.405))
    mel = save(tmp_path / "mel", "seed0.json", fake_report("runs/vctk-mel/checkpoints/step-00005000.pt", 0,
                                                           step=5000, parallel=False))
    assert run("compare", tmp_path / "demo", f"true mel={mel}") == 0
    rows = table_lines(capsys.readouterr().out)
    assert rows["measure"][:2] == ["vctk-demo @ 10,000", "true mel"]
    assert rows["seeds"][:2] == ["0 / 1 / 2", "0"]
    assert rows["reconstructions' frames voiced (pYIN)"] == ["42.2 / 40.5 / 39.4 %", "40.0 %", "≥ 60 %",
                                                            "originals 77.5 %; near 0 is noise without harmonics"]
    assert rows["teacher-forced bits per sample (the decoder's own targets)"][0] == "4.500 / 4.510 / 4.520"
    assert rows["conversion vs the target's reading, MCD (DTW)"][:2] == ["4.90 / 4.90 / 4.90 dB", "—"]
    assert not any(label.startswith("phone accuracy of the codes") for label in rows)  # no report has it
    assert rows["speaker encoder: conversions named as their target"][:2] == ["20.0 / 20.0 / 20.0 %", "20.0 %"]
    assert rows["speaker encoder: SECS of the conversions to the target's centroid"][0] == "0.75 / 0.75 / 0.75"
    assert rows["noise-sensitive classifier: conversions named as their target"][0] == "20.0 / 20.0 / 20.0 %"
    # Met by every seed of the demo: conversion MCD below the source's and the pitch; the mel run has no
    # parallel section, so two of its five targets are not measured.
    assert rows["targets met on every seed"][:2] == ["2 of 5", "0 of 5 (2 not measured)"]


def test_a_target_counts_only_when_every_seed_meets_it(tmp_path, capsys):
    good = dict(voiced=0.65, target=0.70, top=0.25, conversion_mcd=4.5, f0_error=0.5)
    checkpoint = "runs/good/checkpoints/step-00010000.pt"
    save(tmp_path, "seed0.json", fake_report(checkpoint, 0, **good))
    save(tmp_path, "seed1.json", fake_report(checkpoint, 1, **{**good, "voiced": 0.59}))
    # Equal to the source's distance is not below it; exactly 1 semitone is within it.
    save(tmp_path, "seed2.json", fake_report(checkpoint, 2, **{**good, "conversion_mcd": 5.17, "f0_error": 1.0}))
    assert run("compare", tmp_path) == 0
    assert table_lines(capsys.readouterr().out)["targets met on every seed"][0] == f"3 of {len(DEMO_TARGETS)}"
    save(tmp_path, "seed1.json", fake_report(checkpoint, 1, **good))
    save(tmp_path, "seed2.json", fake_report(checkpoint, 2, **good))
    assert run("compare", tmp_path) == 0
    assert table_lines(capsys.readouterr().out)["targets met on every seed"][0] == "5 of 5"
    # A judge that names the f0-only controls as the target as often as the conversions: its 70 % is not met.
    for seed in range(3):
        save(tmp_path, f"seed{seed}.json", fake_report(checkpoint, seed, **good, control=0.70))
    assert run("compare", tmp_path) == 0
    assert table_lines(capsys.readouterr().out)["targets met on every seed"][0] == "4 of 5"


def test_reports_from_before_a_judge_show_a_dash(tmp_path, capsys):
    old = save(tmp_path / "old", "seed0.json", fake_report("runs/a/checkpoints/step-00000100.pt", 0, encoder=False))
    new = save(tmp_path / "new", "seed0.json", fake_report("runs/b/checkpoints/step-00000100.pt", 0))
    assert run("compare", old, new) == 0
    rows = table_lines(capsys.readouterr().out)
    assert rows["speaker encoder: conversions named as their target"][:2] == ["—", "20.0 %"]
    assert rows["targets met on every seed"][0] == "2 of 5 (2 not measured)"


def test_other_settings_of_one_checkpoint_get_their_own_column(tmp_path):
    checkpoint = "runs/vctk-demo/checkpoints/step-00010000.pt"
    save(tmp_path, "t1.json", fake_report(checkpoint, 0))
    save(tmp_path, "t05.json", fake_report(checkpoint, 0, temperature=0.5))
    noise = fake_report(checkpoint, 0)
    noise["settings"].update(part="noise", voiced_noise=0.5)
    save(tmp_path, "noise.json", noise)
    columns = group_reports(load_reports([str(tmp_path)]))
    assert [column.seeds for column in columns] == [[0], [0], [0]]
    # The heading names the settings that tell the columns apart; a report from before "part" existed is "all".
    assert sorted(column.heading for column in columns) == [
        "vctk-demo @ 10,000 (temperature 0.5, part all, voiced_noise None)",
        "vctk-demo @ 10,000 (temperature 1.0, part all, voiced_noise None)",
        "vctk-demo @ 10,000 (temperature 1.0, part noise, voiced_noise 0.5)"]


def test_out_writes_the_printed_table(tmp_path, capsys):
    save(tmp_path / "r", "seed0.json", fake_report("runs/a/checkpoints/step-00000100.pt", 0, step=100))
    out = tmp_path / "table.md"
    assert run("compare", tmp_path / "r", "--out", out) == 0
    printed = capsys.readouterr().out
    assert printed == out.read_text() + f"wrote {out}\n"
    assert "| a @ 100 |" in printed


def test_bad_inputs_are_one_line_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "table.md"
    checkpoint = "runs/a/checkpoints/step-00000100.pt"
    good = save(tmp_path / "good", "seed0.json", fake_report(checkpoint, 0))

    def fails(*argv) -> str:
        assert run("compare", *argv, "--out", out) == 2
        assert not out.exists()
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        return err

    assert "no such report or folder" in fails(tmp_path / "missing.json")
    (tmp_path / "empty").mkdir()
    assert "empty: no evaluation reports (*.json) in this folder" in fails(tmp_path / "empty")
    (tmp_path / "broken.json").write_text("{not json")
    assert "broken.json: not a readable JSON evaluation report" in fails(tmp_path / "broken.json")
    (tmp_path / "other.json").write_text(json.dumps({"step": 3}))
    assert "other.json: not an evaluation report" in fails(tmp_path / "other.json")
    twin = save(tmp_path / "twin", "again.json", fake_report(checkpoint, 0))
    assert "seed 0 of runs/a/checkpoints/step-00000100.pt is already in" in fails(good, twin)
    other = save(tmp_path / "other", "seed0.json", fake_report("runs/b/checkpoints/step-00000100.pt", 0))
    assert "the label 'x' already names reports of" in fails(f"x={good}", f"x={other}")
    assert "the label before '=' is empty" in fails(f"={good}")
    assert run("compare", good, "--out", tmp_path / "table.txt") == 2
    assert "--out must name a .md file" in capsys.readouterr().err
