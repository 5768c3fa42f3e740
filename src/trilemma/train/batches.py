"""Micro-batches for the trainer: batching tensors and Datasets, device moves, epochs.

- ``data`` a **tensor**, a **tuple of tensors** (e.g. ``(x, y)``, same first dimension), a
  ``TensorDataset`` or any map-style ``Dataset``: the trainer makes the batches itself
  (``config.batch_size`` globally, shuffled per epoch from ``(seed, epoch)`` as
  ``DistributedSampler`` does, incomplete batches dropped). The data position is a pure
  function of the number of micro-batches consumed, so resuming is exact and needs no
  replay; under DDP each rank takes its ``B / world`` share of the same global batch.
- ``data`` any other **re-iterable** (a ``DataLoader``, a list of batches): iterated as it
  is, one pass per epoch (``set_epoch`` is called on a ``DistributedSampler``); on resume the
  consumed batches are replayed and dropped, exact only if the iterable repeats itself (e.g.
  a DataLoader with a seeded ``generator=`` built afresh). ``config.batch_size`` is unused.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    IterableDataset,
    TensorDataset,
)

from .distributed import shard_batches

logger = logging.getLogger("trilemma.train")


def to_device(batch: Any, device: torch.device) -> Any:
    """Move the tensors of a batch (tensor, tuple, list or dict) to ``device``."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, tuple):
        return tuple(to_device(b, device) for b in batch)
    if isinstance(batch, list):
        return [to_device(b, device) for b in batch]
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def batch_len(batch: Any) -> int | None:
    """Number of samples in a batch: the first dimension of its first tensor."""
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.dim() else None
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, (tuple, list)):
        for b in batch:
            n = batch_len(b)
            if n is not None:
                return n
    return None


class Batches:
    """Endless stream of micro-batches that can start at any micro-batch position."""

    def __init__(
        self, data: Any, batch_size: int, rank: int, world: int, seed: int, num_workers: int
    ) -> None:
        self.batch_size, self.rank, self.world, self.seed = batch_size, rank, world, seed
        self.num_workers = num_workers
        self.tensors: tuple[Tensor, ...] | None = None
        self.single = False
        self.dataset: Dataset | None = None
        self.iterable: Iterable | None = None
        self._take(data)
        if self.iterable is None:
            self.n = self._count_samples()
            global_batch = batch_size * world
            if self.n < global_batch:
                raise ValueError(
                    f"data holds {self.n} samples, fewer than one global batch "
                    f"(batch_size = {global_batch}); lower TrainConfig.batch_size"
                )
            self.per_epoch = self.n // global_batch
        elif world > 1 and not isinstance(getattr(data, "sampler", None), DistributedSampler):
            warnings.warn(
                f"training on {world} ranks from an iterable without a DistributedSampler: "
                "unless it shards itself, every rank sees the same batches; pass a tensor "
                "or Dataset to let the trainer shard it",
                stacklevel=3,
            )

    def _take(self, data: Any) -> None:
        """Sort ``data`` into tensors (batched here), a map-style Dataset, or an iterable."""
        if isinstance(data, Tensor):
            self.tensors, self.single = (data,), True
        elif isinstance(data, tuple) and data and all(isinstance(t, Tensor) for t in data):
            self.tensors = data
        elif isinstance(data, TensorDataset):
            self.tensors, self.single = tuple(data.tensors), len(data.tensors) == 1
        elif (
            isinstance(data, Dataset)
            and not isinstance(data, IterableDataset)
            and hasattr(data, "__len__")
        ):
            self.dataset = data
        elif isinstance(data, Iterable):
            self.iterable = data
        else:
            raise TypeError(
                "data must be a tensor, a tuple of tensors, a map-style Dataset or a re-iterable "
                f"of batches (e.g. a DataLoader), got {type(data).__name__}"
            )

    def _count_samples(self) -> int:
        """Number of samples of tensor or Dataset data (tensors must agree on it)."""
        if self.tensors is None:
            return len(self.dataset)
        n = self.tensors[0].shape[0] if self.tensors[0].dim() else 0
        for i, t in enumerate(self.tensors):
            if t.dim() == 0 or t.shape[0] != n:
                raise ValueError(
                    f"data tensors must share their first dimension; tensor {i} has shape "
                    f"{tuple(t.shape)}, tensor 0 has {n} samples"
                )
        return int(n)

    def epoch_of(self, position: int) -> int:
        """Epoch of micro-batch ``position`` (0 for iterables, whose length is unknown)."""
        return position // self.per_epoch if self.iterable is None else 0

    def iterate(self, position: int) -> Iterator[Any]:
        """Micro-batches from ``position`` (micro-batches already consumed) onwards, forever."""
        if self.iterable is not None:
            yield from self._iterate_iterable(position)
            return
        epoch, offset = divmod(position, self.per_epoch)
        while True:
            batches = shard_batches(
                self.n, self.batch_size, epoch, self.seed, self.rank, self.world
            )[offset:]
            if self.tensors is not None:
                for idx in batches:
                    ix = torch.as_tensor(idx, dtype=torch.long)
                    out = tuple(t[ix] for t in self.tensors)
                    yield out[0] if self.single else out
            else:
                yield from DataLoader(
                    self.dataset, batch_sampler=batches, num_workers=self.num_workers
                )
            epoch, offset = epoch + 1, 0

    def _iterate_iterable(self, position: int) -> Iterator[Any]:
        """Pass over the iterable again and again, dropping the first ``position`` batches."""
        data = self.iterable
        if position:
            logger.info("replaying %d batches of the data iterable to resume", position)
        seen, epoch = 0, 0
        while True:
            for obj in (
                getattr(data, "sampler", None),
                getattr(data, "batch_sampler", None),
                getattr(getattr(data, "batch_sampler", None), "sampler", None),
            ):
                if hasattr(obj, "set_epoch"):
                    obj.set_epoch(epoch)
            count = 0
            for batch in data:
                count += 1
                seen += 1
                if seen > position:
                    yield batch
            if count == 0:
                raise ValueError(
                    f"data yielded no batches in epoch {epoch}; pass a re-iterable (a "
                    "DataLoader or a list), not a one-shot iterator or an empty loader"
                )
            epoch += 1


class StepBatches:
    """The micro-batches of one optimizer step, read from ``source`` and kept for every pass.

    With one pass (a one-loss model) each micro-batch is read as the pass asks for it, between
    forward passes; with several (one per phase) all are read before the first. Reading can
    draw from the global RNG (a DataLoader seeds each epoch from it), so this order is part of
    what makes runs repeat exactly.
    """

    def __init__(self, source: Iterator[Any], count: int, passes: int = 1) -> None:
        self._source, self._count = source, count
        self._read: list[Any] = []
        if passes > 1:
            self._read = [next(source) for _ in range(count)]

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Any]:
        for k in range(self._count):
            if k == len(self._read):
                self._read.append(next(self._source))
            yield self._read[k]
