#!/usr/bin/env python
"""Experiment (issue 18, lever a): the vocoder ceiling of the demo's decoder at the demo's budget.

The same decoder as the demo (WaveNet, source excitation, LPC split) conditioned on the *true* log-mel
spectrogram of the clip instead of learned codes: if this model is not voiced and not clean after
``make demo``'s 10,000 steps either, the WaveNet and its budget limit the demo, not the codes.

    .venv/bin/python -m audio_vqvae.training.launch --processes 2 experiments/mel_ceiling.py \\
        recipes/vctk/train.py --demo --out runs/vctk-mel quantizer.kind=frames quantizer.num_codes=400000
    .venv/bin/python experiments/mel_ceiling.py evaluate --checkpoint runs/vctk-mel/checkpoints/step-00010000.pt \\
        --corpus demo --out runs/vctk-mel/eval/seed0.json --seed 0

The first argument is a recipe script (run as ``__main__``, so that the launcher can run it as DDP
processes) or ``evaluate`` (the ``audio-vqvae evaluate`` command); the rest are its arguments. Under
this script:

* the model's encoder is :class:`MelFrontEnd`: a fixed log-mel spectrogram (32 ms Hann window, 80 bands
  up to Nyquist, one frame per hop, centred on the hop like the encoder's frames), standardised per band
  and projected by a learned 1x1 convolution to the code dimension, so the upsampler, excitation, envelope
  network and WaveNet are the demo's, unchanged;
* ``quantizer.kind=frames`` is :class:`FrameTable`: no quantization in training (the projected mel goes to
  the decoder as it is, no quantizer loss); ``encode`` stores each frame in a ring of ``num_codes`` rows
  and returns row indices as "codes", which ``lookup`` reads back, so ``evaluate``, conversion and the
  training's audio rounds decode the true mel of their clip. ``num_codes`` must exceed the frames encoded
  between an ``encode`` and its ``decode`` (400,000 frames: 53 minutes at 125 frames/s).

Conversions here keep the source's mel (which carries the source speaker's formants) and swap only the
speaker embedding, so they are not a conversion ceiling; the code-unit figures of ``evaluate`` (phone
accuracy, ABX) describe the mel itself (a frame index is not a unit). Checkpoints load only under this script.
"""

from __future__ import annotations

import runpy
import sys

import torch
import torch.nn.functional as F
from torch import nn
from torchaudio.functional import melscale_fbanks  # pure Python: no numba before the generation engine sets it up

import audio_vqvae.model as model_module
from audio_vqvae.encoder import Standardize
from audio_vqvae.quantizer import QuantizerOutput, register_quantizer

MEL_BANDS = 80
WINDOW_SECONDS = 0.032


class MelFrontEnd(nn.Module):
    """Tensor[B x 1 x T] audio -> Tensor[B x code_dim x T // hop]: standardised log-mel, linearly projected.

    Frame ``t`` is the spectrum of a window centred on samples ``[t * hop, (t + 1) * hop)``.
    """

    def __init__(self, sample_rate: int, hop_length: int, code_dim: int):
        super().__init__()
        self.hop_length = hop_length
        self.n_fft = 1 << max(int(round(WINDOW_SECONDS * sample_rate)) - 1, 1).bit_length()
        # Slaney-style bands (librosa's default filterbank, to 1e-7), from 0 Hz to Nyquist.
        bank = melscale_fbanks(self.n_fft // 2 + 1, 0.0, sample_rate / 2, MEL_BANDS, sample_rate,
                               norm="slaney", mel_scale="slaney").t()
        self.register_buffer("bank", bank.float().contiguous(), persistent=False)
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        self.norm = Standardize(MEL_BANDS)
        self.project = nn.Conv1d(MEL_BANDS, code_dim, kernel_size=1)

    def log_mel(self, audio: torch.Tensor) -> torch.Tensor:
        """Tensor[B x 1 x T] -> Tensor[B x bands x T // hop] natural-log mel power (floor 1e-5)."""
        frames = audio.shape[-1] // self.hop_length
        left = self.n_fft // 2 - self.hop_length // 2
        signal = F.pad(audio.float()[:, 0], (left, self.n_fft))
        spectrum = torch.stft(signal, self.n_fft, hop_length=self.hop_length, window=self.window,
                              center=False, return_complex=True)[:, :, :frames]
        return torch.log(torch.clamp(self.bank @ spectrum.abs().pow(2), min=1e-5))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.dim() != 3 or audio.shape[1] != 1 or audio.shape[-1] < self.hop_length:
            raise ValueError(f"MelFrontEnd expects audio (B, 1, T >= {self.hop_length}), got {tuple(audio.shape)}")
        with torch.no_grad():
            features = self.log_mel(audio)
        return self.project(self.norm(features))


@register_quantizer("frames")
class FrameTable(nn.Module):
    """No quantization: training passes the latents through; ``encode``/``lookup`` round-trip frames by index."""

    def __init__(self, num_codes: int, code_dim: int):
        super().__init__()
        self.num_codes, self.code_dim = num_codes, code_dim
        self._table = None
        self._next = 0

    @classmethod
    def from_config(cls, config) -> "FrameTable":
        return cls(config.num_codes, config.code_dim)

    def forward(self, latents: torch.Tensor) -> QuantizerOutput:
        zero, one = latents.new_zeros(()).float(), torch.ones((), dtype=torch.long)
        codes = torch.zeros(latents.shape[0], latents.shape[2], dtype=torch.long, device=latents.device)
        return QuantizerOutput(quantized=latents, codes=codes, loss=zero, commitment_loss=zero,
                               codebook_loss=zero, perplexity=zero + 1, codes_used=one)

    @torch.no_grad()
    def encode(self, latents: torch.Tensor) -> torch.Tensor:
        batch, dim, frames = latents.shape
        flat = latents.transpose(1, 2).reshape(-1, dim).float()
        if flat.shape[0] > self.num_codes:
            raise ValueError(f"FrameTable holds {self.num_codes} frames, {flat.shape[0]} were encoded at once")
        if self._table is None:
            self._table = flat.new_zeros(self.num_codes, dim)
        rows = (self._next + torch.arange(flat.shape[0], device=flat.device)) % self.num_codes
        self._table[rows] = flat
        self._next = (self._next + flat.shape[0]) % self.num_codes
        return rows.view(batch, frames)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        if self._table is None:
            raise ValueError("FrameTable.lookup before any encode: a mel-conditioned model decodes encoded audio only")
        return F.embedding(codes, self._table).transpose(1, 2)


_original_init = model_module.VQVAE.__init__


def _init(self, config, speakers=None):
    _original_init(self, config, speakers)
    self.encoder = MelFrontEnd(config.sample_rate, config.hop_length, config.quantizer.code_dim)


model_module.VQVAE.__init__ = _init


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    target, sys.argv = sys.argv[1], sys.argv[1:]
    if target == "evaluate":
        from audio_vqvae.commands.main import main as cli

        raise SystemExit(cli(["evaluate", *sys.argv[1:]]))
    runpy.run_path(target, run_name="__main__")


if __name__ == "__main__":
    main()
