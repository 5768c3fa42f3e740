"""Forward processes: closed forms against ODEs, simulation and high precision; kernels,
parametrisations, priors, reverse drifts, input checks and dtypes (REFERENCE.md §1, §2.2, §3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.integrate import solve_ivp
from scipy.linalg import expm

from trilemma.processes import CLD, PROCESSES, VE, LinearProcess, ScalarProcess, get_process

F64 = torch.float64
MC_SE = 5.0  # Monte-Carlo checks allow this many standard errors

CONFIGS: dict[str, tuple[str, dict]] = {
    "vp": ("vp", {}),
    "vp_cosine": ("vp_cosine", {}),
    "subvp": ("subvp", {}),
    "geometric_vp": ("geometric_vp", {}),
    "ve": ("ve", {}),
    "ve5": ("ve", {"sigma_max": 5.0}),
    "cld": ("cld", {}),
    "cld_linear": ("cld", {"beta_min": 1.0, "beta_max": 7.0}),
}
ALL = list(CONFIGS)
SCALAR = [key for key in ALL if not key.startswith("cld")]
CLDS = ["cld", "cld_linear"]


def make(key: str) -> LinearProcess:
    """Build the process a test id names."""
    name, kw = CONFIGS[key]
    return get_process(name, **kw)


def f64(x: float | list | np.ndarray) -> torch.Tensor:
    """A float64 tensor."""
    return torch.as_tensor(x, dtype=F64)


def cld_b(proc: CLD, t: float) -> float:
    """``B(t) = int_0^t beta`` for a linear beta, written independently of the class."""
    return proc.beta_min * t + 0.5 * (proc.beta_max - proc.beta_min) * t * t


def pair_times(proc: LinearProcess) -> list[tuple[float, float]]:
    """(s, t) pairs, including tiny times and the terminal time."""
    T = proc.T
    return [(0.0, 1e-5), (1e-4, 2e-3), (1e-4, 0.3), (0.25, 0.6), (0.5, T), (0.0, T)]


def ode_kernel(key: str, s: float, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Psi(t, s) and Sigma(t | s) by integrating dPsi = F Psi, dS = F S + S F^T + G G^T."""
    proc = make(key)
    k = proc.k

    def rhs(tau: float, y: np.ndarray) -> np.ndarray:
        f = proc.drift_matrix(f64(tau)).numpy()
        gg = proc.diffusion_matrix_sq(f64(tau)).numpy()
        psi, cov = y[: k * k].reshape(k, k), y[k * k :].reshape(k, k)
        return np.concatenate([(f @ psi).ravel(), (f @ cov + cov @ f.T + gg).ravel()])

    y0 = np.concatenate([np.eye(k).ravel(), np.zeros(k * k)])
    sol = solve_ivp(rhs, (s, t), y0, method="DOP853", rtol=1e-11, atol=1e-22)
    assert sol.success, sol.message
    y = sol.y[:, -1]
    return y[: k * k].reshape(k, k), y[k * k :].reshape(k, k)


def kernel_cov(proc: LinearProcess, t: torch.Tensor) -> torch.Tensor:
    """Covariance of u_t started from the initial-state law: Psi S0 Psi^T + Sigma(t | 0)."""
    psi = proc.mean_coef(t)
    return psi @ proc.init_cov() @ psi.transpose(-1, -2) + proc.transition_cov(t, 0 * t)


def assert_mc_moments(samples: np.ndarray, mean: np.ndarray, cov: np.ndarray, what: str) -> None:
    """Sample mean and covariance of (n, k) draws agree with the truth to MC_SE standard errors."""
    n = samples.shape[0]
    mean_hat = samples.mean(0)
    se_mean = samples.std(0) / math.sqrt(n)
    assert np.all(np.abs(mean_hat - mean) <= MC_SE * se_mean), (what, mean_hat, mean, se_mean)
    c = samples - mean  # centred at the true mean: unbiased products
    for i in range(len(mean)):
        for j in range(i + 1):
            prod = c[:, i] * c[:, j]
            se = prod.std() / math.sqrt(n)
            err = abs(prod.mean() - cov[i, j])
            assert err <= MC_SE * se, (what, i, j, prod.mean(), cov[i, j], se)


def pairs(proc: LinearProcess, u: torch.Tensor) -> np.ndarray:
    """Per-coordinate state vectors ``(n * d, k)`` of a batch of states."""
    blocks = proc.split(u)
    return torch.stack([b.reshape(-1) for b in blocks], dim=-1).double().numpy()


# ------------------------------------------------------------------ 1. closed forms vs the ODE
@pytest.mark.parametrize("key", ALL)
def test_transition_and_cov_match_ode(key: str) -> None:
    proc = make(key)
    st = pair_times(proc)
    s = f64([p[0] for p in st])
    t = f64([p[1] for p in st])
    psi = proc.transition(t, s)  # batched call
    cov = proc.transition_cov(t, s)
    assert psi.shape == cov.shape == (len(st), proc.k, proc.k)
    for i, (si, ti) in enumerate(st):
        psi_ode, cov_ode = ode_kernel(key, si, ti)
        np.testing.assert_allclose(
            psi[i].numpy(), psi_ode, rtol=1e-6, atol=1e-14, err_msg=f"Psi({ti}, {si})"
        )
        np.testing.assert_allclose(
            cov[i].numpy(), cov_ode, rtol=1e-6, atol=1e-16, err_msg=f"Sigma({ti} | {si})"
        )
        # a scalar call agrees with the batched one
        one = proc.transition_cov(ti, si)
        np.testing.assert_allclose(one.numpy(), cov[i].numpy(), rtol=1e-13, atol=0)


# ------------------------------------------------------------------ 2. semigroup / marginals
@pytest.mark.parametrize("key", ALL)
def test_semigroup_and_marginals(key: str) -> None:
    proc = make(key)
    T = proc.T
    r = f64([0.0, 1e-5, 0.1, 0.2, 0.05])
    s = f64([1e-4, 3e-4, 0.4, 0.5 * T, 0.3])
    t = f64([2e-3, 0.7, 0.9, T, T])
    psi_ts = proc.transition(t, s)
    sig_s = proc.marginal_cov(s)
    sig_t = proc.marginal_cov(t)
    pst = psi_ts @ sig_s @ psi_ts.transpose(-1, -2) + proc.transition_cov(t, s)
    torch.testing.assert_close(sig_t, pst, rtol=1e-10, atol=1e-15)
    torch.testing.assert_close(
        proc.mean_coef(t), psi_ts @ proc.mean_coef(s), rtol=1e-10, atol=1e-15
    )
    # Chapman-Kolmogorov for the transition from r to t through s
    psi_sr = proc.transition(s, r)
    torch.testing.assert_close(proc.transition(t, r), psi_ts @ psi_sr, rtol=1e-10, atol=1e-15)
    cov_tr = psi_ts @ proc.transition_cov(s, r) @ psi_ts.transpose(-1, -2)
    cov_tr = cov_tr + proc.transition_cov(t, s)
    torch.testing.assert_close(proc.transition_cov(t, r), cov_tr, rtol=1e-10, atol=1e-15)
    # the marginal is the kernel from the law at t = 0; that law is the initial one, except
    # that VE (score_sde) and geometric VP (LSGM) count the data as already blurred:
    # N(x0, sigma_min^2) and N(sqrt(1 - sigma2_min) x0, sigma2_min)
    zero = f64(0.0)
    offset, a0 = 0.0, 1.0
    if isinstance(proc, VE):
        offset = proc.sigma_min**2
    elif CONFIGS[key][0] == "geometric_vp":
        offset, a0 = proc.sigma2_min, math.sqrt(1.0 - proc.sigma2_min)
    torch.testing.assert_close(proc.marginal_cov(zero), proc.init_cov() + offset)
    torch.testing.assert_close(proc.mean_coef(zero), a0 * torch.eye(proc.k, dtype=F64))
    psi_t0 = proc.transition(t, 0 * t)
    from_zero = psi_t0 @ proc.marginal_cov(zero) @ psi_t0.transpose(-1, -2)
    torch.testing.assert_close(
        sig_t, from_zero + proc.transition_cov(t, 0 * t), rtol=1e-10, atol=1e-15
    )
    torch.testing.assert_close(
        proc.mean_coef(t), psi_t0 @ proc.mean_coef(zero), rtol=1e-10, atol=1e-15
    )
    torch.testing.assert_close(proc.transition_cov(t, t), torch.zeros_like(sig_t))
    torch.testing.assert_close(proc.transition(t, t), torch.eye(proc.k, dtype=F64).expand_as(sig_t))


@pytest.mark.parametrize("key", SCALAR)
def test_scalar_kernels_match_reference_formulas(key: str) -> None:
    """alpha_t and sigma_t against REFERENCE §1.1-1.3, written out independently."""
    proc = make(key)
    t = np.array([1e-4, 0.01, 0.1, 0.37, 0.8, proc.T])
    name = CONFIGS[key][0]
    if name in ("vp", "subvp"):
        bmin, bmax = 0.1, 20.0
        alpha = np.exp(-0.25 * t**2 * (bmax - bmin) - 0.5 * t * bmin)
        sigma = np.sqrt(1 - alpha**2) if name == "vp" else 1 - alpha**2
    elif name == "vp_cosine":

        def fc(x: np.ndarray | float) -> np.ndarray | float:
            return np.cos((x + 0.008) / 1.008 * np.pi / 2) ** 2

        alpha = np.sqrt(fc(t) / fc(0.0))
        sigma = np.sqrt(1 - alpha**2)
    elif name == "geometric_vp":
        sigma = np.sqrt(3e-5 * (0.999 / 3e-5) ** t)
        alpha = np.sqrt(1 - sigma**2)
    else:
        alpha = np.ones_like(t)
        sigma = proc.sigma_min * (proc.sigma_max / proc.sigma_min) ** t
    np.testing.assert_allclose(proc.alpha(f64(t)).numpy(), alpha, rtol=1e-12)
    np.testing.assert_allclose(proc.sigma(f64(t)).numpy(), sigma, rtol=1e-9)
    np.testing.assert_allclose(proc.mean_coef(f64(t))[:, 0, 0].numpy(), alpha, rtol=1e-12)
    np.testing.assert_allclose(proc.marginal_cov(f64(t))[:, 0, 0].numpy(), sigma**2, rtol=1e-9)


@pytest.mark.parametrize("key", SCALAR + CLDS)
def test_sde_coefficients_match_reference(key: str) -> None:
    """F(t) and g(t)^2 against REFERENCE §1 (finite differences of the kernel for VP-type)."""
    proc = make(key)
    t = np.array([0.01, 0.2, 0.5, 0.9 * proc.T])
    name = CONFIGS[key][0]
    f = proc.drift_matrix(f64(t)).numpy()
    g2 = proc.diffusion_sq(f64(t)).numpy()
    h = 1e-6
    if name == "cld":
        beta = proc.beta_min + t * (proc.beta_max - proc.beta_min)
        m_inv, gam = proc.m_inv, proc.Gamma
        assert gam**2 == pytest.approx(4.0 / m_inv)  # critical damping
        expect = np.stack(
            [np.stack([0 * beta, m_inv * beta], -1), np.stack([-beta, -gam * m_inv * beta], -1)], -2
        )
        np.testing.assert_allclose(f, expect, rtol=1e-13)
        np.testing.assert_allclose(g2, 2 * gam * beta, rtol=1e-13)
        return
    if name == "ve":

        def var(x: np.ndarray) -> np.ndarray:
            return (proc.sigma_min * (proc.sigma_max / proc.sigma_min) ** x) ** 2

        np.testing.assert_allclose(f[:, 0, 0], 0.0)
        np.testing.assert_allclose(g2, (var(t + h) - var(t - h)) / (2 * h), rtol=1e-7)
        return
    # VP family: beta = -d/dt log alpha^2 (central differences on the closed alpha)
    log_a2 = lambda x: 2 * torch.log(proc.alpha(f64(x))).numpy()  # noqa: E731
    beta = -(log_a2(t + h) - log_a2(t - h)) / (2 * h)
    np.testing.assert_allclose(f[:, 0, 0], -0.5 * beta, rtol=1e-6)
    if name == "subvp":
        big_b = 0.1 * t + 0.5 * 19.9 * t**2
        np.testing.assert_allclose(beta, 0.1 + 19.9 * t, rtol=1e-6)
        np.testing.assert_allclose(g2, beta * (1 - np.exp(-2 * big_b)), rtol=1e-6)
    else:
        np.testing.assert_allclose(g2, beta, rtol=1e-6)


# ------------------------------------------------------------------ 3. CLD closed forms
def cld_reference_moments(
    proc: CLD, t: float, x0: float, v0: float, s0xx: float, s0vv: float
) -> tuple[np.ndarray, np.ndarray]:
    """REFERENCE §1.4's mean and covariance written out literally."""
    g = proc.Gamma
    b = cld_b(proc, t)
    e2, e4 = math.exp(-2 * b / g), math.exp(-4 * b / g)
    mu = np.array(
        [e2 * ((1 + 2 * b / g) * x0 + 4 * b / g**2 * v0), e2 * (-b * x0 + (1 - 2 * b / g) * v0)]
    )
    sxx = e4 * (
        s0xx
        + math.exp(4 * b / g)
        - 1
        + 4 * b / g * (s0xx - 1)
        + 4 * b**2 / g**2 * (s0xx - 2)
        + 16 * b**2 / g**4 * s0vv
    )
    sxv = e4 * (
        -b * s0xx + 4 * b / g**2 * s0vv - 2 * b**2 / g * (s0xx - 2) - 8 * b**2 / g**3 * s0vv
    )
    svv = e4 * (
        g**2 / 4 * (math.exp(4 * b / g) - 1)
        + b * g
        + s0vv * (1 + 4 * b**2 / g**2 - 4 * b / g)
        + b**2 * (s0xx - 2)
    )
    return mu, np.array([[sxx, sxv], [sxv, svv]])


CLD_TIMES = [1e-3, 0.01, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.85, 1.0]


@pytest.mark.parametrize("key", CLDS)
def test_cld_marginal_matches_reference(key: str) -> None:
    proc = make(key)
    x0, v0 = 0.8, -0.3
    cov = proc.marginal_cov(f64(CLD_TIMES)).numpy()
    psi = proc.mean_coef(f64(CLD_TIMES)).numpy()
    for i, t in enumerate(CLD_TIMES):
        mu, sig = cld_reference_moments(proc, t, x0, v0, proc.eps_num, proc.gamma / proc.m_inv)
        np.testing.assert_allclose(psi[i] @ np.array([x0, v0]), mu, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(cov[i], sig, rtol=1e-8, atol=1e-12, err_msg=f"t={t}")
    # the prior is (nearly) the marginal at T
    np.testing.assert_allclose(cov[-1], proc.prior_cov().numpy(), atol=1e-3)
    np.testing.assert_allclose(proc.prior_cov().numpy(), np.diag([1.0, 1 / proc.m_inv]))


@pytest.mark.parametrize("key", CLDS)
def test_cld_cholesky_hsm_ell_and_gddim_factor(key: str) -> None:
    proc = make(key)
    t = f64([0.0, 1e-5, 1e-3, 0.02, 0.1, 0.3, 0.5, 0.75, 1.0])
    sig = proc.marginal_cov(t)
    chol = proc.marginal_chol(t)
    assert torch.all(chol[:, 0, 1] == 0) and torch.all(torch.diagonal(chol, 0, -2, -1) > 0)
    torch.testing.assert_close(chol @ chol.transpose(-1, -2), sig, rtol=1e-12, atol=1e-15)
    sxx, sxv, svv = sig[:, 0, 0], sig[:, 0, 1], sig[:, 1, 1]
    ell = torch.sqrt(sxx / (sxx * svv - sxv**2))
    torch.testing.assert_close(proc.hsm_ell(t), ell, rtol=1e-10, atol=0)
    # with eps_num the HSM scale is bounded by 1/sqrt(gamma M) = 10 at t = 0
    assert float(proc.hsm_ell(0.0)) == pytest.approx(1 / math.sqrt(proc.gamma / proc.m_inv))

    r = proc.gddim_factor(t)
    assert r.shape == sig.shape and r.dtype == F64
    torch.testing.assert_close(r @ r.transpose(-1, -2), sig, rtol=1e-9, atol=1e-12)
    s0 = proc.init_cov()
    torch.testing.assert_close(r[0], torch.sqrt(s0), rtol=1e-12, atol=0)
    # R_t is the rotated root gDDIM needs, not the Cholesky factor: it solves
    # dR/dt = F R + 1/2 G G^T R^{-T} (central differences)
    assert abs(float(r[5, 0, 1])) > 1e-3
    h = 1e-5
    for ti in (0.05, 0.3, 0.8):
        dr = (proc.gddim_factor(ti + h) - proc.gddim_factor(ti - h)) / (2 * h)
        rt = proc.gddim_factor(ti)
        rhs = (
            proc.drift_matrix(f64(ti)) @ rt
            + 0.5 * proc.diffusion_matrix_sq(f64(ti)) @ torch.linalg.inv(rt).T
        )
        torch.testing.assert_close(dr, rhs, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("key", CLDS)
def test_sscs_a_step_matches_expm_and_lyapunov(key: str) -> None:
    """A: dx = -M^-1 v beta, dv = (x - Gamma M^-1 v) beta + sqrt(2 Gamma beta) dw (§3.1).

    Per unit ``b = int beta`` the generator is constant, so the mean map is ``expm(A b)``
    and the covariance solves ``dS/db = A S + S A^T + diag(0, 2 Gamma)`` from 0.
    """
    proc = make(key)
    m_inv, gam = proc.m_inv, proc.Gamma
    a = np.array([[0.0, -m_inv], [1.0, -gam * m_inv]])
    q = np.diag([0.0, 2 * gam])
    bs = [1e-4, 0.02, 0.3, 1.0, 2.5]
    mean, cov = proc.sscs_a_step(f64(bs))
    assert mean.shape == cov.shape == (len(bs), 2, 2)

    def lyap(_b: float, y: np.ndarray) -> np.ndarray:
        s = y.reshape(2, 2)
        return (a @ s + s @ a.T + q).ravel()

    for i, b in enumerate(bs):
        np.testing.assert_allclose(mean[i].numpy(), expm(a * b), rtol=1e-10, atol=1e-14)
        sol = solve_ivp(lyap, (0, b), np.zeros(4), method="DOP853", rtol=1e-12, atol=1e-22)
        np.testing.assert_allclose(
            cov[i].numpy(), sol.y[:, -1].reshape(2, 2), rtol=1e-9, atol=1e-16, err_msg=f"b={b}"
        )
    # and REFERENCE §3.1's closed form
    b = bs[3]
    e = math.exp(-4 * b / gam)
    c_ref = e * np.array(
        [
            [math.exp(4 * b / gam) - 1 - 4 * b / gam - 8 * b**2 / gam**2, -4 * b**2 / gam],
            [-4 * b**2 / gam, gam**2 / 4 * (math.exp(4 * b / gam) - 1) + gam * b - 2 * b**2],
        ]
    )
    np.testing.assert_allclose(cov[3].numpy(), c_ref, rtol=1e-12)


# ------------------------------------------------------------------ 4. Monte Carlo: the SDE
@pytest.mark.parametrize("key", ["vp", "subvp", "ve5", "cld", "cld_linear"])
def test_euler_maruyama_matches_kernel(key: str) -> None:
    """Simulate du = F u dt + G dw (2000 steps, 20000 paths) from a fixed x0; compare moments."""
    proc = make(key)
    gen = torch.Generator().manual_seed(1234)
    n, steps = 20000, 2000
    x0 = torch.full((n, 1), 1.5, dtype=F64)
    u = proc.data_to_state(x0, gen)  # v0 ~ N(0, gamma M) for CLD
    times = torch.linspace(0.0, 1.0, steps + 1, dtype=F64)
    checkpoints = {200: 0.1, 800: 0.4, 2000: 1.0}
    for i in range(steps):
        dt = float(times[i + 1] - times[i])
        tm = 0.5 * (times[i] + times[i + 1])
        g = math.sqrt(float(proc.diffusion_sq(tm)) * dt)
        z = torch.randn(n, 1, generator=gen, dtype=F64)
        kick = [torch.zeros_like(z)] * proc.k
        kick[proc.noise_block] = g * z
        u = u + proc.drift(u, tm) * dt + proc.join(kick)
        if i + 1 in checkpoints:
            t = f64(checkpoints[i + 1])
            u0 = np.array([1.5] + [0.0] * (proc.k - 1))
            mean = proc.mean_coef(t).numpy() @ u0
            cov = kernel_cov(proc, t).numpy()
            assert_mc_moments(pairs(proc, u), mean, cov, f"{key} t={float(t)}")


# ------------------------------------------------------------------ 5. perturb
@pytest.mark.parametrize("key", ALL)
def test_perturb_moments_and_noise(key: str) -> None:
    proc = make(key)
    n = 20000
    x0 = torch.tensor([[1.5, -0.7]], dtype=F64).expand(n, 2)
    t = 0.3 * proc.T
    gen = torch.Generator().manual_seed(7)
    u_t, noise = proc.perturb(x0, t, generator=gen)
    assert u_t.shape == (n, 2 * proc.k) and noise.shape == u_t.shape
    psi = proc.mean_coef(f64(t)).numpy()
    cov = proc.marginal_cov(f64(t)).numpy()
    blocks = [b.numpy() for b in proc.split(u_t)]
    for j in range(2):
        u0 = np.array([float(x0[0, j])] + [0.0] * (proc.k - 1))
        draws = np.stack([b[:, j] for b in blocks], -1)
        assert_mc_moments(draws, psi @ u0, cov, f"{key} coordinate {j}")
    # the noise is standard normal, independent across coordinates
    z = noise.numpy()
    assert_mc_moments(z, np.zeros(z.shape[1]), np.eye(z.shape[1]), f"{key} noise")
    # ... and reconstructs u_t through an independently computed Cholesky factor
    chol = np.linalg.cholesky(cov)
    zb = [b.numpy() for b in proc.split(noise)]
    for j in range(2):
        u0 = np.array([float(x0[0, j])] + [0.0] * (proc.k - 1))
        rebuilt = psi @ u0 + np.stack([b[:, j] for b in zb], -1) @ chol.T
        np.testing.assert_allclose(
            np.stack([b[:, j] for b in blocks], -1), rebuilt, rtol=1e-10, atol=1e-10
        )
    # per-sample times, image-shaped data; the generator makes it reproducible
    x_img = torch.randn(4, 3, 2, 2, dtype=F64, generator=gen)
    tb = f64([0.01, 0.2, 0.5, 0.9]) * proc.T
    a1 = proc.perturb(x_img, tb, torch.Generator().manual_seed(3))
    a2 = proc.perturb(x_img, tb, torch.Generator().manual_seed(3))
    assert a1[0].shape == (4, 3 * proc.k, 2, 2)
    torch.testing.assert_close(a1[0], a2[0], rtol=0, atol=0)
    u_img, z_img = a1
    for b in range(4):
        m = proc.mean_coef(tb[b]).numpy()
        lc = np.linalg.cholesky(proc.marginal_cov(tb[b]).numpy())
        xs = x_img[b].reshape(-1).numpy()
        zs = np.stack([blk[b].reshape(-1).numpy() for blk in proc.split(z_img)], -1)
        us = np.stack([blk[b].reshape(-1).numpy() for blk in proc.split(u_img)], -1)
        expect = np.outer(xs, m[:, 0]) + zs @ lc.T
        np.testing.assert_allclose(us, expect, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------ 6. prior
@pytest.mark.parametrize("key", ALL)
def test_prior_logp_and_sample(key: str) -> None:
    proc = make(key)
    cov = proc.prior_cov().numpy()
    expect = {"ve": [[getattr(proc, "sigma_max", 0.0) ** 2]], "cld": np.diag([1.0, 0.25])}
    np.testing.assert_allclose(cov, expect.get(CONFIGS[key][0], [[1.0]]), rtol=1e-15)
    # the prior is close to the marginal at T
    np.testing.assert_allclose(proc.marginal_cov(proc.T).numpy(), cov, rtol=2e-3, atol=1e-3)

    gen = torch.Generator().manual_seed(11)
    u = torch.randn(5, 2 * proc.k, 3, generator=gen, dtype=F64) * math.sqrt(cov[-1, -1]) * 1.3
    logp = proc.prior_logp(u)
    blocks = [b.numpy() for b in proc.split(u)]
    vecs = np.stack([b.reshape(5, -1) for b in blocks], -1)  # (5, 6, k)
    ref = (
        stats.multivariate_normal(mean=np.zeros(proc.k), cov=cov)
        .logpdf(vecs.reshape(-1, proc.k))
        .reshape(5, -1)
        .sum(1)
    )
    np.testing.assert_allclose(logp.numpy(), ref, rtol=1e-12)

    n = 20000
    x = proc.prior_sample((n, 2), generator=torch.Generator().manual_seed(5))
    assert x.shape == (n, 2 * proc.k) and x.dtype == torch.float32
    assert_mc_moments(pairs(proc, x), np.zeros(proc.k), cov, f"{key} prior")
    y = proc.prior_sample((2, 3, 4), generator=torch.Generator().manual_seed(5), dtype=F64)
    assert y.shape == (2, 3 * proc.k, 4) and y.dtype == F64


# ------------------------------------------------------------------ 7. parametrisations
def random_problem(proc: LinearProcess, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """A batch of float64 states, per-sample times, data and noise-block scores."""
    gen = torch.Generator().manual_seed(seed)
    b, c = 6, 3
    u = torch.randn(b, proc.k * c, 2, generator=gen, dtype=F64)
    t = (0.05 + 0.9 * torch.rand(b, generator=gen, dtype=F64)) * proc.T
    x0 = torch.randn(b, c, 2, generator=gen, dtype=F64)
    score = torch.randn(b, c, 2, generator=gen, dtype=F64)
    return u, t, x0, score


@pytest.mark.parametrize("key", ALL)
def test_score_x0_round_trip(key: str) -> None:
    proc = make(key)
    u, t, x0, score = random_problem(proc)
    s = proc.x0_to_score(u, t, x0)
    assert s.shape == x0.shape
    torch.testing.assert_close(proc.score_to_x0(u, t, s), x0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(
        proc.x0_to_score(u, t, proc.score_to_x0(u, t, score)), score, rtol=1e-9, atol=1e-9
    )
    torch.testing.assert_close(proc.noise_part(proc.x0_to_full_score(u, t, x0)), s)


def gaussian_logpdf(
    proc: LinearProcess, u: torch.Tensor, t: torch.Tensor, mean0: torch.Tensor, cov0: torch.Tensor
) -> torch.Tensor:
    """Sum over coordinates of log N(u; Psi (m, 0), Psi C0 Psi^T + Sigma_t), data-wise m, C0.

    ``cov0`` (k x k) is added to the process's own initial covariance.
    """
    total = u.new_zeros(())
    for i in range(u.shape[0]):
        psi = proc.mean_coef(t[i])
        cov = proc.marginal_cov(t[i]) + psi @ cov0 @ psi.T
        vec = torch.stack([b[i].reshape(-1) for b in proc.split(u)], -1)  # (d, k)
        mean = mean0[i].reshape(-1, 1) * psi[:, 0]
        dist = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
        total = total + dist.log_prob(vec).sum()
    return total


@pytest.mark.parametrize("key", ALL)
def test_x0_to_full_score_is_gradient_of_kernel(key: str) -> None:
    proc = make(key)
    u, t, x0, _ = random_problem(proc, seed=1)
    u = u.requires_grad_(True)
    zero = torch.zeros(proc.k, proc.k, dtype=F64)
    (grad,) = torch.autograd.grad(gaussian_logpdf(proc, u, t, x0, zero), u)
    torch.testing.assert_close(proc.x0_to_full_score(u.detach(), t, x0), grad, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("key", ALL)
def test_full_score_recovers_mixture_score(key: str) -> None:
    """For data from a two-component mixture the exact full-state score (autograd of the
    closed-form marginal) is recovered from its noise block alone."""
    proc = make(key)
    u, t, _, _ = random_problem(proc, seed=2)
    means, stds, weights = [-0.8, 0.6], [0.3, 0.5], [0.3, 0.7]

    def log_p(state: torch.Tensor) -> torch.Tensor:
        comps = []
        for m, sd, w in zip(means, stds, weights, strict=True):
            c0 = torch.zeros(proc.k, proc.k, dtype=F64)
            c0[0, 0] = sd**2
            m0 = torch.full((u.shape[0], u.shape[1] // proc.k, 2), m, dtype=F64)
            parts = []
            for i in range(state.shape[0]):  # per-coordinate mixture: log-sum-exp per element
                psi = proc.mean_coef(t[i])
                cov = proc.marginal_cov(t[i]) + psi @ c0 @ psi.T
                vec = torch.stack([b[i].reshape(-1) for b in proc.split(state)], -1)
                mean = m0[i].reshape(-1, 1) * psi[:, 0]
                dist = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
                parts.append(dist.log_prob(vec))
            comps.append(math.log(w) + torch.stack(parts))
        return torch.logsumexp(torch.stack(comps), 0).sum()

    ur = u.clone().requires_grad_(True)
    (full,) = torch.autograd.grad(log_p(ur), ur)
    got = proc.full_score(u, t, proc.noise_part(full))
    torch.testing.assert_close(got, full, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("key", SCALAR)
def test_eps_and_v_parametrisations(key: str) -> None:
    proc = make(key)
    _, t, x0, _ = random_problem(proc, seed=3)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(4), dtype=F64)
    view = (-1, 1, 1)
    a, s = proc.alpha(t).reshape(view), proc.sigma(t).reshape(view)
    u = a * x0 + s * eps
    score = proc.x0_to_score(u, t, x0)
    torch.testing.assert_close(score, -eps / s)  # DSM target (REFERENCE §2.1)
    v = a * eps - s * x0
    for kind, out in (("eps", eps), ("x0", x0), ("v", v), ("score", score)):
        torch.testing.assert_close(proc.score_to_prediction(kind, score, u, t), out)
        torch.testing.assert_close(proc.prediction_to_score(kind, out, u, t), score)
    torch.testing.assert_close(proc.score_to_x0(u, t, score), x0)
    torch.testing.assert_close(proc.full_score(u, t, score), score)


# ------------------------------------------------------------------ 8. log-SNR, reverse drift
@pytest.mark.parametrize("key", SCALAR)
def test_log_snr_inverse(key: str) -> None:
    proc = make(key)
    t = f64([1e-4, 1e-3, 0.01, 0.1, 0.3, 0.5, 0.8, 0.95 * proc.T, proc.T])
    lam = proc.log_snr(t)
    direct = torch.log(proc.alpha(t) / proc.sigma(t))
    torch.testing.assert_close(lam, direct, rtol=1e-10, atol=1e-12)
    assert torch.all(lam[1:] < lam[:-1])  # decreasing in t
    torch.testing.assert_close(proc.t_from_log_snr(lam), t, rtol=1e-8, atol=1e-12)
    # the base class's bisection, whatever the subclass overrides
    torch.testing.assert_close(ScalarProcess.t_from_log_snr(proc, lam), t, rtol=1e-8, atol=1e-12)
    assert float(proc.t_from_log_snr(float(lam[4]))) == pytest.approx(0.3, rel=1e-8)


@pytest.mark.parametrize("key", ALL)
@pytest.mark.parametrize("probability_flow", [False, True])
def test_reverse_drift(key: str, probability_flow: bool) -> None:
    proc = make(key)
    u, t, _, score = random_problem(proc, seed=5)
    got = proc.reverse_drift(u, t, score, probability_flow=probability_flow)
    f = proc.drift_matrix(t)  # (B, k, k), checked against REFERENCE above
    g2 = proc.diffusion_sq(t).reshape(-1, 1, 1)
    blocks = proc.split(u)
    fu = [
        sum(f[:, i, j].reshape(-1, 1, 1) * blocks[j] for j in range(proc.k)) for i in range(proc.k)
    ]
    torch.testing.assert_close(proc.drift(u, t), proc.join(fu))
    factor = 0.5 if probability_flow else 1.0
    fu[proc.noise_block] = fu[proc.noise_block] - factor * g2 * score
    torch.testing.assert_close(got, proc.join(fu))


# ------------------------------------------------------------------ tiny t and t = T
@pytest.mark.parametrize("key", ALL)
def test_numerically_sound_at_small_t_and_T(key: str) -> None:
    proc = make(key)
    T = proc.T
    t = f64([1e-5, 1e-4, T - 1e-6, T])
    for out in (
        proc.mean_coef(t),
        proc.marginal_cov(t),
        proc.marginal_chol(t),
        proc.transition(t, 0.5 * t),
        proc.transition_cov(t, 0.5 * t),
        proc.transition_cov(f64(T), f64(1e-5)),
        proc.drift_matrix(t),
        proc.diffusion_sq(t),
    ):
        assert torch.isfinite(out).all()
    cov = proc.marginal_cov(t)
    assert torch.all(torch.linalg.eigvalsh(cov) > 0)
    chol = proc.marginal_chol(t)
    torch.testing.assert_close(chol @ chol.transpose(-1, -2), cov, rtol=1e-10, atol=1e-300)
    u, _, x0, score = random_problem(proc, seed=6)
    tb = f64([1e-5, 1e-4, T - 1e-6, T, 1e-5, T])
    for out in (
        proc.perturb(x0, tb)[0],
        proc.x0_to_score(u, tb, x0),
        proc.score_to_x0(u, tb, score),
        proc.full_score(u, tb, score),
        proc.reverse_drift(u, tb, score),
    ):
        assert torch.isfinite(out).all()
    if isinstance(proc, ScalarProcess):
        assert torch.isfinite(proc.log_snr(t)).all()
    if isinstance(proc, CLD):
        assert torch.isfinite(proc.hsm_ell(t)).all()
        assert torch.isfinite(proc.gddim_factor(t)).all()


def _mp_reference(key: str, t: float, s: float) -> tuple[float, float]:
    """Marginal variance at t and transition variance (t | s) to 40 digits (mpmath)."""
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 40
    t, s = mp.mpf(t), mp.mpf(s)
    name = CONFIGS[key][0]
    if name in ("vp", "subvp"):
        big_b = lambda x: mp.mpf("0.1") * x + mp.mpf("9.95") * x**2  # noqa: E731
        a2 = lambda x: mp.e ** (-big_b(x))  # noqa: E731
        if name == "vp":
            return 1 - a2(t), 1 - a2(t) / a2(s)
        var = lambda x: (1 - a2(x)) ** 2  # noqa: E731
        return var(t), var(t) - a2(t) / a2(s) * var(s)
    if name == "vp_cosine":
        fc = lambda x: mp.cos((x + mp.mpf("0.008")) / mp.mpf("1.008") * mp.pi / 2) ** 2  # noqa: E731
        return 1 - fc(t) / fc(0), 1 - fc(t) / fc(s)
    if name == "geometric_vp":
        var = lambda x: mp.mpf("3e-5") * (mp.mpf("0.999") / mp.mpf("3e-5")) ** x  # noqa: E731
        return var(t), var(t) - (1 - var(t)) / (1 - var(s)) * var(s)
    smin, smax = (
        mp.mpf(CONFIGS[key][1].get("sigma_min", "0.01")),
        mp.mpf(CONFIGS[key][1].get("sigma_max", 50)),
    )
    var = lambda x: (smin * (smax / smin) ** x) ** 2  # noqa: E731
    return var(t), var(t) - var(s)


@pytest.mark.parametrize("key", SCALAR)
def test_scalar_variances_precise_at_tiny_t(key: str) -> None:
    proc = make(key)
    for t, s in [(1e-5, 0.0), (1e-5, 5e-6), (2e-3, 1.9e-3)]:
        var_t, var_ts = _mp_reference(key, t, s)
        assert float(proc.marginal_cov(t)[0, 0]) == pytest.approx(float(var_t), rel=1e-10)
        got = float(proc.transition_cov(f64(t), f64(s))[0, 0])
        assert got == pytest.approx(float(var_ts), rel=1e-8), (t, s)


@pytest.mark.parametrize("key", CLDS)
def test_cld_covariance_precise_at_tiny_t(key: str) -> None:
    """Without eps_num, Sigma_xx ~ t^3: the closed form must keep its relative precision."""
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 40
    name, kw = CONFIGS[key]
    proc = CLD(**kw, eps_num=0.0)
    g = mp.sqrt(4 / mp.mpf(proc.m_inv))
    s0vv = mp.mpf(proc.gamma) / proc.m_inv
    for t in (1e-5, 1e-3):
        b = mp.mpf(proc.beta_min) * t + (mp.mpf(proc.beta_max) - proc.beta_min) / 2 * mp.mpf(t) ** 2
        e4 = mp.e ** (-4 * b / g)
        sxx = e4 * (mp.e ** (4 * b / g) - 1 - 4 * b / g - 8 * b**2 / g**2 + 16 * b**2 / g**4 * s0vv)
        sxv = e4 * (4 * b / g**2 * s0vv + 4 * b**2 / g - 8 * b**2 / g**3 * s0vv)
        svv = e4 * (
            g**2 / 4 * (mp.e ** (4 * b / g) - 1)
            + b * g
            + s0vv * (1 + 4 * b**2 / g**2 - 4 * b / g)
            - 2 * b**2
        )
        got = proc.marginal_cov(t).numpy()
        np.testing.assert_allclose(
            got, np.array([[sxx, sxv], [sxv, svv]], dtype=float), rtol=1e-10, err_msg=f"t={t}"
        )
        ell = proc.hsm_ell(t)
        assert torch.isfinite(ell) and float(ell) > 0


# ------------------------------------------------------------------ 9. bad input
def test_unknown_process_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="nope") as info:
        get_process("nope")
    for name in PROCESSES:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="vp"):
        get_process("vp", bogus=1.0)


@pytest.mark.parametrize(
    ("name", "kw", "pattern"),
    [
        ("vp", {"beta_min": -0.1}, "beta_min"),
        ("vp", {"beta_max": float("nan")}, "beta_max"),
        ("vp", {"beta_max": 0.05}, "beta_max"),
        ("vp", {"eps": -1e-3}, "eps"),
        ("subvp", {"beta_max": -20.0}, "beta_max"),
        ("vp_cosine", {"s": -0.008}, r"^s must"),
        ("vp_cosine", {"T": 1.5}, r"^T must"),
        ("geometric_vp", {"sigma2_min": -3e-5}, "sigma2_min"),
        ("geometric_vp", {"sigma2_max": 1.5}, "sigma2_max"),
        ("ve", {"sigma_min": 0.0}, "sigma_min"),
        ("ve", {"sigma_max": -5.0}, "sigma_max"),
        ("ve", {"sigma_max": 0.001}, "sigma_max"),
        ("ve", {"eps": 2.0}, "eps"),
        ("cld", {"beta_min": -4.0}, "beta_min"),
        ("cld", {"beta_max": 0.0}, "beta_max"),
        ("cld", {"m_inv": -4.0}, "m_inv"),
        ("cld", {"gamma": -0.04}, "gamma"),
        ("cld", {"eps_num": -1e-6}, "eps_num"),
        ("cld", {"eps": 0.0}, "eps"),
    ],
)
def test_invalid_parameters_name_the_parameter(name: str, kw: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        get_process(name, **kw)


def test_cld_odd_channels_and_bad_time_shape() -> None:
    proc = CLD()
    odd = torch.zeros(4, 3, 5)
    t = torch.full((4,), 0.5)
    for call in (
        lambda: proc.split(odd),
        lambda: proc.drift(odd, t),
        lambda: proc.prior_logp(odd),
        lambda: proc.score_to_x0(odd, t, odd[:, :1]),
    ):
        with pytest.raises(ValueError, match="divisible by 2"):
            call()


@pytest.mark.parametrize("key", ["vp", "ve", "cld"])
def test_time_of_wrong_shape_raises(key: str) -> None:
    proc = make(key)
    x0 = torch.zeros(4, 2)
    u = torch.zeros(4, 2 * proc.k)
    for bad in (torch.full((3,), 0.5), torch.full((4, 1), 0.5)):
        for call in (
            lambda b=bad: proc.perturb(x0, b),
            lambda b=bad: proc.drift(u, b),
            lambda b=bad: proc.reverse_drift(u, b, x0),
            lambda b=bad: proc.score_to_x0(u, b, x0),
            lambda b=bad: proc.x0_to_score(u, b, x0),
        ):
            with pytest.raises(ValueError, match="time t"):
                call()


# ------------------------------------------------------------------ 10. dtype / device
@pytest.mark.parametrize("key", ALL)
def test_dtypes(key: str) -> None:
    proc = make(key)
    u, t, x0, score = (a.float() for a in random_problem(proc, seed=8))
    outs = [
        *proc.perturb(x0, t),
        *proc.perturb(x0, 0.4),
        proc.drift(u, t),
        proc.reverse_drift(u, t, score),
        proc.reverse_drift(u, t, score, True),
        proc.score_to_x0(u, t, score),
        proc.x0_to_score(u, t, x0),
        proc.x0_to_full_score(u, t, x0),
        proc.full_score(u, t, score),
        proc.prior_logp(u),
        proc.prior_sample((2, 3)),
    ]
    for kind in proc.predictions:
        outs += [
            proc.prediction_to_score(kind, score, u, t, sigma_data=0.5),
            proc.score_to_prediction(kind, score, u, t, sigma_data=0.5),
        ]
    for out in outs:
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
    t32 = torch.tensor([0.3, 0.6], dtype=torch.float32)
    coefs = [
        proc.mean_coef(t32),
        proc.marginal_cov(t32),
        proc.marginal_chol(t32),
        proc.transition(t32, 0.5 * t32),
        proc.transition_cov(t32, 0.5 * t32),
        proc.drift_matrix(t32),
        proc.diffusion_sq(t32),
        proc.prior_cov(),
        proc.init_cov(),
        proc.mean_coef(0.3),
    ]
    if isinstance(proc, ScalarProcess):
        coefs += [proc.log_snr(t32), proc.alpha(t32), proc.sigma(t32)]
    if isinstance(proc, CLD):
        coefs += [proc.hsm_ell(t32), proc.gddim_factor(t32), *proc.sscs_a_step(t32)]
    for c in coefs:
        assert c.dtype == F64
    # float32 results agree with float64 ones
    u64, t64, x64, s64 = random_problem(proc, seed=8)
    torch.testing.assert_close(
        proc.score_to_x0(u, t, score).double(),
        proc.score_to_x0(u64, t64, s64),
        rtol=1e-4,
        atol=1e-4,
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("key", ["vp", "ve", "cld"])
def test_cuda_device_follows_inputs(key: str) -> None:
    proc = make(key)
    u, t, x0, score = (a.float().cuda() for a in random_problem(proc, seed=9))
    gen = torch.Generator(device="cuda").manual_seed(0)
    outs = [
        proc.perturb(x0, t, gen)[0],
        proc.reverse_drift(u, t, score),
        proc.score_to_x0(u, t, score),
        proc.full_score(u, t, score),
        proc.prior_logp(u),
        proc.prior_sample((2, 3), device="cuda"),
        proc.prior_sample((2, 3), generator=torch.Generator().manual_seed(0), device="cuda"),
    ]
    for out in outs:
        assert out.device.type == "cuda" and torch.isfinite(out).all()
