"""Probe: how much of the phones a trained model's codes carry, read with context.

``evaluate``'s units figure labels each code with its most frequent phone (one frame, no context). The
decoder's frame-rate parts read the codes through a few frames of context, so this asks a stronger reader:
a frame phone classifier (the phone judge's network of :mod:`audio_vqvae.evaluation.phone_recognizer`:
four 5-wide convolutions, 128 channels, 17 frames of context, 136 ms at the demo's hop) trained for
``--steps`` steps on the frozen model's code vectors of the training utterances, scored on the held-out
ones; and, as the input's ceiling, the same classifier on 40-band log-mel frames at the same hop. A large
gap between the two says the codes, not the decoder's networks, hold the phones back.

    .venv/bin/python scripts/probe_code_phones.py runs/X/checkpoints/step-00010000.pt data/cache/demo-<hash>
"""

from __future__ import annotations

import argparse
import time

import librosa
import numpy as np
import torch

from audio_vqvae.checkpoint import load_model
from audio_vqvae.data import PreparedCorpus
from audio_vqvae.evaluation.phone_recognizer import MEL_BANDS, frame_hits, train_network


def features(model, corpus: PreparedCorpus, indices: list[int], kind: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per utterance: float32[C x F] inputs (code vectors or log-mels at the model's hop) and int64[F] phones."""
    hop, out = model.hop_length, []
    for index in indices:
        if not corpus.is_aligned(index):
            continue
        x = corpus.samples(index).astype(np.float32)
        frames = len(x) // hop
        if kind == "codes":
            with torch.no_grad():
                audio = torch.from_numpy(x[:frames * hop])[None]
                inputs = model.quantizer.lookup(model.encode(audio))[0].numpy()
        else:
            inputs = log_mel_at(x, corpus.sample_rate, hop)[:, :frames]
        out.append((inputs.astype(np.float32), corpus.frame_phones(index, hop, frames)))
    return out


def log_mel_at(x: np.ndarray, rate: int, hop: int) -> np.ndarray:
    """40-band log-mel frames every ``hop`` samples (the phone judge's features, at another hop)."""
    window = 4 * hop
    power = librosa.feature.melspectrogram(y=x, sr=rate, n_fft=window, hop_length=hop, n_mels=MEL_BANDS)
    logs = np.log(power + 1e-8)
    return logs - logs.mean(axis=1, keepdims=True)


def train_and_score(train, heldout, phones: list[str], steps: int) -> tuple[float, float, float]:
    """(held-out frame accuracy, its speech frames', seconds) of the judge's network trained on ``train``."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    inputs, labels = zip(*train)
    network = train_network(inputs, labels, len(phones), rng, steps)
    totals = np.zeros(4, np.int64)
    with torch.no_grad():
        for inputs, wanted in heldout:
            predicted = network(torch.from_numpy(inputs)[None])[0].argmax(0).numpy()
            totals += np.array(frame_hits(predicted, wanted, phones))
    hits, labelled, speech_hits, speech = totals.tolist()
    return hits / labelled, speech_hits / speech, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("cache", help="a prepared corpus' cache folder with phone alignments")
    parser.add_argument("--steps", type=int, default=1500)
    args = parser.parse_args()
    model = load_model(args.checkpoint)
    corpus = PreparedCorpus.open(args.cache)
    if not corpus.has_alignments:
        parser.error(f"{args.cache}: the corpus has no phone alignments (prepare it with --alignments)")
    train_indices, heldout_indices = (corpus.split(name).indices.tolist() for name in ("train", "valid"))
    print(f"{args.checkpoint}: {len(corpus.phones)} phones, frames of {model.hop_length} samples, "
          f"{args.steps} steps per classifier")
    for kind in ("codes", "log-mel"):
        train = features(model, corpus, train_indices, kind)
        heldout = features(model, corpus, heldout_indices, kind)
        accuracy, speech, seconds = train_and_score(train, heldout, corpus.phones, args.steps)
        print(f"{kind:8s} held-out frame phone accuracy {100 * accuracy:5.1f} % (speech frames {100 * speech:5.1f} %), "
              f"{seconds:.0f} s")


if __name__ == "__main__":
    main()
