"""Fixed-length training segments from a prepared corpus, and the DataLoader that batches them.

One dataset item per utterance and epoch. The crop of item ``i`` in epoch ``e`` depends on
``(seed, e, i)`` only, and the shuffling order on ``(seed, e)`` only (call :func:`set_loader_epoch`
before each epoch), so a run resumed from a checkpoint sees exactly the batches it would have seen.

Short utterances (the explicit rule): an utterance at least ``segment_length`` long gives a random
crop; one shorter than that but at least ``min_length`` (default: half a segment) is placed at the
start of the segment and zero-padded on the right (zero is silence, which the decoder must model
anyway); one shorter than ``min_length`` is left out of the dataset (``num_skipped`` counts them),
since a segment that is mostly padding teaches little but silence.

Voiced crops (``candidates`` > 1): each crop draws that many offsets and keeps the one whose 10 ms
pitch frames (the cache's f0) are most often voiced, the first on a tie. The WaveNet learns the glottal
pulses late, and voiced samples are where they are; on the demo corpus random crops are 72 % voiced
and the best of 4 86 %. ``candidates`` = 1 draws exactly the uniform offset of a dataset without
the option. Validation keeps 1.

Example:
    >>> dataset = SegmentDataset(corpus, "train", 16384, hop_length=64)   # doctest: +SKIP
    >>> loader = make_loader(dataset, batch_size=8)                       # doctest: +SKIP
    >>> batch = next(iter(loader))                                        # doctest: +SKIP
    >>> batch["audio"].shape, batch["speaker"].shape                      # doctest: +SKIP
    (torch.Size([8, 16384]), torch.Size([8]))
"""

from __future__ import annotations

from typing import Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler

from audio_vqvae.data.corpus import PreparedCorpus


class SegmentDataset(Dataset):
    """Random fixed-length segments of the utterances of one split.

    Args:
        corpus: a prepared corpus.
        split: ``"train"`` or ``"valid"``.
        segment_length: samples per segment; a multiple of ``hop_length``.
        hop_length: the encoder's hop (product of its strides).
        seed: seed of the crop offsets.
        min_length: utterances shorter than this many samples are left out (default ``segment_length // 2``);
            those between ``min_length`` and ``segment_length`` are zero-padded on the right.
        pitch: also return each crop's pitch rows (for a decoder with a source excitation); without it the
            loader does no pitch work at all.
        candidates: offsets drawn per crop, the most voiced kept (``data.crop_candidates``; 1: a uniform crop).

    Items are ``{"audio": FloatTensor[segment_length], "pitch": FloatTensor[3 x segment_length],
    "speaker": LongTensor[]}``, ``pitch`` the sample-rate ``(phase, f0, voiced)`` rows of the crop
    (:meth:`PreparedCorpus.pitch_rows`).

    Raises:
        ValueError: ``segment_length`` is not a positive multiple of ``hop_length``, or no utterance is long enough.
    """

    def __init__(self, corpus: PreparedCorpus, split: str, segment_length: int, *, hop_length: int = 1,
                 seed: int = 0, min_length: Optional[int] = None, pitch: bool = True, candidates: int = 1):
        if candidates < 1:
            raise ValueError(f"candidates must be 1 or more, got {candidates}")
        if hop_length < 1 or segment_length < 1 or segment_length % hop_length:
            raise ValueError(f"segment_length ({segment_length}) must be a positive multiple of "
                             f"hop_length ({hop_length})")
        self.corpus = corpus
        self.split_name = split
        self.segment_length = segment_length
        self.hop_length = hop_length
        self.seed = seed
        self.pitch = pitch
        self.candidates = int(candidates)
        self.min_length = segment_length // 2 if min_length is None else min(min_length, segment_length)
        self.epoch = 0
        self._split = corpus.split(split)
        keep = np.flatnonzero(self._split.lengths >= max(1, self.min_length))
        self._items = keep  # positions within the split
        self.num_skipped = len(self._split) - len(keep)
        if len(keep) == 0:
            raise ValueError(f"{corpus.cache_dir}: no {split} utterance is at least {self.min_length} samples long "
                             f"(segment_length {segment_length}); use shorter segments")

    def __len__(self) -> int:
        return len(self._items)

    def set_epoch(self, epoch: int) -> None:
        """Select the crops of ``epoch`` (before iterating a DataLoader over this dataset)."""
        self.epoch = int(epoch)

    def crop_start(self, i: int) -> int:
        """Offset of item ``i``'s segment in its utterance this epoch; 0 for padded utterances."""
        length = int(self._split.lengths[self._items[i]])
        room = length - self.segment_length
        if room <= 0:
            return 0
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        if self.candidates == 1:
            return int(rng.integers(0, room + 1))
        starts = rng.integers(0, room + 1, size=self.candidates)
        return int(starts[int(np.argmax([self.voiced_fraction(i, int(s)) for s in starts]))])

    def voiced_fraction(self, i: int, start: int) -> float:
        """Share of the 10 ms pitch frames of item ``i``'s segment from ``start`` that are voiced (f0 > 0)."""
        corpus = self.corpus
        f0 = corpus.f0(int(self._split.indices[self._items[i]]))
        first = start // corpus.pitch_hop
        last = max(first + 1, -(-(start + self.segment_length) // corpus.pitch_hop))
        frames = f0[first:last]
        return float(np.mean(frames > 0)) if len(frames) else 0.0

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        position = int(self._items[i])
        start = self.crop_start(i)
        audio = self._split.samples(position, start, start + self.segment_length)  # (<= segment_length,)
        item = {"speaker": torch.tensor(int(self._split.speaker_ids[position]), dtype=torch.long)}
        padding = self.segment_length - len(audio)
        if self.pitch:
            pitch = self._split.pitch_rows(position, start, start + self.segment_length)  # (3, <= segment_length)
            if padding > 0:
                pitch = np.pad(pitch, ((0, 0), (0, padding)), mode="edge")
                pitch[2, len(audio):] = 0.0  # the zero padding is silence: unvoiced
            item["pitch"] = torch.from_numpy(pitch)
        item["audio"] = torch.from_numpy(np.pad(audio, (0, padding)) if padding > 0 else audio)
        return item

    def __repr__(self) -> str:
        return (f"SegmentDataset({self.split_name!r}, {len(self)} utterances, segment_length={self.segment_length}, "
                f"skipped {self.num_skipped} shorter than {self.min_length})")


class EpochRandomSampler(RandomSampler):
    """A :class:`RandomSampler` whose order depends only on ``(seed, epoch)``, like DistributedSampler's."""

    def __init__(self, data_source: Dataset, *, seed: int = 0):
        super().__init__(data_source, generator=torch.Generator().manual_seed(seed))
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        self.generator.manual_seed(self.seed * 1_000_003 + self.epoch)
        yield from super().__iter__()


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool = True, num_workers: int = 2, seed: int = 0,
                distributed: bool = False, drop_last: bool = True) -> DataLoader:
    """Batch a dataset: ``{"audio": FloatTensor[B, T], "speaker": LongTensor[B]}``.

    With ``distributed=True`` and torch.distributed initialised, each rank reads its own shard
    (:class:`DistributedSampler`); otherwise shuffling uses :class:`EpochRandomSampler` seeded by
    ``seed``. Call :func:`set_loader_epoch` before each epoch. Workers are not persistent, so the
    dataset's epoch reaches them at the start of every epoch.
    """
    if distributed and torch.distributed.is_available() and torch.distributed.is_initialized():
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
    elif shuffle:
        sampler = EpochRandomSampler(dataset, seed=seed)
    else:
        sampler = SequentialSampler(dataset)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=drop_last, pin_memory=torch.cuda.is_available(),
                      persistent_workers=False, prefetch_factor=4 if num_workers > 0 else None)


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    """Set the epoch of a loader's sampler and dataset (order and crops), before iterating it."""
    for part in (loader.sampler, loader.dataset):
        if hasattr(part, "set_epoch"):
            part.set_epoch(epoch)
