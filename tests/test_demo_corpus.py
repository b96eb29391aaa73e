"""The bundled demo corpus: layout, parallel sentence plan, determinism, reuse and rebuild."""

from __future__ import annotations

import hashlib
import importlib.metadata

import pytest
import soundfile

from audio_vqvae.data import DEMO_VOICES, demo_sentences, make_demo_corpus, scan_corpus
from audio_vqvae.data.corpora import read_vctk_speaker_info
from audio_vqvae.errors import InputError

# sha1 of the int16 samples of d01_001 (the first file of every build, reduced or full) made by the
# eSpeak NG build in espeakng-loader 0.2.4; another build may legitimately differ.
D01_001_SHA1 = "5953f3d6e4c12e50"


def _pcm_digests(corpus):
    digests = {}
    for path in sorted((corpus / "wav48_silence_trimmed").rglob("*.flac")):
        audio, rate = soundfile.read(str(path), dtype="int16")
        assert rate == 22050
        digests[path.name] = hashlib.sha1(audio.tobytes()).hexdigest()[:16]
    return digests


def test_sentence_plan_is_parallel():
    plan = demo_sentences()
    assert len(DEMO_VOICES) >= 8
    assert {v.gender for v in DEMO_VOICES} == {"M", "F"} and len({v.accent for v in DEMO_VOICES}) >= 3
    shared = [s for s in plan if len(s.speakers) == len(DEMO_VOICES)]
    assert [s.utterance for s in shared] == [f"{n:03d}" for n in range(1, 25)]
    assert len(plan) == 24 + 4 * len(DEMO_VOICES) and len({s.text for s in plan}) == len(plan)


def test_layout(demo_corpus):
    assert demo_corpus.name == "VCTK-Corpus-0.92"
    speakers = read_vctk_speaker_info(demo_corpus / "speaker-info.txt")
    assert sorted(speakers) == [v.speaker for v in DEMO_VOICES]
    assert speakers["d01"]["gender"] == "M" and speakers["d02"]["gender"] == "F"
    d03 = sorted(p.name for p in (demo_corpus / "wav48_silence_trimmed" / "d03").iterdir())
    assert d03 == ["d03_001_mic1.flac", "d03_002_mic1.flac", "d03_005_mic1.flac"]
    assert (demo_corpus / "txt" / "d03" / "d03_005.txt").read_text().strip() == "Rice is often served in round bowls."
    rows = (demo_corpus / "sentences.tsv").read_text().splitlines()
    assert rows[1] == "001\tall\tThe birch canoe slid on the smooth planks."
    assert rows[5] == "005\td03\tRice is often served in round bowls."
    scan = scan_corpus("vctk", demo_corpus.parent)
    assert scan.layout == "vctk-0.92" and len(scan.utterances) == 24 and not scan.skipped and not scan.notes


@pytest.mark.slow
def test_deterministic(demo_corpus, tmp_path):
    again = make_demo_corpus(tmp_path, shared_sentences=2, own_sentences=1, num_workers=1)
    digests = _pcm_digests(demo_corpus)
    assert digests == _pcm_digests(again) and len(digests) == 24
    if importlib.metadata.version("espeakng-loader") == "0.2.4":
        # each speaker is synthesised in a fresh process, so d01_001 is also the full corpus's d01_001
        assert digests["d01_001_mic1.flac"] == D01_001_SHA1


@pytest.mark.slow
def test_reuse_force_and_foreign_folder(tmp_path):
    root = make_demo_corpus(tmp_path, shared_sentences=1, own_sentences=0, num_workers=2)
    marker = (root / "demo.json").stat().st_mtime_ns
    assert make_demo_corpus(tmp_path, shared_sentences=1, own_sentences=0) == root
    assert (root / "demo.json").stat().st_mtime_ns == marker
    rebuilt = make_demo_corpus(tmp_path, shared_sentences=1, own_sentences=0, force=True)
    assert rebuilt == root and (root / "demo.json").stat().st_mtime_ns != marker
    assert not list(tmp_path.glob(".*.tmp"))
    foreign = tmp_path / "other" / "VCTK-Corpus-0.92"
    foreign.mkdir(parents=True)
    with pytest.raises(InputError, match="not a complete demo corpus"):
        make_demo_corpus(tmp_path / "other")
