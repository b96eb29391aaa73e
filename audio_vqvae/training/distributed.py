"""Process-group setup for ``torchrun``: one process per GPU (NCCL) or per CPU worker (gloo).

``torchrun --nproc_per_node N recipes/vctk/train.py ...`` sets ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE`` (and, for several machines, the rendezvous address); :func:`init_distributed` reads
them. Run as a plain script, it returns a single-process context and initialises nothing.
:class:`DistributedModel` is the training step's DistributedDataParallel wrapper of the VQ-VAE.
"""

from __future__ import annotations

import datetime
import gc
import inspect
import os
import weakref
from dataclasses import dataclass
from typing import Any, List, Optional

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

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

    Release DistributedDataParallel wrappers first (:meth:`DistributedModel.release`): a DDP reducer freed after
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


class DistributedModel:
    """The VQ-VAE's teacher-forced pass as the training step calls it, ``(audio, speaker, pitch) -> dict`` of
    tensors: through DistributedDataParallel when ``context.enabled``, else directly.

    Buffers are broadcast from rank 0 once, at construction; after that the quantizer all-reduces its
    own statistics, so no per-forward broadcast is needed. ``static_graph``: the last WaveNet layer's
    residual projection feeds nothing (only its skip output is used), and a static graph lets DDP
    learn that once instead of searching the graph for unused parameters on every step.
    """

    def __init__(self, model: torch.nn.Module, context: DistributedContext):
        self.model = model
        self.module: torch.nn.Module = TrainingOutputs(model)
        if context.enabled:
            device = context.device
            options: dict = {"device_ids": [device.index] if device.type == "cuda" else None, "static_graph": True}
            if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
                options["forward_sync_buffers"] = False  # torch >= 2.13: still syncs once at construction
            else:
                options["broadcast_buffers"] = False
            self.module = DistributedDataParallel(TrainingOutputs(model), **options)

    def __call__(self, audio: torch.Tensor, speaker: torch.Tensor,
                 pitch: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        return self.module(audio, speaker, pitch)

    def train(self) -> None:
        self.module.train()

    def release(self) -> None:
        """Drop the DistributedDataParallel wrapper while the process group is still registered.

        The wrapper's C++ reducer holds a reference to the process group. Freed after
        ``destroy_process_group`` (when ``train()`` returned and the trainer went), the reducer was the
        group's last owner: gloo's destructor then ran inside the reducer's deallocation, with the GIL
        held, and joined gloo's worker threads, one of which could still be freeing the tensors of the
        last collective and needed the GIL for that. A deadlock: that rank slept forever after training
        and ``torchrun`` never returned. Freed here, the reducer is not the last owner, and the group
        goes later through its Python handle, which releases the GIL first.
        """
        if not isinstance(self.module, DistributedDataParallel):
            return
        wrapper = weakref.ref(self.module)
        self.module = TrainingOutputs(self.model)
        if wrapper() is not None:  # held by a reference cycle
            gc.collect()


class TrainingOutputs(torch.nn.Module):
    """The VQ-VAE's teacher-forced pass returning a dict of tensors.

    DistributedDataParallel finds a forward's output tensors with ``torch.utils._pytree``, which sees a
    dataclass such as :class:`~audio_vqvae.model.VQVAEOutput` as one opaque leaf; with a static graph the
    first step's gradients would then never be all-reduced. A dict is traversed.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, audio: torch.Tensor, speaker: torch.Tensor,
                pitch: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        out = self.model(audio, speaker, pitch=pitch)
        return {"loss": out.loss, "perplexity": out.perplexity, "codes_used": out.codes_used,
                **{f"losses/{name}": value for name, value in out.losses.items()}}
