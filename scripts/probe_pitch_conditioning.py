#!/usr/bin/env python
"""Experiment: does handing the decoder the f0 contour make it learn voiced speech sooner?

    OMP_NUM_THREADS=1 python scripts/probe_pitch_conditioning.py recipes/vctk/train.py --demo --out runs/probe-pitch
    python scripts/probe_pitch_conditioning.py evaluate --checkpoint runs/probe-pitch/checkpoints/step-00002500.pt \\
        --corpus demo --out runs/probe-pitch/eval/report.json

The first argument is a recipe script (run as ``__main__``) or ``evaluate`` (the ``audio-vqvae evaluate``
command); the rest are its arguments. Both run with the model patched so that the decoder's local
conditioning also gets a learned 1x1 projection of per-frame ``[voiced, log2(f0 / 100 Hz) * voiced]``
(YIN f0; voiced where the autocorrelation at the YIN period exceeds 0.6 and the frame is above
-50 dBFS), repeated to the sample rate and added to the upsampled codes. Generation uses the f0 contour
of the clip whose codes it decodes, i.e. the *source's* pitch for conversions.

This is a probe, kept so its measurement (docs/training.md, "The demo") can be repeated; it patches the
model from outside on purpose, so the library keeps the paper's decoder (codes and speaker only).
Checkpoints it writes hold the extra ``pitch_proj`` weights and load only under this script.
"""

from __future__ import annotations

import runpy
import sys

import librosa
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import audio_vqvae.model as model_module

VOICING_CORRELATION = 0.6
SILENCE_RMS = 0.003  # -50 dBFS
WINDOW = 512


def pitch_features(audio: torch.Tensor, hop: int, rate: int) -> torch.Tensor:
    """Tensor[B x T] audio -> Tensor[B x 2 x T // hop]: voiced flag and log2(f0 / 100 Hz) where voiced."""
    rows = []
    for signal in audio.detach().cpu().numpy().astype(np.float32):
        frames = len(signal) // hop
        f0 = librosa.yin(signal, fmin=60, fmax=450, sr=rate, frame_length=WINDOW, hop_length=hop)[:frames]
        padded = np.pad(signal, (WINDOW // 2, WINDOW // 2 + hop))
        features = np.zeros((2, frames), np.float32)
        for i in range(frames):
            piece = padded[i * hop:i * hop + WINDOW]
            lag = int(round(rate / f0[i]))
            early, late = piece[:-lag], piece[lag:]
            correlation = (early @ late) / (np.sqrt((early @ early) * (late @ late)) + 1e-9)
            if correlation > VOICING_CORRELATION and np.sqrt(np.mean(piece ** 2)) > SILENCE_RMS:
                features[:, i] = (1.0, np.log2(f0[i] / 100.0))
        rows.append(features)
    return torch.from_numpy(np.stack(rows))


_original = {name: getattr(model_module.VQVAE, name) for name in ("__init__", "forward", "conditioning",
                                                                   "encode", "decode")}
_last_encoded: dict[str, torch.Tensor] = {}


def _init(self, config, speakers=None):
    _original["__init__"](self, config, speakers)
    self.pitch_proj = nn.Conv1d(2, config.decoder.conditioning_channels, 1)
    self._pitch = None


def _forward(self, audio, speaker, codes=None):
    self._pitch = pitch_features(audio, self.hop_length, self.config.sample_rate).to(audio.device)
    try:
        return _original["forward"](self, audio, speaker, codes)
    finally:
        self._pitch = None


def _conditioning(self, quantized, length):
    conditioning = _original["conditioning"](self, quantized, length)
    if self._pitch is None:
        return conditioning
    pitch = self.pitch_proj(self._pitch).repeat_interleave(self.hop_length, dim=2)
    pitch = F.pad(pitch, (0, max(0, length - pitch.shape[2])), mode="replicate")[:, :, :length]
    return conditioning + pitch


def _encode(self, audio):
    codes = _original["encode"](self, audio)
    _last_encoded["codes"] = codes
    _last_encoded["pitch"] = pitch_features(audio, self.hop_length, self.config.sample_rate)
    return codes


def _decode(self, codes, speaker, *args, **kwargs):
    # evaluate decodes rows of the clips it last encoded: find each row's clip by its codes.
    rows = [int(torch.nonzero((_last_encoded["codes"] == row).all(dim=1))[0]) for row in codes]
    self._pitch = _last_encoded["pitch"][rows].to(codes.device)
    try:
        return _original["decode"](self, codes, speaker, *args, **kwargs)
    finally:
        self._pitch = None


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: probe_pitch_conditioning.py (RECIPE.py | evaluate) [ARGS ...]", file=sys.stderr)
        return 2
    for name, function in (("__init__", _init), ("forward", _forward), ("conditioning", _conditioning),
                           ("encode", _encode), ("decode", _decode)):
        setattr(model_module.VQVAE, name, function)
    target, sys.argv = sys.argv[1], sys.argv[1:]
    if target == "evaluate":
        from audio_vqvae.cli import main as cli_main
        return cli_main(sys.argv)
    runpy.run_path(target, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
