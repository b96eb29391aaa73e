"""f0 tracking, the excitation's phase, the ln-f0 transform, and a decoder with a source excitation."""

import math

import numpy as np
import pytest
import torch

from audio_vqvae.config import ModelConfig
from audio_vqvae.generation.engine import generate
from audio_vqvae.model import VQVAE
from audio_vqvae.pitch import (
    convert_f0,
    excitation,
    generation_pitch,
    log_f0_stats,
    measure_phase,
    sample_pitch,
    shift_f0,
    speaker_log_f0,
    track_pitch,
)

from helpers import tiny_config

RATE = 8000


def harmonic_tone(f0: np.ndarray, rate: int = RATE, harmonics: int = 12, offset: float = 0.7,
                  noise: float = 0.003, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A tone whose f0 follows the per-sample contour ``f0`` (Hz): (audio float32[T], true phase float64[T])."""
    phase = offset + 2 * np.pi * np.concatenate([[0.0], np.cumsum(f0[:-1])]) / rate
    audio = sum(np.cos(k * phase) / k for k in range(1, harmonics + 1) if k * f0.max() < 0.45 * rate)
    audio = 0.1 * audio + noise * np.random.default_rng(seed).standard_normal(len(f0))
    return audio.astype(np.float32), phase


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("base", [85.0, 140.0, 260.0])
def test_tracker_follows_a_known_contour_within_one_percent(rate, base):
    t = np.arange(int(1.5 * rate)) / rate
    contour = base * (1 + 0.1 * np.sin(2 * np.pi * 2.0 * t))  # ±10 % vibrato
    audio, _ = harmonic_tone(contour, rate)
    track = track_pitch(audio, rate)
    truth = contour[np.minimum(np.arange(len(track.f0)) * track.hop_length, len(t) - 1)]
    error = np.abs(track.f0[track.voiced] / truth[track.voiced] - 1)
    assert track.voiced.mean() > 0.9
    assert np.median(error) < 0.01


def test_tracker_calls_noise_unvoiced_and_rejects_bad_audio():
    noise = 0.1 * np.random.default_rng(1).standard_normal(RATE).astype(np.float32)
    assert track_pitch(noise, RATE).voiced.mean() < 0.1
    assert not track_pitch(np.zeros(40, np.float32), RATE).voiced.any()  # shorter than three periods
    with pytest.raises(ValueError):
        track_pitch(np.array([0.0, np.nan]), RATE)


def test_measured_phase_recovers_the_phase_in_the_audio():
    contour = np.full(RATE, 120.0) + np.linspace(0, 30, RATE)
    audio, truth = harmonic_tone(contour, offset=2.1)
    track = track_pitch(audio, RATE)
    measured = measure_phase(audio, track.f0, RATE, track.hop_length)
    centres = np.minimum(np.arange(len(track.f0)) * track.hop_length, RATE - 1)
    error = np.angle(np.exp(1j * (measured - truth[centres])))[track.voiced]
    assert np.median(np.abs(error)) < 0.05


def test_sample_phase_passes_through_the_measured_phases_of_a_crop():
    contour = 110.0 + 20 * np.sin(np.linspace(0, 6, 2 * RATE))
    audio, truth = harmonic_tone(contour)
    track = track_pitch(audio, RATE)
    measured = measure_phase(audio, track.f0, RATE, track.hop_length)
    start, length = 3001, 4096
    rows = sample_pitch(track.f0, RATE, length, track.hop_length, phase=measured, start=start)
    voiced = rows[2] == 1
    error = np.angle(np.exp(1j * (rows[0] - truth[start:start + length])))[voiced]
    assert voiced.mean() > 0.9 and np.percentile(np.abs(error), 95) < 0.1


def test_integrated_phase_is_continuous_across_frames_and_chunks():
    f0 = np.array([100, 100, 150, 0, 0, 200, 220], np.float32)  # frames of 80 samples, unvoiced in the middle
    whole = generation_pitch(f0, RATE, 480, 80)
    # The phase advances by 2π f0 / sr per sample: never a jump, voiced or not.
    steps = np.diff(whole[0].astype(np.float64))
    assert np.allclose(steps, 2 * np.pi * whole[1, :-1] / RATE, atol=1e-4)
    assert whole[2, 0] == 1 and whole[2, 280] == 0 and whole[2, 400] == 1
    # f0 is held through the unvoiced stretch, so the phase keeps its rate there.
    assert np.all(whole[1] > 0)
    # A chunk that starts later continues the same cycle up to a constant phase.
    chunk = generation_pitch(f0, RATE, 200, 80, start=200)
    offset = np.angle(np.exp(1j * (chunk[0] - whole[0, 200:400])))
    assert np.ptp(offset) < 1e-3


def test_log_f0_transform_matches_hand_computed_values():
    source, target = (math.log(100.0), 0.1), (math.log(200.0), 0.2)
    f0 = np.array([0.0, 100.0, 100.0 * math.exp(0.1)], np.float32)
    moved = convert_f0(f0, source, target)
    assert moved[0] == 0  # unvoiced stays unvoiced
    assert moved[1] == pytest.approx(200.0, rel=1e-5)  # the source mean maps to the target mean
    assert moved[2] == pytest.approx(200.0 * math.exp(0.2), rel=1e-5)  # one source std -> one target std
    up = convert_f0(f0, source, target, semitones=12)
    assert up[1] == pytest.approx(400.0, rel=1e-5)
    assert shift_f0(f0, -12)[1] == pytest.approx(50.0, rel=1e-5)
    mean, std = log_f0_stats(np.array([0, 100, 400], np.float32))
    assert mean == pytest.approx(math.log(200.0)) and std == pytest.approx(math.log(2.0))
    assert all(math.isnan(v) for v in log_f0_stats(np.zeros(3)))
    with pytest.raises(ValueError, match="no pitch statistics"):
        speaker_log_f0({"name": "p1"})


def test_excitation_channels_are_masked_harmonics():
    rows = torch.tensor(generation_pitch(np.array([1000, 1000, 0, 0], np.float32), RATE, 240, 80)).unsqueeze(0)
    source = excitation(rows, harmonics=4, sample_rate=RATE)  # 2 x 4 + 2 channels
    assert source.shape == (1, 10, 240)
    voiced = rows[0, 2] == 1
    phase = rows[0, 0].double()
    assert torch.allclose(source[0, 0, voiced].double(), torch.cos(phase[voiced]), atol=1e-5)
    assert torch.allclose(source[0, 5, voiced].double(), torch.sin(2 * phase[voiced]), atol=1e-5)
    # 4 x 1000 Hz lies above 0.45 x 8 kHz: that harmonic is left out rather than aliased.
    assert source[0, 3].abs().max() == 0 and source[0, 7].abs().max() == 0
    assert source[0, :, 200:].abs().max() == 0  # unvoiced: no excitation, no log-f0
    assert torch.allclose(source[0, 9, voiced], torch.full_like(source[0, 9, voiced], math.log2(1000 / 200)))


def excitation_model(harmonics: int = 3) -> VQVAE:
    config = tiny_config(harmonics, num_speakers=2)
    torch.manual_seed(0)
    return VQVAE(config).eval()


def test_paper_model_is_unchanged_by_the_option():
    base = ModelConfig.preset("paper")
    base.num_speakers = 3
    torch.manual_seed(0)
    first = VQVAE(base)
    assert first.decoder.excitation is None and not first.needs_pitch
    torch.manual_seed(0)
    again = VQVAE(ModelConfig.from_dict(base.to_dict()))
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))


def test_excitation_model_needs_pitch_and_uses_it():
    model = excitation_model()
    audio = torch.rand(2, 160) * 2 - 1
    with pytest.raises(ValueError, match="pitch rows"):
        model(audio, torch.tensor([0, 1]))
    pitch = torch.from_numpy(np.stack([generation_pitch(np.full(3, f, np.float32), RATE, 160, 80)
                                       for f in (110.0, 230.0)]))
    with pytest.raises(ValueError, match="shape"):
        model(audio, torch.tensor([0, 1]), pitch=pitch[:, :, :100])
    out = model(audio, torch.tensor([0, 1]), pitch=pitch)
    other = model(audio, torch.tensor([0, 1]), pitch=pitch.flip(0))
    assert not torch.allclose(out.logits, other.logits)  # the pitch reaches the decoder


def test_fused_equals_torch_and_greedy_equals_teacher_forced_with_excitation(one_thread):
    model = excitation_model()
    codes = torch.randint(0, 16, (2, 12))
    length = 12 * model.hop_length
    pitch = torch.from_numpy(np.stack([generation_pitch(np.linspace(90, 180, 14).astype(np.float32), RATE, length, 80),
                                       generation_pitch(np.zeros(14, np.float32), RATE, length, 80)]))
    conditioning = model.conditioning(model.quantizer.lookup(codes), length, pitch)
    speaker = torch.tensor([1, 0])
    fused = generate(model.decoder, conditioning, speaker, seeds=[3, 4], method="fused")
    reference = generate(model.decoder, conditioning, speaker, seeds=[3, 4], method="torch")
    assert torch.equal(fused.samples, reference.samples)
    greedy = generate(model.decoder, conditioning, speaker, temperature=0, method="torch")
    parallel = model.decoder(greedy.samples, conditioning, speaker).argmax(dim=1)
    assert torch.equal(greedy.samples, parallel)
    # decode() is the same generation from codes and pitch rows.
    decoded = model.decode(codes, speaker, generator=torch.Generator().manual_seed(0), pitch=pitch, method="torch")
    assert decoded.shape == (2, length)
    with pytest.raises(ValueError, match="pitch rows"):
        model.decode(codes, speaker)


def test_a_crop_gets_the_rows_of_the_whole_utterance_over_it():
    """Crops of a contour that changes from frame to frame: the same phase as the whole utterance's rows."""
    contour = 100.0 + 60 * np.abs(np.sin(np.linspace(0, 9, 3 * RATE)))
    audio, _ = harmonic_tone(contour)
    track = track_pitch(audio, RATE)
    measured = measure_phase(audio, track.f0, RATE, track.hop_length)
    whole = sample_pitch(track.f0, RATE, len(audio), track.hop_length, phase=measured)
    for start in (0, 1, 79, 1237, 5000, len(audio) - 4096):
        crop = sample_pitch(track.f0, RATE, 4096, track.hop_length, phase=measured, start=start)
        voiced = crop[2] > 0
        difference = np.angle(np.exp(1j * (crop[0].astype(np.float64) - whole[0, start:start + 4096])))
        assert np.abs(difference[voiced]).max() < 1e-3, start
        assert np.array_equal(crop[1:], whole[1:, start:start + 4096])
