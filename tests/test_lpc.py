"""The source-filter decoder (decoder.lpc_order, audio_vqvae.lpc): filter math against known filters, the
model's teacher-forced pass against its generation, and the fused kernels against the PyTorch path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.linalg import solve_toeplitz
from scipy.signal import lfilter

from audio_vqvae.config import ConfigError, ModelConfig, WaveNetConfig
from audio_vqvae.generation.engine import generate
from audio_vqvae.lpc import (
    frame_autocorrelation,
    frame_reflections,
    levinson,
    per_sample,
    predict,
    prediction_coefficients,
    reflections_from,
)
from audio_vqvae.model import VQVAE
from audio_vqvae.mulaw import mu_law_encode

from helpers import tiny_config

RATE = 8000


def test_step_up_recursion_matches_hand_computed_coefficients():
    k = torch.tensor([0.5, -0.25, 0.1], dtype=torch.float64)
    # a(1) = [0.5]; a(2) = [0.5 - 0.25 * 0.5, -0.25]; a(3) = [0.375 + 0.1 * -0.25, -0.25 + 0.1 * 0.375, 0.1]
    expected = -torch.tensor([0.35, -0.2125, 0.1], dtype=torch.float64)
    assert torch.allclose(prediction_coefficients(k), expected, atol=1e-15)


def test_levinson_solves_the_normal_equations_and_round_trips_through_reflections():
    rng = np.random.default_rng(0)
    r = np.correlate(x := rng.standard_normal(400), x, "full")[399:399 + 9]  # a valid autocorrelation
    reflections = levinson(torch.from_numpy(r))
    assert reflections.abs().max() < 1  # a stable filter
    # The prediction coefficients minimise the prediction error: R c = r[1:].
    assert np.allclose(prediction_coefficients(reflections).numpy(), solve_toeplitz(r[:-1], r[1:]), atol=1e-10)


def test_the_analysis_recovers_a_known_all_pole_filter():
    # An AR(2) resonance at 500 Hz (pole radius 0.95) driven by white noise: the frames' estimates scatter
    # around it (a 32 ms window of noise), their median on it.
    radius, angle = 0.95, 2 * np.pi * 500 / RATE
    true = np.array([2 * radius * np.cos(angle), -radius**2])  # s[t] = c1 s[t-1] + c2 s[t-2] + e[t]
    noise = np.random.default_rng(1).standard_normal(64 * 40) * 0.01
    signal = torch.from_numpy(lfilter([1.0], [1.0, -true[0], -true[1]], noise)).unsqueeze(0)
    estimated = prediction_coefficients(frame_reflections(signal, 64, 2, RATE))[0, 4:-4]  # away from the edges
    error = np.abs(estimated.numpy() - true)
    assert np.median(error, axis=0).max() < 0.03 and error.max() < 0.15
    # ... and with the true filter the prediction error is exactly the driving noise.
    coefficients = torch.from_numpy(true).expand(1, signal.shape[1], 2)
    assert torch.allclose(signal[0] - predict(signal, coefficients)[0], torch.from_numpy(noise), atol=1e-12)


def test_frames_are_centred_and_silence_is_not_singular():
    lags = frame_autocorrelation(torch.zeros(1, 256), 64, 4, RATE)
    assert lags.shape == (1, 4, 5) and torch.all(lags[..., 0] > 0)
    assert torch.all(levinson(lags) == 0)
    # A click at the centre of frame 2 weighs most in frame 2's window.
    click = torch.zeros(1, 256)
    click[0, 2 * 64 + 32] = 1.0
    energy = frame_autocorrelation(click, 64, 1, RATE)[0, :, 0]
    assert int(energy.argmax()) == 2


def test_prediction_uses_only_the_past_and_the_frame_coefficients():
    signal = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    coefficients = per_sample(torch.tensor([[[0.5, 0.25], [1.0, -1.0]]], dtype=torch.float64), 2, 4)
    # t=0: nothing before; t=1: 0.5*1; t=2 (frame 1): 1*2 - 1*1; t=3: 1*3 - 1*2
    assert predict(signal, coefficients).tolist() == [[0.0, 0.5, 1.0, 1.0]]


def test_predicted_filters_are_stable():
    assert reflections_from(torch.tensor([1e6, -1e6])).abs().max() < 1  # however large the network's output
    # Seeded: |k| mostly below 0.9, where np.roots is accurate (poles at |k| -> 1 crowd the unit circle).
    raw = torch.randn(500, 12, generator=torch.Generator().manual_seed(0))
    for c in prediction_coefficients(reflections_from(raw).double()).numpy():
        assert np.abs(np.roots(np.concatenate([[1.0], -c]))).max() < 1  # poles of 1 / A(z) inside the unit circle


def lpc_model(order: int = 6, harmonics: int = 0, harmonic_part: int = 0, noise: bool = False, **decoder) -> VQVAE:
    """A tiny decoder that synthesises: an LPC split of ``order`` and/or a harmonic part of ``harmonic_part``
    harmonics (audio_vqvae.harmonic), made loud so that it matters to every sample, and optionally a noise
    envelope (audio_vqvae.noise) whose gain changes with the codes by a factor of about 3; ``decoder``: other
    :class:`WaveNetConfig` fields."""
    config = tiny_config(harmonics, lpc_order=order, harmonics=harmonic_part, noise_envelope=noise, **decoder)
    torch.manual_seed(0)
    model = VQVAE(config).eval()
    with torch.no_grad():
        if order:  # strong envelopes, so that the prediction matters to every sample
            model.decoder.envelope.output.bias.copy_(torch.linspace(1.5, -0.5, order))
        if harmonic_part:  # a loud periodic part
            model.decoder.harmonic.output.bias.copy_(torch.linspace(0.08, -0.04, 2 * harmonic_part))
        if noise:  # gains of about 0.3 to 0.9 that follow the codes
            model.decoder.noise.output.weight.mul_(40.0)
            model.decoder.noise.output.bias.fill_(-3.0)
    return model


# The decoders that synthesise: the LPC split, the harmonic part alone, and both (LPC on the harmonic residual).
VARIANTS = {"lpc": {"order": 6}, "harmonic": {"order": 0, "harmonic_part": 5},
            "harmonic+lpc": {"order": 6, "harmonic_part": 5},
            "harmonic+lpc+noise": {"order": 6, "harmonic_part": 5, "noise": True}}


def pitch_rows(batch: int, length: int, f0: float = 150.0) -> torch.Tensor:
    """Generation pitch rows (phase integrated) of a steady ``f0``, voiced from the second frame on: (B, 3, T)."""
    from audio_vqvae.pitch import generation_pitch

    frames = np.full(length // 80 + 2, f0, np.float32)
    frames[0] = 0.0
    return torch.from_numpy(np.stack([generation_pitch(frames, RATE, length, 80)] * batch))


def test_config_and_the_paper_model():
    with pytest.raises(ConfigError, match="lpc_order"):
        WaveNetConfig(lpc_order=-1).validate()
    with pytest.raises(ConfigError, match="lpc_weight"):
        WaveNetConfig(lpc_weight=float("nan")).validate()
    paper = ModelConfig.preset("paper")
    paper.num_speakers = 2
    model = VQVAE(paper)
    assert model.decoder.envelope is None and model.decoder.prediction_embedding is None and not model.source_filter
    assert not any(name.startswith(("decoder.envelope", "decoder.prediction")) for name in model.state_dict())


def test_training_pass_models_the_excitation_and_trains_the_envelope():
    model = lpc_model().train()
    audio = torch.from_numpy(lfilter([1.0], [1.0, -1.6, 0.8], np.random.default_rng(2).standard_normal((2, 400)))
                             * 0.02).float()
    out = model(audio, torch.tensor([0, 2]))
    assert out.envelope > 0 and torch.isclose(out.loss, out.reconstruction + out.quantizer + out.envelope)
    # The targets are the excitation's classes: not the signal's.
    assert not torch.equal(out.targets, model.targets(audio))
    out.loss.backward()
    assert model.decoder.envelope.output.weight.grad.abs().sum() > 0
    assert sum(float(p.grad.abs().sum()) for p in model.encoder.parameters() if p.grad is not None) > 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_greedy_generation_equals_the_teacher_forced_argmax(variant):
    model = lpc_model(**VARIANTS[variant])
    codes = torch.randint(0, 16, (2, 30))
    speaker = torch.tensor([2, 0])
    pitch = pitch_rows(2, 240) if model.needs_pitch else None
    conditioning, synthesis = model.decoder_inputs(codes, speaker, pitch=pitch)
    greedy = generate(model.decoder, conditioning, speaker, temperature=0, synthesis=synthesis, method="torch")
    teacher_forced = model(greedy.signal, speaker, codes=codes, pitch=pitch)
    assert torch.equal(teacher_forced.logits.argmax(dim=1), greedy.samples)
    # The synthesised signal is the prediction plus the drawn excitation, sample by sample.
    assert torch.equal(teacher_forced.targets, greedy.samples)


@pytest.mark.parametrize("variant", VARIANTS)
def test_teacher_forced_logits_are_causal(variant):
    model = lpc_model(**VARIANTS[variant])
    codes = torch.randint(0, 16, (1, 20))
    audio = torch.rand(1, 160) * 0.2 - 0.1
    changed = audio.clone()
    changed[0, 100:] = 0.05
    pitch = pitch_rows(1, 160) if model.needs_pitch else None
    first = model(audio, torch.tensor([1]), codes=codes, pitch=pitch).logits
    second = model(changed, torch.tensor([1]), codes=codes, pitch=pitch).logits
    assert torch.equal(first[..., :101], second[..., :101])  # sample 100 is only an input from position 101
    assert not torch.allclose(first[..., 101:], second[..., 101:])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("temperature", [1.0, 0.0], ids=["sampled", "greedy"])
def test_fused_equals_torch_and_a_batch_equals_its_utterances(temperature, variant, one_thread):
    model = lpc_model(**VARIANTS[variant])
    codes = torch.randint(0, 16, (3, 90))  # 720 samples: one utterance runs both the two- and one-thread kernels
    speaker = torch.tensor([0, 2, 1])
    pitch = pitch_rows(3, 720) if model.needs_pitch else None
    conditioning, lpc = model.decoder_inputs(codes, speaker, pitch=pitch)
    seeds = [4, 5, 6]
    fused = generate(model.decoder, conditioning, speaker, temperature=temperature, seeds=seeds, synthesis=lpc,
                     method="fused")
    reference = generate(model.decoder, conditioning[:2], speaker[:2], temperature=temperature, seeds=seeds[:2],
                         synthesis=lpc[:2], method="torch")
    assert torch.equal(fused.samples[:2], reference.samples) and torch.equal(fused.signal[:2], reference.signal)
    for b in range(3):
        alone = generate(model.decoder, conditioning[b:b + 1], speaker[b:b + 1], temperature=temperature,
                         seeds=[seeds[b]], synthesis=lpc[b:b + 1], method="fused")
        assert torch.equal(alone.signal[0], fused.signal[b]), f"utterance {b}"
    # Fed its own output as the teacher, generation draws the same excitation again.
    again = generate(model.decoder, conditioning, speaker, temperature=temperature, seeds=seeds, synthesis=lpc,
                     method="fused", teacher=fused.signal)
    assert torch.equal(again.samples, fused.samples)


def test_decode_with_lengths_and_pitch_and_the_bad_calls():
    from audio_vqvae.pitch import generation_pitch

    model = lpc_model(harmonics=2)
    codes = torch.randint(0, 16, (2, 20))  # hop 8: 160 samples
    speaker = torch.tensor([1, 2])
    pitch = torch.from_numpy(np.stack([generation_pitch(np.full(8, 150.0, np.float32), RATE, 80, 80)] * 2))
    pitch = torch.cat([pitch, pitch], dim=2)  # 160 samples
    audio = model.decode(codes, speaker, seeds=[1, 2], pitch=pitch, lengths=[160, 72])
    assert audio.shape == (2, 160) and torch.all(audio[1, 72:] == 0) and audio[1, :72].abs().max() > 0
    # The shorter utterance is what it is alone.
    alone = model.decode(codes[1:, :9], speaker[1:], seeds=[2], pitch=pitch[1:, :, :72], lengths=[72])
    assert torch.equal(alone[0], audio[1, :72])
    with pytest.raises(ValueError, match="lengths"):
        model.decode(codes, speaker, pitch=pitch, lengths=[161, 10])
    conditioning, _ = model.decoder_inputs(codes, speaker, pitch=pitch)
    with pytest.raises(ValueError, match="synthesis rows"):
        generate(model.decoder, conditioning, speaker)
    with pytest.raises(ValueError, match="excitation"):
        model.waveform(mu_law_encode(torch.zeros(2, 160)))
