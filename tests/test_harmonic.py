"""The decoder's harmonic part (decoder.harmonics, audio_vqvae.harmonic): synthesis against signals of known
harmonics, its loss and training pass, generation in chunks, and checkpoints from before it.

The generation guarantees with the option on (greedy = teacher forced, fused = PyTorch, a batch = its
utterances, causality) are tests/test_lpc.py's, parametrised over the decoders that synthesise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_lpc import VARIANTS, lpc_model, pitch_rows

from audio_vqvae.checkpoint import load_model
from audio_vqvae.config import ConfigError, ModelConfig, WaveNetConfig
from audio_vqvae.excitation import SourceExcitation
from audio_vqvae.generation.engine import generate
from audio_vqvae.harmonic import HarmonicPart, frame_pitch, harmonic_loss, spectral_loss, synthesize
from audio_vqvae.lpc import SourceFilter, predict
from audio_vqvae.model import VQVAE
from audio_vqvae.mulaw import mu_law_encode
from audio_vqvae.pitch import generation_pitch, sample_pitch

RATE = 8000
HOP = 64
FIXTURES = Path(__file__).parent / "fixtures"


def steady_pitch(length: int, f0: float) -> torch.Tensor:
    """Rows (phase, f0, voiced) of a steady, fully voiced f0, phase integrated from 0: (1, 3, T)."""
    frames = np.full(length // 80 + 2, f0, np.float32)
    return torch.from_numpy(generation_pitch(frames, RATE, length, 80)).unsqueeze(0)


def test_constant_amplitudes_give_the_sum_of_harmonics_and_nothing_at_or_above_045_sr():
    length, f0 = 4096, 330.0  # harmonics 11 and up (3630 Hz) lie above 0.45 * 8000 = 3600 Hz
    pitch = steady_pitch(length, f0)
    harmonics = 14
    a = torch.linspace(0.05, 0.01, harmonics)
    b = torch.linspace(-0.02, 0.03, harmonics)
    amplitudes = torch.cat([a, b]).view(1, -1, 1).expand(1, -1, length // HOP)
    h = synthesize(amplitudes, pitch, HOP, RATE)[0].double()
    phase = pitch[0, 0].double()
    k = torch.arange(1, 11, dtype=torch.float64).unsqueeze(1)
    expected = (a[:10].double().unsqueeze(1) * torch.cos(k * phase)
                + b[:10].double().unsqueeze(1) * torch.sin(k * phase)).sum(0)
    assert torch.allclose(h, expected, atol=1e-5)
    spectrum = np.abs(np.fft.rfft(h.numpy() * np.hanning(length)))
    frequencies = np.fft.rfftfreq(length, 1 / RATE)
    assert spectrum[frequencies >= 0.45 * RATE - 40].max() < 1e-4 * spectrum.max()


def test_amplitudes_of_a_known_signal_are_recovered_on_the_measured_phase():
    """x = Σ a_k cos kφ + b_k sin kφ on a gliding f0, with the phase measured in x (as prepare stores it):
    minimising the loss over free per-frame amplitudes finds a_k, b_k, and the residual vanishes."""
    from audio_vqvae.pitch import measure_phase

    length, harmonics = 4096, 6
    f0 = np.linspace(110.0, 140.0, length // 80 + 2).astype(np.float32)
    truth = sample_pitch(f0, RATE, length, 80)  # integrated phase: the signal's own
    a, b = np.array([0.06, 0.03, 0.02, 0.012, 0.008, 0.005]), np.array([0.0, 0.02, -0.01, 0.006, 0.0, -0.004])
    k = np.arange(1, harmonics + 1)[:, None]
    x = (a[:, None] * np.cos(k * truth[0]) + b[:, None] * np.sin(k * truth[0])).sum(0).astype(np.float32)
    measured = sample_pitch(f0, RATE, length, 80, phase=measure_phase(x, f0, RATE, 80))
    pitch = torch.from_numpy(measured).unsqueeze(0)
    amplitudes = torch.zeros(1, 2 * harmonics, length // HOP, requires_grad=True)
    optimizer = torch.optim.LBFGS([amplitudes], max_iter=200, line_search_fn="strong_wolfe")
    signal = torch.from_numpy(x).unsqueeze(0)

    def closure():
        optimizer.zero_grad()
        loss = harmonic_loss(synthesize(amplitudes, pitch, HOP, RATE), signal, pitch[:, 2])
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        loss = float(harmonic_loss(synthesize(amplitudes, pitch, HOP, RATE), signal, pitch[:, 2]))
    assert loss < 1e-3  # > 30 dB SNR
    # The measured phase is the true one up to the tracker's small error: the fundamental's pair is recovered.
    middle = amplitudes.detach()[0, :, 8:-8].mean(dim=1)
    assert abs(float(middle[0]) - a[0]) < 0.005 and abs(float(middle[harmonics])) < 0.01


def test_loss_counts_voiced_samples_only_and_frame_pitch_averages_per_code_frame():
    signal = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    voiced = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    harmonic = torch.tensor([[1.0, 1.0, 100.0, 100.0]])
    assert torch.isclose(harmonic_loss(harmonic, signal, voiced), torch.tensor(1.0 / 5.0))
    pitch = torch.stack([torch.zeros(1, 6), torch.tensor([[200.0, 200.0, 400.0, 400.0, 100.0, 100.0]]),
                         torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0, 0.0]])], dim=1)
    frames = frame_pitch(pitch, hop=2, frames=4)  # the last frame holds the last samples
    assert torch.allclose(frames[0, 0], torch.tensor([1.0, 0.5, 0.0, 0.0]))
    assert torch.allclose(frames[0, 1], torch.tensor([0.0, 0.5, 0.0, 0.0]))


def test_spectral_loss_is_the_log_mel_distance_on_voiced_frames_and_sees_the_upper_harmonics():
    length = 8000
    t = torch.arange(length) / RATE
    voiced = torch.ones(1, length)
    noise = 0.3 * torch.randn(1, length, generator=torch.Generator().manual_seed(0))
    # Every band of white noise is far above the power floor: half the amplitude is log 4 in every band.
    assert abs(float(spectral_loss(0.5 * noise, noise, voiced, RATE)) - np.log(4.0)) < 2e-3
    assert float(spectral_loss(noise, noise, voiced, RATE)) == 0.0

    def voice(scale):  # 31 harmonics of 110 Hz at 0.3 / k, harmonic k scaled by scale(k)
        return sum(0.3 / k * scale(k) * torch.sin(2 * np.pi * 110 * k * t) for k in range(1, 32)).unsqueeze(0)

    x = voice(lambda k: 1.0)
    upper_shrunk, fundamental_shrunk = voice(lambda k: 0.3 if k >= 8 else 1.0), voice(lambda k: 0.7 if k == 1 else 1.0)
    # The waveform error barely sees the weak upper harmonics (the formants above the first); the log-mel one does.
    assert harmonic_loss(upper_shrunk, x, voiced) < harmonic_loss(fundamental_shrunk, x, voiced)
    assert spectral_loss(upper_shrunk, x, voiced, RATE) > 10 * spectral_loss(fundamental_shrunk, x, voiced, RATE)
    # Only mostly voiced frames count: nothing when unvoiced, and h far from the voiced samples does not matter.
    assert float(spectral_loss(noise, x, torch.zeros(1, length), RATE)) == 0.0
    first_quarter = (torch.arange(length) < 2000).float().unsqueeze(0)
    far = torch.arange(length).unsqueeze(0) >= 4000
    loud_elsewhere = torch.where(far, noise, 0.5 * x)
    assert torch.isclose(spectral_loss(loud_elsewhere, x, first_quarter, RATE),
                         spectral_loss(0.5 * x, x, first_quarter, RATE))


def test_the_spectral_loss_is_a_named_weighted_term_of_the_training_loss():
    with pytest.raises(ConfigError, match="harmonic_spectral_weight"):
        WaveNetConfig(harmonic_spectral_weight=-1.0).validate()
    with pytest.raises(ConfigError, match="needs decoder.harmonics"):
        WaveNetConfig(harmonic_spectral_weight=1.0).validate()
    model = lpc_model(**VARIANTS["harmonic"], harmonic_spectral_weight=0.5).train()
    audio = 0.05 * torch.sin(torch.arange(2 * 1280).view(2, 1280) * 2 * np.pi * 150 / RATE)
    out = model(audio, torch.tensor([0, 2]), pitch=pitch_rows(2, 1280))
    assert set(out.losses) == {"reconstruction", "quantizer", "harmonic", "harmonic_spectral"}
    assert float(out.losses["harmonic_spectral"].detach()) > 0
    weights = model.config.decoder
    assert torch.isclose(out.loss, out.reconstruction + out.quantizer + weights.harmonic_weight * out.losses["harmonic"]
                         + 0.5 * out.losses["harmonic_spectral"])
    out.losses["harmonic_spectral"].backward()
    assert model.decoder.harmonic.output.weight.grad.abs().sum() > 0


def test_config_and_the_paper_model_have_no_harmonic_part():
    with pytest.raises(ConfigError, match="decoder.harmonics"):
        WaveNetConfig(harmonics=-1).validate()
    with pytest.raises(ConfigError, match="harmonic_weight"):
        WaveNetConfig(harmonic_weight=-1.0).validate()
    paper = ModelConfig.preset("paper")
    paper.num_speakers = 2
    model = VQVAE(paper)
    assert model.decoder.harmonic is None and not model.synthesises
    assert not any(name.startswith("decoder.harmonic") for name in model.state_dict())


def test_the_decoder_parts_are_listed_in_order_and_say_what_they_read():
    both = lpc_model(order=6, harmonics=3, harmonic_part=5)
    assert [type(part) for part in both.decoder.parts] == [SourceExcitation, HarmonicPart, SourceFilter]
    assert [part.loss_name for part in both.decoder.synthesis_parts] == ["harmonic", "envelope"]
    assert both.needs_pitch and both.synthesises
    lpc_only = lpc_model(order=6)  # the LPC split reads no f0
    assert [type(part) for part in lpc_only.decoder.parts] == [SourceFilter] and not lpc_only.needs_pitch
    paper = ModelConfig.preset("paper")
    paper.num_speakers = 2
    plain = VQVAE(paper)
    assert plain.decoder.parts == [] and not plain.needs_pitch and not plain.synthesises


def test_training_pass_models_the_residual_and_returns_named_losses():
    model = lpc_model(**VARIANTS["harmonic+lpc"]).train()
    audio = 0.05 * torch.sin(torch.arange(2 * 480).view(2, 480) * 2 * np.pi * 150 / RATE)
    pitch = pitch_rows(2, 480)
    out = model(audio, torch.tensor([0, 2]), pitch=pitch)
    assert set(out.losses) == {"reconstruction", "quantizer", "harmonic", "envelope"}
    weights = model.config.decoder
    assert torch.isclose(out.loss, out.reconstruction + out.quantizer + weights.lpc_weight * out.losses["envelope"]
                         + weights.harmonic_weight * out.losses["harmonic"])
    assert out.predictions["harmonic"].shape == (2, 480) and out.predictions["harmonic"].abs().max() > 0
    out.loss.backward()
    assert model.decoder.harmonic.output.weight.grad.abs().sum() > 0
    assert sum(float(p.grad.abs().sum()) for p in model.encoder.parameters() if p.grad is not None) > 0
    with pytest.raises(ValueError, match="pitch rows"):
        model(audio, torch.tensor([0, 2]))
    # The synthesis parts in order: h from the signal, then the LPC prediction from what h leaves, s − h; the
    # WaveNet's targets are the classes of what both leave.
    out = model.eval()(audio, torch.tensor([0, 2]), codes=out.codes, pitch=pitch)
    harmonic, prediction = out.predictions["harmonic"], out.predictions["envelope"]
    inputs = model.part_inputs(model.quantizer.lookup(out.codes), torch.tensor([0, 2]), pitch, 480)
    assert torch.equal(harmonic, model.decoder.harmonic.signal(inputs).double())
    assert torch.equal(prediction, predict(audio.double() - harmonic, model.decoder.envelope.coefficients(inputs)))
    assert torch.equal(out.targets, mu_law_encode(audio.double() - (prediction + harmonic).clamp(-1, 1), 256))


def test_generation_in_chunks_keeps_the_phase_and_the_deterministic_part_is_h():
    model = lpc_model(**VARIANTS["harmonic"])
    codes = torch.randint(0, 16, (1, 90))
    speaker = torch.tensor([1])
    pitch = pitch_rows(1, 720)
    conditioning, synthesis = model.decoder_inputs(codes, speaker, pitch=pitch)
    whole = generate(model.decoder, conditioning, speaker, seeds=[7], synthesis=synthesis, method="fused")
    for method in ("fused", "torch"):
        chunked = generate(model.decoder, conditioning, speaker, seeds=[7], synthesis=synthesis, method=method,
                           chunk_steps=100)
        assert torch.equal(chunked.signal, whole.signal), method
    h = model.deterministic(codes, speaker, pitch)
    # The same float32 network on the same inputs, but a separate call: with one OpenMP thread, after a fused
    # generation, the convolutions may round differently in the last bit.
    assert torch.allclose(h[0].double(), synthesis[0, :, 0].clamp(-1, 1).float().double(), rtol=0.0, atol=1e-6)
    with pytest.raises(ValueError, match="no harmonic part"):
        lpc_model(**VARIANTS["lpc"]).deterministic(codes, speaker, pitch)


def test_a_checkpoint_from_before_the_harmonic_part_loads_and_generates_the_same_samples():
    """tests/fixtures/old_lpc_model.ckpt and its samples were written by the library at commit 183029f, with torch
    on 2 threads: the conditioning's convolutions round differently on 1 (by ~1e-8), so the test runs on 2."""
    model = load_model(FIXTURES / "old_lpc_model.ckpt")
    expected = np.load(FIXTURES / "old_lpc_model_samples.npz")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        audio = model.decode(torch.from_numpy(expected["codes"]), torch.tensor([0, 1]), seeds=[3, 4],
                             pitch=torch.from_numpy(expected["pitch"]), method="torch")
        fused = model.decode(torch.from_numpy(expected["codes"]), torch.tensor([0, 1]), seeds=[3, 4],
                             pitch=torch.from_numpy(expected["pitch"]), method="fused")
    finally:
        torch.set_num_threads(threads)
    assert model.decoder.harmonic is None
    assert np.array_equal(audio.numpy(), expected["audio"])
    assert np.array_equal(fused.numpy(), expected["audio"])
