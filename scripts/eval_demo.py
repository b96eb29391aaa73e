#!/usr/bin/env python
"""Objective check of reconstructions and conversions on the parallel demo corpus.

Every demo speaker reads the same validation sentences, so a conversion of speaker A's sentence to
speaker B can be compared with B's own reading of it. Distances are log-mel spectral distances
(80 bands, dB, mean absolute difference per frame along a DTW path). Printed rows:

- reconstruction: decode(codes of x, speaker of x) vs x;
- wrong codes (control): decode(codes of another sentence, speaker of x) vs x, i.e. what the distance
  is when the codes carry the wrong content;
- source vs target (control): A's reading vs B's reading of the same sentence, unconverted;
- conversion: decode(codes of A's reading, speaker B) vs B's reading.

Usage: python scripts/eval_demo.py runs/vctk-demo/checkpoints/step-00001500.pt [--seconds 2.0]
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

import librosa
import numpy as np
import torch

try:
    import audio_vqvae  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audio_vqvae import load_model
from audio_vqvae.data import PreparedCorpus, default_data_dir


def log_mel(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    mel = librosa.feature.melspectrogram(y=audio, sr=sample_rate, n_fft=1024, hop_length=128, n_mels=80)
    return librosa.power_to_db(mel, ref=1.0, amin=1e-5, top_db=80.0)


def distance(a: np.ndarray, b: np.ndarray, sample_rate: int) -> float:
    """Mean |Δ| in dB between log-mel frames of a and b along the DTW path."""
    x, y = log_mel(a, sample_rate), log_mel(b, sample_rate)
    _, path = librosa.sequence.dtw(X=x, Y=y, metric="euclidean")
    return float(np.mean(np.abs(x[:, path[:, 0]] - y[:, path[:, 1]])))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--cache", default=None, help="prepared demo cache (default: the newest data/cache/demo-*)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each clip (from the start)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    model = load_model(args.checkpoint)
    cache = args.cache or sorted(glob.glob(str(default_data_dir() / "cache" / "demo-*")))[-1]
    corpus = PreparedCorpus.open(cache)
    rate, hop = model.config.sample_rate, model.hop_length
    length = int(args.seconds * rate) // hop * hop
    valid = corpus.split("valid")
    clips = [valid.utterance(i) for i in range(len(valid))]
    clips = [c for c in clips if len(c["audio"]) >= length]
    audio = torch.stack([torch.from_numpy(c["audio"][:length]) for c in clips])
    speakers = torch.tensor([c["speaker"] for c in clips])
    sentence = [c["name"].split("_")[-1] for c in clips]
    codes = model.encode(audio)

    def decode(codes: torch.Tensor, speaker: torch.Tensor) -> np.ndarray:
        generator = torch.Generator().manual_seed(args.seed)
        return model.decode(codes, speaker, temperature=1.0, generator=generator).numpy()

    truth = audio.numpy()
    reconstruction = decode(codes, speakers)
    # Control: codes of a clip with another sentence, decoded with this clip's speaker.
    other = [next(j for j in range(len(clips)) if sentence[j] != sentence[i]) for i in range(len(clips))]
    wrong = decode(codes[other], speakers)
    # Conversion: each clip to the next speaker (cyclically) that read the same sentence.
    target = []
    for i in range(len(clips)):
        same = [j for j in range(len(clips)) if sentence[j] == sentence[i] and speakers[j] != speakers[i]]
        target.append(same[i % len(same)])
    converted = decode(codes, speakers[target])

    rows = {
        "reconstruction vs truth": [distance(reconstruction[i], truth[i], rate) for i in range(len(clips))],
        "wrong codes vs truth (control)": [distance(wrong[i], truth[i], rate) for i in range(len(clips))],
        "source vs target reading (control)": [distance(truth[i], truth[target[i]], rate) for i in range(len(clips))],
        "conversion vs target reading": [distance(converted[i], truth[target[i]], rate) for i in range(len(clips))],
    }
    print(f"{args.checkpoint}: {len(clips)} validation clips of {length / rate:.2f} s, "
          f"log-mel distance in dB (DTW-aligned, lower is closer)")
    print("| comparison | mean | min | max |\n|---|---:|---:|---:|")
    for name, values in rows.items():
        print(f"| {name} | {np.mean(values):.2f} | {np.min(values):.2f} | {np.max(values):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
