"""CLD's samplers: SSCS (REFERENCE.md §3.1) and gDDIM (§3.2).

Checks against closed forms (gDDIM's q = 0 coefficient, SSCS's A-part sub-intervals), an
independent ODE solve (gDDIM is exact for a single data point), a stationary distribution
(SSCS keeps the CLD equilibrium), and the exact two-mode oracle (Wasserstein-1 against
REFERENCE §3.2's table).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import quad_vec, solve_ivp
from scipy.special import ndtr
from scipy.stats import wasserstein_distance

from trilemma.oracle import two_mode_1d
from trilemma.processes import CLD, VP
from trilemma.samplers import SAMPLERS, sample_euler_maruyama
from trilemma.samplers.gddim import gddim_coefficients, sample_gddim
from trilemma.samplers.grids import quadratic_grid, sqrt_grid, uniform_grid
from trilemma.samplers.sscs import _sscs, sample_sscs

F64 = torch.float64


def dirac_score(process: CLD, x0: torch.Tensor):
    """Exact velocity score when the data is the single point ``x0`` (shape (1, d))."""

    def fn(u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return process.x0_to_score(u, t, x0.expand(u.shape[0], -1).to(u.dtype))

    return fn


def mixture_quantiles(mix, m: int = 100_000) -> np.ndarray:
    """Exact quantiles of a 1-D mixture at (k + 1/2)/m: a noise-free 'data sample' for W1."""
    means, sds = mix.means[:, 0].numpy(), mix.stds[:, 0].numpy()
    w = mix.weights.numpy()
    q = (np.arange(m) + 0.5) / m
    lo = np.full(m, means.min() - 12 * sds.max())
    hi = np.full(m, means.max() + 12 * sds.max())
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        below = (w * ndtr((mid[:, None] - means) / sds)).sum(1) < q
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return 0.5 * (lo + hi)


# ---------------------------------------------------------------------------- gDDIM coefficients
@pytest.mark.parametrize(
    "grid_fn,n", [(quadratic_grid, 1), (quadratic_grid, 10), (quadratic_grid, 100),
                  (uniform_grid, 7), (sqrt_grid, 25)]
)
def test_gddim_order0_R_coefficient_is_closed_form(grid_fn, n):
    """q = 0, K = R: the quadrature of Psi 1/2 G G^T R^{-T} equals R_t - Psi(t, s) R_s."""
    p = CLD()
    grid = grid_fn(p, n)
    psi, k_mat, coefs = gddim_coefficients(p, grid, order=0, factor="R")
    r = p.gddim_factor(grid)
    exact = r[1:] - p.transition(grid[1:], grid[:-1]) @ r[:-1]
    got = torch.stack([c[0] for c in coefs])
    assert (got - exact).abs().max().item() < 1e-8
    assert torch.allclose(k_mat, r[:-1])
    # R is a square root of Sigma_t, but not the Cholesky factor
    assert torch.allclose(r @ r.transpose(-1, -2), p.marginal_cov(grid), rtol=1e-8, atol=1e-12)
    assert r[0, 0, 1].abs() > 1e-6


@pytest.mark.parametrize("factor", ["R", "L"])
def test_gddim_multistep_coefficients_integrate_polynomials(factor):
    """sum_j C_ij tau_{i-j}^k = int Psi 1/2 G G^T K^{-T} tau^k dtau for k <= the step's order.

    The reference integrals come from scipy's adaptive quad_vec.
    """
    p = CLD(beta_min=1.0, beta_max=7.0)
    grid = sqrt_grid(p, 6)
    coefs = {q: gddim_coefficients(p, grid, order=q, factor=factor)[2] for q in (0, 1, 2)}

    def kernel(tau: float, t_next: float) -> np.ndarray:
        tt = torch.tensor([tau], dtype=F64)
        k = p.gddim_factor(tt) if factor == "R" else p.marginal_chol(tt)
        m = p.transition(torch.tensor([t_next], dtype=F64), tt) @ (
            0.5 * p.diffusion_matrix_sq(tt)) @ torch.linalg.inv(k).transpose(-1, -2)
        return m[0].numpy()

    def entry(tau: float, t_next: float, power: int) -> np.ndarray:
        return kernel(tau, t_next) * tau**power

    for i in (0, 1, 2, 5):
        t_i, t_next = float(grid[i]), float(grid[i + 1])
        for q in (0, 1, 2):
            c = coefs[q][i]
            assert c.shape == (min(q, i) + 1, 2, 2)
            for power in range(min(q, i) + 1):
                ref = quad_vec(entry, t_i, t_next, args=(t_next, power), epsabs=1e-13,
                               epsrel=1e-11)[0]
                nodes = torch.tensor([float(grid[i - j]) for j in range(c.shape[0])], dtype=F64)
                got = (c * (nodes**power)[:, None, None]).sum(0).numpy()
                np.testing.assert_allclose(got, ref, rtol=1e-8, atol=1e-10)


def test_gddim_coefficients_are_cached():
    p = CLD()
    grid = sqrt_grid(p, 12)
    a = gddim_coefficients(p, grid, order=2, factor="R")
    assert gddim_coefficients(CLD(), grid.clone(), order=2, factor="R") is a
    assert gddim_coefficients(p, grid, order=1, factor="R") is not a
    assert gddim_coefficients(CLD(beta_min=2.0), grid, order=2, factor="R") is not a


# ---------------------------------------------------------------------------- gDDIM exactness
def test_gddim_exact_for_a_single_data_point():
    """With the R factor every order reproduces the probability-flow ODE at any NFE (Dirac data).

    Reference: scipy's DOP853 on the ODE du/dt = F u - 1/2 G G^T s_full. The Cholesky variant
    with the same steps is far off, so the comparison can tell them apart.
    """
    p = CLD()
    x0 = torch.tensor([[0.7, -1.2]], dtype=F64)
    score = dirac_score(p, x0)
    u_T = p.prior_sample((4, 2), torch.Generator().manual_seed(0), dtype=F64)

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        u = torch.from_numpy(y).reshape(u_T.shape)
        tt = torch.full((u.shape[0],), t, dtype=F64)
        return p.reverse_drift(u, tt, score(u, tt), probability_flow=True).reshape(-1).numpy()

    sol = solve_ivp(rhs, (p.T, p.eps), u_T.reshape(-1).numpy(), method="DOP853",
                    rtol=1e-11, atol=1e-12)
    ref = torch.from_numpy(sol.y[:, -1]).reshape(u_T.shape)
    for n in (1, 3, 8):
        for order in (0, 1, 2):
            res = sample_gddim(score, p, u_T, sqrt_grid(p, n), order=order, denoise=False)
            err = (res.state - ref).abs().max().item()
            assert err < 1e-6, (n, order, err)
    chol = sample_gddim(score, p, u_T, sqrt_grid(p, 8), factor="L", denoise=False)
    assert (chol.state - ref).abs().max().item() > 1e-2
    # the denoising step of a Dirac score returns the data point itself
    res = sample_gddim(score, p, u_T, sqrt_grid(p, 3))
    assert torch.allclose(res.samples, x0.expand(4, -1), atol=1e-8)


def test_gddim_runs_in_float32():
    p = CLD()
    score = dirac_score(p, torch.tensor([[0.5]]))
    u_T = p.prior_sample((16, 1), torch.Generator().manual_seed(1), dtype=torch.float32)
    res = sample_gddim(score, p, u_T, sqrt_grid(p, 10), order=2)
    assert res.samples.dtype == torch.float32
    assert (res.samples - 0.5).abs().max() < 1e-3


# ---------------------------------------------------------------------------- SSCS
def test_sscs_keeps_the_equilibrium():
    """Data = the CLD prior: the score is -v/M, S is the identity, and the exact A-steps must keep
    N(0, I) N(0, M I) at any step size (checks the A mean map, covariance and its Cholesky)."""
    p = CLD()
    n = 40_000
    gen = torch.Generator().manual_seed(3)
    u_T = p.prior_sample((n, 1), gen, dtype=F64)

    def score(u, t):
        return -p.m_inv * p.split(u)[1]

    res = sample_sscs(score, p, u_T, quadratic_grid(p, 4), generator=gen, denoise=False)
    cov = torch.cov(res.state.T)
    target = p.prior_cov()
    # standard error of a variance estimate: sqrt(2/n) * variance
    tol = 5 * (2 / n) ** 0.5
    assert (cov - target).abs().max() < tol * target.diagonal().max()
    assert res.state.mean(0).abs().max() < 5 / n**0.5


def test_sscs_half_steps_use_their_own_subinterval():
    """With time-varying beta the A half-steps integrate beta over [t_m, t_i] and [t_{i+1}, t_m].

    Together they cover [eps, T] exactly; the official code's reuse of the step-start time does not.
    """

    def recorded(reuse: bool) -> tuple[list[float], torch.Tensor, CLD]:
        p = CLD(beta_min=0.5, beta_max=8.0)
        seen: list[float] = []
        orig = p.sscs_a_step

        def spy(b):
            seen.append(float(b))
            return orig(b)

        p.sscs_a_step = spy
        grid = quadratic_grid(p, 6)
        u_T = p.prior_sample((8, 1), torch.Generator().manual_seed(0), dtype=F64)
        _sscs(lambda u, t: -p.m_inv * p.split(u)[1], p, u_T, grid, generator=None,
              denoise=False, trajectory=False, progress=False, reuse_start_time=reuse)
        return seen, grid, p

    seen, grid, p = recorded(False)
    big_b = p.integral_beta(grid)
    mid = p.integral_beta(0.5 * (grid[:-1] + grid[1:]))
    assert len(seen) == 2 * (grid.numel() - 1)
    np.testing.assert_allclose(seen[0::2], (big_b[:-1] - mid).numpy(), rtol=1e-12)
    np.testing.assert_allclose(seen[1::2], (mid - big_b[1:]).numpy(), rtol=1e-12)
    assert abs(sum(seen) - float(big_b[0] - big_b[-1])) < 1e-12
    assert abs(seen[0] - seen[1]) > 1e-3  # beta really varies within a step
    buggy, _, _ = recorded(True)
    assert abs(sum(buggy) - float(big_b[0] - big_b[-1])) > 1e-2


def test_sscs_converges_with_time_varying_beta():
    """SSCS driven by the exact score reaches the data (W1 near the Monte-Carlo floor)."""
    p = CLD(beta_min=0.5, beta_max=8.0)
    mix = two_mode_1d()
    ref = mixture_quantiles(mix)
    score = mix.score_fn(p)
    w1 = {}
    for nfe in (20, 100):
        gen = torch.Generator().manual_seed(11)
        u_T = p.prior_sample((6000, 1), gen, dtype=F64)
        res = sample_sscs(score, p, u_T, quadratic_grid(p, nfe - 1), generator=gen)
        w1[nfe] = wasserstein_distance(res.samples[:, 0].numpy(), ref)
    # MC floor for 6000 samples ~ 0.008 (mode-weight noise 1.4 * sqrt(0.21 / 6000))
    assert w1[100] < 0.02, w1
    assert w1[20] > w1[100] + 0.01, w1


# ---------------------------------------------------------------------------- oracle W1 table
TABLE = {  # REFERENCE §3.2 (W1 to the data, two-mode 1-D mixture, CLD defaults)
    "em": {10: 0.229, 20: 0.067, 50: 0.012},
    "sscs": {10: 0.120, 20: 0.031, 50: 0.012},
    "gddim0R": {10: 0.104, 20: 0.044, 50: 0.015},
    "gddim0L": {10: 5.31, 20: 0.200, 50: 0.030},
}


def run_sampler(name, score, p, u_T, steps, gen):
    """EM/SSCS on the quadratic grid, gDDIM ('gddim<order><factor>') on its sqrt grid."""
    if name == "em":
        return sample_euler_maruyama(score, p, u_T, quadratic_grid(p, steps), generator=gen)
    if name == "sscs":
        return sample_sscs(score, p, u_T, quadratic_grid(p, steps), generator=gen)
    return sample_gddim(score, p, u_T, sqrt_grid(p, steps), order=int(name[5]), factor=name[6])


def test_w1_against_reference_table():
    """Exact oracle, CLD defaults: EM and SSCS on the quadratic grid, gDDIM on its sqrt grid.

    NFE counts the denoising call (steps = NFE - 1). 8000 samples: MC noise on W1 ~ 0.006.
    """
    p = CLD()
    mix = two_mode_1d()
    ref = mixture_quantiles(mix)
    score = mix.score_fn(p)
    n = 8000
    w1: dict[str, dict[int, float]] = {}
    for nfe in (10, 20, 50):
        for name in ("em", "sscs", "gddim0R", "gddim1R", "gddim2R", "gddim0L"):
            gen = torch.Generator().manual_seed(5)
            u_T = p.prior_sample((n, 1), gen, dtype=F64)
            res = run_sampler(name, score, p, u_T, nfe - 1, gen)
            assert res.nfe == nfe
            w1.setdefault(name, {})[nfe] = wasserstein_distance(res.samples[:, 0].numpy(), ref)
    print("W1:", {k: {m: round(v, 4) for m, v in d.items()} for k, d in w1.items()})
    # close to the reference table: within a factor 2 or 0.01
    for name, row in TABLE.items():
        for nfe, want in row.items():
            got = w1[name][nfe]
            assert abs(got - want) < 0.01 or 0.5 < got / want < 2.0, (name, nfe, got, want)
    # every sampler improves with NFE
    for name, row in w1.items():
        assert row[10] > row[20] > row[50], (name, row)
    # SSCS beats EM at low NFE and is no worse at 50
    assert w1["sscs"][10] < 0.7 * w1["em"][10]
    assert w1["sscs"][20] < 0.7 * w1["em"][20]
    assert w1["sscs"][50] < w1["em"][50] + 0.01
    # gDDIM's R_t beats the Cholesky factor at low NFE; higher orders help
    assert w1["gddim0R"][10] * 10 < w1["gddim0L"][10]
    assert w1["gddim0R"][20] * 2 < w1["gddim0L"][20]
    assert w1["gddim2R"][20] < w1["gddim1R"][20] < w1["gddim0R"][20]
    assert w1["gddim2R"][50] < w1["gddim0R"][50]


# ---------------------------------------------------------------------------- NFE and errors
@pytest.mark.parametrize("which", ["sscs", "gddim0", "gddim2", "gddimL"])
def test_nfe_and_result_fields(which):
    p = CLD()
    calls = []

    def score(u, t):
        calls.append(float(t[0]))
        return -p.m_inv * p.split(u)[1]

    u_T = p.prior_sample((5, 3), torch.Generator().manual_seed(0))
    grid = quadratic_grid(p, 7)

    def run(**kw):
        if which == "sscs":
            return sample_sscs(score, p, u_T, grid, generator=torch.Generator(), **kw)
        factor = "L" if which == "gddimL" else "R"
        order = 0 if which == "gddimL" else int(which[-1])
        return sample_gddim(score, p, u_T, grid, order=order, factor=factor, **kw)

    res = run(trajectory=True)
    assert res.nfe == 8 and len(calls) == 8
    assert res.samples.shape == (5, 3) and res.state.shape == (5, 6)
    assert res.samples.dtype == torch.float32
    assert len(res.trajectory) == 8 and torch.equal(res.times, grid)
    assert res.trajectory[0] is u_T and torch.equal(res.trajectory[-1], res.state)
    # the score is read at each step's start time, then at eps for the denoising call
    assert calls == pytest.approx(grid.tolist(), rel=1e-6)
    res = run(denoise=False)
    assert res.nfe == 7 and res.trajectory is None
    assert torch.equal(res.samples, p.state_to_data(res.state))


def test_registry_names():
    assert SAMPLERS["sscs"].fn is sample_sscs
    assert SAMPLERS["gddim"].fn is sample_gddim


def test_bad_inputs():
    p = CLD()
    u_T = p.prior_sample((4, 2))
    grid = quadratic_grid(p, 5)

    def score(u, t):
        return -p.m_inv * p.split(u)[1]

    for fn in (sample_sscs, sample_gddim):
        with pytest.raises(TypeError, match="CLD"):
            fn(score, VP(), torch.zeros(4, 2), grid)
        with pytest.raises(ValueError, match="decreasing"):
            fn(score, p, u_T, grid.flip(0))
        with pytest.raises(ValueError, match="channels"):
            fn(score, p, torch.zeros(4, 3), grid)
        with pytest.raises(FloatingPointError, match="non-finite"):
            fn(lambda u, t: torch.full_like(p.split(u)[1], float("nan")), p, u_T, grid)
    for order in (3, -1, 1.0, True):
        with pytest.raises(ValueError, match="order"):
            sample_gddim(score, p, u_T, grid, order=order)
    with pytest.raises(ValueError, match="factor"):
        sample_gddim(score, p, u_T, grid, factor="cholesky")
