"""The preprocessing cache: idempotence, settings-hash invalidation, re-splitting, resuming, parallel workers,
ensure_prepared's defaults and errors."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

from audio_vqvae.config import DataConfig
from audio_vqvae.data import PreparedCorpus, default_data_dir, ensure_prepared, prepare_corpus
from audio_vqvae.data import audio as audio_module
from audio_vqvae.data import demo as demo_module
from audio_vqvae.data import workers as workers_module
from audio_vqvae.errors import InputError

import helpers


@pytest.fixture
def folders_tree(tmp_path):
    return helpers.folders(tmp_path / "corpus")


def _prepare(tree, out, **kwargs):
    kwargs.setdefault("prepare_workers", 0)
    return prepare_corpus("folders", tree.root, out, progress=False, **kwargs)


def _count_decodes(monkeypatch):
    calls = []
    original = workers_module.process_file

    def counting(path, **kwargs):
        calls.append(path)
        return original(path, **kwargs)

    monkeypatch.setattr(workers_module, "process_file", counting)
    return calls


def test_idempotent_and_settings_hash(tmp_path, folders_tree, monkeypatch):
    out = tmp_path / "cache"
    first = _prepare(folders_tree, out)
    audio_stat = (out / "audio.npy").stat()
    calls = _count_decodes(monkeypatch)
    again = _prepare(folders_tree, out)
    assert calls == [] and (out / "audio.npy").stat().st_mtime_ns == audio_stat.st_mtime_ns
    assert again.settings_hash == first.settings_hash

    # a different split recomputes the split only
    resplit = _prepare(folders_tree, out, valid_utterances_per_speaker=0)
    assert calls == [] and len(resplit.split("valid")) == 0 and len(resplit.split("train")) == 4
    assert resplit.settings_hash != first.settings_hash

    # different processing settings rebuild: the trimming change is detected, not silently reused
    rebuilt = _prepare(folders_tree, out, trim_silence_db=None)
    assert len(calls) == 7  # every candidate file decoded again
    assert rebuilt.manifest["processing_hash"] != first.manifest["processing_hash"]
    assert rebuilt.manifest["settings"]["trim_silence_db"] is None
    rate = _prepare(folders_tree, out, sample_rate=22050)
    assert rate.sample_rate == 22050
    assert "alice/a1.flac" in {u["source"] for u in rate.utterances}
    assert {r["path"] for r in rate.report["rejected"]} >= {"bob/b1.wav"}  # 16 kHz is below 22.05 kHz


def test_new_source_file_invalidates(tmp_path, folders_tree):
    out = tmp_path / "cache"
    _prepare(folders_tree, out)
    helpers.write(folders_tree.root / "bob" / "b2.flac", helpers.speech_like(0.5, 16000, seed=9), 16000)
    updated = _prepare(folders_tree, out)
    assert "bob/b2.flac" in {u["source"] for u in updated.utterances}


def test_resume_after_interruption(tmp_path, folders_tree, monkeypatch):
    out = tmp_path / "cache"
    monkeypatch.setattr(workers_module, "CHUNK_FILES", 2)
    original = workers_module.process_file
    calls = []

    def failing(path, **kwargs):
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return original(path, **kwargs)

    monkeypatch.setattr(workers_module, "process_file", failing)
    with pytest.raises(KeyboardInterrupt):
        _prepare(folders_tree, out)
    assert not (out / "manifest.json").exists()
    with pytest.raises(InputError, match="no prepared corpus"):
        PreparedCorpus.open(out)
    assert len(list((out / ".work").glob("*.npz"))) == 2

    calls.clear()
    monkeypatch.setattr(workers_module, "process_file", original)
    calls = _count_decodes(monkeypatch)
    resumed = _prepare(folders_tree, out)
    assert len(calls) == 7 - 4  # the two finished chunks are not decoded again
    assert not (out / ".work").exists()
    fresh = _prepare(folders_tree, tmp_path / "fresh")
    assert np.array_equal(np.asarray(resumed.audio), np.asarray(fresh.audio))


def test_parallel_workers_match_in_process(tmp_path, folders_tree):
    inline = _prepare(folders_tree, tmp_path / "inline")
    parallel = _prepare(folders_tree, tmp_path / "parallel", prepare_workers=2)
    assert parallel.utterances == inline.utterances
    assert np.array_equal(np.asarray(parallel.audio), np.asarray(inline.audio))


def test_refuses_foreign_folder_and_reads_back(tmp_path, folders_tree):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    with pytest.raises(InputError, match="not an audio-vqvae cache"):
        _prepare(folders_tree, out)
    assert (out / "thesis.tex").read_text() == "do not delete"

    prepared = _prepare(folders_tree, tmp_path / "cache")
    reopened = PreparedCorpus.open(tmp_path / "cache")
    assert reopened.speakers == prepared.speakers and reopened.sample_rate == 16000
    with pytest.raises(InputError, match="unknown speaker 'zoe'"):
        reopened.speaker_id("zoe")
    train = reopened.split("train")
    assert train.total_samples == sum(train.utterance(i)["audio"].size for i in range(len(train)))


def test_normalised_level_and_peak(tmp_path, folders_tree):
    prepared = _prepare(folders_tree, tmp_path / "cache")
    for index in range(len(prepared.utterances)):
        audio = prepared.samples(index)
        assert np.abs(audio).max() <= 0.99 + 1e-4
        levels = audio_module.frame_levels_db(audio, 16000)
        speech = levels[levels > levels.max() - 40]
        assert abs(10 * np.log10(np.mean(10 ** (speech / 10))) + 24) < 0.5


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("AUDIO_VQVAE_DATA", str(tmp_path / "d"))
    assert default_data_dir() == tmp_path / "d"
    monkeypatch.delenv("AUDIO_VQVAE_DATA")
    assert default_data_dir().name in ("data", "audio-vqvae")


def test_ensure_prepared_missing_corpus(monkeypatch, tmp_path):
    monkeypatch.setenv("AUDIO_VQVAE_DATA", str(tmp_path))
    with pytest.raises(InputError) as error:
        ensure_prepared(DataConfig(corpus="vctk"), 16000, progress=False)
    message = str(error.value)
    assert str(tmp_path / "VCTK-Corpus-0.92") in message and "10283/3443" in message and "--demo" not in message
    with pytest.raises(InputError, match="openslr.org/12"):
        ensure_prepared(DataConfig(corpus="librispeech"), 16000, progress=False)


@pytest.mark.slow
def test_ensure_prepared_demo_default_locations(monkeypatch, tmp_path):
    monkeypatch.setenv("AUDIO_VQVAE_DATA", str(tmp_path))
    monkeypatch.setattr(demo_module, "make_demo_corpus",
                        functools.partial(demo_module.make_demo_corpus, shared_sentences=2, own_sentences=1))
    data = DataConfig(corpus="demo", loader_workers=0, prepare_workers=0, valid_utterances_per_speaker=1)
    prepared = ensure_prepared(data, 16000, progress=False)
    assert prepared.cache_dir.parent == tmp_path / "cache" and prepared.cache_dir.name.startswith("demo-")
    assert (tmp_path / "demo" / "VCTK-Corpus-0.92" / "demo.json").exists()
    assert len(prepared.speakers) == 8 and len(prepared.utterances) == 24
    # the parallel hold-out: every speaker holds out the same shared sentence
    valid = {prepared.utterances[i]["name"] for i in prepared.split("valid").indices}
    assert len(valid) == 8 and len({name.split("_")[1] for name in valid}) == 1
    assert int(next(iter(valid)).split("_")[1]) <= 2
    again = ensure_prepared(data, 16000, progress=False)
    assert again.cache_dir == prepared.cache_dir
    manifest = json.loads((prepared.cache_dir / "manifest.json").read_text())
    assert manifest["settings"]["corpus"] == "vctk" and manifest["layout"] == "vctk-0.92"


def test_pitch_is_tracked_once_and_lands_on_the_stored_audio(tmp_path, folders_tree):
    """After trimming and resampling (16 kHz -> 8 kHz) the stored f0 and phase describe the stored audio."""
    from audio_vqvae.pitch import num_pitch_frames, track_pitch

    prepared = _prepare(folders_tree, tmp_path / "cache", sample_rate=8000)
    hop = prepared.pitch_hop
    assert hop == 80 and prepared.pitch.shape == (sum(u["pitch_frames"] for u in prepared.utterances), 2)
    for index, record in enumerate(prepared.utterances):
        audio = prepared.samples(index)
        assert record["pitch_frames"] == num_pitch_frames(len(audio), hop)
        f0 = prepared.f0(index)
        assert np.array_equal(f0, track_pitch(audio, 8000).f0)
        assert 100 < np.median(f0[f0 > 0]) < 160  # the trees' tones lie at 110-150 Hz
        # The training phase is locked to the fundamental in the audio: the audio's projection on
        # e^{iφ} is coherent (phase near 0), far above what a random phase gives.
        rows = prepared.pitch_rows(index)
        voiced = rows[2] == 1
        coherent = np.sum(audio[voiced] * np.exp(-1j * rows[0][voiced]))
        scale = np.sqrt(np.sum(audio[voiced] ** 2) * voiced.sum() / 2)
        assert abs(np.angle(coherent)) < 0.2 and abs(coherent) / scale > 0.3
        # A crop's rows are the whole utterance's rows over the crop.
        crop = prepared.pitch_rows(index, 1000, 3000)
        assert np.allclose(np.cos(crop[0]), np.cos(rows[0, 1000:3000]), atol=1e-3)
        assert np.array_equal(crop[1:], rows[1:, 1000:3000])
    for speaker in prepared.speakers:
        assert 4.6 < speaker["log_f0_mean"] < 5.1 and 0 <= speaker["log_f0_std"] < 0.3


@pytest.mark.parametrize("old_format", [1, 2])  # 1: before pitch.npy; 2: before trim_start and alignments
def test_a_cache_from_before_pitch_is_rebuilt_never_misread(tmp_path, folders_tree, monkeypatch, old_format):
    out = tmp_path / "cache"
    _prepare(folders_tree, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["format"] = old_format  # what every cache written before pitch.npy (1) or alignments (2) says
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "pitch.npy").unlink()
    with pytest.raises(InputError, match=f"cache format {old_format}, expected 3"):
        PreparedCorpus.open(out)
    calls = _count_decodes(monkeypatch)
    rebuilt = _prepare(folders_tree, out)
    assert len(calls) == 7 and (out / "pitch.npy").exists() and rebuilt.pitch.shape[0] > 0
