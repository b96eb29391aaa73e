"""`audio-vqvae prepare` and `audio-vqvae demo-corpus`, through the parsers they register."""

from __future__ import annotations

import argparse

import pytest

from audio_vqvae.commands.data import register
from audio_vqvae.data import PreparedCorpus
from audio_vqvae.errors import InputError

import helpers


def _run(argv):
    parser = argparse.ArgumentParser(prog="audio-vqvae")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_prepare_command(tmp_path, capsys):
    tree = helpers.folders(tmp_path / "corpus")
    status = _run(["prepare", "--corpus", "folders", "--data-root", str(tree.root), "--out", str(tmp_path / "cache"),
                   "--no-trim", "--valid-utterances", "0", "--workers", "0", "--quiet"])
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
    assert _run(["prepare", "--corpus", "folders", "--workers", "0", "--quiet", "--sample-rate", "16000"]) == 0
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
