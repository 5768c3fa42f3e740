"""DSM and HSM: the exact score minimises each loss, and the loss value matches closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trilemma.objectives import (
    ImportanceTimes,
    cld_dsm_loss,
    dsm_loss,
    hsm_loss,
    likelihood_importance,
)
from trilemma.oracle import GaussianMixture, grid25
from trilemma.parametrization import Parametrization
from trilemma.processes import CLD, VE, VP, SubVP

N = 200_000
S0 = 0.7  # data std of the Gaussian test data


def gaussian_score(process, s0):
    """Exact noise-block score of the diffused N(0, s0^2 I), in closed form."""
    mix = GaussianMixture(torch.zeros(1, 1, dtype=torch.float64), None, s0)
    return lambda u, t: mix.marginal_score(process, u, t)


def se_mean(x: torch.Tensor) -> float:
    return float(x.std() / math.sqrt(x.numel()))


@pytest.mark.parametrize("process", [VP(), SubVP(), VE(sigma_max=5.0)], ids=["vp", "subvp", "ve"])
@pytest.mark.parametrize("t", [0.05, 0.5])
def test_dsm_quality_value_of_exact_score_matches_closed_form(process, t):
    gen = torch.Generator().manual_seed(0)
    x0 = S0 * torch.randn(N, 1, generator=gen, dtype=torch.float64)
    tt = torch.full((N,), t, dtype=torch.float64)
    loss = dsm_loss(gaussian_score(process, S0), process, x0, t=tt, generator=gen)
    a, s = float(process.alpha(torch.tensor(t))), float(process.sigma(torch.tensor(t)))
    expected = a**2 * S0**2 / (a**2 * S0**2 + s**2)  # 1 - sigma^2 / Var(x_t)
    assert float(loss.mean()) == pytest.approx(expected, abs=5 * se_mean(loss))


@pytest.mark.parametrize("weighting,t_sampling", [
    ("quality", "uniform"), ("likelihood", "uniform"), ("likelihood_is", "uniform"),
    ("edm", "uniform"), ("quality", "lognormal"), ("edm", "lognormal")])
def test_dsm_exact_score_beats_perturbed_scores(weighting, t_sampling):
    process, mix = VP(), grid25()
    exact = mix.score_fn(process)
    x0, _ = mix.sample(20_000, torch.Generator().manual_seed(1), dtype=torch.float64)

    def loss_of(fn):
        return float(
            dsm_loss(
                fn, process, x0, weighting=weighting, generator=torch.Generator().manual_seed(2),
                t_sampling=t_sampling, sigma_data=1.4,
            ).mean()
        )

    best = loss_of(exact)
    for bias in (0.3, -0.3):
        assert loss_of(lambda u, t, b=bias: exact(u, t) + b) > best
    assert loss_of(lambda u, t: 1.1 * exact(u, t)) > best


class FixedOutput(nn.Module):
    """A network returning a fixed tensor whatever its input."""

    def __init__(self, out: torch.Tensor) -> None:
        super().__init__()
        self.out = out

    def forward(self, inp, t):
        return self.out


@pytest.mark.parametrize("process", [VP(), SubVP(), VE(sigma_max=80.0)], ids=["vp", "subvp", "ve"])
def test_edm_weighting_is_unit_weight_on_the_network_output(process):
    """EDM's loss ``lambda(sigma) ||D - x0||^2`` with ``D = c_skip x + c_out F`` is
    ``||F - F_target||^2``, ``F_target = (x0 - c_skip x) / c_out``: what ``weighting='edm'``
    gives for the ``edm`` prediction, at noise levels from ~1e-3 to the process's top."""
    sd, n = 0.7, 64
    gen = torch.Generator().manual_seed(0)
    x0 = sd * torch.randn(n, 3, generator=gen, dtype=torch.float64)
    t = torch.linspace(process.train_eps, process.T, n, dtype=torch.float64)
    f = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    model = Parametrization(FixedOutput(f), process, "edm", sigma_data=sd)
    loss = dsm_loss(model, process, x0, weighting="edm", t=t, sigma_data=sd,
                    generator=torch.Generator().manual_seed(1))
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a, s = process.alpha(t)[:, None], process.sigma(t)[:, None]
    sigma = s / a
    x = x0 + sigma * eps  # the VE-equivalent state u / alpha
    c_skip = sd**2 / (sigma**2 + sd**2)
    c_out = sigma * sd / torch.sqrt(sigma**2 + sd**2)
    expected = ((f - (x0 - c_skip * x) / c_out) ** 2).mean(1)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-9)


def test_lognormal_times_reach_the_model():
    """``t_sampling='lognormal'``: the times the model sees have ``ln sigma ~ N(p_mean, p_std)``
    (a VE wide enough that nothing is clamped); ``uniform`` keeps uniform t."""
    proc = VE(sigma_min=1e-4, sigma_max=1e3)
    seen = {}

    def spy(u, t):
        seen["t"] = t
        return torch.zeros_like(u)

    x0 = torch.zeros(50_000, 1, dtype=torch.float64)
    for weighting in ("quality", "edm"):
        dsm_loss(spy, proc, x0, weighting=weighting, t_sampling="lognormal", p_mean=0.4,
                 p_std=0.6, generator=torch.Generator().manual_seed(0))
        ls = torch.log(proc.sigma(seen["t"].to(torch.float64)))
        assert abs(float(ls.mean()) - 0.4) < 0.02 and abs(float(ls.std()) - 0.6) < 0.02
    dsm_loss(spy, proc, x0, generator=torch.Generator().manual_seed(0))
    t = seen["t"].to(torch.float64)
    assert abs(float(t.mean()) - 0.5) < 0.01 and abs(float(t.var()) - 1 / 12) < 0.005


def test_dsm_likelihood_estimators_agree_and_importance_sampling_cuts_variance():
    process = VP()
    x0 = S0 * torch.randn(
        100_000, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )
    fn = lambda u, t: gaussian_score(process, S0)(u, t) * 0.9  # noqa: E731 - imperfect score
    uni = dsm_loss(
        fn, process, x0, weighting="likelihood", generator=torch.Generator().manual_seed(4)
    )
    imp = dsm_loss(
        fn, process, x0, weighting="likelihood_is", generator=torch.Generator().manual_seed(5)
    )
    tol = 5 * math.hypot(se_mean(uni), se_mean(imp))
    assert float(uni.mean()) == pytest.approx(float(imp.mean()), abs=tol)
    assert float(imp.var()) < 0.5 * float(uni.var())


def test_importance_times_weights_times_density_equal_the_target():
    target = lambda t: 1.0 / t + 3.0  # noqa: E731
    sampler = ImportanceTimes(target, 1e-4, 1.0)
    t, ratio = sampler.sample(50_000, torch.Generator().manual_seed(6))
    # E_r[ratio * f(t)] = int target f dt: check with f = 1 and f = t
    exact_mass = math.log(1.0 / 1e-4) + 3.0 * (1 - 1e-4)
    assert float(ratio.double().mean()) == pytest.approx(exact_mass, rel=1e-3)
    exact_first = (1 - 1e-4) + 1.5 * (1 - 1e-8)
    r = ratio.double() * t.double()
    assert float(r.mean()) == pytest.approx(exact_first, abs=5 * se_mean(r))
    assert float(t.min()) >= 1e-4 and float(t.max()) <= 1.0
    # weights are w/r for the sampled density: nearly constant (= total mass)
    assert float(ratio.double().std() / ratio.double().mean()) < 1e-2


def test_likelihood_importance_density_follows_g2_over_sigma2():
    process = VP()
    sampler = likelihood_importance(process)
    t, _ = sampler.sample(100_000, torch.Generator().manual_seed(7))
    frac_small = float((t < 0.01).double().mean())
    w = lambda x: process.diffusion_sq(x) / process.sigma(x) ** 2  # noqa: E731
    grid = torch.linspace(process.train_eps, 1.0, 200_001, dtype=torch.float64)
    dens = w(grid)
    mask = grid < 0.01
    expected = float(torch.trapezoid(dens[mask], grid[mask]) / torch.trapezoid(dens, grid))
    assert frac_small == pytest.approx(expected, abs=0.01)


def _hsm_closed_form(process: CLD, t: float, s0: float) -> float:
    """E||s*/(-l) - eps_v||^2 for Gaussian data N(0, s0^2) under the HSM kernel (per dim)."""
    tt = torch.tensor(t, dtype=torch.float64)
    psi = process.mean_coef(tt)
    cov_k = process.marginal_cov(tt)
    chol = process.marginal_chol(tt)
    col = psi[:, 0:1]
    cov_u = cov_k + s0**2 * col @ col.T
    prec = torch.linalg.inv(cov_u)
    ell = float(process.hsm_ell(tt))
    c = prec[1] / ell  # s*/(-l) = c . u
    cross = chol[:, 1]  # Cov(u, eps_v) = L e_v
    return float(c @ cov_u @ c - 2 * c @ cross + 1.0)


@pytest.mark.parametrize("t", [0.01, 0.3, 0.9])
def test_hsm_value_of_exact_score_matches_closed_form(t):
    process = CLD()
    gen = torch.Generator().manual_seed(8)
    x0 = S0 * torch.randn(N, 1, generator=gen, dtype=torch.float64)
    tt = torch.full((N,), t, dtype=torch.float64)
    loss = hsm_loss(gaussian_score(process, S0), process, x0, t=tt, generator=gen)
    assert float(loss.mean()) == pytest.approx(
        _hsm_closed_form(process, t, S0), abs=5 * se_mean(loss)
    )


@pytest.mark.parametrize("weighting", ["reweighted", "likelihood"])
@pytest.mark.parametrize("loss_fn", [hsm_loss, cld_dsm_loss], ids=["hsm", "cld_dsm"])
def test_cld_exact_score_beats_perturbed_scores(weighting, loss_fn):
    process, mix = CLD(), grid25()
    exact = mix.score_fn(process)
    x0, _ = mix.sample(20_000, torch.Generator().manual_seed(9), dtype=torch.float64)

    def loss_of(fn):
        return float(
            loss_fn(
                fn, process, x0, weighting=weighting, generator=torch.Generator().manual_seed(10)
            ).mean()
        )

    best = loss_of(exact)
    for bias in (0.2, -0.2):
        assert loss_of(lambda u, t, b=bias: exact(u, t) + b) > best
    assert loss_of(lambda u, t: 1.05 * exact(u, t)) > best


def test_hsm_variance_is_lower_than_cld_dsm():
    """HSM marginalises v0, so its loss at the exact score has less variance (CLD paper)."""
    process, mix = CLD(), grid25()
    x0, _ = mix.sample(20_000, torch.Generator().manual_seed(11), dtype=torch.float64)
    tt = torch.full((20_000,), 0.05, dtype=torch.float64)
    exact = mix.score_fn(process)
    h = hsm_loss(exact, process, x0, t=tt, generator=torch.Generator().manual_seed(12))
    d = cld_dsm_loss(exact, process, x0, t=tt, generator=torch.Generator().manual_seed(12))
    assert float(h.var()) < float(d.var())


class Const(nn.Module):
    """A stand-in network returning a fixed tensor."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, u, t):
        return self.value.expand(u.shape[0], *self.value.shape[1:]).to(u.dtype)


def test_parametrizations_map_network_outputs_to_scores():
    process = VP()
    u = torch.randn(5, 3, dtype=torch.float64)
    t = torch.full((5,), 0.4, dtype=torch.float64)
    a, s = process.alpha(t)[:, None], process.sigma(t)[:, None]
    out = torch.randn(1, 3, dtype=torch.float64)
    eps = Parametrization(Const(out), process, "eps")(u, t)
    torch.testing.assert_close(eps, -out.expand(5, 3) / s)
    x0 = Parametrization(Const(out), process, "x0")(u, t)
    torch.testing.assert_close(x0, -(u - a * out) / s**2)
    v = Parametrization(Const(out), process, "v")(u, t)
    # v-prediction: v = alpha eps - sigma x0 with u = alpha x0 + sigma eps
    e = -v * s
    x0_hat = (u - s * e) / a
    torch.testing.assert_close(a * e - s * x0_hat, out.expand(5, 3))


def test_cld_mixed_parametrization_is_exact_at_both_ends():
    process = CLD()
    zero_net = Const(torch.zeros(1, 1, dtype=torch.float64))
    model = Parametrization(zero_net, process)
    u = torch.randn(4, 2, dtype=torch.float64)
    v = u[:, 1:]
    small = model(u, torch.full((4,), 1e-9, dtype=torch.float64))
    torch.testing.assert_close(small, -v / (process.gamma * process.mass), rtol=1e-4, atol=1e-6)
    # at equilibrium the velocity is N(0, M) independent of x
    far = CLD(beta_min=40.0)
    model_far = Parametrization(zero_net, far)
    torch.testing.assert_close(
        model_far(u, torch.ones(4, dtype=torch.float64)), -v / far.mass, rtol=1e-6, atol=1e-6
    )


def test_bad_choices_are_named():
    with pytest.raises(ValueError, match="valid predictions"):
        Parametrization(nn.Identity(), VP(), "mixed")
    with pytest.raises(ValueError, match="valid predictions"):
        Parametrization(nn.Identity(), CLD(), "eps")
    with pytest.raises(ValueError, match="use HSM"):
        dsm_loss(lambda u, t: u, CLD(), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="needs a CLD"):
        hsm_loss(lambda u, t: u, VP(), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="unknown DSM weighting"):
        dsm_loss(lambda u, t: u, VP(), torch.zeros(2, 1), weighting="nope")
    with pytest.raises(ValueError, match="unknown t_sampling"):
        dsm_loss(lambda u, t: u, VP(), torch.zeros(2, 1), t_sampling="nope")
    with pytest.raises(ValueError, match="does not fit weighting 'likelihood'"):
        dsm_loss(lambda u, t: u, VP(), torch.zeros(2, 1), weighting="likelihood",
                 t_sampling="lognormal")
