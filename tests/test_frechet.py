"""Fréchet distance: closed forms (1-D, diagonal, commuting, 2x2, rank-1), invariances, scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from trilemma.metrics.frechet import (
    frechet_distance,
    frechet_distance_features,
    gaussian_stats,
    trace_sqrt_product,
)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _spd(d: int, rng: np.random.Generator, cond: float = 10.0) -> np.ndarray:
    """A random SPD matrix with eigenvalues spread over [1, cond]."""
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    w = np.exp(rng.uniform(0.0, math.log(cond), d))
    return (q * w) @ q.T


def _rotation(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def _fd_scipy(mu1, c1, mu2, c2) -> float:
    """The pytorch-fid formula with a general matrix square root (well-conditioned cases)."""
    s = scipy.linalg.sqrtm(c1 @ c2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * np.trace(s).real)


def test_gaussian_stats_matches_numpy() -> None:
    x = _rng(0).standard_normal((50, 4)) * [1.0, 2.0, 0.5, 3.0] + [1.0, -2.0, 0.0, 5.0]
    mu, cov = gaussian_stats(torch.tensor(x, dtype=torch.float32))
    assert mu.dtype == torch.float64 and cov.dtype == torch.float64
    x32 = x.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(mu.numpy(), x32.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cov.numpy(), np.cov(x32, rowvar=False), rtol=1e-10, atol=1e-12)
    mu_np, _ = gaussian_stats(x)  # numpy input
    np.testing.assert_allclose(mu_np.numpy(), x.mean(0), rtol=1e-12)


@pytest.mark.parametrize("d", [1, 5, 64])
def test_identical_stats_give_zero(d: int) -> None:
    rng = _rng(d)
    mu, c = rng.standard_normal(d), _spd(d, rng, cond=1e4)
    assert abs(frechet_distance(mu, c, mu, c)) < 1e-8
    # singular (rank-deficient) PSD covariance too
    a = rng.standard_normal((d, max(1, d // 2)))
    cs = a @ a.T
    assert abs(frechet_distance(mu, cs, mu, cs)) < 1e-8 * max(1.0, np.trace(cs))


@pytest.mark.parametrize(("m1", "s1", "m2", "s2"),
                         [(0.0, 1.0, 0.0, 2.0), (1.5, 0.3, -2.0, 3.0), (0.0, 0.0, 1.0, 1.0)])
def test_one_dimensional_closed_form(m1: float, s1: float, m2: float, s2: float) -> None:
    fd = frechet_distance([m1], [[s1**2]], [m2], [[s2**2]])
    assert fd == pytest.approx((m1 - m2) ** 2 + (s1 - s2) ** 2, rel=1e-12, abs=1e-12)


def test_diagonal_and_commuting_closed_form() -> None:
    rng = _rng(1)
    d = 8
    a, b = rng.uniform(0.1, 4.0, d), rng.uniform(0.1, 4.0, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    exact = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(exact, rel=1e-10)
    q = _rotation(d, rng)  # same eigenvectors: C1 and C2 commute, formula unchanged
    c1, c2 = (q * a) @ q.T, (q * b) @ q.T
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(exact, rel=1e-10)


def test_two_by_two_non_commuting_closed_form() -> None:
    # for 2x2 M with eigenvalues l1, l2 >= 0: (sqrt l1 + sqrt l2)^2 = tr M + 2 sqrt(det M)
    rng = _rng(2)
    for _ in range(5):
        c1, c2 = _spd(2, rng, 20.0), _spd(2, rng, 20.0)
        m = c1 @ c2
        tr_sqrt = math.sqrt(np.trace(m) + 2 * math.sqrt(np.linalg.det(m)))
        assert trace_sqrt_product(c1, c2) == pytest.approx(tr_sqrt, rel=1e-10)
        exact = np.trace(c1) + np.trace(c2) - 2 * tr_sqrt
        assert frechet_distance(np.zeros(2), c1, np.zeros(2), c2) == pytest.approx(exact, rel=1e-9)


def test_rank_one_covariances() -> None:
    # C1 = v v^T, C2 = w w^T: C1 C2 has the single non-zero eigenvalue (v.w)^2
    v, w = np.array([1.0, 2.0, 0.0]), np.array([0.5, -1.0, 3.0])
    exact = v @ v + w @ w - 2 * abs(v @ w)
    fd = frechet_distance(np.zeros(3), np.outer(v, v), np.zeros(3), np.outer(w, w))
    assert fd == pytest.approx(exact, rel=1e-10, abs=1e-12)


def test_rotation_invariance_and_symmetry() -> None:
    rng = _rng(3)
    d = 12
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    c1, c2 = _spd(d, rng, 100.0), _spd(d, rng, 100.0)
    fd = frechet_distance(mu1, c1, mu2, c2)
    r = _rotation(d, rng)
    fd_rot = frechet_distance(r @ mu1, r @ c1 @ r.T, r @ mu2, r @ c2 @ r.T)
    assert fd_rot == pytest.approx(fd, rel=1e-10)
    assert frechet_distance(mu2, c2, mu1, c1) == pytest.approx(fd, rel=1e-10)
    # translation of both means leaves it unchanged
    shift = rng.standard_normal(d) * 10
    assert frechet_distance(mu1 + shift, c1, mu2 + shift, c2) == pytest.approx(fd, rel=1e-9)


@pytest.mark.parametrize("d", [3, 32, 128])
def test_agrees_with_scipy_sqrtm(d: int) -> None:
    rng = _rng(10 + d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    c1, c2 = _spd(d, rng, 50.0), _spd(d, rng, 50.0)
    ours = frechet_distance(mu1, c1, mu2, c2)
    assert ours == pytest.approx(_fd_scipy(mu1, c1, mu2, c2), rel=1e-8)


def test_features_match_population_value() -> None:
    # two Gaussians with diagonal covariances: the plug-in FD converges to the closed form;
    # bias and spread are O(d / n), here ~0.01 of a value of ~2.4
    gen = torch.Generator().manual_seed(0)
    d, n = 4, 40_000
    s1, s2 = torch.tensor([1.0, 2.0, 0.5, 1.0]), torch.tensor([1.5, 1.0, 0.5, 2.0])
    m2 = torch.tensor([0.5, 0.0, -0.5, 0.0])
    x1 = torch.randn(n, d, generator=gen, dtype=torch.float64) * s1
    x2 = torch.randn(n, d, generator=gen, dtype=torch.float64) * s2 + m2
    exact = float((m2**2).sum() + ((s1 - s2) ** 2).sum())
    assert frechet_distance_features(x1, x2) == pytest.approx(exact, abs=0.05)
    # same law: the estimate is small but positive (upward bias at finite n)
    x3 = torch.randn(n, d, generator=gen, dtype=torch.float64) * s1
    fd_same = frechet_distance_features(x1, x3)
    assert 0.0 < fd_same < 0.01


def test_bad_inputs() -> None:
    c = np.eye(3)
    with pytest.raises(ValueError, match="cov1 must have shape"):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), c)
    with pytest.raises(ValueError, match="different dimensions"):
        frechet_distance(np.zeros(3), c, np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="non-finite"):
        frechet_distance(np.array([0.0, np.nan, 0.0]), c, np.zeros(3), c)
    with pytest.raises(ValueError, match="not symmetric"):
        frechet_distance(np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="at least 2 samples"):
        gaussian_stats(torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"shape \(n, d\)"):
        gaussian_stats(torch.zeros(5))
    with pytest.raises(TypeError, match="tensor, numpy array"):
        gaussian_stats([["a", "b"], ["c", "d"]])
