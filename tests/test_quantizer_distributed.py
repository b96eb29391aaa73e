"""Under torch.distributed the quantizer's replicas stay identical (2 CPU processes, gloo)."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from audio_vqvae.quantizer import VectorQuantizer
from audio_vqvae.training.launch import free_port


def _worker(rank: int, world_size: int, port: int, out_dir: str, update: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)  # same initial codebook on every rank
        vq = VectorQuantizer(32, 4, update=update, dead_code_steps=2).train()
        generator = torch.Generator().manual_seed(100 + rank)  # different data on every rank
        for _ in range(6):
            vq(torch.randn(2, 4, 40, generator=generator) * (1 + rank))
        torch.save({k: v.clone() for k, v in vq.state_dict().items()}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _run(tmp_path, update):
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path), update), nprocs=2, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]


@pytest.mark.slow
def test_ema_statistics_and_restarts_are_identical_on_every_rank(tmp_path):
    first, second = _run(tmp_path, "ema")
    for key in first:
        assert torch.equal(first[key], second[key]), key
    # Each rank saw different data, so equal codebooks mean the statistics were all-reduced and the
    # data initialisation / restarts broadcast; without that the replicas would drift apart.
    assert bool(first["initialized"])
