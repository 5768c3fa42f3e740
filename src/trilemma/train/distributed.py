"""Distributed data-parallel helpers: torchrun set-up, the DDP wrapper, sharded batches, seeds.

Usage (one process per device, launched by ``torchrun --nproc_per_node=N script.py``)::

    info = init_distributed()                 # reads RANK / WORLD_SIZE / LOCAL_RANK
    model = build_model()                     # any init: DDP broadcasts rank 0's weights
    Trainer(model, data, config, out_dir, device=info.device).fit()
    cleanup_distributed()

Design choices:

- **The loss goes through DDP's forward.** DDP only synchronises gradients of computations run
  through ``DDP.__call__``, but the trained object exposes ``loss(batch, generator)``, not
  ``forward``. :class:`LossAdapter` is a tiny ``nn.Module`` whose ``forward`` calls
  ``module.loss``; the trainer wraps the adapter in DDP (or uses it bare in one process), so
  models need no special ``forward``.
- **Same initial weights everywhere**: DDP broadcasts rank 0's parameters and buffers when it
  wraps the model, so ranks may build their models from any seed.
- **Per-rank noise**: each rank's loss noise (``t``, ``eps``) comes from its own generator
  seeded with :func:`rank_seed` ``(seed, rank)``; ranks must not draw the same noise.
- **Data**: :func:`shard_batches` uses ``DistributedSampler`` (seeded permutation per epoch via
  ``set_epoch``, ``drop_last``) and cuts each rank's share into consecutive batches of
  ``B / world``. Batch ``k`` of all ranks together is exactly ``perm[k B:(k+1) B]``, the batch a
  single process with batch ``B`` sees, so a run on N ranks matches a 1-process run up to
  float summation order (gradients are averaged by DDP, per-rank batches are equal-sized).
"""

from __future__ import annotations

import datetime
import hashlib
import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, local rank, the world size and its device."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes checkpoints, logs and progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group with more than one rank is active."""
        return self.world_size > 1


def _env_int(name: str) -> int | None:
    """An integer environment variable, or None when unset; clear error when malformed."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def init_distributed(backend: str | None = None, timeout_s: float = 1800.0) -> DistInfo:
    """Initialise torch.distributed from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK).

    Without those variables (or with WORLD_SIZE=1) nothing is initialised and a single-process
    :class:`DistInfo` comes back. The backend is ``nccl`` with CUDA, ``gloo`` otherwise; the
    device is ``cuda:LOCAL_RANK`` (made current) with CUDA, else CPU. Idempotent.
    """
    if dist.is_available() and dist.is_initialized():
        return dist_info()
    world = _env_int("WORLD_SIZE")
    rank = _env_int("RANK")
    local_rank = _env_int("LOCAL_RANK")
    cuda = torch.cuda.is_available()
    if world is None or world == 1:
        lr = local_rank or 0
        device = torch.device("cuda", lr) if cuda else torch.device("cpu")
        return DistInfo(rank=0, local_rank=lr, world_size=1, device=device, backend=None)
    if world < 1:
        raise ValueError(f"environment variable WORLD_SIZE must be >= 1, got {world}")
    if rank is None:
        raise ValueError("WORLD_SIZE is set but RANK is not: launch with torchrun")
    if not 0 <= rank < world:
        raise ValueError(f"RANK must lie in [0, WORLD_SIZE = {world}), got {rank}")
    local_rank = rank if local_rank is None else local_rank
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(var):
            raise ValueError(f"environment variable {var} is not set: launch with torchrun")
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this build of PyTorch")
    if backend is None:
        backend = "nccl" if cuda else "gloo"
    if backend not in ("nccl", "gloo", "mpi"):
        raise ValueError(f"backend must be 'nccl', 'gloo' or 'mpi', got {backend!r}")
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK = {local_rank} but only {torch.cuda.device_count()} CUDA devices "
                "are visible: use --nproc_per_node <= the number of GPUs"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        if backend == "nccl":
            raise ValueError("backend 'nccl' needs CUDA; use 'gloo' on CPU")
        device = torch.device("cpu")
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    return DistInfo(rank, local_rank, world, device, backend)


def dist_info(device: torch.device | str | None = None) -> DistInfo:
    """The current process's :class:`DistInfo` (single-process when no group is active)."""
    active = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if active else 0
    world = dist.get_world_size() if active else 1
    local_rank = _env_int("LOCAL_RANK") or 0
    backend = dist.get_backend() if active else None
    if device is None:
        if torch.cuda.is_available() and backend == "nccl":
            device = torch.device("cuda", local_rank)
        else:
            device = torch.device("cpu")
    return DistInfo(rank, local_rank, world, torch.device(device), backend)


def cleanup_distributed(*, sync: bool = True) -> None:
    """Destroy the process group if one is active (call once at the end of a torchrun job).

    With ``sync`` every rank first waits at a barrier, so no rank tears its gloo connections
    down while another still writes or talks (a rank that exits early can make the other's
    transport thread abort); pass ``sync=False`` on an error path, where a peer may never come.
    """
    if dist.is_available() and dist.is_initialized():
        if sync and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def rank_seed(seed: int, rank: int = 0, tag: str = "noise") -> int:
    """A 62-bit seed derived from ``(seed, tag, rank)``: distinct streams per rank and per use.

    Hash-mixed rather than ``seed + rank`` so that the noise stream of rank 1 never coincides
    with, e.g., the data-shuffling stream of epoch 1.
    """
    digest = hashlib.sha256(f"trilemma:{tag}:{int(seed)}:{int(rank)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 2


def _comm_device(t: Tensor) -> torch.device:
    """Device collectives need for this backend (CUDA for nccl, CPU otherwise)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(t: Tensor) -> Tensor:
    """Mean of ``t`` over ranks (a copy; ``t`` itself in one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    buf = t.detach().to(_comm_device(t), copy=True)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return (buf / dist.get_world_size()).to(t.device)


def all_gather_tensor(t: Tensor) -> list[Tensor]:
    """Every rank's copy of a same-shaped tensor, in rank order, on ``t``'s device."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [t]
    dev = _comm_device(t)
    src = t.detach().to(dev).contiguous()
    out = [torch.empty_like(src) for _ in range(dist.get_world_size())]
    dist.all_gather(out, src)
    return [o.to(t.device) for o in out]


def shard_batches(
    n: int, batch_size: int, epoch: int, seed: int, rank: int = 0, world_size: int = 1
) -> list[list[int]]:
    """This rank's batches (lists of dataset indices) for one epoch.

    ``batch_size`` is the per-rank batch; the global batch is ``batch_size * world_size``.
    Shuffling follows ``DistributedSampler(seed=seed)`` with ``set_epoch(epoch)``; incomplete
    batches are dropped, so every epoch has ``n // (batch_size * world_size)`` batches.
    """
    if n < 1:
        raise ValueError(f"dataset must hold at least one sample, got {n}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sampler = DistributedSampler(
        range(n), num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
    )
    sampler.set_epoch(epoch)
    idx = list(sampler)
    per_epoch = len(idx) // batch_size
    return [idx[k * batch_size : (k + 1) * batch_size] for k in range(per_epoch)]


class LossAdapter(nn.Module):
    """``forward(batch, generator)`` -> ``module.loss(batch, generator=generator)``.

    Lets DDP (which synchronises gradients only through ``forward``) wrap any model whose
    training entry point is ``loss``. The wrapped model stays reachable as ``.module``.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        loss = getattr(module, "loss", None)
        if not callable(loss):
            raise TypeError(
                f"model must have a method loss(batch, generator=None) -> per-sample losses; "
                f"{type(module).__name__} has none"
            )
        try:
            params = inspect.signature(loss).parameters
        except (TypeError, ValueError):  # builtins without a signature: assume it fits
            params = {}
        self._takes_generator = (
            not params
            or "generator" in params
            or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        )
        self.module = module

    def forward(self, batch, generator: torch.Generator | None = None) -> Tensor:
        """Per-sample losses of ``batch`` (noise drawn from ``generator``)."""
        if self._takes_generator:
            return self.module.loss(batch, generator=generator)
        return self.module.loss(batch)


def wrap_model(
    model: nn.Module, device: torch.device | str, find_unused_parameters: bool = False
) -> nn.Module:
    """The module the trainer calls: ``DDP(LossAdapter(model))`` when distributed, else the adapter.

    DDP broadcasts rank 0's weights at construction, so every rank starts identical.
    """
    adapter = LossAdapter(model)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return adapter
    device = torch.device(device)
    if device.type == "cuda":
        return DistributedDataParallel(
            adapter,
            device_ids=[device.index if device.index is not None else torch.cuda.current_device()],
            find_unused_parameters=find_unused_parameters,
        )
    return DistributedDataParallel(adapter, find_unused_parameters=find_unused_parameters)
