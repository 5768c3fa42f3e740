"""The scorer of a run's data: images (classifier features), toy data (the exact oracle), or
none; chosen here so that :func:`~trilemma.evaluate.run.evaluate_run` never branches on it."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..metrics.bootstrap import DEFAULT_REPEATS
from .common import EvaluationError, default_cache_dir
from .dataspec import DataSpec
from .folder import FolderScorer
from .images import DEFAULT_CLASSIFIER_STEPS, ImageScorer
from .scoring import NoScorer, Scorer
from .toys import ToyScorer


def make_scorer(
    spec: DataSpec,
    *,
    metrics: bool = True,
    n: int = 1000,
    features_path: str | os.PathLike | None = None,
    inception: str | os.PathLike | None = None,
    reference_split: str = "test",
    cache_dir: Path | None = None,
    classifier_steps: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    repeats: int = DEFAULT_REPEATS,
) -> Scorer:
    """The scorer of ``spec``'s data with its reference set up: :class:`ImageScorer`,
    :class:`FolderScorer` (an image folder's held-out split), :class:`ToyScorer`, or
    :class:`NoScorer` when ``metrics`` is off.

    ``features_path``/``inception`` (a classifier, FID's Inception network) are for images
    only; ``n`` sizes the toy reference; ``cache_dir`` holds classifiers and reference stats;
    ``repeats``: bootstrap resamples behind every interval (0: none).
    """
    if not metrics:
        return NoScorer(spec)
    if spec.kind == "image" and spec.name == "folder":
        return FolderScorer(spec, features_path=features_path, inception=inception,
                            reference_split=reference_split, device=device, progress=progress)
    if spec.kind == "image":
        return ImageScorer(spec, features_path=features_path, inception=inception,
                           reference_split=reference_split,
                           cache_dir=cache_dir or default_cache_dir(),
                           classifier_steps=classifier_steps or DEFAULT_CLASSIFIER_STEPS,
                           device=device, progress=progress, repeats=repeats)
    if features_path is not None:
        raise EvaluationError(f"--features: the classifier features are for image data; "
                              f"this run's data is the 2-D/low-D toy {spec.name!r} "
                              "(scored with the oracle/SW2 metrics instead)")
    if inception is not None:
        raise EvaluationError(f"--inception: FID needs image data; this run's data is the "
                              f"toy {spec.name!r}")
    return ToyScorer(spec, n, progress, repeats)
