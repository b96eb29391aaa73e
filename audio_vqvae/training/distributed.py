"""Process-group setup for ``torchrun``: one process per GPU (NCCL) or per CPU worker (gloo).

``torchrun --nproc_per_node N recipes/vctk/train.py ...`` sets ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE`` (and, for several machines, the rendezvous address); :func:`init_distributed` reads
them. Run as a plain script, it returns a single-process context and initialises nothing.
"""

from __future__ import annotations

import datetime
import gc
import os
from dataclasses import dataclass
from typing import Any, List

import torch
import torch.distributed as dist

from audio_vqvae.config import ConfigError


@dataclass
class DistributedContext:
    """Where this process sits in the job.

    Attributes:
        rank: global rank (0 writes logs and checkpoints).
        local_rank: rank on this machine (selects the GPU).
        world_size: number of processes.
        device: the device this process trains on.
        group: whether a process group was initialised (always for several processes; for one process
            under ``torchrun``, so that ``torchrun --nproc_per_node 1`` runs the real NCCL/gloo code path).
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    group: bool = False

    @property
    def enabled(self) -> bool:
        """Whether collectives and the DistributedDataParallel wrapper are used."""
        return self.world_size > 1 or self.group

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def select_device(preference: str = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"``: CUDA when available (the ``local_rank``-th GPU), else CPU; otherwise the named device."""
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        device = torch.device(preference)
    except (RuntimeError, ValueError):
        raise ConfigError(f"train.device={preference!r} is not a torch device; use auto, cpu or cuda") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={preference!r} but CUDA is not available on this machine; "
                              "use train.device=auto or cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def init_distributed(device_preference: str = "auto", timeout_minutes: float = 30.0) -> DistributedContext:
    """Join the process group described by torchrun's environment variables, if any.

    The backend is NCCL when this process trains on a GPU and gloo on CPU. One process started by
    ``torchrun`` joins a group of one too (a machine with one GPU can then check the NCCL path);
    one started as a plain script, or by our launcher with one process, initialises nothing.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(device_preference, local_rank)
    under_torchrun = "TORCHELASTIC_RUN_ID" in os.environ and "MASTER_ADDR" in os.environ
    if (world_size > 1 or under_torchrun) and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(minutes=timeout_minutes))
    return DistributedContext(rank=rank, local_rank=local_rank, world_size=world_size, device=device,
                              group=dist.is_available() and dist.is_initialized())


def shutdown_distributed() -> None:
    """Destroy the default process group, if any.

    Release DistributedDataParallel wrappers first (``Trainer.fit`` does): a DDP reducer freed after
    this call can be the group's last owner, and gloo's destructor, run from the reducer's
    deallocation with the GIL held, can then deadlock with a gloo worker thread that needs the GIL.
    The garbage collection here frees wrappers only reachable from reference cycles first.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        if context.device.type == "cuda":
            dist.barrier(device_ids=[context.device.index])
        else:
            dist.barrier()


def any_rank(context: DistributedContext, flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one (e.g. a signal seen by one process)."""
    if not context.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=context.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def mean_over_ranks(context: DistributedContext, values: torch.Tensor) -> torch.Tensor:
    """Average a float tensor over ranks (identity in a single process)."""
    if not context.enabled:
        return values
    values = values.detach().clone().to(context.device)
    dist.all_reduce(values)
    return values / context.world_size


def gather_objects(context: DistributedContext, value: Any) -> List[Any]:
    """Every rank's ``value`` (picklable), in rank order, on every rank."""
    if not context.enabled:
        return [value]
    gathered: List[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered
