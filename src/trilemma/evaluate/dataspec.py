"""What a run's data is, for the metrics and the likelihood: images (classifier data set,
size, root, quantisation levels, binarisation) or a toy (name, oracle mixture if any)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import oracle
from ..data import FolderSource, toy_dataset
from ..metrics.features import dataset_images


@dataclass
class DataSpec:
    """What a run's data is, for the metrics: images (classifier data set name, size, root,
    quantisation levels) or a toy (name, oracle mixture if any)."""

    kind: str  # 'image' or 'toy'
    name: str  # classifier data set name (images) or toy name
    image_size: int | None = None
    data_root: str | None = None
    levels: int | None = None
    mixture: Any = None
    notes: list[str] = field(default_factory=list)
    problem: str | None = None  # why image metrics cannot run on this data
    binarize: str | None = None  # the run's data.binarize (LSGM's Bernoulli decoders)
    folder: FolderSource | None = None  # an image folder and its held-out split

    def record(self) -> dict[str, Any]:
        """JSON-safe description."""
        return {"kind": self.kind, "name": self.name, "image_size": self.image_size,
                "data_root": self.data_root, "levels": self.levels,
                "oracle_mixture": self.mixture is not None, "notes": list(self.notes)}

    def toy_points(self, n: int, generator: torch.Generator,
                   dtype: torch.dtype = torch.float32) -> Tensor:
        """``n`` fresh points of the toy: exact samples of its mixture, else its generator."""
        if self.mixture is not None:
            x, _ = self.mixture.sample(n, generator, dtype=dtype)
            return x

        return toy_dataset(self.name, n, generator).to(dtype)

    def split_images(self, split: str) -> Tensor:
        """All images of the data set's ``split`` (``'train'``, ``'test'``, ``'all'``) in
        [-1, 1], as the classifier and reference see them (not binarised)."""

        root = self.folder if self.folder is not None else self.data_root
        x, _ = dataset_images(self.name, split, self.image_size, root)
        return x


    def class_shares(self, split: str) -> np.ndarray | None:
        """Class shares of the true labels of ``split`` (for ``class_kl``); None for data
        without labels (folders)."""
        root = self.folder if self.folder is not None else self.data_root
        _, labels = dataset_images(self.name, split, self.image_size, root)
        if len(labels) == 0 or int(labels.min()) < 0:
            return None
        return np.bincount(labels.numpy(), minlength=int(labels.max()) + 1) / len(labels)


def data_spec(config: Any, reference_split: str = "test") -> DataSpec:
    """The :class:`DataSpec` of a run's ``config.data``."""
    spec = _data_spec(config, reference_split)
    spec.binarize = config.data.get("binarize")
    return spec


def _split_note(d: dict[str, Any], reference_split: str) -> list[str]:
    if d.get("split", "train") != "train" or reference_split != "test":
        return ["the run's training split and the reference split overlap"]
    return []


def _digits_notes(d: dict[str, Any], reference_split: str) -> list[str]:
    notes = []
    if d.get("test_fraction", 0.2) != 0.2 or d.get("seed", 0) != 0 or \
            d.get("mode", "bilinear") != "bilinear":
        notes.append("the run's digits split (test_fraction/seed/mode) differs from the "
                     "reference's (test_fraction 0.2, seed 0, bilinear): the reference may "
                     "overlap the training images")
    split = d.get("split", "train")
    if split != "train" or reference_split != "test":
        notes.append(f"the run was trained on split {split!r} and the reference is split "
                     f"{reference_split!r}: they overlap, so the numbers flatter the model")
    return notes


def _data_spec(config: Any, reference_split: str) -> DataSpec:

    d = dict(config.data)
    name = d["name"]
    if name == "toy":
        toy = d["toy"]
        mix = oracle.get_mixture(toy) if toy in oracle.MIXTURES else None
        return DataSpec("toy", toy, mixture=mix)
    notes: list[str] = []
    if d.get("binarize"):
        notes.append(f"the run was trained on binarised data (binarize={d['binarize']!r}); the "
                     "reference and baseline images are binarised the same way")
    if name == "digits":
        size = int(d.get("size", 8))
        notes += _digits_notes(d, reference_split)
        return DataSpec("image", "digits", size, None, 17 if size == 8 else None, notes=notes)
    if name == "idx":
        if d.get("root") is None:
            return DataSpec("image", "idx", None, None, 256, notes=notes, problem=(
                "data 'idx' given as single files (data.images) has no held-out split to "
                "compare with; give data.root (a folder of the standard MNIST/Fashion-MNIST "
                "files) or evaluate with metrics off (--no-metrics)"))
        root = str(d["root"])
        ds = "fashion_mnist" if "fashion" in root.lower() else "mnist"
        return DataSpec("image", ds, 28, root, 256, notes=notes + _split_note(d, reference_split))
    if name == "cifar10":
        return DataSpec("image", "cifar10", 32, str(d["root"]), 256,
                        notes=notes + _split_note(d, reference_split))
    if name == "folder":
        return _folder_spec(d, notes, reference_split)
    return DataSpec("image", name, int(d.get("size", 0)) or None, None, 256, notes=notes,
                    problem=(f"data {name!r} has no labelled held-out split, so no classifier "
                             "can be trained for FD/precision/recall and no reference "
                             "statistics exist for it; evaluate with metrics off "
                             "(--no-metrics)"))


def _folder_spec(d: dict[str, Any], notes: list[str], reference_split: str) -> DataSpec:
    """An image folder: scored against its held-out split when it was trained on ``split:
    train`` (with Inception weights or a classifier the user gives), else no metrics."""
    source = FolderSource(str(d["path"]), d.get("test_fraction", 0.1), d.get("seed", 0),
                          d.get("mode"), d.get("recursive", False))
    size = int(d["size"])
    if d.get("split", "all") != "train":
        return DataSpec("image", "folder", size, str(d["path"]), 256, notes=notes, problem=(
            "this run was trained on every image of its folder (data.split: all), so no "
            "held-out images are left to compare with; train with data.split: train (the "
            "held-out data.test_fraction is then the reference) or evaluate with --no-metrics"))
    if d.get("hflip"):
        notes = [*notes, "the run also trained on mirrored copies (data.hflip); the reference "
                 "is the held-out images as they are"]
    return DataSpec("image", "folder", size, str(d["path"]), 256, folder=source,
                    notes=notes + _split_note({"split": "train"}, reference_split))
