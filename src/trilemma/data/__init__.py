"""Data: toy distributions, image data sets, a tensor data set and a seeded loader.

Everything is float32 (labels int64): points ``(N, d)``, images ``(N, C, H, W)`` in [-1, 1].
Build a data set from a config with :func:`load_dataset`, e.g.
``load_dataset({"name": "digits", "split": "train", "size": 8})``, and batch it with
:func:`make_loader`, whose batches are always tuples ``(x,)`` or ``(x, labels)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

from .. import oracle
from .images import (
    FolderSource,
    binarize,
    list_images,
    load_cifar10,
    load_digits,
    load_idx,
    load_idx_images,
    load_idx_labels,
    load_image_folder,
    load_mnist,
    read_idx,
)
from .toys import SHAPES, checkerboard, rings, swiss_roll, toy_dataset, toy_names, two_moons

__all__ = [
    "DATASETS",
    "SHAPES",
    "ArrayDataset",
    "EpochBatchSampler",
    "FolderSource",
    "binarize",
    "checkerboard",
    "dataset_classes",
    "list_images",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_idx",
    "load_idx_images",
    "load_idx_labels",
    "load_image_folder",
    "load_mnist",
    "make_loader",
    "read_idx",
    "rings",
    "set_epoch",
    "swiss_roll",
    "toy_dataset",
    "toy_names",
    "two_moons",
]


class ArrayDataset(Dataset):
    """In-memory data set of a float32 tensor and optional int64 labels (``TensorDataset``-style).

    Indexing with an int, slice, list or index tensor returns ``(x,)`` or ``(x, labels)``;
    :func:`make_loader` uses list indexing to fetch whole batches in one gather.
    """

    def __init__(
        self, data: Tensor, labels: Tensor | None = None, num_classes: int | None = None
    ) -> None:
        if not isinstance(data, Tensor) or data.dim() < 1 or len(data) == 0:
            raise ValueError("data must be a non-empty tensor with a leading sample dimension")
        self.data = data.to(torch.float32)
        if labels is not None:
            labels = torch.as_tensor(labels)
            if labels.shape != (len(data),):
                raise ValueError(
                    f"labels must have shape ({len(data)},) to match data, "
                    f"got {tuple(labels.shape)}"
                )
            if labels.dtype.is_floating_point:
                raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
            labels = labels.long()
            if num_classes is None:
                num_classes = int(labels.max()) + 1
        self.labels = labels
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, idx: Any) -> tuple[Tensor, ...]:
        if isinstance(idx, list):
            idx = torch.as_tensor(idx, dtype=torch.long)
        if self.labels is None:
            return (self.data[idx],)
        return self.data[idx], self.labels[idx]

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one sample."""
        return tuple(self.data.shape[1:])

    def __repr__(self) -> str:
        return (f"ArrayDataset(n={len(self)}, shape={self.shape}, "
                f"labels={'yes' if self.labels is not None else 'no'})")


class EpochBatchSampler(Sampler[list[int]]):
    """Groups an index sampler into batches and tells it the epoch before every pass.

    The epoch starts at 0 and advances by one per pass, so a ``DistributedSampler`` reshuffles
    each epoch with seed ``seed + epoch``; :func:`set_epoch` resets it (e.g. when resuming).
    """

    def __init__(self, sampler: Sampler[int], batch_size: int, drop_last: bool) -> None:
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch of the next pass."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(self.epoch)
        self.epoch += 1
        batch: list[int] = []
        for i in self.sampler:
            batch.append(int(i))
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


def _identity(batch: Any) -> Any:
    return batch


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = True,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    distributed: bool = False,
    num_replicas: int | None = None,
    rank: int | None = None,
    seed: int | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A ``DataLoader`` over ``dataset`` whose order is fixed by ``generator`` (or ``seed``).

    Non-distributed: a ``RandomSampler`` drawing from ``generator`` (a new order each epoch,
    reproducible from the generator's seed). Distributed: a ``DistributedSampler`` with
    ``seed`` (default: drawn from ``generator``, which must then be seeded alike on every
    rank), reshuffled per epoch as ``seed + epoch``; ``num_replicas``/``rank`` default to the
    process group's. An :class:`ArrayDataset` is fetched a whole batch per gather.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ValueError("dataset is empty")
    sampler: Sampler[int]
    if distributed:
        if seed is None:
            seed = (int(torch.randint(2**31 - 1, (1,), generator=generator))
                    if generator is not None else 0)
        sampler = DistributedSampler(dataset, num_replicas=num_replicas, rank=rank,
                                     shuffle=shuffle, seed=seed, drop_last=drop_last)
    elif shuffle:
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(int(seed))
        sampler = RandomSampler(dataset, generator=generator)
    else:
        sampler = SequentialSampler(dataset)
    batches = EpochBatchSampler(sampler, batch_size, drop_last)
    if isinstance(dataset, ArrayDataset):
        return DataLoader(dataset, sampler=batches, batch_size=None, collate_fn=_identity,
                          num_workers=num_workers, pin_memory=pin_memory)
    return DataLoader(dataset, batch_sampler=batches, num_workers=num_workers,
                      pin_memory=pin_memory)


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Set the epoch of the next pass of a loader built by :func:`make_loader`."""
    for s in (loader.batch_sampler, loader.sampler):
        if isinstance(s, EpochBatchSampler):
            s.set_epoch(epoch)
            return
    raise ValueError("loader was not built by make_loader (no EpochBatchSampler found)")


# --------------------------------------------------------------------------- config factory
def _toy(toy: str, n: int = 50_000, seed: int = 0, labels: bool = False) -> ArrayDataset:
    gen = torch.Generator().manual_seed(int(seed))
    x, y = toy_dataset(toy, n, gen, return_labels=True)
    return ArrayDataset(x, y if labels else None)


def _digits(split: str = "train", size: int = 8, mode: str = "bilinear",
            test_fraction: float = 0.2, seed: int = 0) -> ArrayDataset:
    x, y = load_digits(split=split, size=size, mode=mode, test_fraction=test_fraction, seed=seed)
    return ArrayDataset(x, y, num_classes=10)


def _folder(path: str, size: int, mode: str | int | None = None, recursive: bool = False,
            split: str = "all", test_fraction: float = 0.1, seed: int = 0,
            hflip: bool = False) -> ArrayDataset:
    x = load_image_folder(path, size, mode=mode, recursive=recursive, split=split,
                          test_fraction=test_fraction, seed=seed)
    if hflip:  # mirrored copies join the data: deterministic, resumable, twice the memory
        x = torch.cat([x, x.flip(-1)])
    return ArrayDataset(x)


def _idx(images: str | None = None, labels: str | None = None, root: str | None = None,
         split: str = "train") -> ArrayDataset:
    if (images is None) == (root is None):
        raise ValueError(
            "dataset 'idx' needs either key 'images' (with optional 'labels') or key 'root' "
            "(a folder of the standard MNIST/Fashion-MNIST files, with 'split')"
        )
    if root is not None:
        if labels is not None:
            raise ValueError("dataset 'idx': give 'labels' with 'images', not with 'root'")
        x, y = load_mnist(root, split)
    else:
        x, y = load_idx(images, labels)  # type: ignore[arg-type]
    return ArrayDataset(x, y, num_classes=10 if y is not None else None)


def _cifar10(root: str, split: str = "train") -> ArrayDataset:
    x, y = load_cifar10(root, split)
    return ArrayDataset(x, y, num_classes=10)


DATASETS: dict[str, Callable[..., ArrayDataset]] = {
    "toy": _toy,
    "digits": _digits,
    "folder": _folder,
    "idx": _idx,
    "cifar10": _cifar10,
}

_COMMON = ("binarize", "binarize_seed", "limit", "labels")
#: data sets whose samples carry one of ten class labels
_TEN_CLASSES = ("digits", "idx", "cifar10")


def dataset_classes(config: dict[str, Any]) -> int | None:
    """How many classes the labels of a data config have, without loading it (None: the data
    has no class labels): the components of a toy mixture, ten for digits, idx (with labels)
    and cifar10, none for a folder or a toy shape."""
    name = config.get("name")
    if name == "toy":
        toy = config.get("toy")
        return oracle.get_mixture(toy).n_components if toy in oracle.MIXTURES else None
    if name == "idx" and config.get("root") is None:
        return None  # a labels file with images is read, but is no class-label flag
    return 10 if name in _TEN_CLASSES else None


def _check_keys(name: str, fn: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    params = inspect.signature(fn).parameters
    valid = list(params) + list(_COMMON)
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} for dataset {name!r}; valid keys: {', '.join(valid)}"
        )
    missing = [p for p, v in params.items() if v.default is inspect.Parameter.empty
               and p not in kwargs]
    if missing:
        raise ValueError(f"dataset {name!r} needs key(s) {missing}")


def load_dataset(config: dict[str, Any]) -> ArrayDataset:
    """Build a data set from ``{"name": ..., **keys}``; names: toy, digits, folder, idx, cifar10.

    Keys per name: toy (``toy``, ``n``, ``seed``, ``labels``), digits (``split``, ``size``,
    ``mode``, ``test_fraction``, ``seed``), folder (``path``, ``size``, ``mode``,
    ``recursive``, ``split``, ``test_fraction``, ``seed``, ``hflip``), idx (``images``
    [+ ``labels``] or ``root`` + ``split``), cifar10 (``root``, ``split``). Common:
    ``binarize`` (None, 'threshold', 'stochastic'; stochastic is drawn once from
    ``binarize_seed``), ``limit`` (keep the first ``limit`` samples) and ``labels`` (true:
    the data must carry class labels, for class-conditional training).
    """
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    cfg = dict(config)
    if "name" not in cfg:
        raise ValueError(f"dataset config needs key 'name' (one of {', '.join(DATASETS)})")
    name = cfg.pop("name")
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")
    want_labels = cfg.get("labels") is True  # idx's labels may also be its labels file
    if name != "toy" and isinstance(cfg.get("labels"), bool):
        cfg.pop("labels")
    bin_mode = cfg.pop("binarize", None)
    bin_seed = cfg.pop("binarize_seed", 0)
    limit = cfg.pop("limit", None)
    fn = DATASETS[name]
    _check_keys(name, fn, cfg)
    ds = fn(**cfg)
    if want_labels and ds.labels is None:
        raise ValueError(f"labels: dataset {name!r} has no class labels here; remove labels "
                         "(or, for idx, give the labels file)")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        ds = ArrayDataset(ds.data[:limit], None if ds.labels is None else ds.labels[:limit],
                          ds.num_classes)
    if bin_mode is not None:
        gen = torch.Generator().manual_seed(int(bin_seed))
        ds.data = binarize(ds.data, bin_mode, generator=gen)
    return ds

