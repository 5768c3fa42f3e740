"""The exact Gaussian-mixture oracle against closed forms, quadrature and autograd."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from trilemma.oracle import GaussianMixture, get_mixture, grid25, imbalanced2d, two_mode_1d
from trilemma.processes import CLD, VE, VP, GeometricVP, SubVP, VPCosine

PROCESSES = [
    VP(),
    VPCosine(),
    SubVP(),
    GeometricVP(),
    VE(sigma_max=5.0),
    CLD(),
    CLD(beta_min=1.0, beta_max=7.0),
]
IDS = ["vp", "vp_cosine", "subvp", "geometric_vp", "ve", "cld", "cld_linear_beta"]


def test_log_prob_matches_scipy():
    mix = imbalanced2d()
    x, _ = mix.sample(50, torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = np.log(
        sum(
            float(w) * stats.multivariate_normal(m.numpy(), np.diag(s.numpy() ** 2)).pdf(x.numpy())
            for w, m, s in zip(mix.weights, mix.means, mix.stds, strict=True)
        )
    )
    np.testing.assert_allclose(mix.log_prob(x).numpy(), ref, rtol=1e-10)


def test_samples_have_the_mixture_weights():
    mix = imbalanced2d()
    _, labels = mix.sample(40_000, torch.Generator().manual_seed(1))
    freq = torch.bincount(labels, minlength=4).double() / 40_000
    se = torch.sqrt(mix.weights * (1 - mix.weights) / 40_000)
    assert ((freq - mix.weights).abs() < 5 * se).all()


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
@pytest.mark.parametrize("t", [1e-3, 0.2, 0.9])
def test_score_is_gradient_of_log_density(process, t):
    mix = grid25()
    gen = torch.Generator().manual_seed(2)
    u = mix.marginal_sample(process, 16, t, gen, dtype=torch.float64).requires_grad_(True)
    tt = torch.full((16,), t, dtype=torch.float64)
    (grad,) = torch.autograd.grad(mix.marginal_log_prob(process, u, tt).sum(), u)
    full = mix.marginal_score(process, u.detach(), tt, full=True)
    torch.testing.assert_close(full, grad, rtol=1e-9, atol=1e-9)
    # central finite differences of the exact log-density on one coordinate
    h = 1e-5
    e = torch.zeros_like(u)
    e[:, -1] = h
    fd = (
        mix.marginal_log_prob(process, u.detach() + e, tt)
        - mix.marginal_log_prob(process, u.detach() - e, tt)
    ) / (2 * h)
    torch.testing.assert_close(full[:, -1], fd, rtol=1e-5, atol=1e-4)
    # the default is the noise-block score
    torch.testing.assert_close(
        mix.marginal_score(process, u.detach(), tt), process.noise_part(full)
    )


@pytest.mark.parametrize("process", PROCESSES[:5], ids=IDS[:5])
def test_scalar_marginal_is_a_normalised_density_with_the_right_moments(process):
    mix = two_mode_1d()
    t = 0.3
    a, s = float(process.alpha(torch.tensor(t))), float(process.sigma(torch.tensor(t)))
    width = 12 * max(a, s) + 2
    x = torch.linspace(-width, width, 40_001, dtype=torch.float64)[:, None]
    p = torch.exp(mix.marginal_log_prob(process, x, t))
    dx = float(x[1, 0] - x[0, 0])
    mass = float(p.sum()) * dx
    mean = float((p * x[:, 0]).sum()) * dx
    second = float((p * x[:, 0] ** 2).sum()) * dx
    w, m, sd = mix.weights, mix.means[:, 0], mix.stds[:, 0]
    exp_mean = a * float((w * m).sum())
    exp_second = float((w * ((a * m) ** 2 + a**2 * sd**2 + s**2)).sum())
    assert mass == pytest.approx(1.0, abs=1e-8)
    assert mean == pytest.approx(exp_mean, abs=1e-7)
    assert second == pytest.approx(exp_second, rel=1e-7)


def test_cld_joint_density_is_normalised_and_velocity_marginal_is_exact():
    """Integrate the CLD joint (x, v) density on a grid: mass 1, E[v] = 0 by symmetry of v0, and
    the x-marginal mean equals Psi_xx * E[x0]."""
    process, mix = CLD(), two_mode_1d()
    t = 0.25
    xs = torch.linspace(-6, 6, 1201, dtype=torch.float64)
    vs = torch.linspace(-4, 4, 801, dtype=torch.float64)
    gx, gv = torch.meshgrid(xs, vs, indexing="ij")
    u = torch.stack([gx.flatten(), gv.flatten()], 1)
    p = torch.exp(mix.marginal_log_prob(process, u, t)).reshape(gx.shape)
    cell = float((xs[1] - xs[0]) * (vs[1] - vs[0]))
    assert float(p.sum()) * cell == pytest.approx(1.0, abs=1e-6)
    psi = process.mean_coef(torch.tensor(t, dtype=torch.float64))
    mean_x0 = float((mix.weights * mix.means[:, 0]).sum())
    assert float((p * gx).sum()) * cell == pytest.approx(float(psi[0, 0]) * mean_x0, abs=1e-6)
    assert float((p * gv).sum()) * cell == pytest.approx(float(psi[1, 0]) * mean_x0, abs=1e-6)


@pytest.mark.parametrize("t", [1e-3, 0.05, 0.5, 1.0])
def test_cld_velocity_score_determines_full_score(t):
    process, mix = CLD(), grid25()
    u = mix.marginal_sample(process, 32, t, torch.Generator().manual_seed(3), dtype=torch.float64)
    tt = torch.full((32,), t, dtype=torch.float64)
    full = mix.marginal_score(process, u, tt, full=True)
    rebuilt = process.full_score(u, tt, mix.marginal_score(process, u, tt))
    torch.testing.assert_close(rebuilt, full, rtol=1e-7, atol=1e-7 * float(full.abs().max()))


def test_marginal_samples_follow_the_marginal_density():
    """Exact marginal samples of the 1-D mixture pass a KS test against the oracle's CDF."""
    process, mix = VP(), two_mode_1d()
    t = 0.4
    u = mix.marginal_sample(process, 4000, t, torch.Generator().manual_seed(4), torch.float64)
    a, s = float(process.alpha(torch.tensor(t))), float(process.sigma(torch.tensor(t)))
    w, m, sd = mix.weights.numpy(), mix.means[:, 0].numpy(), mix.stds[:, 0].numpy()
    scale = np.sqrt(a**2 * sd**2 + s**2)

    def cdf(x):
        return sum(
            wi * stats.norm(a * mi, si).cdf(x)
            for wi, mi, si in zip(w, a * 0 + m, scale, strict=True)
        )

    assert stats.kstest(u[:, 0].numpy(), cdf).pvalue > 1e-3


def test_score_fn_follows_dtype_and_uniform_or_per_sample_time():
    process, mix = VP(), grid25()
    fn = mix.score_fn(process)
    u = torch.randn(8, 2)
    assert fn(u, torch.full((8,), 0.5)).dtype == torch.float32
    t = torch.linspace(0.1, 0.9, 8)
    per_sample = fn(u, t)
    one_by_one = torch.cat([fn(u[i : i + 1], t[i : i + 1]) for i in range(8)])
    torch.testing.assert_close(per_sample, one_by_one)


def test_ready_made_mixtures():
    assert grid25().n_components == 25 and grid25().dim == 2
    assert float(imbalanced2d().weights.min()) == pytest.approx(0.01)
    big = get_mixture("mixture64d")
    assert big.n_components == 16 and big.dim == 64
    assert two_mode_1d().weights.tolist() == pytest.approx([0.3, 0.7])
    with pytest.raises(ValueError, match="valid mixtures"):
        get_mixture("nope")


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="means"):
        GaussianMixture(torch.zeros(3))
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture(torch.zeros(2, 2), torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="stds"):
        GaussianMixture(torch.zeros(2, 2), None, torch.tensor([0.1, 0.0]))
    with pytest.raises(ValueError, match=r"shape \(batch, 4\)"):
        grid25().marginal_score(CLD(), torch.zeros(3, 2), 0.5)
    with pytest.raises(ValueError, match="t must be"):
        grid25().marginal_score(VP(), torch.zeros(3, 2), torch.zeros(2))


def test_high_dimensional_mixture_score_is_exact():
    process, mix = VP(), get_mixture("mixture64d")
    u = mix.marginal_sample(process, 4, 0.3, torch.Generator().manual_seed(5), torch.float64)
    u.requires_grad_(True)
    (grad,) = torch.autograd.grad(mix.marginal_log_prob(process, u, 0.3).sum(), u)
    torch.testing.assert_close(mix.marginal_score(process, u.detach(), 0.3), grad)
    assert math.isfinite(float(mix.marginal_log_prob(process, u.detach(), 0.3).sum()))
