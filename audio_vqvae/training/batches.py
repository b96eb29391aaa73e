"""The batches of a training run: the corpus prepared once (rank 0 first), the training loader sharded
over the processes, rank 0's validation loader, and an epoch's batches from any batch on (resumes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

from torch.utils.data import DataLoader, Dataset

from audio_vqvae.config import ExperimentConfig
from audio_vqvae.data import SegmentDataset, ensure_prepared, make_loader, set_loader_epoch
from audio_vqvae.errors import InputError
from audio_vqvae.training.distributed import DistributedContext, barrier


@dataclass
class RunLoaders:
    """A run's loaders: ``train`` (this process' shard; its ``dataset`` is the training set) and ``valid``
    (rank 0 only, None elsewhere or when the corpus has no usable validation utterance)."""

    train: DataLoader
    valid: Optional[DataLoader]


def prepared_corpus(config: ExperimentConfig, context: DistributedContext, *, progress: bool) -> Any:
    """The prepared corpus ``config.data`` names: rank 0 prepares it, the other ranks then open its cache."""
    data, rate = config.data, config.model.sample_rate
    if context.is_main:
        corpus = ensure_prepared(data, rate, progress=progress)
    barrier(context)  # the other ranks open the cache rank 0 has finished
    if not context.is_main:
        corpus = ensure_prepared(data, rate, progress=False)
    return corpus


def make_loaders(corpus: Any, config: ExperimentConfig, context: DistributedContext, *, hop_length: int,
                 pitch: bool, log: Callable[[str], None]) -> RunLoaders:
    """Segments of ``config.data.segment_length`` samples (whole frames of ``hop_length``), with pitch rows
    when the model takes them.

    Raises:
        InputError: the training split holds fewer usable utterances than one batch (per process).
    """
    data, train = config.data, config.train
    train_set: Dataset = SegmentDataset(corpus, "train", data.segment_length, hop_length=hop_length, seed=train.seed,
                                        pitch=pitch, candidates=data.crop_candidates)
    train_loader = make_loader(train_set, data.batch_size, shuffle=True, num_workers=data.loader_workers,
                               seed=train.seed, distributed=context.enabled, drop_last=True)
    if len(train_loader) == 0:
        raise InputError(f"the training split has {len(train_set)} usable utterances, fewer than one batch "
                         f"of {data.batch_size}{' per process' if context.enabled else ''}; "
                         "use a smaller data.batch_size")
    valid_loader: Optional[DataLoader] = None
    if context.is_main and len(corpus.split("valid")) > 0:
        try:
            valid_set = SegmentDataset(corpus, "valid", data.segment_length, hop_length=hop_length,
                                       seed=train.seed + 1, pitch=pitch)
        except ValueError as err:
            log(f"note: no validation ({err})")
        else:
            valid_loader = make_loader(valid_set, data.batch_size, shuffle=False, num_workers=0, drop_last=False)
    return RunLoaders(train_loader, valid_loader)


def epoch_batches(loader: DataLoader, epoch: int, batch_in_epoch: int) -> Iterator[dict]:
    """Batches of ``epoch`` from batch ``batch_in_epoch`` on; skipped batches are never loaded.

    Creating the iterator draws one random number: a resume restores its random states after this call.
    """
    set_loader_epoch(loader, epoch)
    if batch_in_epoch == 0:
        return iter(loader)
    remaining = list(loader.batch_sampler)[batch_in_epoch:]
    return iter(DataLoader(loader.dataset, batch_sampler=remaining, num_workers=loader.num_workers,
                           collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                           worker_init_fn=loader.worker_init_fn,
                           prefetch_factor=loader.prefetch_factor if loader.num_workers > 0 else None))
