"""Precision / recall (Kynkäänniemi et al. 2019) and density / coverage (Naeem et al. 2020).

Each real feature ``r_i`` gets a ball of radius ``NND_k(r_i)``, the distance to its k-th
nearest *other* real feature; each fake feature ``f_j`` likewise among fakes. Balls are closed
(``<=``, as in Kynkäänniemi et al.; ties have probability zero for continuous features).

- precision = share of fakes inside at least one real ball (k = 3): fidelity;
- recall = share of reals inside at least one fake ball (k = 3): diversity;
- density = ``(1 / (k M)) sum_j #{i : f_j in B(r_i, NND_k(r_i))}`` (k = 5): fidelity that does
  not saturate at 1 and is robust to real outliers; about 1 when fakes follow the real law;
- coverage = share of reals whose ball holds at least one fake (k = 5): robust diversity.

Distances are computed in float64 with ``torch.cdist`` over row chunks (features centred on the
real mean first, which keeps the matrix-product distance formula accurate), so 10k x 10k sets
need only ``chunk_size x N`` distances in memory at a time; all four metrics come from one pass
over the real-fake distances. Radii get a relative slack of ``RADIUS_RTOL`` = 1e-9 so that ties
(e.g. a set compared with itself) are decided consistently. Device follows the inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

DEFAULT_K_PR = 3
DEFAULT_K_DC = 5
DEFAULT_CHUNK = 1024
#: relative slack on the radii: a point tied with a ball's k-th neighbour stays inside despite
#: the round-off of cdist's matrix-product formula (float64: errors ~1e-14 after centring)
RADIUS_RTOL = 1e-9


def _as_features(x: Tensor | np.ndarray, name: str, dtype: torch.dtype) -> Tensor:
    """Validate ``(n, d)`` features; returns them detached in ``dtype`` on their device."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.asarray(x))
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a tensor or numpy array, got {type(x).__name__}")
    if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must have shape (n, d) with n, d >= 1, got {tuple(x.shape)}")
    x = x.detach().to(dtype)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return x


def _check_k(k: int, name: str) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{name} must be a positive integer, got {k!r}")
    return k


def _check_chunk(chunk_size: int) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return chunk_size


def _check_enough(n: int, k: int, name: str) -> None:
    """A k-NN radius needs k other points: n >= k + 1."""
    if n < k + 1:
        raise ValueError(
            f"{name} has {n} samples, but k = {k} nearest neighbours need at least k + 1 = "
            f"{k + 1} (use more samples or a smaller k)"
        )


def knn_radii(
    features: Tensor | np.ndarray,
    ks: int | tuple[int, ...],
    chunk_size: int = DEFAULT_CHUNK,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Distance of every point to its k-th nearest *other* point, for each k in ``ks``.

    Returns ``(n, len(ks))`` (or ``(n,)`` for an int ``ks``). The point itself (distance 0)
    is excluded by taking the (k + 1)-th smallest distance, so exact duplicates count as
    neighbours at distance 0.
    """
    single = isinstance(ks, int)
    ks_t = (ks,) if single else tuple(ks)
    if not ks_t:
        raise ValueError("ks must name at least one k")
    for k in ks_t:
        _check_k(k, "k")
    x = _as_features(features, "features", dtype)
    _check_enough(x.shape[0], max(ks_t), "features")
    _check_chunk(chunk_size)
    kmax = max(ks_t)
    x = x - x.mean(dim=0)
    out = torch.empty(x.shape[0], len(ks_t), dtype=dtype, device=x.device)
    idx = torch.tensor(ks_t, device=x.device)  # index k of the sorted list = k-th other point
    for start in range(0, x.shape[0], chunk_size):
        block = x[start : start + chunk_size]
        d = torch.cdist(block, x)
        rows = torch.arange(block.shape[0], device=x.device)
        d[rows, rows + start] = 0.0  # the point itself: exactly 0 (cdist via mm is not exact)
        nearest = torch.topk(d, kmax + 1, dim=1, largest=False, sorted=True).values
        out[start : start + chunk_size] = nearest[:, idx]
    return out[:, 0] if single else out


def _prepare(
    real: Tensor | np.ndarray, fake: Tensor | np.ndarray, chunk_size: int, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    _check_chunk(chunk_size)
    r = _as_features(real, "real", dtype)
    f = _as_features(fake, "fake", dtype)
    if r.shape[1] != f.shape[1]:
        raise ValueError(
            f"real and fake features differ in dimension: {r.shape[1]} vs {f.shape[1]}"
        )
    if r.device != f.device:
        raise ValueError(f"real is on {r.device} but fake is on {f.device}")
    centre = r.mean(dim=0)
    return r - centre, f - centre


def _scan(
    r: Tensor, f: Tensor, k_pr: int | None, k_dc: int | None, chunk_size: int
) -> dict[str, float]:
    """One chunked pass over the real-fake distances; metrics for the k's that are given."""
    dtype, dev = r.dtype, r.device
    n, m = r.shape[0], f.shape[0]
    ks = tuple(k for k in (k_pr, k_dc) if k is not None)
    _check_enough(n, max(ks), "real")
    radii = knn_radii(r, ks, chunk_size, dtype)
    radii = radii * (1.0 + RADIUS_RTOL)
    rad_pr = radii[:, 0] if k_pr is not None else None
    rad_dc = radii[:, -1] if k_dc is not None else None
    rad_fake = None
    if k_pr is not None:
        _check_enough(m, k_pr, "fake")
        rad_fake = knn_radii(f, k_pr, chunk_size, dtype) * (1.0 + RADIUS_RTOL)

    n_prec = torch.zeros((), dtype=torch.long, device=dev)
    n_dens = torch.zeros((), dtype=torch.long, device=dev)
    recalled = torch.zeros(n, dtype=torch.bool, device=dev)
    nearest_fake = torch.full((n,), float("inf"), dtype=dtype, device=dev)
    for start in range(0, m, chunk_size):
        d = torch.cdist(f[start : start + chunk_size], r)  # (chunk, N): fakes x reals
        if rad_pr is not None and rad_fake is not None:
            n_prec += (d <= rad_pr[None, :]).any(dim=1).sum()
            recalled |= (d <= rad_fake[start : start + chunk_size, None]).any(dim=0)
        if rad_dc is not None:
            n_dens += (d <= rad_dc[None, :]).sum()
            nearest_fake = torch.minimum(nearest_fake, d.min(dim=0).values)
    out: dict[str, float] = {}
    if k_pr is not None:
        out["precision"] = float(n_prec) / m
        out["recall"] = float(recalled.sum()) / n
    if k_dc is not None and rad_dc is not None:
        out["density"] = float(n_dens) / (k_dc * m)
        out["coverage"] = float((nearest_fake <= rad_dc).sum()) / n
    return out


def prdc(
    real: Tensor | np.ndarray,
    fake: Tensor | np.ndarray,
    k_pr: int = DEFAULT_K_PR,
    k_dc: int = DEFAULT_K_DC,
    chunk_size: int = DEFAULT_CHUNK,
    dtype: torch.dtype = torch.float64,
) -> dict[str, float]:
    """Precision, recall (k = ``k_pr``), density and coverage (k = ``k_dc``) of ``fake``.

    ``real`` ``(N, d)`` and ``fake`` ``(M, d)`` features; needs ``N > max(k_pr, k_dc)`` and
    ``M > k_pr``. Returns ``{"precision", "recall", "density", "coverage", "n_real",
    "n_fake", "k_pr", "k_dc"}``.
    """
    _check_k(k_pr, "k_pr")
    _check_k(k_dc, "k_dc")
    r, f = _prepare(real, fake, chunk_size, dtype)
    out = _scan(r, f, k_pr, k_dc, chunk_size)
    return {**out, "n_real": r.shape[0], "n_fake": f.shape[0], "k_pr": k_pr, "k_dc": k_dc}


def prdc_incidence(
    real: Tensor | np.ndarray,
    fake: Tensor | np.ndarray,
    k_pr: int = DEFAULT_K_PR,
    k_dc: int = DEFAULT_K_DC,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict[str, Any]:
    """Which fake falls in which ball: the pieces :func:`prdc` sums, kept per sample so that
    the metrics of any reweighting of the fakes (a bootstrap resample) follow without
    recomputing a distance (:func:`trilemma.metrics.bootstrap.prdc_replicates`).

    Returns ``in_real_pr`` (M,) bool: fake j inside some real ball of radius k_pr;
    ``dens_count`` (M,): the number of real k_dc-balls holding fake j; ``cover`` and ``recall``,
    each a pair ``(fake index, real index)`` of int64 arrays: fake j inside real i's k_dc-ball,
    real i inside fake j's k_pr-ball (radii of the full fake set); and ``n_real``, ``n_fake``,
    ``k_pr``, ``k_dc``. Summed with unit weights they give exactly :func:`prdc`'s values.
    """
    _check_k(k_pr, "k_pr")
    _check_k(k_dc, "k_dc")
    r, f = _prepare(real, fake, chunk_size, torch.float64)
    n, m = r.shape[0], f.shape[0]
    _check_enough(n, max(k_pr, k_dc), "real")
    _check_enough(m, k_pr, "fake")
    radii = knn_radii(r, (k_pr, k_dc), chunk_size) * (1.0 + RADIUS_RTOL)
    rad_fake = knn_radii(f, k_pr, chunk_size) * (1.0 + RADIUS_RTOL)
    in_pr = torch.zeros(m, dtype=torch.bool)
    dens = torch.zeros(m, dtype=torch.long)
    cover: list[Tensor] = []
    recall: list[Tensor] = []
    for start in range(0, m, chunk_size):
        d = torch.cdist(f[start : start + chunk_size], r).cpu()
        in_dc = d <= radii[:, 1].cpu()[None, :]
        in_pr[start : start + chunk_size] = (d <= radii[:, 0].cpu()[None, :]).any(dim=1)
        dens[start : start + chunk_size] = in_dc.sum(dim=1)
        cover.append(torch.nonzero(in_dc) + torch.tensor([start, 0]))
        recall.append(torch.nonzero(d <= rad_fake[start : start + chunk_size, None].cpu())
                      + torch.tensor([start, 0]))
    cov_ij, rec_ij = torch.cat(cover).numpy(), torch.cat(recall).numpy()
    return {"in_real_pr": in_pr.numpy(), "dens_count": dens.numpy(),
            "cover": (cov_ij[:, 0], cov_ij[:, 1]), "recall": (rec_ij[:, 0], rec_ij[:, 1]),
            "n_real": n, "n_fake": m, "k_pr": k_pr, "k_dc": k_dc}


def precision_recall(
    real: Tensor | np.ndarray,
    fake: Tensor | np.ndarray,
    k: int = DEFAULT_K_PR,
    chunk_size: int = DEFAULT_CHUNK,
    dtype: torch.dtype = torch.float64,
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN balls."""
    _check_k(k, "k")
    r, f = _prepare(real, fake, chunk_size, dtype)
    out = _scan(r, f, k, None, chunk_size)
    return out["precision"], out["recall"]


def density_coverage(
    real: Tensor | np.ndarray,
    fake: Tensor | np.ndarray,
    k: int = DEFAULT_K_DC,
    chunk_size: int = DEFAULT_CHUNK,
    dtype: torch.dtype = torch.float64,
) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020) with k-NN balls around the real features."""
    _check_k(k, "k")
    r, f = _prepare(real, fake, chunk_size, dtype)
    out = _scan(r, f, None, k, chunk_size)
    return out["density"], out["coverage"]
