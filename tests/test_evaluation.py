"""``audio-vqvae evaluate``: the metrics against hand-computed cases, the speaker classifier, and the
command end to end on a tiny checkpoint over a tiny parallel corpus, with bad inputs."""

import json
import math

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from audio_vqvae.checkpoint import save_checkpoint
from audio_vqvae.config import DataConfig, ExperimentConfig
from audio_vqvae.data import prepare_corpus
from audio_vqvae.evaluation.metrics import (
    LEVELS,
    MCD_SCALE,
    cepstral_distortion,
    code_statistics,
    frame_levels,
    level_bits,
    log_spectral_distance,
    lpc_reference_bits,
    median_f0,
    mel_cepstral_distortion,
    mel_cepstrum,
    silence_floor,
    voiced_share,
)
from audio_vqvae.evaluation.speaker_id import SpeakerClassifier, signal_features, window_features
from audio_vqvae.model import VQVAE
from audio_vqvae.mulaw import mu_law_class_bounds, mu_law_encode

from helpers import parallel_vctk, run, speech_like, tiny_config, write

RATE = 8000
MODEL_SPEAKERS = ["p225", "p226", "p227"]
CORPUS_SPEAKERS = MODEL_SPEAKERS + ["p999"]  # p999 is not in the model's table


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def harmonic(f0: float, seconds: float, rate: int, *, tilt: float = 1.0, seed: int = 0) -> np.ndarray:
    """Harmonics of ``f0`` below 4 kHz with amplitudes k^-tilt, random phases, a little noise: float32[T]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = sum(np.sin(2 * np.pi * f0 * k * t + rng.random() * 6) / k ** tilt for k in range(1, int(4000 // f0)))
    return (0.2 * tone / np.abs(tone).max() + 0.002 * rng.standard_normal(len(t))).astype(np.float32)


# ------------------------------------------------------------------ metrics


def test_mcd_of_identical_signals_is_zero_with_or_without_dtw():
    audio = speech_like(0.5, 16000, seed=1)
    assert mel_cepstral_distortion(audio, audio, 16000) == 0.0
    assert mel_cepstral_distortion(audio, audio, 16000, dtw=True) == 0.0


def test_mcd_of_a_known_cepstral_offset_is_the_formula_and_ignores_c0():
    reference = np.random.default_rng(0).standard_normal((25, 7))
    other = reference.copy()
    other[0] += 5.0                      # level: excluded
    other[1] += 1.0
    other[2] -= 2.0
    expected = 10 / math.log(10) * math.sqrt(2 * (1.0 ** 2 + 2.0 ** 2))
    assert MCD_SCALE == pytest.approx(10 / math.log(10) * math.sqrt(2))
    np.testing.assert_allclose(cepstral_distortion(reference, other), expected, rtol=1e-12)


def test_mel_cepstrum_is_the_scaled_dct_of_the_log_mel_amplitude():
    # A gain g scales the amplitude spectrum, so only c0 moves, by ln g; the shape coefficients stay.
    audio = speech_like(0.5, 16000, seed=2)
    a, b = mel_cepstrum(audio, 16000), mel_cepstrum(2.0 * audio, 16000)
    np.testing.assert_allclose(b[0] - a[0], math.log(2.0), atol=1e-4)
    np.testing.assert_allclose(b[1:], a[1:], atol=1e-4)
    assert mel_cepstral_distortion(audio, 2.0 * audio, 16000) < 1e-3


def test_dtw_aligns_a_delayed_copy_that_time_pairing_does_not():
    audio = speech_like(1.0, 16000, seed=3)
    delayed = np.concatenate([np.zeros(800, np.float32), audio[:-800]])  # 50 ms later
    paired = mel_cepstral_distortion(audio, delayed, 16000)
    aligned = mel_cepstral_distortion(audio, delayed, 16000, dtw=True)
    assert paired > 1.0 and aligned < paired / 3


def test_log_spectral_distance_of_identical_signals_and_of_a_known_gain():
    noise = np.random.default_rng(4).standard_normal(8000).astype(np.float32) * 0.1
    assert log_spectral_distance(noise, noise, 16000) == 0.0
    assert log_spectral_distance(noise, 2.0 * noise, 16000) == pytest.approx(20 * math.log10(2.0), abs=1e-4)
    assert log_spectral_distance(noise, 0.1 * noise, 16000) == pytest.approx(20.0, abs=1e-4)


def test_mu_law_class_bounds_hold_exactly_the_values_encoded_to_the_class():
    x = torch.cat([torch.linspace(-1, 1, 20001), torch.rand(5000) * 2 - 1, torch.tensor([-1.5, 1.5])])
    low, high = (bound.numpy() for bound in mu_law_class_bounds(mu_law_encode(x)))
    values = x.double().numpy()
    assert np.all(low <= values) and np.all(values <= high)
    low_all, high_all = (bound.numpy() for bound in mu_law_class_bounds(torch.arange(256)))
    assert low_all[0] == -np.inf and high_all[255] == np.inf and np.allclose(high_all[:-1], low_all[1:])  # a partition
    assert low_all[128] == 0.0 < high_all[128]  # silence encodes to class 128, at its lower edge


def _discretised_gaussian_bits(signal, sigma):
    """-log2 of the mass N(0, sigma) puts on each sample's μ-law class: what a predictor of 0 scores."""
    from scipy.special import ndtr
    low, high = (bound.numpy() for bound in mu_law_class_bounds(mu_law_encode(torch.from_numpy(signal))))
    return -np.log2(ndtr(high / sigma) - ndtr(low / sigma))


def test_lpc_reference_of_white_noise_is_the_discretised_gaussian():
    # White noise has nothing to predict: the fitted predictor is ~0 and the score is that of N(0, sigma).
    noise = np.random.default_rng(0).standard_normal(256 * 40) * 0.05
    classes = mu_law_encode(torch.from_numpy(noise)).numpy()
    bits = lpc_reference_bits(noise, classes, frame=256)
    assert np.isnan(bits[:16]).all() and np.isfinite(bits[16:16 + 256 * 39]).all()
    scored = np.isfinite(bits)
    expected = _discretised_gaussian_bits(noise, 0.05)[scored].mean()
    assert bits[scored].mean() == pytest.approx(expected, abs=0.1)


def test_lpc_reference_predicts_a_resonance_and_skips_digital_silence():
    # A lightly damped resonance (a formant) driven by small noise is almost all prediction.
    rng = np.random.default_rng(1)
    excitation = rng.standard_normal(256 * 20) * 0.002
    radius, angle = 0.98, 2 * np.pi * 500 / 8000
    a1, a2 = 2 * radius * np.cos(angle), -radius ** 2
    resonance = np.zeros_like(excitation)
    for t in range(len(excitation)):
        resonance[t] = excitation[t] + a1 * resonance[t - 1] * (t >= 1) + a2 * resonance[t - 2] * (t >= 2)
    resonance *= 0.1 / resonance.std()
    classes = mu_law_encode(torch.from_numpy(resonance)).numpy()
    predicted = np.nanmean(lpc_reference_bits(resonance, classes, frame=256))
    unpredicted = _discretised_gaussian_bits(resonance, resonance.std()).mean()
    assert predicted < unpredicted - 3.0  # well over 3 bits per sample explained by the envelope
    silent = np.zeros(256 * 3)
    assert np.isnan(lpc_reference_bits(silent, mu_law_encode(torch.from_numpy(silent)).numpy(), frame=256)).all()


def test_frame_levels_and_level_bits_by_hand():
    quiet, loud = 10 ** (-40 / 20), 10 ** (-10 / 20)  # RMS of a constant is its magnitude
    audio = np.concatenate([np.full(4, 1e-4), np.full(4, quiet), np.full(4, loud), np.full(2, loud)])
    assert frame_levels(audio, 4).tolist() == [0] * 4 + [1] * 4 + [2] * 6
    decoder = np.arange(14, dtype=np.float64)
    reference = np.where(np.arange(14) >= 8, 20.0, np.nan)
    reference[13] = np.nan
    result = level_bits(frame_levels(audio, 4), decoder, reference)
    assert result["silence_share"] == pytest.approx(4 / 14) and result["loud_share"] == pytest.approx(6 / 14)
    assert result["silence_bits_per_sample"] == 1.5 and result["silence_lpc_bits_per_sample"] is None
    assert result["loud_bits_per_sample"] == pytest.approx(np.mean(decoder[8:]))
    assert result["loud_scored_bits_per_sample"] == pytest.approx(np.mean(decoder[8:13]))
    assert result["loud_lpc_bits_per_sample"] == 20.0


def test_silence_floor_is_the_level_in_the_references_pauses_relative_to_its_loudest_frame():
    frame = 256  # the 32 ms frames at 8 kHz
    rng = np.random.default_rng(0)
    loud = np.sin(np.arange(4 * frame) * 0.3) * 0.5  # RMS 0.5 / sqrt(2): about -9 dBFS
    reference = np.concatenate([loud, np.zeros(2 * frame), np.full(2 * frame, 1e-3)])  # pauses 120 and ~51 dB down
    other = reference.copy()
    other[4 * frame:] = rng.standard_normal(4 * frame) * 10 ** (-40 / 20)  # a -40 dBFS floor in the pauses
    original_db, other_db = silence_floor(reference, other, RATE)
    loudest = 10 * math.log10(np.max(np.mean(loud.reshape(4, frame) ** 2, axis=1)))  # about 10 log10(0.125)
    assert original_db == pytest.approx(np.median([-120.0] * 2 + [-60.0] * 2) - loudest)
    assert other_db == pytest.approx(-40.0 - loudest, abs=0.5)
    assert silence_floor(loud, loud, RATE) is None  # no pause
    assert silence_floor(loud[:100], loud[:100], RATE) is None  # shorter than a frame


def test_code_statistics_by_hand():
    uniform = code_statistics(np.full(16, 10), frame_rate=125.0)
    assert uniform.entropy_bits == pytest.approx(4.0) and uniform.perplexity == pytest.approx(16.0)
    assert uniform.bitrate == pytest.approx(4.0 * 125.0) == uniform.bitrate_max
    assert (uniform.codes_used, uniform.share_used, uniform.frames) == (16, 1.0, 160)

    constant = code_statistics(np.array([0, 0, 42, 0]), frame_rate=250.0)
    assert (constant.entropy_bits, constant.bitrate, constant.perplexity) == (0.0, 0.0, 1.0)
    assert constant.codes_used == 1 and constant.bitrate_max == 500.0

    mixed = code_statistics(np.array([2, 1, 1, 0]), frame_rate=100.0)  # p = 1/2, 1/4, 1/4
    assert mixed.entropy_bits == pytest.approx(1.5) and mixed.bitrate == pytest.approx(150.0)
    assert mixed.share_used == 0.75 and mixed.perplexity == pytest.approx(2 ** 1.5)


@pytest.mark.parametrize("f0", [110.0, 220.0])
def test_median_f0_of_a_harmonic_tone(f0):
    assert median_f0(harmonic(f0, 1.0, 16000), 16000) == pytest.approx(f0, rel=0.02)


def test_median_f0_of_silence_is_nan():
    assert math.isnan(median_f0(np.zeros(8000, np.float32), 16000))


def test_voiced_share_tells_a_harmonic_tone_from_noise_of_the_same_loudness():
    tone = harmonic(150.0, 1.0, 8000)
    noise = np.random.default_rng(0).standard_normal(tone.size).astype(np.float32) * tone.std()
    assert voiced_share(tone, 8000) > 0.9
    assert voiced_share(noise, 8000) < 0.1
    assert voiced_share(np.zeros(40, np.float32), 8000) == 0.0


# ------------------------------------------------------------------ speaker classifier


def test_classifier_separates_synthetic_speakers_fully():
    voices = {"low_dark": (100.0, 2.0), "low_bright": (120.0, 0.5),   # (f0, spectral tilt)
              "high_dark": (210.0, 1.8), "high_bright": (250.0, 0.6)}
    features, labels = [], []
    for name, (f0, tilt) in voices.items():
        for k in range(4):  # 1.5 s per utterance, cut into 0.5 s windows like real training audio
            rows = window_features(harmonic(f0 * (1 + 0.02 * (k - 2)), 1.5, 16000, tilt=tilt, seed=k), 16000, 8000)
            features.append(rows)
            labels += [name] * len(rows)
    classifier = SpeakerClassifier.fit(np.concatenate(features), labels)
    assert classifier.classes == sorted(voices)
    tests = [(name, harmonic(f0 * (1 + 0.03 * (k - 1)), 0.5, 16000, tilt=tilt, seed=100 + k))
             for name, (f0, tilt) in voices.items() for k in range(3)]
    predicted = classifier.predict(np.stack([signal_features(audio, 16000) for _, audio in tests]))
    assert predicted == [name for name, _ in tests]


def test_classifier_needs_two_classes():
    with pytest.raises(ValueError, match="two classes"):
        SpeakerClassifier.fit(np.zeros((3, 4)), ["a", "a", "a"])


def test_window_features_cut_half_overlapping_windows():
    audio = speech_like(1.0, 16000, seed=5)
    assert window_features(audio, 16000, 4000).shape == (7, 48)   # 50 frames per window, every 25 frames
    assert window_features(audio, 16000, 32000).shape == (1, 48)  # shorter than a window: one row


# ------------------------------------------------------------------ the command


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A parallel corpus of 4 speakers x 5 sentences (1 held out each) and a tiny model that knows 3 of them."""
    tmp = tmp_path_factory.mktemp("evaluation")
    root = parallel_vctk(tmp / "corpus", CORPUS_SPEAKERS, 5)
    data = DataConfig(corpus="vctk", data_root=str(root), cache_dir=str(tmp / "cache"), loader_workers=0,
                      prepare_workers=0, valid_utterances_per_speaker=1)
    config = tiny_config(num_speakers=len(MODEL_SPEAKERS))
    torch.manual_seed(0)
    model = VQVAE(config, speakers=[{"id": i, "name": name} for i, name in enumerate(MODEL_SPEAKERS)])
    checkpoint = tmp / "tiny.pt"
    save_checkpoint(checkpoint, model, extra={"experiment": ExperimentConfig(model=config, data=data).to_dict(),
                                              "step": 42})
    bare = tmp / "bare.pt"  # no data config, as save_checkpoint alone writes it
    save_checkpoint(bare, model)
    return {"tmp": tmp, "root": root, "cache": tmp / "cache", "checkpoint": checkpoint, "bare": bare}


# The pretrained judges cost most of a tiny evaluation: the end-to-end test runs them, the others skip them.
PRETRAINED = "speaker_encoder,quality"


def evaluate_command(checkpoint, out, *extra, judges="fast"):
    skip = ("--skip", PRETRAINED) if judges == "fast" else ()
    return run("evaluate", "--checkpoint", checkpoint, "--out", out, "--utterances", 3, "--conversions", 2,
               "--seconds", 0.25, "--classifier-utterances", 3, "--no-progress", *skip, *extra)


@pytest.mark.slow
def test_evaluate_end_to_end(tiny, tmp_path, capsys):
    out = tmp_path / "eval" / "report.json"
    assert evaluate_command(tiny["checkpoint"], out, "--run-dir", tmp_path / "run", judges="all") == 0
    report = json.loads(out.read_text())
    assert set(report) == {"checkpoint", "step", "model", "corpus", "settings", "teacher_forced", "codes",
                           "reconstruction", "speaker_id", "speaker_id_multicondition", "speaker_encoder", "quality",
                           "intelligibility", "parallel", "units", "clips", "notes", "timings_s", "seconds"}
    assert report["units"]["available"] is False and "alignments" in report["units"]["reason"]  # none in this corpus
    assert report["step"] == 42
    assert report["corpus"]["heldout_utterances"] == 4 and report["corpus"]["utterances"] == 3
    assert report["corpus"]["clips"] == 3 and report["corpus"]["conversions"] == 6
    assert any("p999" in note for note in report["notes"])  # held out, but unknown to the model: skipped

    tf = report["teacher_forced"]
    assert 0 < tf["bits_per_sample"] < 16 and tf["chance_bits_per_sample"] == 8.0 and tf["utterances"] == 3
    assert sum(tf[f"{level}_share"] for level in LEVELS) == pytest.approx(1.0)
    # The level means, weighted by their shares, are the overall mean.
    assert sum(tf[f"{level}_share"] * (tf[f"{level}_bits_per_sample"] or 0.0) for level in LEVELS) == \
        pytest.approx(tf["bits_per_sample"], rel=1e-4)
    assert tf["loud_lpc_bits_per_sample"] > 0 and tf["loud_scored_bits_per_sample"] > 0
    codes = report["codes"]
    assert codes["num_codes"] == 16 and 1 <= codes["codes_used"] <= 16
    assert codes["share_used"] == codes["codes_used"] / 16
    assert codes["frame_rate"] == RATE / 8 and codes["bitrate_max"] == pytest.approx(4 * RATE / 8)
    assert 0 <= codes["bitrate"] <= codes["bitrate_max"] + 1e-9
    assert codes["frames"] == sum(int(0.6 * RATE) // 8 for _ in range(3))  # the whole utterances

    rec = report["reconstruction"]
    assert rec["clips"] == 3 and rec["baseline_pairs"] == 3 and rec["clip_seconds"] == 0.25
    assert rec["mcd_db"] > 0 and rec["lsd_db"] > 0 and rec["baseline_mcd_db"] > 0
    # The originals are harmonic (helpers.speech_like): pYIN calls most of their frames voiced, and fewer of the
    # noise an untrained decoder makes of them.
    assert rec["original_voiced_share"] > 0.5 and rec["voiced_share"] < rec["original_voiced_share"]
    # The level in the originals' pauses is reported for the clips that have any (see the unit test above).
    assert 0 <= rec["clips_with_pauses"] <= rec["clips"]
    assert (rec["silence_floor_db"] is None) == (rec["clips_with_pauses"] == 0)

    spk = report["speaker_id"]
    assert spk["available"] and spk["classes"] == 3 and spk["chance"] == pytest.approx(1 / 3)
    assert spk["conversions"] == 6 and spk["real_heldout_clips"] == 3
    # Each figure is a share of a known number of clips: k / n exactly, for a whole k in 0..n.
    for key, clips in (("real_heldout_accuracy", 3), ("reconstruction_accuracy", 3),
                       ("conversion_target_accuracy", 6), ("conversion_source_confusion", 6)):
        count = spk[key] * clips
        assert count == pytest.approx(round(count)) and 0 <= round(count) <= clips, key
    # 9 generated clips (3 reconstructions, 6 conversions): the most common name holds a whole number of
    # them, at least its fair share of the speakers named, and all 9 when only one is named.
    assert spk["generated_top_prediction"] in MODEL_SPEAKERS
    named, top = spk["generated_speakers_named"], spk["generated_top_share"] * 9
    assert 1 <= named <= 3 and top == pytest.approx(round(top)) and round(top) >= -(-9 // named)
    assert named > 1 or round(top) == 9

    # Every speaker judge names the 3 originals, 3 reconstructions, 6 conversions and their 6 f0 controls.
    for section in ("speaker_id_multicondition", "speaker_encoder"):
        judged = report[section]
        assert judged["available"] and judged["classes"] == 3 and judged["controls"] == 6, section
        for key, clips in (("real_heldout_accuracy", 3), ("control_target_accuracy", 6),
                           ("control_source_accuracy", 6), ("conversion_target_accuracy", 6)):
            count = judged[key] * clips
            assert count == pytest.approx(round(count)), (section, key)
    assert report["speaker_id_multicondition"]["noise_snrs_db"] == [10.0, 20.0, 30.0]
    assert report["speaker_id"]["noise_snrs_db"] == [] and report["speaker_id"]["controls"] == 6
    encoder = report["speaker_encoder"]
    # Real clips are nearer their speaker's centroid than an untrained decoder's conversions are to their target's,
    # and an f0-only control (the source clip, pitch moved) stays nearer its source than a conversion does.
    assert encoder["original_secs_intended"] > encoder["conversion_secs_intended"]
    assert encoder["control_secs_source"] > encoder["conversion_secs_source"]
    for kind in ("conversion", "control"):  # a share of the 6 items, each compared on its own
        closer = encoder[f"{kind}_closer_to_intended"] * 6
        assert closer == pytest.approx(round(closer)) and 0 <= closer <= 6, kind
    quality = report["quality"]
    assert quality["original_clips"] == 3 and quality["conversion_clips"] == 6 and quality["control_clips"] == 6
    assert all(1 <= quality[f"{kind}_{rating}"] <= 5 for kind in ("original", "reconstruction", "conversion",
                                                                   "control") for rating in ("sig", "bak", "ovrl"))
    assert report["intelligibility"] == {"available": False,
                                         "reason": "the corpus has no phone alignments (prepare it with --alignments)"}
    # The per-clip verdicts: truth, reconstruction, 2 conversions and their 2 controls, each judged.
    assert [item["kind"] for item in report["clips"][0]["items"]] == ["original", "reconstruction", "conversion",
                                                                      "conversion", "control", "control"]
    assert set(report["clips"][0]["items"][2]["verdicts"]) == {"speaker_id", "speaker_id_multicondition",
                                                                "speaker_encoder", "quality", "parallel"}

    par = report["parallel"]
    assert par["available"] and par["pairs"] == 6  # every target read the held-out sentence
    assert par["conversion_mcd_db"] > 0 and par["source_target_mcd_db"] > 0
    assert par["f0_pairs"] <= 6

    markdown = (tmp_path / "eval" / "report.md").read_text()
    assert "| measure | value | reference | target |" in markdown and "chance 33.3 %" in markdown
    assert "| speaker encoder: f0-only controls named as the target |" in markdown
    assert "- phone recognizer (intelligibility): not measured (the corpus has no phone alignments" in markdown
    page = (tmp_path / "eval" / "report.html").read_text()
    assert page.count("<audio ") == 18 and len(list((tmp_path / "eval" / "report_files").glob("*.wav"))) == 18
    assert markdown in capsys.readouterr().out

    events = EventAccumulator(str(tmp_path / "run"), size_guidance={"scalars": 0, "audio": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    for tag in ("eval/teacher_forced/bits_per_sample", "eval/codes/bitrate", "eval/reconstruction/mcd_db",
                "eval/speaker_id/conversion_target_accuracy", "eval/parallel/conversion_mcd_db",
                "eval/speaker_encoder/conversion_secs_intended", "eval/quality/conversion_ovrl",
                "eval/speaker_id_multicondition/control_target_accuracy"):
        assert tag in scalars, tag
    assert [e.step for e in events.Scalars("eval/codes/perplexity")] == [42]
    audio = sorted(events.Tags()["audio"])
    clips = sorted({tag.split("/")[1] for tag in audio})  # clip<i>_<utterance name>
    assert [clip.split("_")[:2] for clip in clips] == [["clip0", "p225"], ["clip1", "p226"]]
    for clip in clips:
        kinds = [tag.split("/")[2] for tag in audio if tag.split("/")[1] == clip]
        assert kinds[:2] == ["0_truth", "1_reconstruction"] and [kind[:5] for kind in kinds[2:4]] == ["2_as_", "3_as_"]
        assert [kind[:16] for kind in kinds[4:]] == ["4_f0_control_as_", "5_f0_control_as_"]


def test_evaluate_is_reproducible_and_reads_a_cache_directly(tiny, tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    assert evaluate_command(tiny["checkpoint"], first) == 0
    assert evaluate_command(tiny["bare"], second, "--cache", tiny["cache"]) == 0
    a, b = json.loads(first.read_text()), json.loads(second.read_text())
    for section in ("teacher_forced", "codes", "reconstruction", "speaker_id", "speaker_id_multicondition", "parallel"):
        assert a[section] == b[section], section
    assert b["step"] is None


def test_no_parallel_pairs_is_reported_as_absent_not_as_zeros(tiny, tmp_path):
    out = tmp_path / "r.json"
    assert evaluate_command(tiny["checkpoint"], out, "--conversions", 0) == 0
    report = json.loads(out.read_text())
    assert report["parallel"] == {"available": False, "reason": "no conversions (one training speaker, or "
                                                                "--conversions 0)"}
    assert report["speaker_id"]["conversion_target_accuracy"] is None
    assert "parallel comparison: not measured" in (tmp_path / "r.md").read_text()

    # Recordings without transcripts (a folders corpus of the same speakers): nothing to pair with.
    for k, speaker in enumerate(MODEL_SPEAKERS):
        for n in range(3):
            write(tmp_path / "folders" / speaker / f"{n}.wav", speech_like(0.6, 16000, seed=10 * k + n), 16000)
    cache = tmp_path / "folders-cache"
    prepare_corpus("folders", tmp_path / "folders", cache, sample_rate=RATE, prepare_workers=0, progress=False)
    assert evaluate_command(tiny["bare"], out, "--cache", cache) == 0
    report = json.loads(out.read_text())
    assert report["parallel"] == {"available": False, "reason": "the corpus has no transcripts"}
    assert report["speaker_id"]["available"] and report["speaker_id"]["conversions"] == 6


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_bad_inputs_are_one_line_and_leave_no_report(tiny, tmp_path, capsys):
    out = tmp_path / "report.json"

    def fails(*argv) -> str:
        assert evaluate_command(*argv) == 2
        assert not out.exists() and not out.with_suffix(".md").exists()
        return one_error_line(capsys)

    assert "checkpoint not found" in fails(tmp_path / "missing.pt", out)
    assert "no data config" in fails(tiny["bare"], out)
    assert "no prepared corpus" in fails(tiny["checkpoint"], out, "--cache", tmp_path)
    assert "does not exist" in fails(tiny["checkpoint"], out, "--corpus", "vctk", "--data-root", tmp_path / "nowhere")
    assert ".json" in fails(tiny["checkpoint"], tmp_path / "report.txt")
    with pytest.raises(SystemExit, match="2"):  # refused while parsing the options, before any work
        evaluate_command(tiny["checkpoint"], out, "--utterances", 0)
    assert "--utterances: expected an integer >= 1" in one_error_line(capsys) and not out.exists()

    no_heldout = tmp_path / "no-heldout"
    prepare_corpus("vctk", tiny["root"], no_heldout, sample_rate=RATE, valid_utterances_per_speaker=0,
                   prepare_workers=0, progress=False)
    assert "no held-out utterances" in fails(tiny["checkpoint"], out, "--cache", no_heldout)

    other_rate = tmp_path / "other-rate"
    prepare_corpus("vctk", tiny["root"], other_rate, sample_rate=16000, prepare_workers=0, progress=False)
    assert "16000 Hz" in fails(tiny["checkpoint"], out, "--cache", other_rate)


def pitch_model_checkpoint(tiny, checkpoint, **decoder):
    """A tiny model that speaks with f0 (``decoder`` options: excitation_harmonics, harmonics), with the speaker
    table's pitch statistics of the prepared corpus, saved with its data config: the checkpoint's path."""
    from audio_vqvae.data import PreparedCorpus

    assert evaluate_command(tiny["checkpoint"], checkpoint.with_suffix(".plain.json")) == 0  # prepares the cache
    table = {entry["name"]: entry for entry in PreparedCorpus.open(tiny["cache"]).speakers}
    assert all(table[name]["log_f0_mean"] is not None for name in MODEL_SPEAKERS)
    config = tiny_config(num_speakers=len(MODEL_SPEAKERS))
    for name, value in decoder.items():
        setattr(config.decoder, name, value)
    torch.manual_seed(0)
    model = VQVAE(config, speakers=[{**table[name], "id": i} for i, name in enumerate(MODEL_SPEAKERS)])
    data = DataConfig(corpus="vctk", data_root=str(tiny["root"]), cache_dir=str(tiny["cache"]),
                      loader_workers=0, prepare_workers=0, valid_utterances_per_speaker=1)
    save_checkpoint(checkpoint, model, extra={"experiment": ExperimentConfig(model=config, data=data).to_dict()})
    return checkpoint


def test_evaluate_a_model_with_a_source_excitation(tiny, tmp_path):
    """The decoder speaks with the held-out clips' tracked f0, moved to each conversion's target speaker."""
    checkpoint = pitch_model_checkpoint(tiny, tmp_path / "pitch.pt", excitation_harmonics=2)
    out = tmp_path / "pitch.json"
    assert evaluate_command(checkpoint, out) == 0
    report = json.loads(out.read_text())
    assert report["teacher_forced"]["utterances"] == 3 and report["corpus"]["conversions"] == 6
    assert report["reconstruction"]["clips"] == 3 and report["parallel"]["pairs"] == 6


@pytest.mark.slow
def test_evaluate_the_deterministic_part_alone(tiny, tmp_path, capsys):
    """--part deterministic judges the harmonic part alone: no sampling, so any seed gives the same report."""
    checkpoint = pitch_model_checkpoint(tiny, tmp_path / "harmonic.pt", harmonics=4)
    reports = []
    for seed in (0, 1):
        out = tmp_path / f"deterministic{seed}.json"
        assert evaluate_command(checkpoint, out, "--part", "deterministic", "--seed", seed) == 0
        reports.append(json.loads(out.read_text()))
    assert reports[0]["settings"]["part"] == "deterministic"
    assert reports[0]["reconstruction"] == reports[1]["reconstruction"]
    capsys.readouterr()
    assert evaluate_command(tiny["checkpoint"], tmp_path / "none.json", "--part", "deterministic") == 2
    error = capsys.readouterr().err
    assert "needs a model with a harmonic part" in error and len(error.strip().splitlines()) == 1


@pytest.mark.slow
def test_evaluate_the_parts_on_noise_and_a_softer_voiced_noise(tiny, tmp_path, capsys):
    """--part noise judges the parts with white noise in place of the WaveNet's draws (seeded like sampling);
    --voiced-noise generates with another decoder.voiced_noise than the checkpoint's."""
    checkpoint = pitch_model_checkpoint(tiny, tmp_path / "noise.pt", harmonics=4, lpc_order=4, noise_envelope=True)
    reports = []
    for seed, extra in ((0, ()), (1, ()), (0, ("--voiced-noise", "0.5"))):
        out = tmp_path / f"noise{seed}{len(extra)}.json"
        assert evaluate_command(checkpoint, out, "--part", "noise", "--seed", seed, *extra) == 0
        reports.append(json.loads(out.read_text()))
    assert [report["settings"]["part"] for report in reports] == ["noise"] * 3
    assert [report["settings"]["voiced_noise"] for report in reports] == [None, None, 0.5]
    assert reports[0]["reconstruction"] != reports[1]["reconstruction"]  # other noise drawn
    assert reports[0]["reconstruction"] != reports[2]["reconstruction"]  # softer in voiced samples
    summary = (tmp_path / "noise02.md").read_text()  # the summary says how its audio was made
    assert "temperature 1, voiced noise 0.5, the parts on white noise in place of the WaveNet's draws" in summary
    capsys.readouterr()
    assert evaluate_command(tiny["checkpoint"], tmp_path / "none.json", "--part", "noise") == 2
    error = capsys.readouterr().err
    assert "needs a model with a noise envelope" in error and len(error.strip().splitlines()) == 1
    assert evaluate_command(tiny["checkpoint"], tmp_path / "none.json", "--voiced-noise", "0.5") == 2
    error = capsys.readouterr().err
    assert "--voiced-noise" in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "none.json").exists()
