"""Bootstrap intervals for sample metrics and paired differences (REFERENCE.md §11).

What is resampled: the **generated samples**, with replacement, ``repeats`` times (B = 200 by
default); the reference (held-out features, exact oracle samples) stays fixed, so an interval
says how much a value moves with the draw of n samples from the model, against this reference.
The reference's own noise is common to every row scored against it and cancels in comparisons.

Every resample is a row of counts ``(B, n)`` drawn from :func:`bootstrap_counts` with a fixed
seed, so two sets of the same size are resampled with the *same* indices. That is what makes
paired differences possible: rows of one evaluation drawn with the same seed share their prior
noise (sample i of both rows starts from the same noise), and the difference of their replicates
``r_a[b] - r_b[b]`` is a paired bootstrap of the difference.

Replicates of each metric without redoing the expensive part:

- Fréchet distance: the weighted mean and covariance of the features, one eigendecomposition of
  ``C_ref^{1/2} C C_ref^{1/2}`` per replicate (:class:`~trilemma.metrics.frechet.
  FrechetReference`; ``C_ref^{1/2}`` once): ~n d^2 + d^3 per replicate (128-d: a few ms); when
  fewer samples than dimensions are counted (FID's 2048-d at n < 3000) the same eigenvalues
  come from their Gram matrix, ~(0.63 n)^2 d;
- precision, recall, density, coverage: which fake lies in which k-NN ball is found once
  (:func:`~trilemma.metrics.prdc.prdc_incidence`); a replicate is a weighted count. The k-NN
  radii stay those of the full sets (resampling duplicates would put neighbours at distance 0);
- the Inception-score formula: recomputed on the resampled logits (cheap);
- sliced W2: the sorted projections repeated by the counts
  (:meth:`~trilemma.metrics.mixture.SlicedReference.sw2_replicates`).

The interval (:func:`interval`) is the 2.5-97.5 % percentile interval of the replicates, shifted
by the bootstrap's bias (the replicates' mean minus the value), so that it is centred on the
reported value: resampling with replacement repeats about a third of the samples, which biases
the replicates of FD upward and of recall and coverage downward, by as much as the interval's
width at small n. A difference is significant when its interval excludes 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy import sparse
from torch import Tensor

from .features import inception_score
from .frechet import FrechetReference, gaussian_stats

#: bootstrap resamples per value, interval level, seed of the shared resampling indices
DEFAULT_REPEATS = 200
LEVEL = 0.95
BOOTSTRAP_SEED = 20_011
#: what the reports say about the method (results.json settings.bootstrap.method)
METHOD = ("percentile interval of B bootstrap resamples of the generated samples (reference "
          "fixed), shifted by the bootstrap bias so it is centred on the value; paired "
          "differences resample the same indices in both rows; significant = the difference's "
          "interval excludes 0")
#: metrics bounded to [0, 1] (their intervals are clipped there); the others are clipped at 0
PROPORTIONS = ("precision", "recall", "coverage", "class_share", "min_class_share")


def bootstrap_counts(n: int, repeats: int = DEFAULT_REPEATS,
                     seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """``(repeats, n)`` int64: how often each of n samples appears in each resample (drawn
    with replacement; each row sums to n). The same ``(n, repeats, seed)`` give the same
    counts, so sets of equal size are resampled alike (paired)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 2:
        raise ValueError(f"repeats must be an integer >= 2, got {repeats!r}")
    idx = torch.randint(0, n, (repeats, n), generator=torch.Generator().manual_seed(seed))
    counts = np.zeros((repeats, n), dtype=np.int64)
    np.add.at(counts, (np.arange(repeats)[:, None], idx.numpy()), 1)
    return counts


def interval(value: float | None, replicates: Sequence[float] | np.ndarray | None,
             level: float = LEVEL, bounds: tuple[float, float] = (-np.inf, np.inf)
             ) -> list[float] | None:
    """``[lo, hi]``: the percentile interval of ``replicates`` shifted by their bias
    (``mean(replicates) - value``) and clipped to ``bounds``; None without a value or with
    non-finite replicates (module docstring)."""
    if value is None or replicates is None or not np.isfinite(value):
        return None
    reps = np.asarray(replicates, dtype=np.float64)
    if reps.size < 2 or not np.isfinite(reps).all():
        return None
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha]) - reps.mean() + value
    return [float(np.clip(lo, *bounds)), float(np.clip(hi, *bounds))]


def metric_bounds(key: str) -> tuple[float, float]:
    """The range a metric's interval is clipped to: [0, 1] for proportions, [0, inf) else."""
    return (0.0, 1.0) if key in PROPORTIONS else (0.0, np.inf)


def is_significant(ci: Sequence[float] | None) -> bool:
    """Whether an interval of a difference excludes 0 (strictly)."""
    return ci is not None and (ci[0] > 0 or ci[1] < 0)


def paired_difference(value_a: float, value_b: float, reps_a: np.ndarray, reps_b: np.ndarray,
                      level: float = LEVEL) -> dict[str, Any]:
    """``a - b`` with its paired-bootstrap interval (the replicates must come from the same
    resampling counts) and whether it is significant."""
    reps_a, reps_b = np.asarray(reps_a, np.float64), np.asarray(reps_b, np.float64)
    if reps_a.shape != reps_b.shape:
        raise ValueError(f"paired replicates differ in shape: {reps_a.shape} vs {reps_b.shape}")
    diff = float(value_a) - float(value_b)
    ci = interval(diff, reps_a - reps_b, level)
    return {"diff": diff, "ci": ci, "significant": is_significant(ci)}


# ----------------------------------------------------------------------------- replicates
def fd_replicates(reference: FrechetReference, features: Tensor | np.ndarray,
                  counts: np.ndarray) -> np.ndarray:
    """Fréchet distance of each resample of ``features (n, d)`` (rows of ``counts``) to the
    reference; replicate b equals ``frechet_distance`` of the features it counts."""
    x = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    gaussian_stats(x[:2])  # checks shape and finiteness
    counts = np.asarray(counts)
    gram = int((counts > 0).sum(axis=1).max()) < x.shape[1]
    x_sqrt = x @ reference.sqrt_cov if gram else None
    return np.array([reference.distance_weighted(x, torch.from_numpy(c.astype(np.float64)),
                                                 x_sqrt) for c in counts])


def prdc_replicates(incidence: Mapping[str, Any], counts: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, density and coverage of each resample of the fakes (rows of
    ``counts``, over the fakes of :func:`~trilemma.metrics.prdc.prdc_incidence`), with the
    k-NN radii of the full sets."""
    w = np.asarray(counts, dtype=np.float64)  # (B, M)
    n, m = incidence["n_real"], incidence["n_fake"]
    out = {"precision": w @ incidence["in_real_pr"].astype(np.float64) / m,
           "density": w @ incidence["dens_count"].astype(np.float64) / (incidence["k_dc"] * m)}
    for key, pairs in (("coverage", incidence["cover"]), ("recall", incidence["recall"])):
        fake, real = pairs
        hits = sparse.csr_matrix((np.ones(len(fake)), (real, fake)), shape=(n, m))
        out[key] = ((hits @ w.T) > 0).mean(axis=0)  # (N, B): some counted fake reaches i
    return out


def is_replicates(logits: Tensor, counts: np.ndarray, splits: int) -> np.ndarray:
    """The Inception-score formula (mean over ``splits`` parts) of each resample of
    ``logits (n, classes)``."""
    idx = [np.repeat(np.arange(len(c)), c) for c in np.asarray(counts)]
    return np.array([inception_score(logits[torch.from_numpy(i)], splits)[0] for i in idx])


def with_intervals(values: Mapping[str, Any], replicates: Mapping[str, np.ndarray],
                   level: float = LEVEL) -> dict[str, Any]:
    """``values`` plus ``<key>_ci: [lo, hi]`` for every key with replicates (clipped to the
    metric's range, :func:`metric_bounds`)."""
    out = dict(values)
    for key, reps in replicates.items():
        if key in values:
            out[f"{key}_ci"] = interval(values[key], reps, level, metric_bounds(key))
    return out


# ----------------------------------------------------------------------------- rankings
def rank_with_ties(values: Mapping[str, float],
                   differ: Callable[[str, str], bool | None],
                   higher_is_better: bool = False) -> dict[str, Any]:
    """Name a best candidate only when the noise separates it from the runner-up.

    ``values``: candidate -> value; ``differ(a, b)``: whether the difference between a and b is
    significant (None: unknown, which counts as not separated). Candidates are sorted best
    first and compared with the best in that order: ``tied`` holds the best and every next
    candidate down to (not including) the first one the noise separates from it. ``winner``
    is the best when it is separated from the runner-up (``tied`` is then just the winner),
    else None: the data do not decide between the tied candidates.
    """
    order = sorted(values, key=lambda k: values[k], reverse=higher_is_better)
    if not order:
        return {"winner": None, "tied": [], "order": []}
    tied = [order[0]]
    for k in order[1:]:
        if differ(order[0], k):
            break
        tied.append(k)
    return {"winner": order[0] if len(tied) == 1 else None, "tied": tied, "order": order}
