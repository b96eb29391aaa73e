"""The codes as speech units: each metric against hand-computed cases, and the report on a real demo corpus."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from audio_vqvae.config import (
    ExperimentConfig,
    apply_overrides,
)
from audio_vqvae.data import prepare_corpus
from audio_vqvae.evaluation.report import format_markdown, report_scalars
from audio_vqvae.evaluation.units import (
    UtteranceUnits,
    abx_errors,
    code_phone_accuracy,
    probe_accuracy,
    speaker_from_codes,
    unit_report,
    unit_scalars,
    validation_phone_accuracy,
)
from audio_vqvae.model import VQVAE
from audio_vqvae.training import train
from audio_vqvae.training.logs import read_metrics
from audio_vqvae.training.recipe import qualify_overrides

from helpers import REPO, make_tiny_corpus, tiny_config, tiny_overrides


def test_code_phone_accuracy_by_hand():
    # training: code 0 -> phone 0 (2 of 3 frames), code 1 -> phone 1, code 2 -> phone 2; code 3 never seen
    train_codes, train_phones = np.array([0, 0, 0, 1, 1, 2, 2, 1]), np.array([0, 0, 1, 1, 1, 2, -1, 1])
    test_codes, test_phones = np.array([0, 1, 2, 3, 0, 1]), np.array([0, 0, 2, 1, 1, -1])
    result = code_phone_accuracy(train_codes, train_phones, test_codes, test_phones, num_codes=4,
                                 phones=["a", "b", "c"])
    # predictions 0, 1, 2, 1 (code 3: the majority phone b), 0 against 0, 0, 2, 1, 1: 3 of 5 right
    assert result["accuracy"] == pytest.approx(3 / 5)
    assert result["majority_phone"] == "b" and result["majority_baseline"] == pytest.approx(2 / 5)
    assert result["chance"] == pytest.approx(1 / 3) and result["codes_mapped"] == 3 and result["frames"] == 5
    assert result["per_phone"] == {"a": {"accuracy": 0.5, "frames": 2}, "b": {"accuracy": 0.5, "frames": 2},
                                   "c": {"accuracy": 1.0, "frames": 1}}


def test_probe_learns_separable_frames_and_not_noise():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 600)
    centres = np.array([[4.0, 0, 0], [0, 4.0, 0], [0, 0, 4.0]])
    frames = centres[labels] + 0.3 * rng.standard_normal((600, 3))
    separable = probe_accuracy(frames[:400], labels[:400], frames[400:], labels[400:])
    assert separable.accuracy == 1.0 and separable.converged
    noise = rng.standard_normal((600, 3))
    assert probe_accuracy(noise[:400], labels[:400], noise[400:], labels[400:]).accuracy < 0.5


def test_a_probe_stopped_short_says_so_instead_of_warning(monkeypatch):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 600)
    frames = rng.standard_normal((600, 3)) + labels[:, None]
    monkeypatch.setattr("audio_vqvae.evaluation.units.PROBE_ITERATIONS", 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn's ConvergenceWarning would fail the test here
        probe = probe_accuracy(frames[:400], labels[:400], frames[400:], labels[400:])
    assert not probe.converged and 0 < probe.accuracy <= 1


def _items(tokens):
    """``.item`` lines of (file, start frame, stop frame, phone, speaker) at 10 ms frames, one shared context."""
    lines = ["#file onset offset #phone prev-phone next-phone speaker"]
    lines += [f"{f} {a / 100:.2f} {b / 100:.2f} {p} x y {s}" for f, a, b, p, s in tokens]
    return lines


def test_abx_by_hand():
    """Four one-frame-type tokens on a circle; cosine distance 1 - cos(angle difference).

    a1 at 0°, a2 at 60°, b1 at 40°, b2 at 90°. X = a1, A = a2 (d = 1 - cos 60° = 0.5): B = b1 is closer
    (1 - cos 40° = 0.23), an error; B = b2 (1 - cos 90° = 1) is not. X = a2, A = a1 (0.5): b1 (1 - cos 20°)
    and b2 (1 - cos 30°) are both closer: two errors. So 3 of 4 for (a, b), and likewise for (b, a):
    X = b1, A = b2 (1 - cos 50° = 0.36): a1 (0.23) and a2 (0.06) closer; X = b2, A = b1: a1 (1) is not,
    a2 (0.13) is. ABX error 0.75.
    """
    angles = {"a1": 0, "a2": 60, "b1": 40, "b2": 90}
    frames = np.concatenate([np.tile([math.cos(math.radians(a)), math.sin(math.radians(a))], (3, 1))
                             for a in angles.values()]).astype(np.float32)
    tokens = [("f", 3 * k, 3 * k + 3, name[0], "s1") for k, name in enumerate(angles)]
    result = abx_errors({"f": frames}, _items(tokens), 0.01)
    assert result["within_speaker"] == pytest.approx(0.75)
    assert result["within_speaker_any_context"] == pytest.approx(0.75)
    assert result["across_speaker"] is None  # one speaker


def test_abx_separable_is_zero_random_is_half():
    rng = np.random.default_rng(1)
    separable, random, tokens = {}, {}, []
    for speaker in ("s1", "s2"):
        for f in range(4):
            phones = rng.integers(0, 4, 10)
            name = f"{speaker}_{f}"
            separable[name] = np.concatenate([np.tile(np.eye(4)[p] + 0.05, (4, 1)) for p in phones]).astype(np.float32)
            random[name] = rng.standard_normal((40, 4)).astype(np.float32)
            tokens += [(name, 4 * k, 4 * k + 4, "abcd"[p], speaker) for k, p in enumerate(phones)]
    clean = abx_errors(separable, _items(tokens), 0.01)
    assert clean["within_speaker"] == 0.0 and clean["across_speaker"] == 0.0 and clean["speakers"] == 2
    noisy = abx_errors(random, _items(tokens), 0.01)
    assert 0.4 < noisy["within_speaker"] < 0.6 and 0.4 < noisy["across_speaker"] < 0.6


def _units(speaker, codes):
    codes = np.asarray(codes)
    return UtteranceUnits(index=0, name="u", speaker=speaker, z_e=np.zeros((len(codes), 1)),
                          z_q=np.zeros((len(codes), 1)), codes=codes, phones=np.zeros(len(codes), np.int64),
                          segments=np.zeros((0, 3), np.int32))


def test_speaker_from_codes_sees_speaker_specific_codes_and_not_shared_ones():
    rng = np.random.default_rng(2)
    own = [_units(s, rng.integers(4 * k, 4 * k + 4, 60)) for k, s in enumerate("abc") for _ in range(3)]
    result = speaker_from_codes(own[::3] + own[1::3], own[2::3], num_codes=12, window=20)
    assert result["accuracy"] == 1.0 and result["chance"] == pytest.approx(1 / 3) and result["windows"] == 15
    # every speaker draws from the same codes: about chance (1/3) on 150 held-out windows
    shared = [_units(s, rng.integers(0, 12, 100)) for s in "abc" for _ in range(100)]
    blind = speaker_from_codes([u for k, u in enumerate(shared) if k % 100 < 50],
                               [u for k, u in enumerate(shared) if k % 100 >= 50], num_codes=12, window=100)
    assert blind["windows"] == 150 and blind["accuracy"] < 0.45


@pytest.fixture(scope="module")
def demo_cache(demo_corpus, tmp_path_factory):
    """The reduced demo corpus (24 utterances: 16 for training, one held out per speaker), with eSpeak's
    alignments, at 8 kHz."""
    return prepare_corpus("vctk", demo_corpus, tmp_path_factory.mktemp("units") / "cache", sample_rate=8000,
                          prepare_workers=0, progress=False, valid_utterances_per_speaker=1)


@pytest.mark.slow
def test_demo_alignments_land_on_the_speech(demo_cache):
    corpus = demo_cache
    assert corpus.has_alignments and all(corpus.is_aligned(i) for i in range(len(corpus.utterances)))
    assert "sil" in corpus.phones and {"s", "D", "n"} <= set(corpus.phones)
    loud, quiet = [], []
    for index in range(len(corpus.utterances)):
        audio, segments = corpus.samples(index), corpus.phone_segments(index)
        assert segments[0][0] == 0 and segments[-1][1] == len(audio)
        assert np.all(segments[1:, 0] == segments[:-1, 1])  # eSpeak's phones tile the utterance
        for start, stop, phone in segments:
            (quiet if corpus.phones[phone] == "sil" else loud).append(np.mean(audio[start:stop] ** 2))
    # silences are far quieter than phones (both edges and the pauses between words)
    assert np.median(quiet) < 0.05 * np.median(loud)


def tiny_model(speakers):
    config = tiny_config(num_speakers=len(speakers))
    torch.manual_seed(0)
    return VQVAE(config, speakers=[{"id": i, "name": s["name"]} for i, s in enumerate(speakers)]).eval()


@pytest.mark.slow
def test_unit_report_on_the_demo_corpus(demo_cache):
    corpus = demo_cache
    model = tiny_model(corpus.speakers)
    train, heldout = corpus.split("train").indices.tolist(), corpus.split("valid").indices.tolist()
    units = unit_report(model, corpus, train, heldout)
    assert units["available"] and units["heldout_utterances"] == 8 and units["train_utterances"] == 16
    accuracy = units["phone_accuracy"]
    assert 0 <= accuracy["accuracy"] <= 1 and 0 < accuracy["chance"] < 0.1 and accuracy["frames"] > 1000
    assert 0 <= units["probe_z_e_accuracy"] <= 1 and 0 <= units["probe_z_q_accuracy"] <= 1
    abx = units["abx"]
    # one held-out sentence per speaker: no two phones share a context within a speaker, so the within-context
    # conditions (A and B of one speaker, X of the same or another) have no triplet; any context works
    assert abx["available"] and abx["tokens"] > 100 and 0 <= abx["across_speaker_any_context"] <= 1
    assert abx["within_speaker"] is None and abx["across_speaker"] is None
    assert units["speaker"]["chance"] == pytest.approx(1 / 8)
    scalars = unit_scalars(units)
    assert scalars["units/phone_accuracy"] == accuracy["accuracy"] and "units/abx_across_speaker_any_context" in scalars
    assert validation_phone_accuracy(model, corpus) is not None


def test_report_writers_show_units():
    units = {"available": True, "train_utterances": 2, "heldout_utterances": 1, "probe_z_e_accuracy": 0.5,
             "probe_z_q_accuracy": 0.25,
             "phone_accuracy": {"available": True, "accuracy": 0.4, "majority_baseline": 0.2, "majority_phone": "sil",
                                "chance": 0.1, "phones": 10, "codes_mapped": 3, "train_frames": 9, "frames": 5,
                                "per_phone": {"sil": {"accuracy": 1.0, "frames": 4},
                                              "s": {"accuracy": 0.0, "frames": 1}}},
             "abx": {"available": True, "within_speaker": 0.1, "across_speaker": 0.2, "within_speaker_any_context": 0.3,
                     "across_speaker_any_context": 0.4, "tokens": 12, "speakers": 2},
             "speaker": {"available": True, "accuracy": 0.5, "chance": 0.5, "speakers": 2, "windows": 4,
                         "window_seconds": 1.0}}
    assert unit_scalars(units) == {
        "units/phone_accuracy": 0.4, "units/majority_baseline": 0.2, "units/chance": 0.1,
        "units/probe_z_e_accuracy": 0.5,
        "units/probe_z_q_accuracy": 0.25, "units/abx_within_speaker": 0.1, "units/abx_across_speaker": 0.2,
        "units/abx_within_speaker_any_context": 0.3, "units/abx_across_speaker_any_context": 0.4,
        "units/speaker_accuracy": 0.5, "units/speaker_chance": 0.5}
    empty = {"available": False, "reason": "r"}
    report = {"checkpoint": "c.pt", "step": 1, "corpus": {"cache": "x", "utterances": 1, "heldout_utterances": 1,
                                                          "conversions": 0},
              "settings": {"seconds": 1.0, "conversions": 0, "temperature": 1.0, "seed": 0}, "seconds": 1.0,
              "notes": [],
              "teacher_forced": {"utterances": 1, "seconds": 1.0, "bits_per_sample": 4.0, "chance_bits_per_sample": 8},
              "codes": {"perplexity": 2.0, "num_codes": 4, "codes_used": 2, "share_used": 0.5, "bitrate": 1.0,
                        "bitrate_max": 2.0, "frame_rate": 1.0},
              "reconstruction": {"clips": 1, "clip_seconds": 1.0, "mcd_db": 1.0, "baseline_mcd_db": 2.0, "lsd_db": 1.0,
                                 "baseline_lsd_db": 2.0, "voiced_share": 0.1, "original_voiced_share": 0.5},
              "speaker_id": empty, "parallel": empty, "units": units}
    markdown = format_markdown(report)
    assert "| phone accuracy of the codes" in markdown and "40.0 %" in markdown
    assert "| sil | 4 | 100.0 % |" in markdown and "| s | 1 | 0.0 % |" in markdown
    assert report_scalars(report)["units/abx/across_speaker"] == 0.2


def test_validation_logs_phone_accuracy_when_the_corpus_has_alignments(tmp_path, one_thread):
    root, cache = make_tiny_corpus(tmp_path / "corpus"), tmp_path / "cache"
    item = tmp_path / "phones.item"
    lines = ["#file onset offset #phone prev-phone next-phone speaker"]
    lines += [f"spk{s}/utt{u} {a:.2f} {b:.2f} {p} sil sil spk{s}" for s in range(4) for u in range(4)
              for a, b, p in ((0.0, 0.2, "a"), (0.2, 0.4, "b"))]
    item.write_text("\n".join(lines) + "\n")
    prepare_corpus("folders", root, cache, prepare_workers=0, progress=False, valid_utterances_per_speaker=1,
                   alignments=item)
    config = apply_overrides(ExperimentConfig.from_yaml(REPO / "recipes/vctk/conf/small.yaml"),
                             qualify_overrides(tiny_overrides(root, cache, max_steps=4, valid_every=4,
                                                              audio_every=100, checkpoint_every=4)))
    result = train(config, tmp_path / "run", progress=False)
    assert 0 <= result.valid["phone_accuracy"] <= 1
    logged = read_metrics(tmp_path / "run" / "metrics.jsonl", "valid")[-1]
    assert logged["phone_accuracy"] == result.valid["phone_accuracy"]
    assert "phone accuracy of the codes" in (tmp_path / "run" / "train.log").read_text()
