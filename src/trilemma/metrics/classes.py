"""Mode coverage of class-labelled image data: how the samples spread over the classes.

The data set's classifier (the one whose features give FD-<dataset>) assigns each sample its
most likely class; the samples' class histogram ``q`` is compared with the data's ``p`` (the
true labels of the reference split):

- ``class_kl = KL(q || p) = sum_c q_c log(q_c / p_c)`` (natural log): 0 when the samples hit
  every class as often as the data, ``log(1 / p_c)`` when they all land in class c. Classes
  the samples miss contribute 0 (``0 log 0 = 0``); the data's shares are floored at
  :data:`CLASS_FLOOR` (then renormalised) so a class empty in the data gives a large finite
  value, not infinity;
- ``min_class_share = min_c q_c``: 0 when a class is dropped, ``1 / num_classes`` at best for
  balanced data.

Both get bootstrap replicates from the same resampling counts as the other metrics
(:mod:`.bootstrap`): a replicate is the same formula on the counted predictions.
"""

from __future__ import annotations

import numpy as np

#: floor on the data's class shares before the KL (then renormalised), for empty classes
CLASS_FLOOR = 1e-6


def class_histogram(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Shares ``(num_classes,)`` of integer class ``labels`` (each in [0, num_classes))."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0:
        raise ValueError("class_histogram needs at least one label")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got "
                         f"[{labels.min()}, {labels.max()}]")
    return np.bincount(labels, minlength=num_classes) / labels.size


def class_kl(shares: np.ndarray, data_shares: np.ndarray,
             floor: float = CLASS_FLOOR) -> np.ndarray:
    """``KL(q || p)`` of the samples' shares ``q`` (last axis; rows are replicates) from the
    data's ``p`` floored at ``floor`` and renormalised (module docstring)."""
    q = np.asarray(shares, dtype=np.float64)
    p = np.maximum(np.asarray(data_shares, dtype=np.float64), floor)
    p = p / p.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(q > 0, q * np.log(q / p), 0.0)
    return terms.sum(axis=-1)


def class_coverage(predicted: np.ndarray, data_shares: np.ndarray,
                   counts: np.ndarray | None = None) -> tuple[dict[str, float],
                                                              dict[str, np.ndarray]]:
    """``class_kl`` and ``min_class_share`` of the samples' ``predicted`` classes against the
    data's class shares, and their replicates over the rows of ``counts`` (``(B, n)``
    resampling counts; none when ``counts`` is None)."""
    data_shares = np.asarray(data_shares, dtype=np.float64)
    k = len(data_shares)
    q = class_histogram(predicted, k)
    values = {"class_kl": float(class_kl(q, data_shares)), "min_class_share": float(q.min())}
    reps: dict[str, np.ndarray] = {}
    if counts is not None:
        onehot = np.eye(k)[np.asarray(predicted, dtype=np.int64)]  # (n, k)
        w = np.asarray(counts, dtype=np.float64)
        q_b = (w @ onehot) / w.sum(axis=1, keepdims=True)  # (B, k)
        reps = {"class_kl": class_kl(q_b, data_shares), "min_class_share": q_b.min(axis=1)}
    return values, reps
