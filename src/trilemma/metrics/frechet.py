"""Fréchet distance between Gaussian fits of feature sets (REFERENCE.md §6).

``FD = ||mu1 - mu2||^2 + Tr(C1 + C2 - 2 (C1 C2)^{1/2})``. The trace of the matrix square root is
computed without a general (non-symmetric) ``sqrtm``: ``C1 C2`` is similar to the symmetric
positive semi-definite ``S = C1^{1/2} C2 C1^{1/2}`` (same eigenvalues), so
``Tr((C1 C2)^{1/2}) = sum_i sqrt(lambda_i(S))`` with ``lambda(S)`` from a symmetric
eigen-decomposition. Tiny negative eigenvalues (round-off) are clamped to zero. Everything runs
in float64.

With Inception-v3 pool features this is FID; with features of a classifier trained on the
data set itself it is *not* FID and must be reported under another name (e.g. ``FD-digits``,
see :mod:`trilemma.metrics.features`). A finite sample size biases the estimate upwards: record
``n`` and the reference statistics' provenance (:mod:`trilemma.metrics.reference`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

_F64 = torch.float64

ArrayLike = Tensor | np.ndarray | list


def _as_f64(x: ArrayLike, name: str) -> Tensor:
    """A detached float64 CPU tensor (accepts numpy arrays); finite values only."""
    if not isinstance(x, Tensor):
        try:
            x = torch.from_numpy(np.asarray(x, dtype=np.float64))
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"{name} must be a tensor, numpy array or nested list of numbers, "
                f"got {type(x).__name__}"
            ) from e
    x = x.detach().to(device="cpu", dtype=_F64)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return x


def gaussian_stats(features: ArrayLike) -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance ``(mu (d,), cov (d, d))`` in float64 of ``(n, d)`` features.

    The covariance uses the ``n - 1`` denominator (as ``numpy.cov`` and the FID reference code).
    """
    f = _as_f64(features, "features")
    if f.dim() != 2:
        raise ValueError(f"features must have shape (n, d), got {tuple(f.shape)}")
    n = f.shape[0]
    if n < 2:
        raise ValueError(f"features needs at least 2 samples for a covariance, got n = {n}")
    mu = f.mean(dim=0)
    centred = f - mu
    cov = centred.T @ centred / (n - 1)
    return mu, 0.5 * (cov + cov.T)


def _check_cov(cov: ArrayLike, name: str, d: int | None = None) -> Tensor:
    """Validate a ``(d, d)`` symmetric covariance; returns it symmetrised in float64."""
    c = _as_f64(cov, name)
    if c.dim() != 2 or c.shape[0] != c.shape[1] or c.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square matrix, got shape {tuple(c.shape)}")
    if d is not None and c.shape[0] != d:
        raise ValueError(f"{name} must have shape ({d}, {d}) to match the mean, "
                         f"got {tuple(c.shape)}")
    asym = float((c - c.T).abs().max())
    if asym > 1e-5 * float(c.abs().max()):
        raise ValueError(f"{name} is not symmetric (max |C - C^T| = {asym:.3g})")
    return 0.5 * (c + c.T)


def _check_stats(mu: ArrayLike, cov: ArrayLike, name: str) -> tuple[Tensor, Tensor]:
    """Validate one ``(mu, cov)`` pair; returns float64 CPU tensors with cov symmetrised."""
    m = _as_f64(mu, f"mu{name}")
    if m.dim() != 1 or m.shape[0] == 0:
        raise ValueError(f"mu{name} must be a non-empty vector (d,), got shape {tuple(m.shape)}")
    return m, _check_cov(cov, f"cov{name}", m.shape[0])


def _psd_sqrt(c: Tensor) -> Tensor:
    """Symmetric square root of a symmetric PSD matrix (negative eigenvalues clamped to 0)."""
    w, v = torch.linalg.eigh(c)
    return (v * w.clamp(min=0.0).sqrt()) @ v.T


def trace_sqrt_product(cov1: ArrayLike, cov2: ArrayLike) -> float:
    """``Tr((C1 C2)^{1/2})`` via the eigenvalues of the PSD matrix ``C1^{1/2} C2 C1^{1/2}``."""
    c1 = _check_cov(cov1, "cov1")
    c2 = _check_cov(cov2, "cov2", c1.shape[0])
    return _trace_sqrt(c1, c2)


def _trace_sqrt(c1: Tensor, c2: Tensor) -> float:
    """``sum sqrt(eig(C1^{1/2} C2 C1^{1/2}))``; the eigenvalues equal those of ``C1 C2``."""
    s1 = _psd_sqrt(c1)
    m = s1 @ c2 @ s1
    eig = torch.linalg.eigvalsh(0.5 * (m + m.T))
    return float(eig.clamp(min=0.0).sqrt().sum())


def frechet_distance(mu1: ArrayLike, cov1: ArrayLike, mu2: ArrayLike, cov2: ArrayLike) -> float:
    """Fréchet distance between ``N(mu1, cov1)`` and ``N(mu2, cov2)`` (float64, >= 0).

    ``||mu1 - mu2||^2 + Tr(C1) + Tr(C2) - 2 Tr((C1 C2)^{1/2})``, the trace of the square root
    from a symmetric eigen-decomposition (stable for singular, PSD covariances). A result
    below zero by round-off is returned as 0.
    """
    m1, c1 = _check_stats(mu1, cov1, "1")
    m2, c2 = _check_stats(mu2, cov2, "2")
    if m1.shape != m2.shape:
        raise ValueError(
            f"mu1 and mu2 have different dimensions: {m1.shape[0]} vs {m2.shape[0]}"
        )
    diff = float(((m1 - m2) ** 2).sum())
    fd = diff + float(torch.trace(c1)) + float(torch.trace(c2)) - 2.0 * _trace_sqrt(c1, c2)
    return max(fd, 0.0)


def frechet_distance_features(features1: ArrayLike, features2: ArrayLike) -> float:
    """Fréchet distance between the Gaussian fits of two ``(n, d)`` feature sets."""
    mu1, c1 = gaussian_stats(features1)
    mu2, c2 = gaussian_stats(features2)
    return frechet_distance(mu1, c1, mu2, c2)


class FrechetReference:
    """A reference Gaussian ``(mu, cov)`` with ``cov^{1/2}`` computed once, to score many
    feature sets (bootstrap replicates) against it: each distance then costs one symmetric
    eigenvalue decomposition (of ``C_ref^{1/2} C C_ref^{1/2}``) instead of two.

    ``FrechetReference(mu, cov).distance(mu2, cov2)`` equals ``frechet_distance(mu, cov, mu2,
    cov2)`` up to round-off.
    """

    def __init__(self, mu: ArrayLike, cov: ArrayLike) -> None:
        self.mu, self.cov = _check_stats(mu, cov, "")
        self.sqrt_cov = _psd_sqrt(self.cov)
        self.trace = float(torch.trace(self.cov))

    def distance_weighted(self, x: Tensor, w: Tensor, x_sqrt: Tensor | None = None) -> float:
        """Fréchet distance of the Gaussian fit of the rows of ``x (n, d)`` counted ``w (n,)``
        times (a bootstrap resample: ``sum(w) = n``) to the reference, without forming the
        resample. When fewer rows are counted than there are dimensions, the eigenvalues come
        from the small Gram matrix of the counted rows (same nonzero eigenvalues as
        ``C_ref^{1/2} C C_ref^{1/2}``); pass ``x_sqrt = x @ C_ref^{1/2}`` to reuse it."""
        n = float(w.sum())
        mu = (w @ x) / n
        xc = x - mu
        tr_cov = float((w * (xc**2).sum(dim=1)).sum()) / (n - 1)
        mean_term = float(((self.mu - mu) ** 2).sum())
        nz = w > 0
        if int(nz.sum()) < x.shape[1]:
            xs = x_sqrt if x_sqrt is not None else x @ self.sqrt_cov
            a = w[nz].sqrt()[:, None] * (xs[nz] - mu @ self.sqrt_cov)
            eig = torch.linalg.eigvalsh(a @ a.T / (n - 1))
        else:
            cov = (xc * w[:, None]).T @ xc / (n - 1)
            m = self.sqrt_cov @ (0.5 * (cov + cov.T)) @ self.sqrt_cov
            eig = torch.linalg.eigvalsh(0.5 * (m + m.T))
        tr_sqrt = float(eig.clamp(min=0.0).sqrt().sum())
        return max(mean_term + self.trace + tr_cov - 2.0 * tr_sqrt, 0.0)

    def distance(self, mu: Tensor, cov: Tensor) -> float:
        """Fréchet distance of ``N(mu, cov)`` (float64 CPU tensors, not re-checked) to the
        reference; >= 0."""
        m = self.sqrt_cov @ cov @ self.sqrt_cov
        eig = torch.linalg.eigvalsh(0.5 * (m + m.T))
        tr_sqrt = float(eig.clamp(min=0.0).sqrt().sum())
        fd = float(((self.mu - mu) ** 2).sum()) + self.trace + float(torch.trace(cov)) \
            - 2.0 * tr_sqrt
        return max(fd, 0.0)
