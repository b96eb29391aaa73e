"""Probe (2026-12-02): sample voiced frames at a lower temperature than unvoiced ones (LPCNet's idea).

The decoder's sampling noise fills the valleys between the harmonics, which is what the independent
speaker classifier cannot see past (experiments/classifier_noise.py). This probe generates with
temperature ``T_voiced`` where the excitation's voicing is above one half and 1.0 elsewhere, on the
PyTorch per-layer-queue path (``WaveNet.step``, inverse-CDF sampling from the same pre-drawn uniforms as
the library), by standing in for ``VQVAE.decode`` inside ``evaluate``; nothing in the library changes.

    .venv/bin/python experiments/voiced_temperature.py CHECKPOINT T_VOICED OUT.json [SEED]
"""

import sys

import torch

from audio_vqvae.evaluation import evaluate as evaluation
from audio_vqvae.evaluation.evaluate import EvaluationSettings, write_report
from audio_vqvae.generation.engine import draw_uniforms, sample_inverse_cdf, seeds_from
from audio_vqvae.model import VQVAE


def decode_with_voiced_temperature(voiced_temperature: float):
    @torch.no_grad()
    def decode(self, codes, speaker, temperature=1.0, generator=None, progress=None, method="auto", pitch=None):
        length = codes.shape[1] * self.hop_length
        conditioning = self.conditioning(self.quantizer.lookup(codes), length, pitch)
        decoder = self.decoder
        batch = codes.shape[0]
        uniforms = draw_uniforms(seeds_from(generator, batch), length)
        voiced = pitch[:, 2] > 0.5  # (B, T)
        state = decoder.new_state(batch, conditioning.device, conditioning.dtype)
        biases = torch.stack(decoder.layer_biases(conditioning, speaker), dim=0).permute(3, 0, 1, 2).contiguous()
        previous = torch.full((batch,), decoder.silence, dtype=torch.long)
        samples = torch.empty(batch, length, dtype=torch.long)
        for t in range(length):
            logits = decoder.step(state, previous, biases[t])
            plain = sample_inverse_cdf(logits, uniforms[:, t], temperature)
            sharp = sample_inverse_cdf(logits, uniforms[:, t], voiced_temperature)
            previous = samples[:, t] = torch.where(voiced[:, t], sharp, plain)
            if progress is not None and (t + 1) % 4096 == 0:
                progress(t + 1)
        return self.waveform(samples)
    return decode


def main(checkpoint: str, voiced_temperature: float, out: str, seed: int = 0) -> None:
    torch.set_num_threads(2)
    VQVAE.decode = decode_with_voiced_temperature(voiced_temperature)
    result = evaluation.evaluate(checkpoint, corpus="demo", settings=EvaluationSettings(seed=seed), progress=False)
    print(open(write_report(result, out)).read()[:4000])


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), sys.argv[3], *(int(a) for a in sys.argv[4:]))
