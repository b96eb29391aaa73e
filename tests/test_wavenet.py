"""The decoder is the WaveNet the paper describes: causal, with the right receptive field, and its
per-layer-queue step (run by the engine's PyTorch path) reproduces the teacher-forced network."""

import pytest
import torch
import torch.nn.functional as F

from audio_vqvae.config import WaveNetConfig
from audio_vqvae.generation import generate
from audio_vqvae.mulaw import mu_law_decode, mu_law_encode
from audio_vqvae.wavenet import WaveNet, ordinal_embedding_

from helpers import TINY, make_net


def test_receptive_field_formula():
    assert TINY.dilations == [1, 2, 4, 8, 1, 2, 4, 8]
    assert TINY.receptive_field == 2 * (1 + 2 + 4 + 8) + 1
    assert WaveNetConfig().receptive_field == 2 * 1023 + 1  # SMALL: 2 x 10 layers


def test_causality_and_measured_receptive_field():
    net = make_net()
    steps, t = 80, 60
    conditioning = torch.randn(1, TINY.conditioning_channels, steps)
    onehot = F.one_hot(torch.randint(0, 256, (1, steps)), 256).float().transpose(1, 2).requires_grad_()
    logits = net(onehot, conditioning, torch.tensor([1]))
    logits[0, :, t].pow(2).sum().backward()
    sensitivity = onehot.grad[0].abs().sum(0)  # (T,)
    # Output t may only see samples < t: the gradient w.r.t. samples t' >= t is exactly zero.
    assert torch.all(sensitivity[t:] == 0)
    seen = torch.nonzero(sensitivity).squeeze(1)
    assert seen.max().item() == t - 1
    assert t - seen.min().item() == TINY.receptive_field  # the receptive field measured by gradients


def test_logits_at_t_do_not_change_when_future_samples_change():
    net = make_net()
    conditioning = torch.randn(2, TINY.conditioning_channels, 50)
    samples = torch.randint(0, 256, (2, 50))
    changed = samples.clone()
    changed[:, 30:] = torch.randint(0, 256, (2, 20))
    speaker = torch.tensor([0, 2])
    a, b = net(samples, conditioning, speaker), net(changed, conditioning, speaker)
    assert torch.equal(a[:, :, :31], b[:, :, :31])  # logits at t <= 30 depend on samples < 31 only
    assert not torch.allclose(a[:, :, 31:], b[:, :, 31:])


@pytest.mark.parametrize("config", [TINY, WaveNetConfig()], ids=["tiny", "small-preset"])
def test_incremental_generation_reproduces_teacher_forced_logits(config):
    net = make_net(config)
    steps = 300 if config is TINY else 120
    conditioning = torch.randn(2, config.conditioning_channels, steps)
    speaker = torch.tensor([2, 0])
    samples = torch.randint(0, 256, (2, steps))
    parallel = net(samples, conditioning, speaker)
    incremental = generate(net, conditioning, speaker, teacher=samples, return_logits=True, method="torch")
    assert (incremental.logits - parallel).abs().max().item() <= 1e-4


def test_greedy_generation_equals_argmax_of_teacher_forced_logits_over_its_own_output():
    net = make_net()
    conditioning = torch.randn(2, TINY.conditioning_channels, 200)
    speaker = torch.tensor([1, 2])
    generated = generate(net, conditioning, speaker, temperature=0.0, method="torch").samples
    parallel = net(generated, conditioning, speaker)
    assert torch.equal(parallel.argmax(1), generated)


def test_sampling_is_reproducible_with_a_generator():
    net = make_net()
    conditioning = torch.randn(1, TINY.conditioning_channels, 100)
    speaker = torch.tensor([0])
    first = generate(net, conditioning, speaker, generator=torch.Generator().manual_seed(3), method="torch").samples
    second = generate(net, conditioning, speaker, generator=torch.Generator().manual_seed(3), method="torch").samples
    assert torch.equal(first, second)
    assert first.unique().numel() > 5


def test_speaker_and_codes_condition_the_output():
    net = make_net()
    conditioning = torch.randn(1, TINY.conditioning_channels, 40)
    samples = torch.randint(0, 256, (1, 40))
    base = net(samples, conditioning, torch.tensor([0]))
    assert not torch.allclose(base, net(samples, conditioning, torch.tensor([1])))
    assert not torch.allclose(base, net(samples, conditioning + 1, torch.tensor([0])))


def test_upsampler_gives_exactly_hop_times_the_frames():
    net = make_net()
    assert net.upsample(torch.randn(2, 4, 7)).shape == (2, TINY.conditioning_channels, 7 * 8)


def test_mu_law_round_trip_within_quantisation_error():
    audio = torch.linspace(-1, 1, 20001)
    classes = mu_law_encode(audio)
    assert classes.min() == 0 and classes.max() == 255
    decoded = mu_law_decode(classes)
    # The error is at most half a quantisation step in the companded domain, mapped back.
    companded = torch.sign(audio) * torch.log1p(255 * audio.abs()) / torch.log1p(torch.tensor(255.0))
    step_size = (torch.expm1((companded.abs() + 1 / 255) * torch.log1p(torch.tensor(255.0))) / 255 - audio.abs())
    assert torch.all((decoded - audio).abs() <= step_size.abs() + 1e-6)
    assert torch.equal(mu_law_encode(mu_law_decode(torch.arange(256))), torch.arange(256))


def test_ordinal_embedding_starts_neighbouring_classes_close():
    torch.manual_seed(0)
    weight = ordinal_embedding_(torch.empty(256, 64))
    assert weight.var().item() == pytest.approx(1.0, abs=0.15)  # the scale of the default N(0, 1) embedding
    distance = lambda a, b: (weight[a] - weight[b]).norm().item()  # noqa: E731
    # Distances grow with the amplitude difference: 128 is nearer to 129 than to 136, nearer to 136 than to 255.
    assert distance(128, 129) < distance(128, 136) < distance(128, 255)
    assert distance(0, 1) < 0.2 * distance(0, 128)
    # The decoder's embedding starts this way (and is still a learned parameter).
    net = WaveNet(TINY, num_speakers=1, code_dim=4, upsample_factors=(2,))
    rows = net.input_embedding.weight
    assert rows.requires_grad and (rows[128] - rows[129]).norm() < (rows[128] - rows[255]).norm()
