"""A loss on what the decoder's parts render together (``decoder.render_weight``), as DDSP and harmonic-plus-noise
vocoders train their parts.

Each frame-rate part has its own loss against its own target: the harmonic part the voiced waveform (and
its log-mel), the LPC split the reflection coefficients of what ``h`` leaves, the noise envelope that
excitation's log RMS. None of them is asked whether the parts *together* make the utterance's spectrum. On
the demo they do not: rendered from their own predictions with white noise in place of the WaveNet (``h``
plus noise of the predicted level through the predicted LPC filter), the phone judge reads 37 % of frames,
where the same rendering from perfect parts reads 81 % and a classifier reads 70 % from the codes
(``scripts/probe_phone_judge.py``, ``scripts/probe_code_phones.py``).

This loss scores exactly that rendering, in expectation, so it needs no sampling: a white excitation of
the predicted RMS ``σ`` through the synthesis filter ``1 / A(z)`` has the power spectrum ``σ² / |A(e^{jω})|²``,
independent of ``h``, so the expected short-time power of the rendering is

    E |STFT(h + u)|²(ω) = |STFT(h)|²(ω) + Σ_n w[n]² · σ² / |A(e^{jω})|²

(``w`` the analysis window, ``σ`` and ``A`` those of the code frame at the STFT frame's centre, interpolated
linearly between code frames). The loss is the mean absolute difference of its log-mel power and the signal's,
over every frame (voiced or not) and the same resolutions and bands as the harmonic part's log-mel loss
(:func:`audio_vqvae.harmonic.spectral_loss`). Its gradient reaches the three part networks (``h``, the
envelope's reflection coefficients, ``log σ``) and through them the codes; the WaveNet still sees their
predictions detached. Without an LPC split ``A = 1`` (white noise); without a harmonic part ``h = 0``.

Example:
    >>> import torch
    >>> raw = torch.zeros(1, 3, 2)                   # reflection coefficients 0: a flat envelope
    >>> noise_power(raw, torch.zeros(1, 3), n_fft=8).shape    # (B, F, T'): σ² / |A|² per bin and code frame
    torch.Size([1, 5, 3])
"""

from __future__ import annotations

from typing import Optional

import torch

from audio_vqvae.harmonic import SPECTRAL_FLOOR, SPECTRAL_WINDOWS, spectral_resolutions, stft_power
from audio_vqvae.lpc import prediction_coefficients, reflections_from

MIN_INVERSE_GAIN = 1e-6  # |A(e^{jω})|² is floored here: a predicted resonance is at most 60 dB above the noise level


def noise_power(raw: Optional[torch.Tensor], log_sigma: torch.Tensor, n_fft: int) -> torch.Tensor:
    """The power spectrum ``σ² / |A(e^{jω})|²`` of white noise of RMS ``σ`` through each code frame's synthesis
    filter: Tensor[B x (n_fft // 2 + 1) x T'].

    Args:
        raw: the envelope network's output u, Tensor[B x T' x M] (reflection coefficients ``tanh u``), or None
            for no filter (``A = 1``).
        log_sigma: Tensor[B x T'], the noise envelope's output.
        n_fft: the DFT size whose bins are returned.
    """
    variance = torch.exp(2 * log_sigma).unsqueeze(1)
    if raw is None:
        return variance.expand(-1, n_fft // 2 + 1, -1)
    c = prediction_coefficients(reflections_from(raw))  # p[t] = Σ c_i s[t − i], so A(z) = 1 − Σ c_i z^-i
    a = torch.cat([torch.ones_like(c[..., :1]), -c], dim=-1)
    inverse_gain = torch.fft.rfft(a, n=n_fft).abs().pow(2).clamp_min(MIN_INVERSE_GAIN)  # (B, T', F)
    return variance / inverse_gain.transpose(1, 2)


def at_frame_centres(values: torch.Tensor, hop: int, stft_hop: int, frames: int) -> torch.Tensor:
    """Tensor[B x C x T'] per code frame -> Tensor[B x C x frames] at the centres ``m · stft_hop`` of a centred
    STFT's frames: code frame j holds at sample ``j · hop + hop / 2``, linear in between, held beyond the ends
    (what :func:`audio_vqvae.parts.frames_to_samples` gives at those samples)."""
    count = values.shape[2]
    position = ((torch.arange(frames, device=values.device, dtype=torch.float64) * stft_hop + 0.5) / hop - 0.5)
    position = position.clamp(0, count - 1)
    low = position.floor().long().clamp(max=count - 1)
    high = (low + 1).clamp(max=count - 1)
    weight = (position - low.double()).to(values.dtype)
    return values[:, :, low] * (1 - weight) + values[:, :, high] * weight


def rendering_loss(harmonic: Optional[torch.Tensor], raw: Optional[torch.Tensor], log_sigma: torch.Tensor,
                   signal: torch.Tensor, hop: int, sample_rate: int) -> torch.Tensor:
    """Mean absolute log-mel difference between the expected rendering and ``signal``, over all frames, averaged
    over the resolutions of :func:`audio_vqvae.harmonic.spectral_resolutions`.

    Args:
        harmonic: Tensor[B x T], the harmonic part's ``h`` (with its gradient), or None.
        raw: Tensor[B x T' x M], the envelope network's output (with its gradient), or None.
        log_sigma: Tensor[B x T'], the noise envelope's output (with its gradient).
        signal: Tensor[B x T], the decoder's signal.
        hop: samples per code frame; sample_rate: Hz.
    """
    signal = signal.to(log_sigma)
    total = log_sigma.new_zeros(())
    for n_fft, stft_hop, window, basis in spectral_resolutions(sample_rate, signal):
        target = stft_power(signal, stft_hop, window)
        rendered = window.pow(2).sum() * at_frame_centres(noise_power(raw, log_sigma, n_fft), hop, stft_hop,
                                                          target.shape[2])
        if harmonic is not None:
            rendered = rendered + stft_power(harmonic.to(signal), stft_hop, window)
        difference = torch.log(basis @ rendered + SPECTRAL_FLOOR) - torch.log(basis @ target + SPECTRAL_FLOOR)
        total = total + difference.abs().mean()
    return total / len(SPECTRAL_WINDOWS)

