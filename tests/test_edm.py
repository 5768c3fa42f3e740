"""EDM: stochastic churn in the Heun sampler (Alg. 2), log-normal noise levels, lambda(sigma).

Closed form for the churn check: for data ``x0 ~ N(m, s^2)`` a scalar process has marginal
``N(alpha_t m, alpha_t^2 s^2 + sigma_t^2)``, whatever noise the churn adds on the way (the sampler
only has to get back to that marginal at every grid time).
"""

from __future__ import annotations

import math

import pytest
import torch

from trilemma.metrics.mixture import mode_metrics, sliced_wasserstein2
from trilemma.objectives import edm_loss_weight, edm_sigma_times
from trilemma.oracle import grid25
from trilemma.processes import get_process
from trilemma.samplers import SAMPLERS, check_sampler, get_grid, sample, sample_edm_heun
from trilemma.samplers.registry import sampler_options

F64 = torch.float64
M, S = 0.7, 0.5
SCALAR = ["vp", "vp_cosine", "subvp", "geometric_vp", "ve"]


def gaussian_score(proc, calls: list | None = None):  # noqa: ANN001, ANN201
    """Exact score of the diffused ``N(M, S^2)``; records the call times in ``calls``."""

    def fn(u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if calls is not None:
            calls.append(float(t[0]))
        t64 = t.to(F64)
        a, sg = proc.alpha(t64)[:, None], proc.sigma(t64)[:, None]
        return (-(u.to(F64) - a * M) / (a**2 * S**2 + sg**2)).to(u.dtype)

    return fn


def _run(proc, grid, seed: int = 3, n: int = 64, dtype=torch.float32, **opts):  # noqa: ANN001, ANN003, ANN202
    u_T = proc.prior_sample((n, 2), torch.Generator().manual_seed(0), dtype=dtype)
    gen = torch.Generator().manual_seed(seed)
    res = sample_edm_heun(gaussian_score(proc), proc, u_T, grid, generator=gen, **opts)
    return res, gen


# ------------------------------------------------------------------------------- churn: sampler
@pytest.mark.parametrize("denoise", [True, False])
@pytest.mark.parametrize("pname", ["vp", "ve", "subvp"])
def test_zero_churn_is_plain_heun_bit_for_bit(pname: str, denoise: bool) -> None:
    """``s_churn = 0`` (or a churn window that holds no grid level) changes nothing, bit for bit,
    and draws nothing from the generator."""
    proc = get_process(pname)
    grid = get_grid("edm", proc, 12)
    plain, gen_plain = _run(proc, grid, denoise=denoise)
    sig = torch.exp(-proc.log_snr(grid))
    for opts in [
        {"s_churn": 0.0},
        {"s_churn": 0, "s_tmin": 0.0, "s_tmax": math.inf, "s_noise": 1.007},
        {"s_churn": 40.0, "s_tmin": 2.0 * float(sig[0])},  # window above every level
        {"s_churn": 40.0, "s_tmax": 0.5 * float(sig[-1])},  # window below every level
    ]:
        res, gen = _run(proc, grid, denoise=denoise, **opts)
        assert torch.equal(res.samples, plain.samples), opts
        assert torch.equal(res.state, plain.state), opts
        assert res.nfe == plain.nfe == 2 * 12 + int(denoise)
        assert torch.equal(gen.get_state(), gen_plain.get_state()), opts
        assert torch.equal(gen.get_state(), torch.Generator().manual_seed(3).get_state())


def _alg1_heun(proc, u_T: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """EDM's Alg. 1 written out independently of the sampler: ``x = u / alpha``, the denoiser
    ``D(x; sigma) = x + sigma^2 alpha score(alpha x)`` (``sigma = sigma_t / alpha_t``), Heun steps
    on ``dx/dsigma = (x - D) / sigma``, then the Euler step to ``sigma = 0`` (which is ``D``).
    Returns ``(state at grid[-1], samples)``."""
    score = gaussian_score(proc)
    alpha = proc.alpha(grid)
    sig = proc.sigma(grid) / alpha

    def slope(x: torch.Tensor, j: int) -> torch.Tensor:
        t = torch.full((x.shape[0],), float(grid[j]), dtype=F64)
        denoised = x + sig[j] ** 2 * alpha[j] * score(alpha[j] * x, t)
        return (x - denoised) / sig[j]

    x = u_T / alpha[0]
    for i in range(grid.numel() - 1):
        d1 = slope(x, i)
        x_euler = x + (sig[i + 1] - sig[i]) * d1
        x = x + (sig[i + 1] - sig[i]) * 0.5 * (d1 + slope(x_euler, i + 1))
    return alpha[-1] * x, x - sig[-1] * slope(x, grid.numel() - 1)


@pytest.mark.parametrize("pname", ["vp", "ve", "subvp"])
def test_zero_churn_is_edm_algorithm_1(pname: str) -> None:
    """``s_churn = 0`` is EDM's deterministic Heun (Alg. 1, written out above from the denoiser),
    to float64 round-off, with and without the final denoising step (the bit-for-bit test above
    ties every zero-churn setting to this path)."""
    proc = get_process(pname)
    grid = get_grid("edm", proc, 12)
    state, samples = _alg1_heun(proc, proc.prior_sample((64, 2), torch.Generator().manual_seed(0),
                                                        dtype=F64), grid)
    for denoise in (True, False):
        res, _ = _run(proc, grid, dtype=F64, s_churn=0.0, denoise=denoise)
        torch.testing.assert_close(res.state, state, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(res.samples, samples if denoise else state, rtol=1e-10,
                                   atol=1e-12)


def test_churn_changes_the_output_reproducibly_without_extra_nfe() -> None:
    proc = get_process("vp")
    grid = get_grid("edm", proc, 10)
    plain, _ = _run(proc, grid)
    a, _ = _run(proc, grid, s_churn=3.0)
    b, _ = _run(proc, grid, s_churn=3.0)
    c, _ = _run(proc, grid, seed=4, s_churn=3.0)
    assert torch.equal(a.samples, b.samples) and torch.equal(a.state, b.state)
    assert not torch.allclose(a.samples, plain.samples, atol=1e-4)
    assert not torch.allclose(a.samples, c.samples, atol=1e-4)
    assert a.nfe == plain.nfe == 2 * 10 + 1
    assert a.info["gamma"] == pytest.approx(3.0 / 11)
    assert _run(proc, grid, s_churn=5.0)[0].info["gamma"] == pytest.approx(math.sqrt(2) - 1)


def test_churn_raises_the_step_times_within_the_process_range() -> None:
    """Each step's first call is at the raised level ``sigma (1 + gamma)`` (capped at sigma(T):
    the first step starts at T and is not raised); the final denoising call is churned too, and
    ``s_tmin`` above the last level switches that off."""
    proc = get_process("ve")
    n = 8
    grid = get_grid("edm", proc, n)
    sig = torch.exp(-proc.log_snr(grid))
    gamma = min(2.0 / (n + 1), math.sqrt(2) - 1)
    calls: list[float] = []
    u_T = proc.prior_sample((16, 2), torch.Generator().manual_seed(0))
    res = sample_edm_heun(gaussian_score(proc, calls), proc, u_T, grid, s_churn=2.0,
                          generator=torch.Generator().manual_seed(1))
    assert len(calls) == res.nfe == 2 * n + 1
    assert calls[0] == float(grid[0]) == proc.T
    for i in range(1, n + 1):  # step i's first call (i = n: the denoising call) is raised
        s_hat = math.exp(-float(proc.log_snr(calls[2 * i])))
        # (the score sees float32 times: ~1e-7 relative in sigma)
        assert s_hat == pytest.approx(float(sig[i]) * (1 + gamma), rel=1e-6), i
    for i in range(n):  # the second stage of every Heun step is at the next grid time
        assert calls[2 * i + 1] == pytest.approx(float(grid[i + 1]), rel=1e-7)
    assert res.info["t_end"] == float(grid[-1])
    assert res.info["t_denoise"] == pytest.approx(calls[-1], rel=1e-7)
    calls.clear()
    sample_edm_heun(gaussian_score(proc, calls), proc, u_T, grid, s_churn=2.0,
                    s_tmin=1.5 * float(sig[-1]), generator=torch.Generator().manual_seed(1))
    assert calls[-1] == pytest.approx(float(grid[-1]), rel=1e-7)


@pytest.mark.parametrize("pname", ["vp", "ve", "vp_cosine"])
def test_churn_is_exact_for_a_point_mass(pname: str) -> None:
    """For a point mass at ``m`` the flow in ``sigma`` is ``x - m`` proportional to ``sigma``,
    which Heun integrates exactly; so with the churn noise ``xi_i`` (replayed from the same
    generator: one draw per churned step) the sampler must return
    ``m + (sigma_N / sigma_0)(x_0 - m) + sum_i (sigma_N / sigma_hat_i) s_noise
    sqrt(sigma_hat_i^2 - sigma_i^2) xi_i`` to rounding. Any error in the noise std, in the level
    the step starts from or in the step length shows here."""
    proc = get_process(pname)
    m, n, s_churn, s_noise = 0.3, 10, 4.0, 1.05
    grid = get_grid("edm", proc, n)
    sig = torch.exp(-proc.log_snr(grid))
    s_tmin = float(sig[3])  # churn at steps 0..3 only (step 0 is capped at sigma(T): none)
    gamma = min(s_churn / (n + 1), math.sqrt(2) - 1)

    def score(u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, sg = proc.alpha(t)[:, None], proc.sigma(t)[:, None]
        return -(u - a * m) / sg**2

    u_T = proc.prior_sample((256, 2), torch.Generator().manual_seed(0), dtype=F64)
    res = sample_edm_heun(score, proc, u_T, grid, s_churn=s_churn, s_tmin=s_tmin,
                          s_noise=s_noise, denoise=False,
                          generator=torch.Generator().manual_seed(5))
    replay = torch.Generator().manual_seed(5)
    x = u_T / float(proc.alpha(grid[0]))
    for i in range(n):
        s_i = float(sig[i])
        if i > 0 and s_i >= s_tmin:
            s_hat = s_i * (1 + gamma)
            x = x + s_noise * math.sqrt(s_hat**2 - s_i**2) * torch.randn(
                x.shape, generator=replay, dtype=F64)
        else:
            s_hat = s_i
        x = m + (x - m) * float(sig[i + 1]) / s_hat
    expected = float(proc.alpha(grid[-1])) * x
    torch.testing.assert_close(res.samples, expected, rtol=1e-9, atol=1e-9)
    plain = sample_edm_heun(score, proc, u_T, grid, denoise=False)
    assert (res.samples - plain.samples).abs().max() > 1e-3


@pytest.mark.parametrize("pname", ["vp", "ve"])
def test_churn_keeps_the_gaussian_marginal(pname: str) -> None:
    """With the exact score the churned sampler still lands on ``N(alpha m, alpha^2 s^2 +
    sigma^2)`` at eps: mean and variance within a few percent at 80 steps (discretisation: 3% on
    the variance for the maximal gamma, Monte Carlo 1%), also for a churn window."""
    proc = get_process(pname)
    a, sg = float(proc.alpha(proc.eps)), float(proc.sigma(proc.eps))
    sd = math.hypot(a * S, sg)
    grid = get_grid("edm", proc, 80)
    u_T = proc.prior_sample((20000, 1), torch.Generator().manual_seed(0), dtype=F64)
    for opts in [{"s_churn": 1000.0}, {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 5.0,
                                       "s_noise": 1.0}]:
        res = sample_edm_heun(gaussian_score(proc), proc, u_T, grid, denoise=False,
                              generator=torch.Generator().manual_seed(1), **opts)
        x = res.samples[:, 0]
        var_ratio = float(x.var()) / sd**2
        print(pname, opts, f"mean err {float(x.mean()) - a * M:.4f} var ratio {var_ratio:.4f}")
        assert abs(float(x.mean()) - a * M) < 0.02
        assert abs(var_ratio - 1) < 0.06


@pytest.mark.parametrize("pname", ["vp", "ve"])
def test_churn_on_the_grid25_oracle(pname: str) -> None:
    """Exact mixture score, 61 NFE: churn keeps all 25 modes, samples on the modes (quality) with
    the right spread (the plain sampler: 0.98-0.99 of the true std, churn 1.00-1.03), and SW2
    no worse than 1.5x the plain sampler's (both ~0.08 here, mostly sampling noise)."""
    mix = grid25()
    proc = get_process(pname)
    ref = mix.sample(10000, generator=torch.Generator().manual_seed(9))[0]
    out = {}
    for churn in (0.0, 10.0):
        res = sample("edm", mix.score_fn(proc), proc, (1000, 2), 61, s_churn=churn,
                     generator=torch.Generator().manual_seed(1))
        assert res.nfe == 61
        out[churn] = (sliced_wasserstein2(res.samples, ref), mode_metrics(mix, res.samples))
    sw_plain, sw_churn = out[0.0][0], out[10.0][0]
    mm = out[10.0][1]
    print(pname, f"sw2 plain {sw_plain:.4f} churn {sw_churn:.4f}", mm)
    assert mm["modes_covered"] == 25
    assert mm["quality"] >= 0.98
    assert abs(mm["spread_ratio"] - 1) <= 0.06
    assert sw_churn <= 1.5 * sw_plain


def test_churn_options_through_the_registry() -> None:
    assert {"s_churn", "s_tmin", "s_tmax", "s_noise"} <= set(sampler_options("edm"))
    check_sampler("edm", "vp", 21, {"s_churn": 5.0, "s_tmin": 0.05, "s_tmax": 50.0,
                                    "s_noise": 1.003})
    spec = SAMPLERS["edm"]
    assert spec.min_nfe(True, s_churn=5.0) == spec.min_nfe(True) == 3
    assert spec.steps_for(21, True, s_churn=5.0) == 10
    proc = get_process("vp")
    score = gaussian_score(proc)
    res = sample("edm", score, proc, (32, 2), 21, s_churn=5.0, s_noise=1.003,
                 generator=torch.Generator().manual_seed(2))
    assert res.nfe == 21
    gen = torch.Generator().manual_seed(2)
    u_T = proc.prior_sample((32, 2), generator=gen)
    direct = sample_edm_heun(score, proc, u_T, get_grid("edm", proc, 10), s_churn=5.0,
                             s_noise=1.003, generator=gen)
    assert torch.equal(res.samples, direct.samples)


@pytest.mark.parametrize("opts,match", [
    ({"s_churn": -1.0}, "s_churn"),
    ({"s_churn": math.nan}, "s_churn"),
    ({"s_churn": "1"}, "s_churn"),
    ({"s_tmin": 2.0, "s_tmax": 1.0}, "s_tmin <= s_tmax"),
    ({"s_tmin": -0.1}, "s_tmin"),
    ({"s_tmax": math.nan}, "s_tmax"),
    ({"s_tmax": "inf"}, "s_tmax"),
    ({"s_noise": 0.0}, "s_noise"),
    ({"s_noise": -1.0}, "s_noise"),
])
def test_churn_option_errors(opts: dict, match: str) -> None:
    proc = get_process("vp")
    with pytest.raises(ValueError, match=match):
        _run(proc, get_grid("edm", proc, 4), **opts)
    with pytest.raises(ValueError, match=match):
        sample("edm", gaussian_score(proc), proc, (4, 2), 9, **opts)


# ------------------------------------------------------------------ noise levels and loss weight
def test_edm_sigma_times_are_log_normal_in_sigma() -> None:
    """Away from clamping (a VE with sigma in [1e-4, 1e3]) ``ln sigma`` has mean ``p_mean`` and
    std ``p_std`` within 4 Monte-Carlo standard errors; the draw follows the generator."""
    proc = get_process("ve", sigma_min=1e-4, sigma_max=1e3)
    n = 100_000
    for p_mean, p_std in [(-1.2, 1.2), (0.4, 0.6)]:
        t, sigma = edm_sigma_times(n, proc, p_mean, p_std,
                                   generator=torch.Generator().manual_seed(0))
        assert t.shape == sigma.shape == (n,) and t.dtype == sigma.dtype == torch.float32
        ls = sigma.to(F64).log()
        assert abs(float(ls.mean()) - p_mean) < 4 * p_std / math.sqrt(n)
        assert abs(float(ls.std()) - p_std) < 4 * p_std / math.sqrt(2 * n)
    again = edm_sigma_times(n, proc, 0.4, 0.6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again[0], t) and torch.equal(again[1], sigma)


@pytest.mark.parametrize("pname", SCALAR)
def test_sigma_time_round_trip_and_clamping(pname: str) -> None:
    proc = get_process(pname)
    ts = torch.linspace(proc.train_eps, proc.T, 201, dtype=F64)
    sig = torch.exp(-proc.log_snr(ts))
    back = proc.t_from_log_snr(-torch.log(sig))
    torch.testing.assert_close(back, ts, rtol=1e-7, atol=1e-12)
    t, sigma = edm_sigma_times(20000, proc, generator=torch.Generator().manual_seed(1))
    assert float(t.min()) >= proc.train_eps * (1 - 1e-6) and float(t.max()) <= proc.T
    torch.testing.assert_close(sigma.to(F64), torch.exp(-proc.log_snr(t.to(F64))),
                               rtol=1e-6, atol=0)
    torch.testing.assert_close(proc.t_from_log_snr(-torch.log(sigma.to(F64))), t.to(F64),
                               rtol=1e-5, atol=1e-7)  # sigma is float32
    # clamped at t_max = T/2: the mass above sigma(T/2) piles up there, exactly the normal tail
    half = 0.5 * proc.T
    t, sigma = edm_sigma_times(20000, proc, generator=torch.Generator().manual_seed(2),
                               t_max=half)
    tail = 0.5 * math.erfc((-float(proc.log_snr(half)) + 1.2) / (1.2 * math.sqrt(2)))
    frac = float((t == torch.tensor(half, dtype=torch.float32)).to(F64).mean())
    assert float(t.max()) <= half
    assert abs(frac - tail) < 4 * math.sqrt(tail * (1 - tail) / 20000) + 1e-4, (frac, tail)


def test_edm_loss_weight_hand_values() -> None:
    # (sigma^2 + 0.25) / (0.5 sigma)^2
    w = edm_loss_weight(torch.tensor([0.1, 0.5, 1.0, 2.0], dtype=F64))
    torch.testing.assert_close(w, torch.tensor([104.0, 8.0, 5.0, 4.25], dtype=F64))
    assert float(edm_loss_weight(2.0, sigma_data=1.0)) == pytest.approx(1.25)
    with pytest.raises(ValueError, match="sigma_data"):
        edm_loss_weight(1.0, sigma_data=0.0)


def test_edm_sigma_times_errors() -> None:
    proc = get_process("vp")
    with pytest.raises(ValueError, match="p_std"):
        edm_sigma_times(4, proc, p_std=0.0)
    with pytest.raises(ValueError, match="n must"):
        edm_sigma_times(0, proc)
    with pytest.raises(ValueError, match="t_min < t_max"):
        edm_sigma_times(4, proc, t_min=0.5, t_max=0.5)
    with pytest.raises(TypeError, match="scalar process"):
        edm_sigma_times(4, get_process("cld"))
