"""Probe: how loud the WaveNet draws the excitation, against the noise envelope's level and the truth.

With a noise envelope the WaveNet's targets are the excitation over the gain ``g = HEADROOM · σ``, so a
scaled excitation whose RMS is ``1 / HEADROOM`` in a frame sits exactly at the level the envelope predicts
(0 dB here). For the held-out utterances (own speaker, the f0 phase measured in the audio, the first
``--seconds``), per code frame, this prints the level relative to σ of

* ``true``: the real excitation the WaveNet is trained on (the teacher-forced targets);
* ``drawn``: the excitation the WaveNet draws generating the reconstruction at ``--temperature``;
* ``white``: ``evaluate --part noise``, white noise at σ, is 0 dB by construction;

in voiced frames, unvoiced speech frames and pauses (frames more than 40 dB below the utterance's loudest):
medians and quartiles in dB; then the mean power of each in four equal bands (white noise at σ: 0 dB in
each). A WaveNet that draws below the truth in unvoiced frames loses fricatives and
bursts; one that draws above it in voiced frames buries the harmonics.

    .venv/bin/python scripts/probe_drawn_excitation.py runs/X/checkpoints/step-00010000.pt data/cache/demo-<hash>
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from audio_vqvae.checkpoint import load_model
from audio_vqvae.data import PreparedCorpus
from audio_vqvae.generation.engine import generate
from audio_vqvae.mulaw import mu_law_decode
from audio_vqvae.noise import HEADROOM

PAUSE_DB = 40.0  # frames this far below the utterance's loudest are pauses (the evaluate figure's threshold)
BANDS = 4  # equal bands from 0 to sr/2 for the spectra


def frame_band_power(signal: np.ndarray, hop: int) -> np.ndarray:
    """float64[frames x BANDS]: each code frame's power spectrum (Hann window) averaged over equal bands, scaled so
    that white noise of RMS 1 has 1 in every band."""
    frames = len(signal) // hop
    window = np.hanning(hop)
    power = np.abs(np.fft.rfft(signal[:frames * hop].reshape(frames, hop) * window, axis=1)) ** 2
    power = power[:, 1:hop // 2] / np.sum(window ** 2)  # no DC or Nyquist bin: one-sided bins of white noise
    return np.stack([band.mean(axis=1) for band in np.array_split(power, BANDS, axis=1)], axis=1)


def frame_rms(signal: np.ndarray, hop: int) -> np.ndarray:
    frames = len(signal) // hop
    return np.sqrt(np.mean(signal[:frames * hop].reshape(frames, hop) ** 2, axis=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="a model with a noise envelope (decoder.noise_envelope)")
    parser.add_argument("cache", help="its prepared corpus' cache folder")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = load_model(args.checkpoint).eval()
    if model.decoder.noise is None:
        parser.error(f"{args.checkpoint}: the model has no noise envelope (decoder.noise_envelope)")
    corpus = PreparedCorpus.open(args.cache)
    names = [entry["name"] for entry in model.speakers]
    hop, classes = model.hop_length, model.decoder.config.quantization_channels
    valid = corpus.split("valid")
    levels: dict[str, dict[str, list[float]]] = {kind: {"true": [], "drawn": []} for kind in ("voiced", "unvoiced",
                                                                                                "pause")}
    spectra: dict[str, dict[str, list[np.ndarray]]] = {kind: {"true": [], "drawn": []} for kind in levels}
    for position, index in enumerate(valid.indices.tolist()):
        x = corpus.samples(index).astype(np.float32)
        length = min(len(x), int(args.seconds * corpus.sample_rate)) // hop * hop
        audio = torch.from_numpy(x[:length])[None]
        rows = torch.from_numpy(valid.pitch_rows(position, 0, length).astype(np.float32))[None]
        speaker = torch.tensor([names.index(corpus.speakers[int(valid.speaker_ids[position])]["name"])])
        with torch.no_grad():
            out = model(audio, speaker, pitch=rows)
            conditioning, synthesis = model.decoder_inputs(out.codes, speaker, pitch=rows)
            drawn = generate(model.decoder, conditioning, speaker, temperature=args.temperature,
                             seeds=[args.seed + position], synthesis=synthesis).samples
        true_excitation = mu_law_decode(out.targets[0], classes).double().numpy() * HEADROOM
        drawn_excitation = mu_law_decode(drawn[0], classes).double().numpy() * HEADROOM
        true_level, drawn_level = frame_rms(true_excitation, hop), frame_rms(drawn_excitation, hop)
        loudness = 20 * np.log10(frame_rms(x[:length].astype(np.float64), hop) + 1e-12)
        voiced = frame_rms(rows[0, 2].double().numpy(), hop) > 0.5 ** 0.5  # mostly voiced frames
        pause = loudness < loudness.max() - PAUSE_DB
        kinds = {"voiced": voiced & ~pause, "unvoiced": ~voiced & ~pause, "pause": pause}
        for kind, chosen in kinds.items():
            levels[kind]["true"].extend(20 * np.log10(true_level[chosen] + 1e-9))
            levels[kind]["drawn"].extend(20 * np.log10(drawn_level[chosen] + 1e-9))
            spectra[kind]["true"].append(frame_band_power(true_excitation, hop)[chosen])
            spectra[kind]["drawn"].append(frame_band_power(drawn_excitation, hop)[chosen])
    print(f"{args.checkpoint}: {len(valid)} held-out utterances, first {args.seconds:g} s, reconstructions at "
          f"temperature {args.temperature:g}, seed {args.seed}")
    print("level of the scaled excitation per code frame against the noise envelope's sigma (0 dB = sigma; "
          "white noise at sigma, evaluate --part noise, is 0 dB)")
    print(f"{'frames':10s} {'count':>6s}  {'true: median [quartiles]':>28s}  {'drawn: median [quartiles]':>28s}  "
          f"{'drawn - true':>13s}")
    for kind, values in levels.items():
        true, drawn = np.array(values["true"]), np.array(values["drawn"])
        if not len(true):
            continue
        quartiles = [f"{np.median(v):6.1f} [{np.percentile(v, 25):6.1f}, {np.percentile(v, 75):6.1f}] dB"
                     for v in (true, drawn)]
        print(f"{kind:10s} {len(true):6d}  {quartiles[0]:>28s}  {quartiles[1]:>28s}  "
              f"{np.median(drawn - true):10.1f} dB")
    rate = corpus.sample_rate
    edges = [f"{rate / 2 * b / BANDS / 1000:g}-{rate / 2 * (b + 1) / BANDS / 1000:g} kHz" for b in range(BANDS)]
    print("mean power per band of the scaled excitation against white noise at sigma (0 dB in every band)")
    print(f"{'frames':10s} {'':6s}  " + "  ".join(f"{edge:>11s}" for edge in edges))
    for kind, values in spectra.items():
        for which in ("true", "drawn"):
            power = np.concatenate(values[which]).mean(axis=0)
            print(f"{kind:10s} {which:6s}  " + "  ".join(f"{10 * np.log10(p + 1e-18):8.1f} dB" for p in power))


if __name__ == "__main__":
    main()
