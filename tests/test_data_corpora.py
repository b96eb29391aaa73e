"""Each corpus layout, prepared from a generated tree with planted bad files: exact kept/rejected sets,
speaker tables and split sizes; the corpus registry, read by the config, the commands and the errors."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

from audio_vqvae.commands.main import build_parser
from audio_vqvae.config import ConfigError, DataConfig
from audio_vqvae.data import corpora, prepare_corpus, scan_corpus
from audio_vqvae.errors import InputError

import helpers

EXTENDING = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def _prepare(tree, tmp_path, corpus, **kwargs):
    kwargs.setdefault("prepare_workers", 0)
    return prepare_corpus(corpus, tree.root, tmp_path / "cache", progress=False, **kwargs)


def _check_outcome(prepared, tree):
    report = prepared.report
    assert {u["source"] for u in prepared.utterances} == tree.kept
    rejected = {item["path"]: item["reason"] for item in report["rejected"]}
    assert set(rejected) == set(tree.rejected)
    for path, reason in tree.rejected.items():
        assert rejected[path].startswith(reason), (path, rejected[path])
    assert {item["path"] for item in report["warnings"]} == tree.warned
    assert report["kept"] == len(tree.kept)
    log = (prepared.cache_dir / "prepare.log").read_text()
    assert all(f"rejected\t{path}\t" in log for path in tree.rejected)


def test_vctk_092(tmp_path):
    tree = helpers.vctk_092(tmp_path / "corpus")
    prepared = _prepare(tree, tmp_path, "vctk", valid_utterances_per_speaker=1)
    _check_outcome(prepared, tree)
    assert prepared.manifest["layout"] == "vctk-0.92"
    assert [(s["id"], s["name"], s.get("gender"), s.get("accent")) for s in prepared.speakers] == [
        (0, "p225", "F", "English"), (1, "p226", "M", "English"), (2, "p315", "M", "American")]
    assert prepared.speakers[0]["age"] == 23 and prepared.speakers[0]["region"] == "Southern England"
    assert [s["utterances"] for s in prepared.speakers] == [5, 3, 2]
    notes = {(n["path"], n["note"]) for n in prepared.report["notes"]}
    assert ("wav48_silence_trimmed/p226/p226_002_mic2.flac", "no mic1 recording; using mic2") in notes
    assert {p for p, n in notes if n == "no transcript"} == {
        "wav48_silence_trimmed/p315/p315_001_mic1.flac", "wav48_silence_trimmed/p315/p315_002_mic1.flac",
        "wav48_silence_trimmed/p315/p315_003_mic1.flac", "wav48_silence_trimmed/p225/p225_005_mic1.flac",
        "wav48_silence_trimmed/p225/p225_006_mic1.flac"}
    assert ("speaker-info.txt:p999", "speaker listed but has no recordings") in notes
    assert prepared.report["source_sample_rates"] == {"48000": 11, "16000": 1, "8000": 1}
    assert prepared.report["source_channels"] == {"1": 12, "2": 1}
    # one utterance of each speaker held out (at most all but one)
    assert (len(prepared.split("train")), len(prepared.split("valid"))) == (7, 3)
    valid = prepared.split("valid")
    assert sorted(valid.speaker_ids.tolist()) == [0, 1, 2]
    item = prepared.split("train").utterance(0)
    assert item["audio"].dtype == np.float32 and item["audio"].ndim == 1
    assert np.abs(item["audio"]).max() <= 1.0 and item["text"].startswith("Sentence")
    assert item["speaker"] == prepared.speaker_id(item["speaker_name"])
    # 0.8 s files (1 s for the clipped one) at 16 kHz: the generated audio has no silence to trim
    assert all(u["length"] == (16000 if u["name"] == "p225_006" else 12800) for u in prepared.utterances)


def test_vctk_092_mic2_and_held_out_speaker(tmp_path):
    tree = helpers.vctk_092(tmp_path / "corpus")
    prepared = _prepare(tree, tmp_path, "vctk", mic="mic2", valid_speakers=("p315",))
    sources = {u["source"] for u in prepared.utterances}
    assert "wav48_silence_trimmed/p225/p225_001_mic2.flac" in sources
    # p226_003 exists for mic1 only: it falls back to mic1
    assert "wav48_silence_trimmed/p226/p226_003_mic1.flac" in sources
    valid_names = {prepared.utterances[i]["name"] for i in prepared.split("valid").indices}
    assert {"p315_001", "p315_002"} <= valid_names
    assert [s["held_out"] for s in prepared.speakers] == [False, False, True]
    with pytest.raises(InputError, match="p000"):
        _prepare(tree, tmp_path, "vctk", mic="mic2", valid_speakers=("p000",))


def test_vctk_080_trims_long_silences(tmp_path):
    tree = helpers.vctk_080(tmp_path / "corpus")
    prepared = _prepare(tree, tmp_path, "vctk", valid_utterances_per_speaker=1)
    _check_outcome(prepared, tree)
    assert prepared.manifest["layout"] == "vctk-0.80"
    assert [(s["name"], s["gender"]) for s in prepared.speakers] == [("p225", "F"), ("p226", "M")]
    # 1 s of speech between 1 s silences: trimmed to the speech plus 50 ms margins
    lengths = [u["length"] for u in prepared.utterances]
    assert all(16000 <= n <= 16000 + 2 * 800 + 2 * 400 for n in lengths), lengths  # margins and a frame each side
    assert (len(prepared.split("train")), len(prepared.split("valid"))) == (4, 2)
    assert prepared.utterances[0]["text"] == "p225 says 001."


def test_librispeech_subsets(tmp_path):
    tree = helpers.librispeech(tmp_path / "corpus")
    prepared = _prepare(tree, tmp_path, "librispeech", train_subsets=("train-clean-100",), valid_subsets=("dev-clean",))
    _check_outcome(prepared, tree)
    assert [(s["id"], s["name"], s["gender"], s["reader"], s["subset"]) for s in prepared.speakers] == [
        (0, "19", "F", "Kara Shallenberg", "train-clean-100"), (1, "26", "M", "Denny Sayers", "train-clean-100"),
        (2, "84", "F", "Christie Nowak", "dev-clean")]
    valid = prepared.split("valid")
    assert len(prepared.split("train")) == 7 and len(valid) == 2
    assert set(valid.speaker_ids.tolist()) == {2}
    assert valid.utterance(0)["text"] == "WORDS OF 84-121123-0000"
    missing = [u for u in prepared.utterances if u["name"] == "26-495-0002"]
    assert missing[0]["text"] == ""


def test_librispeech_per_speaker_hold_out_and_missing_subset(tmp_path):
    tree = helpers.librispeech(tmp_path / "corpus")
    prepared = _prepare(tree, tmp_path, "librispeech", train_subsets=("train-clean-100",),
                        valid_utterances_per_speaker=2)
    assert [s["name"] for s in prepared.speakers] == ["19", "26"]
    assert (len(prepared.split("train")), len(prepared.split("valid"))) == (3, 4)
    with pytest.raises(InputError, match="train-other-500.*available: dev-clean, train-clean-100"):
        _prepare(tree, tmp_path, "librispeech", train_subsets=("train-other-500",))


def test_folders(tmp_path):
    tree = helpers.folders(tmp_path / "corpus")
    prepared = _prepare(tree, tmp_path, "folders", valid_utterances_per_speaker=1)
    _check_outcome(prepared, tree)
    assert [s["name"] for s in prepared.speakers] == ["alice", "bob", "carol"]  # dave and erin had no good file
    names = {u["name"]: u for u in prepared.utterances}
    assert set(names) == {"alice/a1", "alice/session2/a2", "bob/b1", "carol/c2"}
    assert names["bob/b1"]["text"] == "Bob's first line."
    # alice holds out one of two; bob and carol keep their only utterance for training
    assert (len(prepared.split("train")), len(prepared.split("valid"))) == (3, 1)


@pytest.mark.parametrize("corpus", ["vctk", "librispeech", "folders"])
def test_missing_root_names_layout_and_download(tmp_path, corpus):
    with pytest.raises(InputError) as error:
        scan_corpus(corpus, tmp_path / "nowhere", subsets=("train-clean-100",))
    message = str(error.value)
    # No command's option: prepare, evaluate and the recipes each add their own way out.
    assert "nowhere" in message and "--demo" not in message and "\n" not in message
    expected = {"vctk": "https://datashare.ed.ac.uk/handle/10283/3443", "librispeech": "https://www.openslr.org/12",
                "folders": "<root>/<speaker>"}[corpus]
    assert expected in message


def test_root_without_a_corpus(tmp_path):
    (tmp_path / "random").mkdir()
    (tmp_path / "random" / "file.txt").write_text("hello")
    with pytest.raises(InputError, match="wav48_silence_trimmed"):
        scan_corpus("vctk", tmp_path / "random")
    with pytest.raises(InputError, match="no audio files found"):
        scan_corpus("folders", tmp_path / "random")


def test_report_is_plain_json(tmp_path):
    tree = helpers.folders(tmp_path / "corpus")
    prepared = _prepare(tree, tmp_path, "folders")
    report = json.loads((prepared.cache_dir / "report.json").read_text())
    assert report["rejected_counts"] == {"duplicate utterance": 1, "not inside a speaker folder": 1,
                                         "cannot decode": 1, "empty file": 1, "no audio samples": 1}
    json.dumps(prepared.speakers)


# ------------------------------------------------------------------ the registry


def test_every_registered_corpus_is_a_choice_of_the_config_and_the_commands():
    parser = build_parser()
    evaluate = ["evaluate", "--checkpoint", "c.pt", "--out", "r.json", "--corpus"]
    for name in corpora.CORPORA:
        DataConfig(corpus=name).validate()
        assert parser.parse_args(["prepare", "--corpus", name]).corpus == name
        assert parser.parse_args([*evaluate, name]).corpus == name
    known = "'vctk', 'librispeech', 'folders', 'demo'"
    with pytest.raises(ConfigError, match=f"data.corpus must be one of {known}, got 'x'"):
        DataConfig(corpus="x").validate()
    with pytest.raises(InputError, match="unknown corpus 'x'; expected one of vctk, librispeech, folders, demo"):
        scan_corpus("x", ".")


def test_the_prepare_help_lists_every_corpus_with_its_summary_and_folder(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # argparse would break VCTK-Corpus-0.92 at its hyphen
    with pytest.raises(SystemExit):
        build_parser().parse_args(["prepare", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for entry in corpora.CORPORA.values():
        assert " ".join(f"{entry.name}: {entry.summary}".split()) in help_text and entry.folder in help_text


def test_an_entry_names_known_options_and_one_way_to_read_it():
    with pytest.raises(ValueError, match="unknown scan option"):
        corpora.Corpus("x", summary="", folder="x", scan=lambda root: None, options=("mic", "speed"))
    with pytest.raises(ValueError, match="scan, or build with reads_as"):
        corpora.Corpus("x", summary="", folder="x")


def _section_blocks(page: Path, heading: str) -> list[str]:
    text = page.read_text()
    section = text[text.index(f"\n## {heading}\n"):]
    following = section.find("\n## ", 1)
    return re.findall(r"```python\n(.*?)```", section[:following] if following > 0 else section, flags=re.S)


def test_the_worked_example_in_docs_extending_adds_a_corpus(tmp_path, monkeypatch):
    """docs/extending.md's scanner, registry entry and test, run as written: the one entry in corpora.py makes the
    corpus a choice of the config and the commands, and its test passes."""
    scanner, entry, test = _section_blocks(EXTENDING, "Adding a corpus")
    library = dict(vars(corpora))  # the scanner runs as if written in audio_vqvae/data/corpora.py
    exec(scanner, library)
    (corpus,) = eval(textwrap.dedent(entry), library)
    monkeypatch.setitem(corpora.CORPORA, corpus.name, corpus)
    checks = {"pytest": pytest, "InputError": InputError, "scan_corpus": scan_corpus, "write": helpers.write,
              "speech_like": helpers.speech_like}
    exec(test, checks)
    checks[next(name for name in checks if name.startswith("test_"))](tmp_path)
    DataConfig(corpus=corpus.name).validate()
    assert build_parser().parse_args(["prepare", "--corpus", corpus.name]).corpus == corpus.name
    assert corpora.default_corpus_root(corpus.name).name == corpus.folder
