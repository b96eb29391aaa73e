"""Throughput of the training data loader alone (no model), on the demo corpus.

Builds and prepares the demo corpus if needed (under $AUDIO_VQVAE_DATA or data/), then iterates
``make_loader(SegmentDataset(...))`` for a few epochs and prints segments/s and audio samples/s.

Usage: python scripts/bench_loader.py [--batch-size 16] [--segment-length 16384] [--workers 0 2] [--seconds 10]
"""

from __future__ import annotations

import argparse
import time

from audio_vqvae.config import DataConfig
from audio_vqvae.data import SegmentDataset, ensure_prepared, make_loader, set_loader_epoch


def measure(dataset: SegmentDataset, *, batch_size: int, num_workers: int, seconds: float) -> tuple[float, int]:
    """Iterate epochs until ``seconds`` have passed; return (segments per second, segments read)."""
    loader = make_loader(dataset, batch_size, num_workers=num_workers, seed=0)
    segments, epoch = 0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        set_loader_epoch(loader, epoch)
        for batch in loader:
            segments += batch["audio"].shape[0]
        epoch += 1
    return segments / (time.perf_counter() - start), segments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--segment-length", type=int, default=16384)
    parser.add_argument("--hop-length", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    corpus = ensure_prepared(DataConfig(corpus="demo"), 16000, progress=False)
    dataset = SegmentDataset(corpus, "train", args.segment_length, hop_length=args.hop_length)
    print(f"{corpus}; {dataset}")
    for workers in args.workers:
        rate, segments = measure(dataset, batch_size=args.batch_size, num_workers=workers, seconds=args.seconds)
        print(f"num_workers={workers}: {rate:,.0f} segments/s = {rate * args.segment_length:,.0f} samples/s "
              f"= {rate * args.segment_length / corpus.sample_rate:,.0f} s of audio per s "
              f"({segments} segments of {args.segment_length}, batch {args.batch_size})")


if __name__ == "__main__":
    main()
