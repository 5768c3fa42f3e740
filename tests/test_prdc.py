"""Precision / recall / density / coverage: hand-computed cases, brute force, known limits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trilemma.metrics.prdc import density_coverage, knn_radii, prdc, precision_recall


def _brute_force(real: np.ndarray, fake: np.ndarray, k_pr: int, k_dc: int) -> dict[str, float]:
    """The definitions, written out with full distance matrices."""
    d_rr = np.linalg.norm(real[:, None] - real[None], axis=-1)
    d_ff = np.linalg.norm(fake[:, None] - fake[None], axis=-1)
    d_fr = np.linalg.norm(fake[:, None] - real[None], axis=-1)  # (M, N)
    r_pr = np.sort(d_rr, axis=1)[:, k_pr]  # column 0 is the point itself
    r_dc = np.sort(d_rr, axis=1)[:, k_dc]
    f_pr = np.sort(d_ff, axis=1)[:, k_pr]
    return {
        "precision": float((d_fr <= r_pr[None]).any(axis=1).mean()),
        "recall": float((d_fr <= f_pr[:, None]).any(axis=0).mean()),
        "density": float((d_fr <= r_dc[None]).sum() / (k_dc * len(fake))),
        "coverage": float((d_fr.min(axis=0) <= r_dc).mean()),
    }


def test_hand_computed_one_dimensional_example() -> None:
    # real 0, 1, 10, 11: 1-NN radii 1, 1, 1, 1 (balls [-1,1], [0,2], [9,11], [10,12]);
    #   2-NN radii 10, 9, 9, 10 (balls [-10,10], [-8,10], [1,19], [1,21]).
    # fake 0.2, 0.45, 0.75, 50, 51.5: 1-NN radii 0.25, 0.25, 0.3, 1.5, 1.5.
    # precision (k=1): 0.2, 0.45, 0.75 lie in real balls, 50 and 51.5 do not -> 3/5.
    # recall (k=1): 0 in [-0.05, 0.45], 1 in [0.45, 1.05]; 10 and 11 in no fake ball -> 2/4.
    # density (k=2): each of the three small fakes lies in the balls of 0 and 1 -> 6/(2*5).
    # coverage (k=2): balls of 0 and 1 hold fakes, [1,19] and [1,21] none -> 2/4.
    # density (k=1): the same memberships as for k=2 -> 6/(1*5); coverage (k=1) 2/4.
    real = torch.tensor([[0.0], [1.0], [10.0], [11.0]])
    fake = torch.tensor([[0.2], [0.45], [0.75], [50.0], [51.5]])
    out = prdc(real, fake, k_pr=1, k_dc=2)
    assert out["precision"] == pytest.approx(0.6)
    assert out["recall"] == pytest.approx(0.5)
    assert out["density"] == pytest.approx(0.6)
    assert out["coverage"] == pytest.approx(0.5)
    assert (out["n_real"], out["n_fake"], out["k_pr"], out["k_dc"]) == (4, 5, 1, 2)
    assert density_coverage(real, fake, k=1) == pytest.approx((1.2, 0.5))
    assert precision_recall(real, fake, k=1) == pytest.approx((0.6, 0.5))
    radii = knn_radii(real, (1, 2))
    np.testing.assert_allclose(radii.numpy(), [[1, 10], [1, 9], [1, 9], [1, 10]])


@pytest.mark.parametrize("chunk_size", [7, 1024])
def test_matches_brute_force(chunk_size: int) -> None:
    rng = np.random.default_rng(0)
    real = rng.standard_normal((60, 5))
    fake = rng.standard_normal((45, 5)) * 1.3 + 0.4
    ours = prdc(real, fake, k_pr=3, k_dc=5, chunk_size=chunk_size)
    ref = _brute_force(real, fake, 3, 5)
    for key, val in ref.items():
        assert ours[key] == pytest.approx(val, abs=1e-12), key
    # the metrics are not trivial here (the test would notice a constant answer)
    assert 0.2 < ours["precision"] < 1.0 and 0.2 < ours["recall"] < 1.0


def test_identical_sets() -> None:
    # every real ball B(r_i, NND_k) holds r_i itself and exactly k other reals (no ties), so
    # with fake = real: precision = recall = coverage = 1 and density = (k + 1) / k exactly
    x = torch.randn(300, 8, generator=torch.Generator().manual_seed(1))
    out = prdc(x, x.clone(), chunk_size=64)
    assert out["precision"] == 1.0 and out["recall"] == 1.0 and out["coverage"] == 1.0
    assert out["density"] == pytest.approx(6 / 5, abs=1e-12)


def test_same_distribution_density_near_one() -> None:
    # independent samples of one law: density -> 1 (Naeem et al.); 2-D, n = 2000, sd ~ 0.02
    gen = torch.Generator().manual_seed(2)
    real, fake = torch.randn(2000, 2, generator=gen), torch.randn(2000, 2, generator=gen)
    out = prdc(real, fake)
    assert out["density"] == pytest.approx(1.0, abs=0.08)
    assert out["precision"] > 0.9 and out["recall"] > 0.9 and out["coverage"] > 0.9


def test_disjoint_sets_score_zero() -> None:
    gen = torch.Generator().manual_seed(3)
    real = torch.randn(200, 4, generator=gen)
    fake = torch.randn(150, 4, generator=gen) + 100.0
    out = prdc(real, fake)
    assert out["precision"] == 0 and out["recall"] == 0
    assert out["density"] == 0 and out["coverage"] == 0


def test_half_of_the_modes() -> None:
    # real: 10 well-separated modes, equal weights; fake: the same law restricted to 5 modes.
    # Reals of missing modes are in no fake ball and vice versa: recall ~ coverage ~ 0.5,
    # precision ~ 1 (within-mode misses ~ 1-3 % of points at the tails)
    gen = torch.Generator().manual_seed(4)
    centres = torch.arange(10, dtype=torch.float64)[:, None] * torch.tensor([50.0, 0.0])
    lab_r = torch.arange(2000) % 10
    lab_f = torch.arange(1000) % 5
    real = centres[lab_r] + torch.randn(2000, 2, generator=gen, dtype=torch.float64)
    fake = centres[lab_f] + torch.randn(1000, 2, generator=gen, dtype=torch.float64)
    out = prdc(real, fake)
    assert out["precision"] > 0.95
    assert 0.45 <= out["recall"] <= 0.5
    assert 0.45 <= out["coverage"] <= 0.5
    # density: fakes are as dense as reals inside the covered modes, whose real points are
    # half as many per fake: density ~ 1 * (real per mode / fake per mode) / 2 = 1
    assert out["density"] == pytest.approx(1.0, abs=0.15)


def test_chunking_does_not_change_results() -> None:
    gen = torch.Generator().manual_seed(5)
    real, fake = torch.randn(130, 6, generator=gen), torch.randn(97, 6, generator=gen) * 0.8
    ref = prdc(real, fake, chunk_size=4096)
    for cs in (1, 13, 96, 97, 130):
        assert prdc(real, fake, chunk_size=cs) == ref


def test_input_errors() -> None:
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match=r"real has 5 samples, but k = 5 .* at least k \+ 1 = 6"):
        prdc(x[:5], x)
    with pytest.raises(ValueError, match="fake has 3 samples"):
        prdc(x, x[:3])
    with pytest.raises(ValueError, match="differ in dimension"):
        prdc(x, torch.randn(10, 4))
    with pytest.raises(ValueError, match="non-finite"):
        prdc(x, torch.full((10, 3), float("nan")))
    with pytest.raises(ValueError, match=r"shape \(n, d\)"):
        prdc(torch.randn(10), x)
    with pytest.raises(ValueError, match="k_pr must be a positive integer"):
        prdc(x, x, k_pr=0)
    with pytest.raises(ValueError, match="chunk_size"):
        prdc(x, x, chunk_size=0)
    # density / coverage need no fake radii: a single fake sample is enough; with one fake
    # both count the real balls holding it (its own one at least): density = coverage * N / k
    dens, cov = density_coverage(x, x[:1], k=3)
    assert cov >= 0.1 and dens == pytest.approx(cov * 10 / 3)


def test_large_sets_fit_in_memory() -> None:
    # 4000 x 4000 in chunks of 512: the full float64 matrix (128 MB) is never built at once
    gen = torch.Generator().manual_seed(6)
    real, fake = torch.randn(4000, 16, generator=gen), torch.randn(4000, 16, generator=gen)
    out = prdc(real, fake, chunk_size=512)
    assert 0.5 < out["precision"] <= 1.0 and 0.5 < out["recall"] <= 1.0
    assert out["density"] == pytest.approx(1.0, abs=0.1)
