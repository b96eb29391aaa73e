"""`audio-vqvae prepare` and `audio-vqvae demo-corpus`, through the parsers they register."""

from __future__ import annotations

import argparse

import pytest

from audio_vqvae.commands.data import register
from audio_vqvae.data import PreparedCorpus
from audio_vqvae.errors import InputError

import helpers


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audio-vqvae")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def _run(argv):
    args = _parser().parse_args(argv)
    return args.func(args)


def test_prepare_flags_and_arguments_are_the_names_of_the_data_settings():
    import dataclasses
    import inspect

    from audio_vqvae.config import DataConfig
    from audio_vqvae.data import prepare_corpus

    parser = _parser()
    prepare = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["prepare"]
    flags = {option for action in prepare._actions if action.help != argparse.SUPPRESS
             for option in action.option_strings}
    arguments = set(inspect.signature(prepare_corpus).parameters)
    settings = {field.name for field in dataclasses.fields(DataConfig)}
    # Every data argument of prepare_corpus is a data setting of the same name, and so is every flag...
    assert arguments - settings == {"sample_rate", "alignments", "progress", "rebuild"}
    for name in arguments & settings - {"cache_dir"}:
        assert f"--{name.replace('_', '-')}" in flags, name
    assert {"--out", "--sample-rate", "--alignments", "--no-trim"} <= flags  # cache_dir is --out, as everywhere
    # ...and the flags' former spellings still parse to the same settings.
    base = ["prepare", "--corpus", "librispeech"]
    former = parser.parse_args([*base, "--trim-db", "20", "--valid-utterances", "3", "--subsets", "a,b",
                                "--workers", "0"])
    current = parser.parse_args([*base, "--trim-silence-db", "20", "--valid-utterances-per-speaker", "3",
                                 "--train-subsets", "a,b", "--prepare-workers", "0"])
    assert vars(former) == vars(current)
    assert (current.trim_silence_db, current.valid_utterances_per_speaker, current.prepare_workers) == (20.0, 3, 0)


def test_prepare_command(tmp_path, capsys):
    tree = helpers.folders(tmp_path / "corpus")
    status = _run(["prepare", "--corpus", "folders", "--data-root", str(tree.root), "--out", str(tmp_path / "cache"),
                   "--no-trim", "--valid-utterances-per-speaker", "0", "--prepare-workers", "0", "--quiet"])
    assert status == 0
    captured = capsys.readouterr()
    assert f"{tmp_path / 'cache'} ready" in captured.out
    log = captured.err  # the summary and one line per skipped file go to stderr
    assert "4 utterances" in log and "3 speakers" in log and "rejected: " in log and "prepare.log" in log
    assert "skipped carol/c1.wav: cannot decode" in log and "mixed source sample rates" in log
    prepared = PreparedCorpus.open(tmp_path / "cache")
    assert prepared.manifest["settings"]["trim_silence_db"] is None and len(prepared.split("valid")) == 0


def test_prepare_default_out_and_missing_root(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AUDIO_VQVAE_DATA", str(tmp_path / "store"))
    tree = helpers.folders(tmp_path / "store", name="speakers")  # the default root of "folders"
    assert _run(["prepare", "--corpus", "folders", "--prepare-workers", "0", "--quiet", "--sample-rate", "16000"]) == 0
    caches = list((tmp_path / "store" / "cache").iterdir())
    assert len(caches) == 1 and caches[0].name.startswith("folders-")
    assert {u["source"] for u in PreparedCorpus.open(caches[0]).utterances} == tree.kept
    with pytest.raises(InputError, match="LibriSpeech.*openslr"):
        _run(["prepare", "--corpus", "librispeech", "--quiet"])


def test_demo_corpus_command(tmp_path, capsys, monkeypatch):
    import functools

    from audio_vqvae.commands import data as data_commands
    from audio_vqvae.data import demo

    monkeypatch.setattr(data_commands, "make_demo_corpus",
                        functools.partial(demo.make_demo_corpus, shared_sentences=1, own_sentences=0))
    assert _run(["demo-corpus", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "VCTK-Corpus-0.92" / "demo.json").exists()
    assert str(tmp_path / "VCTK-Corpus-0.92") in capsys.readouterr().out
