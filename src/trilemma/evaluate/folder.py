"""Scoring samples of a run trained on an image folder against the folder's held-out split.

A folder has no labels, so trilemma cannot train a feature classifier for it: the features come
from what the user gives, ``--inception PATH`` (a TorchScript FID Inception-v3: FID) or
``--features PATH`` (a classifier file from ``trilemma features train`` whose image size and
channels fit the run: ``FD-<its data set>`` on its features). The reference is the split the
run never saw (``data.split: train`` holds out ``data.test_fraction`` of the files, chosen by
``data.seed``); the baseline row scores the training split the same way. Precision, recall,
density and coverage use the same features. Reference statistics are not cached (a folder's
held-out split is usually small, and two folders must never share a cache file).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..metrics.bootstrap import fd_replicates
from ..metrics.features import (
    InceptionFeatures,
    InceptionUnavailableError,
    extract_features,
    load_classifier,
)
from ..metrics.frechet import FrechetReference
from ..metrics.reference import compare_to_reference, reference_stats
from ..train import CheckpointError
from .common import EvaluationError
from .dataspec import DataSpec
from .images import FID_REPEATS
from .scoring import Scorer

NO_EXTRACTOR = (
    "an image folder has no labels to train a feature classifier on: give --inception PATH "
    "(a TorchScript FID Inception-v3 file: FID against the held-out split) or --features PATH "
    "(a classifier from `trilemma features train` whose image size and channels fit the run), "
    "or evaluate with --no-metrics")


def _classifier(spec: DataSpec, path: str | os.PathLike, channels: int,
                device: str | torch.device) -> tuple[Any, dict[str, Any]]:
    try:
        clf = load_classifier(path, device)
    except (FileNotFoundError, CheckpointError) as err:
        raise EvaluationError(f"--features: {err}") from None
    if clf.image_size != spec.image_size or clf.channels != channels:
        raise EvaluationError(
            f"--features: the classifier {str(path)!r} takes {clf.channels}-channel "
            f"{clf.image_size}px images, the run's folder holds {channels}-channel "
            f"{spec.image_size}px images")
    return clf.eval(), {"name": clf.name, "metric_name": clf.metric_name,
                        "sha256": clf.fingerprint, "path": str(path), "source": "given",
                        "dataset": clf.dataset, "image_size": clf.image_size,
                        "feature_dim": clf.feature_dim}


def _inception(path: str | os.PathLike, device: str | torch.device
               ) -> tuple[Any, dict[str, Any]]:
    try:
        net = InceptionFeatures(None if str(path) == "auto" else path, device=device)
    except InceptionUnavailableError as err:
        raise EvaluationError(f"--inception: {err}") from None
    return net, {"name": net.name, "metric_name": net.metric_name, "sha256": net.fingerprint,
                 "path": str(net.path), "source": "given"}


class FolderScorer(Scorer):
    """FID (or a given classifier's FD) and PRDC against an image folder's held-out split."""

    def __init__(self, spec: DataSpec, *, features_path: str | os.PathLike | None = None,
                 inception: str | os.PathLike | None = None, reference_split: str = "test",
                 device: str | torch.device = "cpu", progress: bool = False) -> None:
        super().__init__(spec)
        if spec.problem:
            raise EvaluationError(spec.problem)
        if features_path is None and inception is None:
            raise EvaluationError(NO_EXTRACTOR)
        self.reference_split = reference_split
        reference = spec.split_images(reference_split)
        if inception is not None:
            self.net, self.extractor = _inception(inception, device)
        else:
            self.net, self.extractor = _classifier(spec, features_path, reference.shape[1],
                                                   device)
            self.warnings.append(
                f"{self.extractor['metric_name']} here is the Fréchet distance of features of "
                f"a classifier trained on {self.extractor['dataset']}, applied to the image "
                "folder: compare it only with numbers from the same classifier at the same n")
        self.ref = reference_stats(self.net, "folder", reference_split, None, None,
                                   data_root=spec.folder, image_size=spec.image_size,
                                   progress=progress)
        self.reference = dict(self.ref["provenance"], cache="off (image folders)", path=None)
        self._fd_ref: FrechetReference | None = None

    def measure(self, x: Tensor, counts: np.ndarray | None
                ) -> tuple[dict[str, Any], list[str], dict[str, np.ndarray]]:
        """The Fréchet distance and PRDC of samples clamped to [-1, 1], with bootstrap
        replicates of the Fréchet distance (the first :data:`FID_REPEATS` rows of ``counts``:
        each costs an eigendecomposition of the feature covariance)."""
        feats = extract_features(self.net, x.clamp(-1.0, 1.0), batch_size=50)
        comp = compare_to_reference(self.ref, feats, warn=False)
        out: dict[str, Any] = {comp["metric"]: comp["fd"]}
        for key in ("precision", "recall", "density", "coverage"):
            out[key] = comp.get(key)
        out["n_reference"] = comp["n_ref"]
        reps: dict[str, np.ndarray] = {}
        if counts is not None:
            if self._fd_ref is None:
                self._fd_ref = FrechetReference(self.ref["mu"], self.ref["cov"])
            reps[comp["metric"]] = fd_replicates(self._fd_ref, feats, counts[:FID_REPEATS])
        return out, list(comp["warnings"]), reps

    def baseline(self, n: int, seed: int) -> dict[str, Any]:
        """``n`` images of the folder's other split, scored the same way."""
        other = "train" if self.reference_split != "train" else "test"
        xr = self.spec.split_images(other)
        perm = torch.randperm(len(xr), generator=torch.Generator().manual_seed(seed))
        xr = xr[perm[:n]]
        m, w, _ = self.score(xr)
        return {"label": f"real data (folder {other} split)", "n": len(xr), "metrics": m,
                "warnings": w}
