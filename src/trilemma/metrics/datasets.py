"""Named data set splits as image tensors, for classifier training and reference statistics.

``digits`` comes from scikit-learn (offline); ``mnist`` / ``fashion_mnist`` (IDX files) and
``cifar10`` (binary batches) are read from a folder the caller names; ``folder`` is an image
folder split by a :class:`~trilemma.data.FolderSource` (passed as ``data_root``; no labels).
Nothing is downloaded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import FolderSource, load_cifar10, load_digits, load_mnist
from .provenance import PathLike

_IDX_DATASETS = ("mnist", "fashion_mnist")
DATASET_NAMES = ("digits", *_IDX_DATASETS, "cifar10")


def dataset_images(
    dataset_name: str,
    split: str = "test",
    image_size: int | None = None,
    data_root: PathLike | None = None,
) -> tuple[Tensor, Tensor]:
    """Images ``(N, C, S, S)`` in [-1, 1] and labels of a named data set split.

    ``digits`` (scikit-learn, offline; ``split`` train/test/all, resized by ``load_digits``),
    ``mnist`` / ``fashion_mnist`` (IDX files under ``data_root``) and ``cifar10`` (binary
    batches under ``data_root``); other sizes are reached by antialiased bilinear resizing.
    """
    if dataset_name == "folder":
        if not isinstance(data_root, FolderSource) or image_size is None:
            raise ValueError("dataset 'folder' needs data_root=FolderSource(...) and image_size")
        x = data_root.load(split, image_size)
        return x, torch.full((len(x),), -1, dtype=torch.long)  # no labels
    if dataset_name not in DATASET_NAMES:
        raise ValueError(
            f"dataset_name must be one of {', '.join(DATASET_NAMES)}, got {dataset_name!r}"
        )
    if image_size is not None and (isinstance(image_size, bool) or
                                   not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size must be a positive integer or None, got {image_size!r}")
    if dataset_name == "digits":
        return load_digits(split=split, size=image_size or 8)
    if data_root is None:
        raise ValueError(
            f"dataset {dataset_name!r} is read from files: pass data_root (the folder holding "
            "the IDX files for mnist/fashion_mnist, the CIFAR-10 binary batches for cifar10)"
        )
    if dataset_name in _IDX_DATASETS:
        x, y = load_mnist(data_root, split)
    else:
        x, y = load_cifar10(data_root, split)
    if image_size is not None and image_size != x.shape[-1]:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear",
                          align_corners=False, antialias=True).clamp(-1, 1)
    return x.contiguous(), y
