"""The decoder's noise envelope (decoder.noise_envelope, audio_vqvae.noise): the gain's layout in time, the
target it is trained on, the WaveNet's scaled targets, and the gain in generation's synthesis rows.

The generation guarantees with the option on (greedy = teacher forced, fused = PyTorch, a batch = its
utterances, causality) are tests/test_lpc.py's, parametrised over the decoders that synthesise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_lpc import VARIANTS, lpc_model, pitch_rows

from audio_vqvae.config import ConfigError, ModelConfig, WaveNetConfig
from audio_vqvae.generation.engine import generate
from audio_vqvae.lpc import predict, synthesise
from audio_vqvae.model import VQVAE
from audio_vqvae.mulaw import mu_law_decode, mu_law_encode
from audio_vqvae.noise import FLOOR, HEADROOM, NoiseEnvelope, frame_log_rms, noise_loss, per_sample_gain

HOP = 8  # the tiny model's


def test_the_gain_holds_each_frame_at_its_centre_and_interpolates_the_log_between_centres():
    log_sigma = torch.tensor([[math.log(0.01), math.log(0.04)]])
    gain = per_sample_gain(log_sigma, hop=4, length=10)
    assert gain.dtype == torch.float64 and gain.shape == (1, 10)
    # Centres at samples 1.5 and 5.5: held before the first and after the last (and into the padding).
    assert torch.allclose(gain[0, :2], torch.full((2,), HEADROOM * 0.01, dtype=torch.float64))
    assert torch.allclose(gain[0, 6:], torch.full((4,), HEADROOM * 0.04, dtype=torch.float64))
    # Halfway between the centres the gain is the geometric mean (the log is interpolated).
    halfway = (gain[0, 3] * gain[0, 4]).sqrt()
    assert float(halfway) == pytest.approx(HEADROOM * 0.02)
    assert torch.all(gain[0, 1:] >= gain[0, :-1])


def test_the_target_is_the_log_rms_per_code_frame_floored_for_digital_silence():
    excitation = torch.cat([torch.full((1, 4), 0.1), torch.zeros(1, 4), torch.tensor([[0.3, -0.3, 0.3, -0.3]])], 1)
    target = frame_log_rms(excitation, hop=4, frames=4)  # the 4th frame lies past the end: padded with -0.3
    expected = [math.log(0.1), math.log(FLOOR), math.log(0.3), math.log(0.3)]
    assert target[0].tolist() == pytest.approx(expected, abs=1e-6)
    assert float(noise_loss(target.float(), excitation, hop=4)) == pytest.approx(0.0, abs=1e-10)
    assert float(noise_loss(target.float() + 0.5, excitation, hop=4)) == pytest.approx(0.25, rel=1e-5)


def test_the_part_starts_near_a_speech_level_and_needs_a_synthesis_part():
    part = NoiseEnvelope(code_dim=4, speaker_dim=3)
    log_sigma = part(torch.randn(2, 4, 12), torch.randn(2, 3))
    assert log_sigma.shape == (2, 12) and torch.allclose(log_sigma, torch.full_like(log_sigma, math.log(0.02)),
                                                          atol=0.5)
    with pytest.raises(ConfigError, match="decoder.noise_envelope.*decoder.harmonics or decoder.lpc_order"):
        WaveNetConfig(noise_envelope=True).validate()
    with pytest.raises(ConfigError, match="decoder.noise_weight"):
        WaveNetConfig(lpc_order=4, noise_envelope=True, noise_weight=-1.0).validate()
    paper = ModelConfig.preset("paper")
    paper.num_speakers = 2
    model = VQVAE(paper)
    assert model.decoder.noise is None and not any(name.startswith("decoder.noise") for name in model.state_dict())


def test_the_wavenet_models_the_excitation_divided_by_the_gain_and_the_envelope_learns_its_level():
    model = lpc_model(**VARIANTS["harmonic+lpc+noise"]).train()
    assert model.decoder.parts[-1] is model.decoder.noise
    audio = 0.05 * torch.sin(torch.arange(2 * 480).view(2, 480) * 2 * np.pi * 150 / 8000)
    audio[:, 200:280] = 0.0  # a pause: the envelope's target there is the floor
    speaker, pitch = torch.tensor([0, 2]), pitch_rows(2, 480)
    out = model(audio, speaker, pitch=pitch)
    assert set(out.losses) == {"reconstruction", "quantizer", "harmonic", "envelope", "noise"}
    weights = model.config.decoder
    assert torch.isclose(out.loss, out.reconstruction + out.quantizer + weights.lpc_weight * out.losses["envelope"]
                         + weights.harmonic_weight * out.losses["harmonic"]
                         + weights.noise_weight * out.losses["noise"])
    out.loss.backward()
    assert model.decoder.noise.output.weight.grad.abs().sum() > 0
    # The WaveNet's targets: the classes of what the synthesis parts leave, divided by the gain.
    out = model.eval()(audio, speaker, codes=out.codes, pitch=pitch)
    inputs = model.part_inputs(model.quantizer.lookup(out.codes), speaker, pitch, 480)
    harmonic = model.decoder.harmonic.signal(inputs).double()
    prediction = predict(audio.double() - harmonic, model.decoder.envelope.coefficients(inputs))
    excitation = audio.double() - (prediction + harmonic).clamp(-1, 1)
    gain = model.decoder.noise.gain(inputs)
    assert torch.equal(out.targets, mu_law_encode(excitation / gain, 256))
    log_sigma = model.decoder.noise(inputs.vectors, inputs.speaker)
    assert torch.isclose(out.losses["noise"], noise_loss(log_sigma, excitation, HOP))
    # A few steps on this batch move the predicted level towards the excitation's (the floor in the pause).
    optimizer = torch.optim.Adam(model.decoder.noise.parameters(), lr=0.01)
    model.train()
    first = float(out.losses["noise"].detach())
    for _ in range(30):
        optimizer.zero_grad()
        model(audio, speaker, codes=out.codes, pitch=pitch).losses["noise"].backward()
        optimizer.step()
    assert float(model.eval()(audio, speaker, codes=out.codes, pitch=pitch).losses["noise"]) < 0.5 * first


def test_generation_rows_carry_the_gain_and_scale_the_draws_by_it():
    model = lpc_model(**VARIANTS["harmonic+lpc+noise"])
    codes, speaker, pitch = torch.randint(0, 16, (1, 40)), torch.tensor([1]), pitch_rows(1, 320)
    conditioning, synthesis = model.decoder_inputs(codes, speaker, pitch=pitch)
    inputs = model.part_inputs(model.quantizer.lookup(codes), speaker, pitch, 320)
    assert synthesis.shape == (1, 320, 2 + 6)
    assert torch.equal(synthesis[0, :, 1], model.decoder.noise.gain(inputs)[0])
    assert torch.equal(synthesis[0, :, 0], model.decoder.harmonic.signal(inputs)[0].double())
    # The same draws on a tenth of the gain: at the first sample (nothing fed back yet) the drawn excitation, the
    # signal less the prediction, is a tenth.
    quiet = synthesis.clone()
    quiet[:, :, 1] *= 0.1
    loud = generate(model.decoder, conditioning, speaker, seeds=[5], synthesis=synthesis, method="torch")
    soft = generate(model.decoder, conditioning, speaker, seeds=[5], synthesis=quiet, method="torch")
    assert loud.samples[0, 0] == soft.samples[0, 0]
    first = synthesis[0, 0, 0]  # p at t = 0 is h[0]: no residual history yet
    drawn_loud, drawn_soft = float(loud.signal[0, 0]) - float(first), float(soft.signal[0, 0]) - float(first)
    assert drawn_soft == pytest.approx(0.1 * drawn_loud, rel=1e-4, abs=1e-7)
    # Without the part the gain column is one (an exact multiply: decoders without it are unchanged).
    _, plain = lpc_model(**VARIANTS["harmonic+lpc"]).decoder_inputs(codes, speaker, pitch=pitch)
    assert torch.equal(plain[:, :, 1], torch.ones(1, 320, dtype=torch.float64))


@pytest.mark.parametrize("method", ["torch", "fused"])
def test_synthesis_of_the_drawn_excitation_gives_back_the_generated_signal(method):
    """lpc.synthesise is generation's synthesis: the excitation a WaveNet drew makes the samples it made."""
    model = lpc_model(**VARIANTS["harmonic+lpc+noise"])
    codes, speaker, pitch = torch.randint(0, 16, (2, 40)), torch.tensor([1, 2]), pitch_rows(2, 320)
    conditioning, synthesis = model.decoder_inputs(codes, speaker, pitch=pitch)
    out = generate(model.decoder, conditioning, speaker, seeds=[5, 6], synthesis=synthesis, method=method)
    assert torch.equal(synthesise(synthesis, mu_law_decode(out.samples, 256)), out.signal.float())


@torch.no_grad()
def test_the_parts_on_noise_draw_noise_of_the_predicted_level_through_the_predicted_filter():
    model = lpc_model(**VARIANTS["harmonic+lpc+noise"])
    codes, speaker, pitch = torch.randint(0, 16, (3, 40)), torch.tensor([0, 1, 2]), pitch_rows(3, 320)
    audio = model.parts_on_noise(codes, speaker, pitch, seeds=[5, 6, 7])
    assert audio.shape == (3, 320) and audio.dtype == torch.float32
    # Each utterance is what it is alone, from its own seed; another seed draws other noise.
    for row in range(3):
        alone = model.parts_on_noise(codes[row:row + 1], speaker[row:row + 1], pitch[row:row + 1], [5 + row])
        assert torch.equal(alone[0], audio[row])
    assert not torch.equal(model.parts_on_noise(codes[:1], speaker[:1], pitch[:1], [9])[0], audio[0])
    # Take h and the LPC prediction away: what is left, over the gain, is the drawn noise at the scaled
    # excitation's RMS of 1 / HEADROOM (the noise envelope's sigma once the gain is applied).
    inputs = model.part_inputs(model.quantizer.lookup(codes), speaker, pitch, 320)
    harmonic = model.decoder.harmonic.signal(inputs).double()
    residual = audio.double() - harmonic
    prediction = predict(residual, model.decoder.envelope.coefficients(inputs))
    drawn = (audio.double() - (prediction + harmonic).clamp(-1, 1)) / model.decoder.noise.gain(inputs)
    noise = torch.randn(320, generator=torch.Generator().manual_seed(6), dtype=torch.float64) / HEADROOM
    kept = audio[1].abs() < 1  # generation clamps to [-1, 1]; elsewhere the recovery is exact to float32 rounding
    assert kept.float().mean() > 0.8
    assert torch.allclose(drawn[1][kept], noise[kept], atol=1e-5)
    assert float(drawn[audio.abs() < 1].pow(2).mean().sqrt()) == pytest.approx(1 / HEADROOM, rel=0.1)
    with pytest.raises(ValueError, match="no noise envelope"):
        lpc_model(**VARIANTS["harmonic+lpc"]).parts_on_noise(codes, speaker, pitch, seeds=[5, 6, 7])


def test_voiced_noise_softens_the_gain_of_voiced_samples_when_generating_only():
    model = lpc_model(**VARIANTS["harmonic+lpc+noise"])
    codes, speaker, pitch = torch.randint(0, 16, (1, 40)), torch.tensor([1]), pitch_rows(1, 320)
    _, before = model.decoder_inputs(codes, speaker, pitch=pitch)
    audio = torch.randn(1, 320, generator=torch.Generator().manual_seed(2)) * 0.1
    trained = model(audio, speaker, codes=codes, pitch=pitch)
    model.set_voiced_noise(0.25)
    assert model.config.decoder.voiced_noise == 0.25
    _, after = model.decoder_inputs(codes, speaker, pitch=pitch)
    voicing = pitch[0, 2].double()  # pitch_rows: unvoiced at the start, rising to voiced over the first frame
    assert voicing[0] == 0 and voicing[-1] == 1 and 0 < voicing[40] < 1
    assert after[0, 0, 1] == before[0, 0, 1]
    assert torch.allclose(after[0, :, 1], (1 - 0.75 * voicing) * before[0, :, 1], rtol=1e-12)
    assert torch.equal(after[:, :, [0, *range(2, after.shape[2])]], before[:, :, [0, *range(2, before.shape[2])]])
    # Training does not read it: the same targets and losses.
    again = model(audio, speaker, codes=codes, pitch=pitch)
    assert torch.equal(again.targets, trained.targets)
    assert all(torch.equal(again.losses[name], trained.losses[name]) for name in trained.losses)


def test_voiced_noise_is_checked_like_the_config():
    with pytest.raises(ConfigError, match="voiced_noise must be >= 0 and <= 1"):
        WaveNetConfig(harmonics=4, noise_envelope=True, voiced_noise=1.5).validate()
    with pytest.raises(ConfigError, match="voiced_noise.*needs decoder.noise_envelope"):
        WaveNetConfig(harmonics=4, voiced_noise=0.5).validate()
    with pytest.raises(ConfigError, match="voiced_noise.*needs decoder.harmonics or decoder.excitation_harmonics"):
        WaveNetConfig(lpc_order=4, noise_envelope=True, voiced_noise=0.5).validate()
    WaveNetConfig(harmonics=4, noise_envelope=True, voiced_noise=0.0).validate()
    with pytest.raises(ConfigError, match="needs decoder.noise_envelope"):
        lpc_model(**VARIANTS["harmonic+lpc"]).set_voiced_noise(0.5)
