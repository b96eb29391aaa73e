"""Probe: what `evaluate`'s phone recognizer tolerates, on real held-out speech put through known degradations.

Conversions score 26-29 % frame phone accuracy against the originals' 90 %. Before reading that as "the codes
lose the phones", this asks whether the judge itself fails on audio that keeps the phones but is made the way
our decoder makes it. On every held-out utterance of a prepared corpus (the judge trained and cached as
``evaluate`` does), the frame accuracy (all frames, and speech frames only) of:

* ``original``; ``white noise at S dB``: the utterance plus white noise S dB below its mean power;
* ``Griffin-Lim``: the STFT magnitude (32 ms windows, 8 ms hop) with its phase re-estimated (32 iterations):
  every spectral detail kept, the phase lost;
* ``harmonic oracle h``: the least-squares harmonics on the measured f0 phase (``shared/probes/harmonic_oracle``),
  nothing in unvoiced samples: what a perfect harmonic part alone would give;
* ``h + noise at the residual's level``: the same plus white noise at the residual's 8 ms RMS, what a perfect
  harmonic part and a WaveNet that learned only the residual's level would give;
* ``harmonic oracle h + the residual's LPC envelope on noise``: the oracle ``h`` plus white noise through the
  residual's own order-12 envelope per code frame (the LPC split's analysis), at the level of its prediction
  error: what perfect parts of the demo's decoder, with a WaveNet drawing white noise, would give;
* ``LPC envelope on noise``: the same for the utterance itself, white noise through its own order-12 envelope
  per code frame at its prediction error's level (whispered speech): the envelope kept, the fine structure lost;
* ``envelope smoothed over N ms``: the STFT magnitude averaged over N ms in time, Griffin-Lim phase: what a
  decoder whose spectral envelope follows the codes only N ms at a time would give.

With ``--checkpoint`` of a model with a harmonic part, also its own parts on its codes of each utterance
(own speaker, measured phase), the WaveNet left out: ``model: h alone``; and, with its LPC split and noise
envelope, ``model: h + its envelope on white noise``: white Gaussian noise of the predicted RMS σ through the
predicted all-pole filter on top of ``h``, which is what the model would make if its WaveNet drew every
excitation sample as white noise of the level its envelope predicts. Against the model's reconstructions in
``evaluate`` it says whether the parts (that is, the codes) or the WaveNet's drawing lose the phones.

    .venv/bin/python scripts/probe_phone_judge.py data/cache/demo-<hash> [--checkpoint runs/X/checkpoints/...pt]
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import librosa
import numpy as np
import scipy.ndimage
import torch

from audio_vqvae.checkpoint import load_model
from audio_vqvae.data import PreparedCorpus
from audio_vqvae.evaluation.phone_recognizer import frame_accuracy, hop_length, train_recognizer
from audio_vqvae.evaluation.speaker_id import add_noise
from audio_vqvae.lpc import frame_reflections, per_sample, predict, prediction_coefficients
from audio_vqvae.noise import HEADROOM

ORACLE = Path(__file__).resolve().parents[2] / "shared" / "probes" / "harmonic_oracle.py"
FFT, HOP, ITERATIONS = 256, 64, 32


def harmonic_oracle():
    """The shared harmonic oracle probe (beside the repository, as CI has it): its ``harmonic_fit`` and
    ``frame_rms``."""
    spec = importlib.util.spec_from_file_location("harmonic_oracle", ORACLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def griffin_lim(magnitude: np.ndarray, length: int) -> np.ndarray:
    return librosa.griffinlim(magnitude, n_iter=ITERATIONS, hop_length=HOP, n_fft=FFT, length=length,
                              random_state=0).astype(np.float32)


def all_pole(excitation: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """``y[t] = e[t] + Σ_i c[t, i] y[t − i]``: float[T] excitation through float[T x M] per-sample coefficients."""
    order = coefficients.shape[1]
    y = np.zeros(len(excitation) + order)
    for t in range(len(excitation)):
        y[t + order] = excitation[t] + coefficients[t] @ y[t:t + order][::-1]
    return y[order:]


def envelope_on_noise(x: np.ndarray, rate: int, hop: int, frame_rms, rng: np.random.Generator) -> np.ndarray:
    """White noise through ``x``'s own order-12 envelope per ``hop`` frame (the LPC split's analysis), at the level
    of its prediction error: float32[T]."""
    length = len(x) // hop * hop
    signal = torch.from_numpy(np.asarray(x[:length], np.float64))[None]
    coefficients = per_sample(prediction_coefficients(frame_reflections(signal, hop, 12, rate)), hop, length)
    error = (signal - predict(signal, coefficients))[0].numpy()
    y = all_pole(frame_rms(error, hop) * rng.standard_normal(length), coefficients[0].numpy())
    return np.pad(y, (0, len(x) - length)).astype(np.float32)


def model_versions(model, x: np.ndarray, rows: np.ndarray, speaker: int, rng: np.random.Generator) -> dict:
    """The model's parts on its own codes of ``x`` (see the module notes), WaveNet left out."""
    hop = model.hop_length
    length = len(x) // hop * hop
    with torch.no_grad():
        audio = torch.from_numpy(x[:length])[None]
        vectors = model.quantizer.lookup(model.encode(audio))
        inputs = model.part_inputs(vectors, torch.tensor([speaker]), torch.from_numpy(rows[:, :length]).float()[None],
                                   length)
        h = model.decoder.harmonic.signal(inputs).double()[0].numpy()
        versions = {"model: h alone": h}
        if model.decoder.envelope is not None and model.decoder.noise is not None:
            coefficients = model.decoder.envelope.coefficients(inputs)[0].numpy()  # (T, M)
            sigma = model.decoder.noise.gain(inputs)[0].numpy() / HEADROOM
            excitation = sigma * rng.standard_normal(length)
            versions["model: h + its envelope on white noise"] = h + all_pole(excitation, coefficients)
    if model.config.preemphasis:
        versions = {name: model.waveform(None, torch.from_numpy(v)[None])[0].numpy() for name, v in versions.items()}
    return {name: np.pad(v, (0, len(x) - length)).astype(np.float32) for name, v in versions.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cache", help="a prepared corpus' cache folder with phone alignments")
    parser.add_argument("--snrs", type=float, nargs="*", default=[20.0, 10.0, 5.0, 0.0])
    parser.add_argument("--smoothing-ms", type=float, nargs="*", default=[16.0, 32.0, 64.0])
    parser.add_argument("--checkpoint", help="also a trained model's parts (it needs a harmonic part)")
    args = parser.parse_args()
    corpus = PreparedCorpus.open(args.cache)
    model = None if args.checkpoint is None else load_model(args.checkpoint)
    if model is not None:
        if model.decoder.harmonic is None:
            parser.error(f"{args.checkpoint}: the model has no harmonic part (decoder.harmonics = 0)")
        names = [entry["name"] for entry in model.speakers]
    rate, hop = corpus.sample_rate, hop_length(corpus.sample_rate)
    recognizer = train_recognizer(corpus)
    oracle = harmonic_oracle()
    rng = np.random.default_rng(0)
    totals: dict[str, np.ndarray] = {}
    valid = corpus.split("valid")
    for position, index in enumerate(valid.indices.tolist()):
        x = corpus.samples(index).astype(np.float32)
        rows = valid.pitch_rows(position, 0, len(x)).astype(np.float64)
        h = oracle.harmonic_fit(x.astype(np.float64), rows, rate, corpus.pitch_hop)
        magnitude = np.abs(librosa.stft(x, n_fft=FFT, hop_length=HOP))
        versions = {"original": x}
        versions.update({f"white noise at {snr:g} dB": add_noise(x, snr, rng) for snr in args.snrs})
        versions["Griffin-Lim"] = griffin_lim(magnitude, len(x))
        versions["harmonic oracle h"] = h
        versions["h + noise at the residual's level"] = (h + oracle.frame_rms(x - h, HOP)
                                                         * rng.standard_normal(len(x))).astype(np.float32)
        versions["h + the residual's LPC envelope on noise"] = h + envelope_on_noise(x - h, rate, HOP,
                                                                                     oracle.frame_rms, rng)
        versions["LPC envelope on noise"] = envelope_on_noise(x, rate, HOP, oracle.frame_rms, rng)
        for ms in args.smoothing_ms:
            width = max(1, round(ms / 1000 * rate / HOP))
            smooth = scipy.ndimage.uniform_filter1d(magnitude, width, axis=1, mode="nearest")
            versions[f"envelope smoothed over {ms:g} ms"] = griffin_lim(smooth, len(x))
        if model is not None:
            speaker = names.index(corpus.speakers[int(valid.speaker_ids[position])]["name"])
            versions.update(model_versions(model, x, rows, speaker, rng))
        wanted = corpus.frame_phones(index, hop, len(x) // hop)
        for name, audio in versions.items():
            totals.setdefault(name, np.zeros(4, np.int64))
            totals[name] += np.array(frame_accuracy(recognizer, audio, rate, wanted))
    print(f"{len(valid)} held-out utterances of {args.cache}; phone judge {recognizer.cached}")
    print(f"{'version':44s} frames  speech frames")
    for name, (hits, labelled, speech_hits, speech) in totals.items():
        print(f"{name:44s} {100 * hits / labelled:5.1f} %  {100 * speech_hits / speech:5.1f} %")


if __name__ == "__main__":
    main()
