"""Data-parallel training with ``torch.distributed``: process group, sampler, DDP, collectives.

Launch one process per device with ``torchrun``; each process calls `init_from_env`, which
reads the variables ``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``) and joins the group: ``gloo`` on CPUs, ``nccl`` on GPUs
(process ``LOCAL_RANK`` takes GPU ``LOCAL_RANK``). Without those variables (a plain ``python``
run) nothing is initialised and every helper here behaves as the single process it is.

How a global batch is split: `DistributedBatchSampler` draws one permutation of the training
set per epoch from ``(seed, epoch)``, identical in every process; global batch ``b`` is
positions ``[b·B, (b+1)·B)`` of it, and process ``r`` of ``R`` takes every R-th index from
``r``. The union over processes is exactly the batch one process would take with the same
seed, so with losses summed over the local batch and scaled by R (DDP averages the gradients)
the update equals the single-process update over the global batch.

Batch norm: without ``sync_bn`` each process normalises with its own local batch's statistics
(plain DDP), so results match a single process only for nets without batch norm; the running
statistics of rank 0 are broadcast before evaluation and saving (`broadcast_buffers`).
``sync_bn=True`` in `wrap_model` uses ``torch.nn.SyncBatchNorm`` (global-batch statistics),
which PyTorch provides on CUDA only.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistContext",
    "DistributedBatchSampler",
    "all_reduce_sum",
    "broadcast_buffers",
    "broadcast_float",
    "init_from_env",
    "is_main_process",
    "rank_and_world",
    "shutdown",
    "wrap_model",
]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size``, its ``device`` and ``backend``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def init_from_env(
    device: str | torch.device = "auto", backend: str | None = None, timeout_s: float = 600.0
) -> DistContext:
    """Join the process group that ``torchrun`` describes; a single-process context without it.

    Parameters
    ----------
    device : "auto", "cpu", "cuda" (this process's GPU is ``cuda:LOCAL_RANK``) or a device
    backend : "gloo" or "nccl"; None picks nccl for CUDA and gloo otherwise
    timeout_s : how long a collective may wait for the other processes
    """
    from pix2pred.nn_torch.train import choose_device

    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    dev = choose_device(device)
    if world <= 1:
        return DistContext(0, 1, 0, dev, None)
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is outside 0..{world - 1} (WORLD_SIZE={world})")
    if dev.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK={local_rank} but this machine has {torch.cuda.device_count()} GPU(s)"
            )
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if backend is None:
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    if backend == "nccl" and dev.type != "cuda":
        raise ValueError(f"backend 'nccl' needs CUDA devices, got device {str(dev)!r}")
    if not dist.is_initialized():
        dist.init_process_group(
            backend,
            rank=rank,
            world_size=world,
            timeout=_dt.timedelta(seconds=timeout_s),
            device_id=dev if dev.type == "cuda" else None,
        )
    return DistContext(rank, world, local_rank, dev, backend)


def shutdown() -> None:
    """Leave the process group (a no-op when none was joined)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` outside a process group."""
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the one that writes files and prints."""
    return rank_and_world()[0] == 0


def wrap_model(model: nn.Module, device: torch.device, sync_bn: bool = False) -> nn.Module:
    """``model`` wrapped in ``DistributedDataParallel`` in a group of several processes.

    Alone (no group, or a group of one), ``model`` is returned as it is. DDP broadcasts rank
    0's parameters and buffers at construction, so every process starts from the same weights.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return model
    if sync_bn:
        if device.type != "cuda":
            raise ValueError(
                f"sync_bn needs CUDA (torch.nn.SyncBatchNorm runs on GPUs only), got {device}"
            )
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over every process, in place; returns ``t``."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_float(value: float, device: torch.device) -> float:
    """Rank 0's ``value`` in every process (e.g. a clock that must drive a shared schedule)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t.item())


@torch.no_grad()
def broadcast_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (batch-norm running statistics) into every process's model."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    for buf in model.buffers():
        dist.broadcast(buf, src=0)


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A 63-bit seed for ``(seed, epoch, stream)``, the same in every process."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1, np.uint64)[0] >> 1)


class DistributedBatchSampler:
    """This process's share of each global batch, in an order drawn per epoch.

    Parameters
    ----------
    n : number of training examples
    batch_size : global batch size B (over all processes); a multiple of ``world_size``
    rank, world_size : this process and the number of processes (default: from the group)
    seed : seed of the order; epoch e's permutation comes from ``(seed, e)``
    drop_last : drop the last incomplete global batch (True keeps every step's batch full, so
        that every process makes the same number of steps)

    Iterating yields int64 index tensors of shape ``(B // world_size,)``; call `set_epoch`
    before each epoch.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        seed: int = 0,
        drop_last: bool = True,
    ) -> None:
        r, w = rank_and_world()
        rank = r if rank is None else rank
        world_size = w if world_size is None else world_size
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..world_size-1, got rank={rank} of {world_size}")
        if batch_size < 1 or batch_size % world_size:
            raise ValueError(
                f"batch_size must be a positive multiple of the {world_size} processes, "
                f"got {batch_size}"
            )
        if n < batch_size and drop_last:
            raise ValueError(f"batch_size {batch_size} is larger than the {n} examples")
        self.n, self.batch_size, self.seed, self.drop_last = n, batch_size, seed, drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (0 if self.drop_last or rest == 0 else 1)

    def permutation(self) -> torch.Tensor:
        """The epoch's order of all ``n`` examples ``(n,)``, the same in every process."""
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> Iterator[torch.Tensor]:
        perm = self.permutation()
        for b in range(len(self)):
            batch = perm[b * self.batch_size : (b + 1) * self.batch_size]
            yield batch[self.rank :: self.world_size]
