"""The rendering loss (decoder.render_weight, audio_vqvae.rendering): the expected spectrum of the parts' rendering
with white noise against real noise through the same filter, its frame layout, what it prefers, and its place in
the training loss."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch
from test_lpc import RATE, VARIANTS, lpc_model, pitch_rows

from audio_vqvae.config import ConfigError, WaveNetConfig
from audio_vqvae.harmonic import mel_basis
from audio_vqvae.lpc import prediction_coefficients, reflections_from
from audio_vqvae.parts import frames_to_samples
from audio_vqvae.rendering import at_frame_centres, noise_power, rendering_loss

RAW = torch.tensor([1.2, -0.6, 0.4, -0.2])  # atanh of a 4th-order envelope with a clear resonance


def filtered_noise(raw: torch.Tensor, sigma: float, batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """White noise of RMS ``sigma`` through the synthesis filter 1 / A(z) of reflection coefficients tanh(raw)."""
    c = prediction_coefficients(reflections_from(raw.double())).numpy()
    white = np.random.default_rng(seed).standard_normal((batch, length)) * sigma
    return torch.from_numpy(scipy.signal.lfilter([1.0], np.concatenate([[1.0], -c]), white, axis=1)).float()


def test_the_expected_power_is_that_of_real_noise_through_the_filter():
    n_fft, hop, frames, sigma = 256, 8, 64, 0.05
    raw = RAW.expand(1, frames, -1)
    expected = noise_power(raw, torch.full((1, frames), float(np.log(sigma))), n_fft)[0, :, 0]  # every frame's
    noise = filtered_noise(RAW, sigma, batch=400, length=frames * hop)
    window = torch.hann_window(n_fft)
    measured = (torch.stft(noise, n_fft, n_fft // 4, window=window, center=False, return_complex=True).abs() ** 2)
    measured = measured.mean(dim=(0, 2)) / window.pow(2).sum()  # per bin, averaged over realisations and frames
    basis = mel_basis(RATE, n_fft)
    ratio = (basis @ measured) / (basis @ expected)
    # Every mel band within a few per cent, but for the window's leakage: the expectation samples the filter's
    # response at the bin, so where the response falls steeply (near its peak at the top band) real noise's STFT is
    # about 20 % above it.
    assert torch.all((ratio[:-3] > 0.93) & (ratio[:-3] < 1.07)), ratio
    assert torch.all((ratio > 0.8) & (ratio < 1.25)), ratio
    assert float((basis @ expected).max() / (basis @ expected).min()) > 20  # and the envelope is far from flat (15 dB)
    # No filter: white noise of power σ² in every bin.
    flat = noise_power(None, torch.full((2, 3), float(np.log(sigma))), n_fft)
    assert flat.shape == (2, n_fft // 2 + 1, 3) and torch.allclose(flat, torch.full_like(flat, sigma ** 2))


def test_stft_frames_read_the_code_frames_as_generation_interpolates_them():
    values = torch.randn(2, 3, 7)
    hop, stft_hop, length = 8, 12, 56
    frames = length // stft_hop + 1
    per_sample = frames_to_samples(values, hop, length)
    centres = torch.arange(frames) * stft_hop
    inside = centres < length
    got = at_frame_centres(values, hop, stft_hop, frames)
    assert torch.allclose(got[:, :, inside], per_sample[:, :, centres[inside]], atol=1e-6)
    assert torch.allclose(got[:, :, ~inside], values[:, :, -1:].expand(-1, -1, int((~inside).sum())))  # held on


def test_the_loss_is_least_for_the_parts_that_render_the_signal():
    frames, hop, sigma = 64, 64, 0.02
    length = frames * hop
    t = torch.arange(length) / RATE
    h = 0.3 * torch.sin(2 * np.pi * 150 * t) + 0.1 * torch.sin(2 * np.pi * 300 * t)
    signal = h + filtered_noise(RAW, sigma, batch=1, length=length)[0]
    raw = RAW.expand(1, frames, -1)

    def loss(harmonic, envelope, log_sigma):
        return float(rendering_loss(harmonic, envelope, torch.full((1, frames), log_sigma), signal[None], hop, RATE))

    truth = loss(h[None], raw, float(np.log(sigma)))
    for scale in (0.5, 0.7, 1.25, 2.0):  # the noise's level
        assert truth < loss(h[None], raw, float(np.log(scale * sigma))), scale
    # An L1 distance of log powers is least at the median of one noise draw's log power, a little below the log of
    # its mean: the best level lies about 10 % below the noise's RMS, not further.
    best = min((0.8, 0.9, 1.0), key=lambda scale: loss(h[None], raw, float(np.log(scale * sigma))))
    assert best in (0.9, 1.0)
    assert truth < loss(h[None], None, float(np.log(sigma)))  # white noise instead of the envelope
    assert truth < loss(h[None], torch.zeros(1, frames, 4), float(np.log(sigma)))
    assert truth < loss(0.5 * h[None], raw, float(np.log(sigma)))
    assert truth < loss(None, raw, float(np.log(sigma)))


def test_the_loss_is_a_named_weighted_term_that_trains_every_part_network_and_not_the_wavenet():
    with pytest.raises(ConfigError, match="render_weight.*needs decoder.noise_envelope"):
        WaveNetConfig(lpc_order=4, render_weight=1.0).validate()
    with pytest.raises(ConfigError, match="decoder.render_weight"):
        WaveNetConfig(lpc_order=4, noise_envelope=True, render_weight=-1.0).validate()
    audio = 0.05 * torch.sin(torch.arange(2 * 1280).view(2, 1280) * 2 * np.pi * 150 / RATE)
    audio = audio + 0.01 * torch.randn(2, 1280, generator=torch.Generator().manual_seed(0))
    speakers, pitch = torch.tensor([0, 2]), pitch_rows(2, 1280)
    without = lpc_model(**VARIANTS["harmonic+lpc+noise"]).train()
    torch.manual_seed(1)
    reference = without(audio, speakers, pitch=pitch)
    assert "render" not in reference.losses
    model = lpc_model(**VARIANTS["harmonic+lpc+noise"], render_weight=0.5).train()
    assert model.state_dict().keys() == without.state_dict().keys()  # a loss, not a network
    torch.manual_seed(1)
    out = model(audio, speakers, pitch=pitch)
    assert set(out.losses) == set(reference.losses) | {"render"} and float(out.losses["render"].detach()) > 0
    for name, value in reference.losses.items():  # the other terms are untouched
        assert torch.equal(out.losses[name], value), name
    assert torch.isclose(out.loss, reference.loss + 0.5 * out.losses["render"])
    out.losses["render"].backward()
    decoder = model.decoder
    for part in (decoder.harmonic, decoder.envelope, decoder.noise):
        assert part.output.weight.grad.abs().sum() > 0, type(part).__name__
    assert any(p.grad is not None and p.grad.any() for p in model.encoder.parameters())  # through the codes
    assert all(p.grad is None or not p.grad.any() for p in decoder.layers.parameters())  # the WaveNet: no gradient
