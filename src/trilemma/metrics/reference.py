"""Reference feature statistics with provenance, cached on disk, and sample-size warnings.

:func:`reference_stats` extracts features of a data set split with a feature extractor
(:class:`~trilemma.metrics.features.DigitsClassifier` or
:class:`~trilemma.metrics.features.InceptionFeatures`) and returns their Gaussian fit
(``mu``, ``cov``, float64) plus a fixed random subset of the raw features (for precision /
recall / density / coverage), together with a provenance record: data set, split, n, the
SHA-256 of the exact images used, the extractor's name and the SHA-256 of its weights. With
a ``cache_dir`` the result is saved as safetensors + JSON metadata and reused only when the
provenance matches; otherwise it is recomputed with a warning saying why.

:func:`compare_to_reference` turns generated samples' features into a report (Fréchet distance
under the extractor's metric name, ``FD-digits`` for the digits classifier, never ``FID``; and
PRDC), with :func:`min_samples_warning` messages when n is too small to be comparable.
"""

from __future__ import annotations

import os
import re
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import __version__
from ..data import binarize as binarize_images
from ..train.checkpoint import CheckpointError, load_weights, save_weights
from .datasets import dataset_images
from .features import extract_features
from .frechet import frechet_distance, gaussian_stats
from .prdc import DEFAULT_K_DC, DEFAULT_K_PR, prdc
from .provenance import data_sha256

REFERENCE_KIND = "trilemma.reference_stats"
REFERENCE_FORMAT = 1
DEFAULT_KEEP_FEATURES = 10_000

#: provenance entries that must agree for a cached file to be reused
MATCH_KEYS = (
    "kind", "format_version", "dataset", "split", "binarize", "image_size", "n", "subset_seed",
    "data_sha256", "extractor", "extractor_sha256", "feature_dim", "n_features_kept",
)

PathLike = str | os.PathLike


class ReferenceCacheWarning(UserWarning):
    """A cached reference file exists but does not match: it is recomputed and overwritten."""


class SampleSizeWarning(UserWarning):
    """A metric is computed on fewer samples than it needs to be comparable."""


# ------------------------------------------------------------------------------- warnings
#: samples a metric needs before its values are comparable across papers / settings
MIN_SAMPLES = {"fid": 50_000, "is": 50_000, "prdc": 1_000}
_ALIASES = {
    "inception_score": "is", "is": "is", "fid": "fid",
    "prdc": "prdc", "precision": "prdc", "recall": "prdc", "density": "prdc",
    "coverage": "prdc", "fd": "fd", "frechet": "fd",
}


def _metric_kind(metric: str) -> str:
    key = str(metric).strip().lower()
    if key in _ALIASES:
        return _ALIASES[key]
    if key.startswith("fd-") or key.startswith("fd_"):
        return "fd"
    if key.startswith("is-") or key.startswith("is_"):
        return "is-classifier"
    raise ValueError(
        f"unknown metric {metric!r}; expected one of fid, fd (or FD-<dataset>), is, prdc, "
        "precision, recall, density, coverage"
    )


def min_samples_needed(metric: str, dim: int | None = None) -> int:
    """Samples below which :func:`min_samples_warning` warns for ``metric``.

    FID and IS: 50,000 (the standard protocols). A classifier Fréchet distance (``fd``,
    ``FD-<dataset>``): ``max(1000, 10 * dim)`` (``dim`` = feature dimension, default 128), as
    the covariance of ``dim``-d features needs many more than ``dim`` samples. PRDC: 1000.
    Classifier IS (``IS-<dataset>``): 5,000 (10 splits of 500).
    """
    kind = _metric_kind(metric)
    if kind == "fd":
        return max(1000, 10 * int(dim if dim is not None else 128))
    if kind == "is-classifier":
        return 5_000
    return MIN_SAMPLES[kind]


def min_samples_warning(
    metric: str, n: int, dim: int | None = None, stacklevel: int = 2
) -> str | None:
    """Warn (:class:`SampleSizeWarning`) and return the message when ``n`` is too small.

    The message names the metric and the ``n`` used; returns None when ``n`` suffices. Values
    computed at different n are not comparable (the Fréchet distance is biased upward, by
    roughly ``Tr(C) / n`` per set, and k-NN metrics change with n), so reports must state n.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    kind = _metric_kind(metric)
    need = min_samples_needed(metric, dim)
    if n >= need and not (kind == "fd" and dim is not None and n <= dim):
        return None
    if kind in ("fid", "fd"):
        msg = (f"{metric} computed on n = {n} samples: the Fréchet distance is biased upward "
               f"at small n (the bias shrinks like 1/n); {need} or more are needed for "
               f"{'the standard FID protocol' if kind == 'fid' else 'a stable estimate'}. "
               f"Report n = {n} and compare only numbers computed at the same n.")
        if dim is not None and n <= dim:
            msg += f" With n <= feature dimension {dim} the covariance is singular."
    elif kind == "prdc":
        msg = (f"{metric} computed on n = {n} samples: k-NN precision/recall/density/coverage "
               f"depend on n and are noisy below {need}; report n = {n} and compare only at "
               "equal n and k.")
    else:
        msg = (f"{metric} computed on n = {n} samples (fewer than the {need} of the standard "
               f"protocol): the score is biased at small n; report n = {n} and compare only "
               "at equal n and splits.")
    warnings.warn(msg, SampleSizeWarning, stacklevel=stacklevel)
    return msg


# ------------------------------------------------------------------------------- reference
def _check_extractor(extractor: nn.Module) -> None:
    for attr in ("features", "name", "fingerprint"):
        if not hasattr(extractor, attr):
            raise TypeError(
                f"extractor must have features(x), name and fingerprint (DigitsClassifier or "
                f"InceptionFeatures); {type(extractor).__name__} lacks {attr!r}"
            )


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(s))


def reference_path(
    cache_dir: PathLike, extractor_name: str, dataset_name: str, split: str,
    image_size: int, n: int | None, binarize: str | None = None,
) -> Path:
    """Cache file name: one per (extractor, data set, split, binarisation, size, n); contents
    are checked."""
    tag = "all" if n is None else str(int(n))
    if binarize:
        split = f"{split}-binarized-{binarize}"
    name = f"ref_{_safe(extractor_name)}_{_safe(dataset_name)}_{_safe(split)}_" \
           f"{int(image_size)}px_n{tag}.safetensors"
    return Path(cache_dir).expanduser() / name


def _mismatch(stored: dict[str, Any], wanted: dict[str, Any]) -> str | None:
    for key in MATCH_KEYS:
        if stored.get(key) != wanted.get(key):
            return f"{key}: cached {stored.get(key)!r}, now {wanted.get(key)!r}"
    return None


def _check_reference_args(extractor: nn.Module, split: str, n: int | None, keep_features: int,
                          binarize: str | None) -> None:
    """Reject arguments :func:`reference_stats` cannot use, before any image is read."""
    _check_extractor(extractor)
    if binarize not in (None, "threshold", "stochastic"):
        raise ValueError(f"binarize must be None, 'threshold' or 'stochastic', got {binarize!r}")
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 2):
        raise ValueError(f"n must be an integer >= 2 or None (all images), got {n!r}")
    if isinstance(keep_features, bool) or not isinstance(keep_features, int) or keep_features < 0:
        raise ValueError(f"keep_features must be an integer >= 0, got {keep_features!r}")


def _reference_images(
    dataset_name: str, split: str, n: int | None, size: int | None,
    data_root: PathLike | None, subset_seed: int, binarize: str | None,
) -> tuple[Tensor, int]:
    """The ``n`` images (all when None) of a seeded permutation of the split, and the split size."""
    x, _ = dataset_images(dataset_name, split, size, data_root)
    if binarize:
        x = binarize_images(x, binarize, generator=torch.Generator().manual_seed(0))
    n_avail = len(x)
    n_used = n_avail if n is None else n
    if n_used > n_avail:
        raise ValueError(
            f"n = {n} exceeds the {n_avail} images of {dataset_name!r} split {split!r}"
        )
    perm = torch.randperm(n_avail, generator=torch.Generator().manual_seed(int(subset_seed)))
    return x[perm[:n_used]].contiguous(), n_avail


def _cached(
    path: Path, prov: dict[str, Any], keep_features: int, refresh: bool,
) -> tuple[dict[str, Any] | None, str]:
    """A matching cached result (or None) and the cache status; warns when the file is stale.

    The warning points at the caller of :func:`reference_stats` (``stacklevel=3``).
    """
    if refresh:
        return None, "stale: refresh requested" if path.is_file() else "miss"
    if not path.is_file():
        return None, "miss"
    try:
        tensors, stored = load_weights(path)
        want = dict(prov, feature_dim=stored.get("feature_dim"),
                    n_features_kept=min(keep_features, prov["n"]))
        reason = _mismatch(stored, want)
        if reason is None and {"mu", "cov", "features"} <= set(tensors):
            return {"mu": tensors["mu"], "cov": tensors["cov"], "features": tensors["features"],
                    "provenance": stored, "path": str(path), "cache": "hit"}, "hit"
        reason = reason or "tensors mu/cov/features missing"
    except (CheckpointError, OSError, ValueError) as e:
        reason = f"unreadable ({e})"
    warnings.warn(f"reference statistics {str(path)!r} do not match ({reason}); "
                  "recomputing", ReferenceCacheWarning, stacklevel=3)
    return None, f"stale: {reason}"


def reference_stats(
    extractor: nn.Module,
    dataset_name: str = "digits",
    split: str = "test",
    n: int | None = None,
    cache_dir: PathLike | None = None,
    *,
    data_root: PathLike | None = None,
    image_size: int | None = None,
    subset_seed: int = 0,
    keep_features: int = DEFAULT_KEEP_FEATURES,
    batch_size: int = 256,
    refresh: bool = False,
    progress: bool = False,
    binarize: str | None = None,
) -> dict[str, Any]:
    """Feature statistics of a data set split, cached with provenance.

    ``n`` images (all when None) are drawn without replacement by a random permutation seeded
    with ``subset_seed``; ``image_size`` defaults to the extractor's (the data set's native
    size for Inception). Returns ``{"mu", "cov"}`` (float64), ``"features"`` (float32, the
    first ``keep_features`` of the permuted images: a fixed random subset), ``"provenance"``
    (dataset, split, n, data SHA-256, extractor name + SHA-256, ...), ``"path"`` (cache file
    or None) and ``"cache"`` ('hit', 'miss', 'stale: <reason>' or 'off'). A cached file is
    reused only when its provenance matches (``refresh=True`` always recomputes).
    ``binarize`` ('threshold' or 'stochastic', drawn with seed 0) compares with the binarised
    images a model trained with ``data.binarize`` learned (LSGM's Bernoulli decoder).
    """
    _check_reference_args(extractor, split, n, keep_features, binarize)
    size = image_size if image_size is not None else getattr(extractor, "image_size", None)
    x, n_avail = _reference_images(dataset_name, split, n, size, data_root, subset_seed,
                                   binarize)
    n_used = len(x)
    prov: dict[str, Any] = {
        "kind": REFERENCE_KIND, "format_version": REFERENCE_FORMAT, "dataset": dataset_name,
        "split": split, "binarize": binarize, "image_size": int(x.shape[-1]),
        "channels": int(x.shape[1]), "n": n_used, "n_available": n_avail,
        "subset_seed": int(subset_seed), "data_sha256": data_sha256(x),
        "data_root": None if data_root is None else str(data_root),
        "extractor": extractor.name, "extractor_sha256": extractor.fingerprint,
        "metric_name": getattr(extractor, "metric_name", None),
        "feature_dim": None, "n_features_kept": None,
    }
    path = None
    status = "off"
    if cache_dir is not None:
        path = reference_path(cache_dir, extractor.name, dataset_name, split, x.shape[-1], n,
                              binarize)
        hit, status = _cached(path, prov, keep_features, refresh)
        if hit is not None:
            return hit
    t0 = time.perf_counter()
    feats = extract_features(extractor, x, batch_size=batch_size, progress=progress)
    mu, cov = gaussian_stats(feats)
    kept = feats[: min(keep_features, n_used)].contiguous()
    prov.update(feature_dim=int(feats.shape[1]), n_features_kept=int(len(kept)),
                extract_seconds=round(time.perf_counter() - t0, 3),
                trilemma_version=__version__, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    if path is not None:
        save_weights(path, {"mu": mu, "cov": cov, "features": kept}, prov)
    return {"mu": mu, "cov": cov, "features": kept, "provenance": prov,
            "path": None if path is None else str(path), "cache": status}


def compare_to_reference(
    reference: dict[str, Any],
    fake_features: Tensor | np.ndarray,
    *,
    with_prdc: bool = True,
    k_pr: int = DEFAULT_K_PR,
    k_dc: int = DEFAULT_K_DC,
    warn: bool = True,
) -> dict[str, Any]:
    """Fréchet distance (named by the extractor: ``FD-digits``, ``FID``) and PRDC vs a reference.

    ``reference`` is a :func:`reference_stats` result; PRDC uses its stored feature subset.
    The report holds ``metric`` (the name), ``fd``, ``n_fake``, ``n_ref``, PRDC entries, the
    reference provenance and ``warnings`` (sample-size messages, also issued as warnings when
    ``warn``).
    """
    prov = reference.get("provenance", {})
    fake = torch.as_tensor(fake_features)
    mu_f, cov_f = gaussian_stats(fake)
    if mu_f.shape != reference["mu"].shape:
        raise ValueError(f"fake_features have dimension {mu_f.shape[0]}, the reference "
                         f"{reference['mu'].shape[0]}")
    name = prov.get("metric_name") or "FD"
    out: dict[str, Any] = {
        "metric": name,
        "fd": frechet_distance(reference["mu"], reference["cov"], mu_f, cov_f),
        "n_fake": int(fake.shape[0]),
        "n_ref": int(prov.get("n", len(reference["features"]))),
        "reference": {k: prov.get(k) for k in ("dataset", "split", "n", "image_size",
                                               "data_sha256", "extractor", "extractor_sha256")},
    }
    msgs = []
    dim = int(mu_f.shape[0])
    metric = name if name != "FD" else "fd"
    for m in sorted({out["n_fake"], out["n_ref"]}):
        msg = (min_samples_warning(metric, m, dim, stacklevel=3) if warn else
               _quiet(metric, m, dim))
        if msg:
            msgs.append(msg)
    if with_prdc:
        ref_feats = reference["features"]
        res = prdc(ref_feats, fake, k_pr=k_pr, k_dc=k_dc)
        out.update({k: res[k] for k in ("precision", "recall", "density", "coverage")})
        out.update(prdc_n_real=res["n_real"], k_pr=k_pr, k_dc=k_dc)
        m = min(res["n_real"], res["n_fake"])
        msg = min_samples_warning("prdc", m, stacklevel=3) if warn else _quiet("prdc", m, None)
        if msg:
            msgs.append(msg)
    out["warnings"] = msgs
    return out


def _quiet(metric: str, n: int, dim: int | None) -> str | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SampleSizeWarning)
        return min_samples_warning(metric, n, dim)
