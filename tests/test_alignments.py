"""Phone alignments: TextGrid / .item import, matching with bad entries, and landing on the cached audio."""

from __future__ import annotations

import json

import numpy as np
import pytest

from audio_vqvae.data import prepare_corpus
from audio_vqvae.data import workers as workers_module
from audio_vqvae.data.alignments import (
    PhoneSegment,
    espeak_segments,
    frame_labels,
    normalise_phone,
    read_alignments,
    read_textgrid,
)
from audio_vqvae.data.corpus import PreparedCorpus

from helpers import librispeech, vctk_092, write

RATE = 16000


def mfa_textgrid(phones: list[tuple[float, float, str]], duration: float, tier: str = "phones") -> str:
    """A long-format TextGrid as the Montreal Forced Aligner writes it: a words tier, then the phones tier."""
    def intervals(rows):
        out = []
        for k, (start, end, text) in enumerate(rows, start=1):
            out += [f"        intervals [{k}]:", f"            xmin = {start}", f"            xmax = {end}",
                    f'            text = "{text}"']
        return out

    words = [(0.0, duration, "")]
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0", f"xmax = {duration}",
             "tiers? <exists>", "size = 2", "item []:"]
    for number, (name, rows) in enumerate((("words", words), (tier, phones)), start=1):
        lines += [f"    item [{number}]:", '        class = "IntervalTier"', f'        name = "{name}"',
                  "        xmin = 0", f"        xmax = {duration}", f"        intervals: size = {len(rows)}",
                  *intervals(rows)]
    return "\n".join(lines) + "\n"


def test_phone_labels_are_normalised():
    assert [normalise_phone(p) for p in ["AH0", "IY1", "", "sp", "sil", "_:", "'3:", ",I", "tS", "spn"]] == \
        ["AH", "IY", "sil", "sil", "sil", "sil", "3:", "I", "tS", "spn"]


def test_textgrid_phones_tier_with_silences_merged(tmp_path):
    path = tmp_path / "a.TextGrid"
    path.write_text(mfa_textgrid([(0, 0.1, ""), (0.1, 0.2, "sil"), (0.2, 0.35, "HH"), (0.35, 0.5, "AH0")], 0.5))
    assert read_textgrid(path) == [PhoneSegment(0, 0.2, "sil"), PhoneSegment(0.2, 0.35, "HH"),
                                   PhoneSegment(0.35, 0.5, "AH")]
    # MFA names the tiers "<speaker> - phones" when it aligned several speakers per file
    path.write_text(mfa_textgrid([(0, 0.5, "S")], 0.5, tier="p225 - phones"))
    assert read_textgrid(path) == [PhoneSegment(0, 0.5, "S")]


def test_espeak_events_become_segments_covering_the_file():
    segments = espeak_segments([(100, "D"), (300, "'@"), (500, "_:"), (600, "_")], length=800, sample_rate=1000)
    assert segments == [PhoneSegment(0, 0.1, "sil"), PhoneSegment(0.1, 0.3, "D"), PhoneSegment(0.3, 0.5, "@"),
                        PhoneSegment(0.5, 0.8, "sil")]


def test_frame_labels_take_the_phone_at_each_frame_centre():
    segments = np.array([[0, 10, 0], [10, 25, 1], [30, 40, 2]])
    # frames of 8 samples: centres 4, 12, 20, 28 (a gap: no phone), 36, 44 (past the end)
    assert frame_labels(segments, 6, 8).tolist() == [0, 1, 1, -1, 2, -1]


def _two_phone_file(path, rate):
    """0.3 s quiet, 0.4 s of a 200 Hz tone, 0.4 s of loud noise, 0.3 s quiet; returns its TextGrid rows."""
    rng = np.random.default_rng(0)
    t = np.arange(int(0.4 * rate)) / rate
    quiet = 3e-4 * rng.standard_normal(int(0.3 * rate))
    audio = np.concatenate([quiet, 0.4 * np.sin(2 * np.pi * 200 * t), 0.2 * rng.standard_normal(len(t)), quiet])
    write(path, audio.astype(np.float32), rate)
    return [(0.0, 0.3, ""), (0.3, 0.7, "AA1"), (0.7, 1.1, "S"), (1.1, 1.4, "")]


def _aligned_voices(tmp_path):
    """Two speakers' ``take1.wav`` (quiet, tone, noise, quiet) in ``voices/``; alice's TextGrid in ``mfa/``."""
    root = tmp_path / "voices"
    rows = _two_phone_file(root / "alice" / "take1.wav", RATE)
    _two_phone_file(root / "bob" / "take1.wav", RATE)
    (tmp_path / "mfa" / "alice").mkdir(parents=True)
    (tmp_path / "mfa" / "alice" / "take1.TextGrid").write_text(mfa_textgrid(rows, 1.4))
    return root


def test_an_alignment_lands_on_the_right_audio_after_trimming_and_resampling(tmp_path):
    root = _aligned_voices(tmp_path)
    prepared = prepare_corpus("folders", root, tmp_path / "cache", sample_rate=8000, prepare_workers=0, progress=False,
                              valid_utterances_per_speaker=0, alignments=tmp_path / "mfa")
    index = next(i for i, u in enumerate(prepared.utterances) if u["speaker"] == "alice")
    record = prepared.utterances[index]
    assert record["trim_start"] > 0 and record["source_length"] == round(1.4 * 8000)  # trimmed, resampled
    assert prepared.phones == ["sil", "AA", "S"]
    segments = prepared.phone_segments(index)
    starts = {prepared.phones[p]: (start, stop) for start, stop, p in segments}
    assert starts["AA"] == (round(0.3 * 8000) - record["trim_start"], round(0.7 * 8000) - record["trim_start"])
    audio = prepared.samples(index)
    assert segments[-1][1] == len(audio)  # clipped to the stored audio

    def crossings_per_second(part):
        return np.count_nonzero(np.diff(np.signbit(part))) / (len(part) / 8000)

    tone, noise = (audio[slice(*starts[p])] for p in ("AA", "S"))
    assert 350 < crossings_per_second(tone[80:-80]) < 450  # 200 Hz: 400 zero crossings per second
    assert crossings_per_second(noise[80:-80]) > 2500
    silence = np.concatenate([audio[start:stop] for start, stop, p in segments if prepared.phones[p] == "sil"])
    assert np.sqrt(np.mean(silence ** 2)) < 0.01 < np.sqrt(np.mean(tone ** 2))
    bob = next(i for i, u in enumerate(prepared.utterances) if u["speaker"] == "bob")
    assert not prepared.is_aligned(bob) and prepared.phone_segments(bob).shape == (0, 3) and prepared.has_alignments


def test_vctk_textgrids_with_bad_entries_each_get_one_line(tmp_path):
    tree = vctk_092(tmp_path / "vctk")
    prepared_plain = prepare_corpus("vctk", tree.root, tmp_path / "cache", prepare_workers=0, progress=False,
                                    valid_utterances_per_speaker=1)
    assert not prepared_plain.has_alignments
    first = prepared_plain.utterances[0]
    length = first["source_length"] / RATE
    mfa = tmp_path / "mfa"
    (mfa / first["speaker"]).mkdir(parents=True)
    # MFA names its output after the audio file: p225_001_mic1.TextGrid
    stem = first["source"].rsplit("/", 1)[-1].rsplit(".", 1)[0]
    (mfa / first["speaker"] / f"{stem}.TextGrid").write_text(
        mfa_textgrid([(0, length / 2, "sil"), (length / 2, length, "AH0")], length))
    second = prepared_plain.utterances[1]
    (mfa / second["speaker"]).mkdir(exist_ok=True)
    (mfa / second["speaker"] / f"{second['name']}.TextGrid").write_text(mfa_textgrid([(0, 9.0, "S")], 9.0))
    (mfa / "p999").mkdir()
    (mfa / "p999" / "p999_001.TextGrid").write_text(mfa_textgrid([(0, 0.5, "S")], 0.5))
    (mfa / "p999" / "broken.TextGrid").write_text("not a textgrid\n")
    (mfa / "p999" / "words_only.TextGrid").write_text(mfa_textgrid([(0, 0.5, "S")], 0.5, tier="words2"))
    prepared = prepare_corpus("vctk", tree.root, tmp_path / "cache", prepare_workers=0, progress=False,
                              valid_utterances_per_speaker=1, alignments=mfa)
    problems = json.loads((prepared.cache_dir / "phones.json").read_text())["problems"]
    by_path = {p["path"]: p["problem"] for p in problems}
    assert len(problems) == 4 and set(by_path) == {
        f"{second['speaker']}/{second['name']}.TextGrid", "p999/p999_001.TextGrid", "p999/broken.TextGrid",
        "p999/words_only.TextGrid"}
    assert "outside its audio" in by_path[f"{second['speaker']}/{second['name']}.TextGrid"]
    assert "no utterance 'p999/p999_001'" in by_path["p999/p999_001.TextGrid"]
    assert "cannot read TextGrid" in by_path["p999/broken.TextGrid"]
    assert "no 'phones' tier" in by_path["p999/words_only.TextGrid"]
    assert [i for i in range(len(prepared.utterances)) if prepared.is_aligned(i)] == [0]
    log = (prepared.cache_dir / "prepare.log").read_text()
    assert log.count("alignment\t") == 4
    assert prepared.manifest["alignments"]["aligned_utterances"] == 1


def test_item_files_for_librispeech_and_reuse_without_decoding(tmp_path, monkeypatch):
    tree = librispeech(tmp_path / "libri")
    out = tmp_path / "cache"
    prepared = prepare_corpus("librispeech", tree.root, out, prepare_workers=0, progress=False,
                              train_subsets=("train-clean-100",))
    names = [u["name"] for u in prepared.utterances]
    item = tmp_path / "abx" / "dev.item"
    item.parent.mkdir()
    item.write_text("\n".join([
        "#file onset offset #phone prev-phone next-phone speaker",
        f"{names[0]} 0.10 0.20 AH0 S T spk", f"{names[0]} 0.20 0.30 T AH0 S spk",
        f"{names[1]} 0.05 0.15 S sil T spk",
        "missing-utterance 0.1 0.2 S sil T spk",
        f"{names[1]} 0.30 0.20 S sil T spk",   # offset before onset
        f"{names[1]} 0.30 S sil T spk",        # a column short
    ]) + "\n")
    calls = []
    original = workers_module.process_file
    monkeypatch.setattr(workers_module, "process_file", lambda path, **kw: calls.append(path) or original(path, **kw))
    aligned = prepare_corpus("librispeech", tree.root, out, prepare_workers=0, progress=False,
                             train_subsets=("train-clean-100",), alignments=item.parent)
    assert not calls  # only the alignment step ran
    assert aligned.is_aligned(0) and aligned.is_aligned(1) and aligned.phones == ["AH", "T", "S"]
    problems = aligned.manifest["alignments"]["problems"]
    assert problems == 3
    record = aligned.utterances[0]
    assert aligned.phone_segments(0)[0].tolist() == [round(0.10 * RATE) - record["trim_start"],
                                                     round(0.20 * RATE) - record["trim_start"], 0]
    # Run again without --alignments: the cache keeps the alignments it has
    again = prepare_corpus("librispeech", tree.root, out, prepare_workers=0, progress=False,
                           train_subsets=("train-clean-100",))
    assert again.has_alignments and not calls


def test_a_cache_without_a_matching_phone_index_is_refused(tmp_path):
    root = _aligned_voices(tmp_path)
    prepared = prepare_corpus("folders", root, tmp_path / "cache", prepare_workers=0, progress=False,
                              alignments=tmp_path / "mfa")
    path = prepared.cache_dir / "phones.json"
    text = path.read_text()
    index = json.loads(text)
    path.write_text(text.replace(index["hash"], "x" * len(index["hash"])))  # same size: past open's size check
    with pytest.raises(Exception, match="phones.json does not match"):
        PreparedCorpus.open(prepared.cache_dir)
    index["hash"] = "something-else"  # another size: the manifest's check names the file first
    (prepared.cache_dir / "phones.json").write_text(json.dumps(index))
    with pytest.raises(Exception, match="phones.json: damaged cache file"):
        PreparedCorpus.open(prepared.cache_dir)


def test_read_alignments_reports_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_alignments(tmp_path / "nowhere")
