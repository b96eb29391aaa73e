"""The assembled VQ-VAE: shapes, conditioning on given codes, learning, checkpoints and configs."""

import math

import pytest
import torch

from audio_vqvae import VQVAE, ModelConfig, apply_overrides, load_model, save_checkpoint
from audio_vqvae.checkpoint import load_checkpoint
from audio_vqvae.config import ConfigError, EncoderConfig, ExperimentConfig
from audio_vqvae.encoder import Encoder
from audio_vqvae.errors import CheckpointError


def tiny_config(**changes) -> ModelConfig:
    config = ModelConfig.from_dict({
        "num_speakers": 3,
        "encoder": {"hidden_channels": 32, "strides": [2, 2, 2, 2], "residual_layers": 1},
        "quantizer": {"num_codes": 16, "code_dim": 8, "dead_code_steps": 20},
        "decoder": {"stacks": 1, "layers_per_stack": 7, "residual_channels": 24, "gate_channels": 48,
                    "skip_channels": 48, "conditioning_channels": 16, "speaker_dim": 8},
    })
    return apply_overrides(config, [f"{k}={v}" for k, v in changes.items()])


@pytest.mark.parametrize("strides,hop", [((2, 2, 2, 2, 2, 2), 64), ((2, 2, 2, 4, 4), 128), ((2, 4, 5, 8), 320)])
@pytest.mark.parametrize("length", [3200, 3201, 3263])
def test_encoder_output_has_t_over_hop_frames(strides, hop, length):
    encoder = Encoder(EncoderConfig(hidden_channels=8, strides=strides), code_dim=4)
    assert encoder(torch.zeros(2, 1, length)).shape == (2, 4, length // hop)


def test_forward_shapes_and_loss_parts():
    model = VQVAE(tiny_config())
    audio = torch.rand(2, 800) * 2 - 1
    out = model(audio, torch.tensor([0, 2]))
    assert out.logits.shape == (2, 256, 800)
    assert out.codes.shape == (2, 50) and out.codes.dtype == torch.long
    assert torch.allclose(out.loss, out.reconstruction + out.quantizer)
    assert math.isclose(out.bits_per_sample.item(), out.reconstruction.item() / math.log(2), rel_tol=1e-6)
    assert 1 <= out.perplexity.item() <= 16


def test_forward_with_given_codes_conditions_on_them():
    model = VQVAE(tiny_config()).eval()
    audio = torch.rand(1, 320) * 2 - 1
    codes = model.encode(audio)
    assert codes.shape == (1, 20)
    from_audio = model(audio, torch.tensor([1]))
    from_codes = model(audio, torch.tensor([1]), codes=codes)
    assert torch.allclose(from_audio.logits, from_codes.logits, atol=1e-5)
    other = model(audio, torch.tensor([1]), codes=(codes + 1) % 16)
    assert not torch.allclose(other.logits, from_codes.logits)


def test_audio_length_not_multiple_of_hop_is_padded_for_the_decoder():
    model = VQVAE(tiny_config()).eval()
    out = model(torch.rand(1, 330) * 2 - 1, torch.tensor([0]))
    assert out.logits.shape == (1, 256, 330) and out.codes.shape == (1, 20)


def test_bad_audio_shapes_are_rejected_with_a_clear_message():
    model = VQVAE(tiny_config())
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model(torch.zeros(1, 1, 320), torch.tensor([0]))
    with pytest.raises(ValueError, match="hop_length=16"):
        model.encode(torch.zeros(1, 10))


def test_decode_generates_hop_samples_per_code_and_greedy_matches_teacher_forcing():
    model = VQVAE(tiny_config()).eval()
    codes = torch.randint(0, 16, (2, 6))
    speaker = torch.tensor([0, 1])
    audio = model.decode(codes, speaker, temperature=0.0)
    assert audio.shape == (2, 96) and audio.abs().max() <= 1.0
    logits = model(audio, speaker, codes=codes).logits
    from audio_vqvae.mulaw import mu_law_encode
    assert torch.equal(logits.argmax(1), mu_law_encode(audio))


def test_preemphasis_is_exactly_inverted_by_deemphasis():
    from audio_vqvae.emphasis import deemphasis, preemphasis
    audio = torch.randn(3, 500, dtype=torch.float64)
    emphasised = preemphasis(audio, 0.9)
    assert torch.allclose(emphasised[:, 1:], audio[:, 1:] - 0.9 * audio[:, :-1])
    assert torch.equal(emphasised[:, 0], audio[:, 0])
    assert torch.allclose(deemphasis(emphasised, 0.9), audio, atol=1e-12)
    assert preemphasis(audio, 0.0) is audio and deemphasis(audio, 0.0) is audio
    # The point of it: white noise added to the emphasised signal comes out low-passed.
    noise = deemphasis(torch.randn(1, 1 << 14, dtype=torch.float64), 0.9)
    power = torch.fft.rfft(noise).abs().square()[0]
    assert power[-1000:].mean() < 0.01 * power[1:1000].mean()


def test_preemphasis_model_predicts_emphasised_classes_and_generates_plain_audio():
    import torch.nn.functional as F

    from audio_vqvae.emphasis import deemphasis, preemphasis
    from audio_vqvae.generation.engine import generate
    from audio_vqvae.mulaw import mu_law_decode, mu_law_encode
    model = VQVAE(tiny_config(preemphasis=0.9)).eval()
    t = torch.arange(960) / 16000
    audio = (0.5 * torch.sin(2 * math.pi * 200 * t)).unsqueeze(0)
    targets = model.targets(audio)
    assert torch.equal(targets, mu_law_encode(preemphasis(audio, 0.9)))
    out = model(audio, torch.tensor([2]))
    assert torch.allclose(out.reconstruction, F.cross_entropy(out.logits, targets))
    assert (model.waveform(targets) - audio).abs().max() < 0.03  # μ-law error, low-passed
    # decode = the generated classes, de-emphasised.
    codes, speaker = torch.randint(0, 16, (2, 6)), torch.tensor([0, 1])
    generated = model.decode(codes, speaker, temperature=0.0)
    conditioning = model.conditioning(model.quantizer.lookup(codes), 96)
    classes = generate(model.decoder, conditioning, speaker, temperature=0.0).samples
    expected = deemphasis(mu_law_decode(classes), 0.9).clamp(-1, 1)
    assert torch.allclose(generated, expected, atol=1e-6)
    with pytest.raises(ConfigError, match="preemphasis"):
        VQVAE(tiny_config(preemphasis=1.0))


def test_input_noise_perturbs_only_the_decoders_inputs_and_only_while_training():
    import torch.nn.functional as F
    torch.manual_seed(0)
    model = VQVAE(tiny_config(input_noise=3.0, time_jitter=0.0))
    targets = torch.randint(0, 256, (2, 5000))
    difference = (model._noisy_inputs(targets) - targets).float()
    assert 2.8 < difference.std() < 3.2 and abs(difference.mean()) < 0.1
    edges = torch.tensor([[0] * 500 + [255] * 500])
    assert model._noisy_inputs(edges).min() >= 0 and model._noisy_inputs(edges).max() <= 255
    audio = torch.rand(1, 640) * 2 - 1
    out = model(audio, torch.tensor([0]))
    # The loss is against the clean targets, and the logits saw noisy inputs.
    assert torch.allclose(out.reconstruction, F.cross_entropy(out.logits, model.targets(audio)))
    clean = model.decoder(model.targets(audio), model.conditioning(model.quantizer.lookup(out.codes), 640),
                          torch.tensor([0]))
    assert not torch.allclose(out.logits, clean)
    model.eval()
    assert torch.equal(model._noisy_inputs(targets), targets)
    with pytest.raises(ConfigError, match="input_noise"):
        VQVAE(tiny_config(input_noise=-1.0))


@pytest.mark.slow
def test_tiny_model_overfits_one_clip():
    torch.manual_seed(0)
    model = VQVAE(tiny_config(**{"time_jitter": 0.0}))
    t = torch.arange(1600) / 16000
    clip = (0.5 * torch.sin(2 * math.pi * 220 * t) * torch.sin(2 * math.pi * 3 * t)).unsqueeze(0)
    speaker = torch.tensor([1])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for step in range(150):
        out = model(clip, speaker)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        first = first if first is not None else out.reconstruction.item()
    assert first > 4.0  # about ln(256) = 5.5 at the start
    assert out.reconstruction.item() < 0.4 * first
    assert out.codes_used.item() > 1


def test_checkpoint_round_trip_rebuilds_an_identical_model(tmp_path):
    torch.manual_seed(1)
    speakers = [{"id": 0, "name": "p225", "gender": "F"}, {"id": 1, "name": "p226", "gender": "M"},
                {"id": 2, "name": "p227", "gender": "M"}]
    model = VQVAE(tiny_config(**{"quantizer.update": "grad"}), speakers=speakers)
    model.train()
    model(torch.rand(2, 320) * 2 - 1, torch.tensor([0, 1]))  # data init changes the buffers
    model.eval()
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, extra={"step": 7})
    raw = torch.load(path, weights_only=True)
    assert raw["step"] == 7 and raw["speakers"] == speakers and raw["config"] == model.config.to_dict()
    loaded = load_model(path)
    assert loaded.config == model.config and loaded.speakers == speakers and not loaded.training
    audio = torch.rand(1, 480) * 2 - 1
    assert torch.equal(loaded(audio, torch.tensor([2])).logits, model(audio, torch.tensor([2])).logits)
    assert loaded.speaker_id("p226") == 1
    with pytest.raises(KeyError, match="p225, p226, p227"):
        loaded.speaker_id("p999")
    assert not list(tmp_path.glob(".*tmp"))  # nothing half-written left behind


def test_bad_checkpoints_give_one_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt: not a readable"):
        load_model(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not an audio-vqvae checkpoint"):
        load_checkpoint(foreign)


def test_config_round_trips_and_presets():
    for name in ("small", "paper"):
        config = ModelConfig.preset(name)
        assert ModelConfig.from_dict(config.to_dict()) == config
        assert config.hop_length == 64 and config.sample_rate == 16000
    small = ModelConfig.preset("small")
    assert (small.decoder.stacks, small.decoder.layers_per_stack, small.decoder.residual_channels,
            small.decoder.gate_channels, small.decoder.skip_channels) == (2, 10, 64, 128, 128)
    assert small.bitrate == 250 * 8
    experiment = ExperimentConfig.from_dict({"model": small.to_dict(), "train": {"max_steps": 10}})
    assert experiment.train.max_steps == 10 and experiment.model == small


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown key.*num_code"):
        ModelConfig.from_dict({"quantizer": {"num_code": 5}})
    with pytest.raises(ConfigError, match="quantizer.num_codes: expected an integer"):
        apply_overrides(ModelConfig(), ["quantizer.num_codes=many"])
    with pytest.raises(ConfigError, match="expected one of 'ema', 'grad'"):
        apply_overrides(ModelConfig(), ["quantizer.update=kmeans"])
    with pytest.raises(ConfigError, match="unknown model preset 'huge'"):
        ModelConfig.preset("huge")
    with pytest.raises(ConfigError, match="not found"):
        ModelConfig.from_yaml(tmp_path / "nope.yaml")
    assert apply_overrides(ModelConfig(), ["encoder.strides=[2,4,5,8]"]).hop_length == 320


def test_encoder_latents_are_standardised_and_cannot_collapse_to_a_constant():
    encoder = Encoder(EncoderConfig(hidden_channels=16, strides=(2, 2)), code_dim=4).train()
    quiet = torch.randn(3, 1, 400) * 0.01  # quiet speech-like input
    latents = encoder(quiet)
    assert torch.allclose(latents.mean((0, 2)), torch.zeros(4), atol=1e-4)
    assert torch.allclose(latents.var((0, 2), unbiased=False), torch.ones(4), atol=1e-2)
    encoder.eval()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    encoder(quiet)  # eval: running statistics, no buffer changes
    assert all(torch.equal(v, before[k]) for k, v in encoder.state_dict().items())


def test_eval_forward_leaves_every_model_buffer_unchanged():
    model = VQVAE(tiny_config()).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model(torch.rand(2, 320) * 2 - 1, torch.tensor([0, 1]))
    model.encode(torch.rand(1, 320))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
