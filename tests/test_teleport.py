"""The analytic teleport: the Gaussian probability-flow map against the exact ODE, its wiring
into ``sample`` and ``tune_grid``, and its errors."""

from __future__ import annotations

import math

import pytest
import torch

import trilemma
from trilemma.methods import ScoreModel
from trilemma.nets import MLP
from trilemma.oracle import GaussianMixture, get_mixture
from trilemma.processes import CLD, VP, get_process
from trilemma.samplers import (
    GaussianMoments,
    check_sampler,
    gaussian_flow,
    grid_error,
    landing_time,
    log_snr_grid,
    reference_solve,
    sample,
    sample_dpm_solver,
    sample_from,
    transfer_grid,
    tune_grid,
)
from trilemma.setup import resolve_teleport

F64 = torch.float64


def _gaussian() -> GaussianMoments:
    """A 3-D Gaussian with a full (rotated, anisotropic) covariance and a non-zero mean."""
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0),
                                       dtype=F64))
    cov = q @ torch.diag(torch.tensor([0.04, 0.5, 2.0], dtype=F64)) @ q.T
    return GaussianMoments(torch.tensor([0.3, -0.7, 1.1], dtype=F64), cov)


def _exact_score(process, mom: GaussianMoments):  # noqa: ANN001, ANN202
    """Score of the Gaussian's marginal N(alpha mu, alpha^2 Sigma + sigma^2 I) at time t."""
    def score(u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = torch.as_tensor(t, dtype=F64).flatten()[:1]
        a, s = float(process.alpha(tt)), float(process.sigma(tt))
        prec = torch.linalg.inv(a * a * mom.cov + s * s * torch.eye(mom.dim, dtype=F64))
        return (-(u.to(F64) - a * mom.mean) @ prec).to(u.dtype)
    return score


@pytest.mark.parametrize("pname", ["vp", "subvp", "ve"])
def test_flow_matches_a_fine_solve_of_the_exact_ode(pname: str) -> None:
    proc = get_process(pname)
    mom = _gaussian()
    u_T = proc.prior_sample((64, 3), generator=torch.Generator().manual_seed(1), dtype=F64)
    t_land = landing_time(proc, 0.3)
    grid = log_snr_grid(proc, 400, t_min=t_land)
    fine = sample_dpm_solver(_exact_score(proc, mom), proc, u_T, grid, order=3,
                             denoise=False).samples
    jump = gaussian_flow(proc, u_T, proc.T, t_land, mom)
    assert float((jump - fine).abs().max()) < 1e-5 * (1 + float(fine.abs().max()))


def test_flow_maps_the_marginal_onto_the_marginal() -> None:
    """The map is affine, u_s = A u_t + b, with A C_t A^T = C_s and A alpha_t mu + b = alpha_s mu
    (C_t = alpha_t^2 Sigma + sigma_t^2 I); read A and b off basis vectors."""
    proc, mom = VP(), _gaussian()
    t, s = 0.8, 0.2
    b = gaussian_flow(proc, torch.zeros(1, 3, dtype=F64), t, s, mom)[0]
    a_mat = (gaussian_flow(proc, torch.eye(3, dtype=F64), t, s, mom) - b).T

    def marg(time: float) -> tuple[torch.Tensor, torch.Tensor]:
        a, sg = (float(f(torch.tensor(time, dtype=F64))) for f in (proc.alpha, proc.sigma))
        return a * mom.mean, a * a * mom.cov + sg * sg * torch.eye(3, dtype=F64)

    (m_t, c_t), (m_s, c_s) = marg(t), marg(s)
    torch.testing.assert_close(a_mat @ c_t @ a_mat.T, c_s, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(a_mat @ m_t + b, m_s, atol=1e-10, rtol=1e-9)
    # the flow, not merely some transport: A is symmetric positive definite (a gradient map)
    torch.testing.assert_close(a_mat, a_mat.T, atol=1e-10, rtol=0)


def test_flow_composes_and_keeps_shape_dtype() -> None:
    proc, mom = VP(), _gaussian()
    u = torch.randn(5, 3, generator=torch.Generator().manual_seed(2))
    two = gaussian_flow(proc, gaussian_flow(proc, u, 1.0, 0.5, mom), 0.5, 0.1, mom)
    one = gaussian_flow(proc, u, 1.0, 0.1, mom)
    torch.testing.assert_close(two, one, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gaussian_flow(proc, u, 0.4, 0.4, mom), u)
    assert one.dtype == torch.float32 and one.shape == u.shape
    img = torch.randn(4, 1, 2, 2)  # image-shaped data: the moments are per flattened sample
    flat = GaussianMoments(torch.zeros(4), torch.eye(4))
    assert gaussian_flow(proc, img, 1.0, 0.5, flat).shape == img.shape


def test_moments_from_mixture_match_samples() -> None:
    mix = get_mixture("imbalanced2d")
    exact = GaussianMoments.from_mixture(mix)
    x, _ = mix.sample(200_000, torch.Generator().manual_seed(0))
    est = GaussianMoments.from_samples(x)
    torch.testing.assert_close(est.mean, exact.mean, atol=0.01, rtol=0)
    torch.testing.assert_close(est.cov, exact.cov, atol=0.01, rtol=0)
    # one Gaussian component: the moments are its own
    one = GaussianMoments.from_mixture(GaussianMixture(torch.tensor([[1.0, 2.0]]), stds=0.5))
    torch.testing.assert_close(one.mean, torch.tensor([1.0, 2.0], dtype=F64))
    torch.testing.assert_close(one.cov, 0.25 * torch.eye(2, dtype=F64))


@pytest.mark.parametrize("mean, cov, match", [
    (torch.zeros(2), torch.eye(3), r"cov must have shape \(2, 2\)"),
    (torch.zeros(2), torch.tensor([[1.0, 0.5], [0.0, 1.0]]), "symmetric"),
    (torch.zeros(2), torch.tensor([[1.0, 0.0], [0.0, -1.0]]), "positive semi-definite"),
    (torch.tensor([0.0, math.nan]), torch.eye(2), "finite"),
])
def test_bad_moments_are_named(mean: torch.Tensor, cov: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GaussianMoments(mean, cov)


def test_from_samples_needs_a_batch() -> None:
    with pytest.raises(ValueError, match="at least 2 samples"):
        GaussianMoments.from_samples(torch.zeros(1, 3))


def test_sample_teleports_for_free_and_lands_where_asked() -> None:
    mix, proc = get_mixture("grid25"), VP()
    mom = GaussianMoments.from_mixture(mix)
    gen = torch.Generator().manual_seed(0)
    res = sample("dpm2m", mix.score_fn(proc), proc, (64, 2), 5, generator=gen, teleport=mom,
                 teleport_sigma=3.0)
    assert res.nfe == 5
    t_land = res.info["teleport"]["to"]
    assert math.isclose(t_land, landing_time(proc, 3.0))
    assert math.isclose(float(proc.sigma(torch.tensor(t_land)) / proc.alpha(torch.tensor(t_land))),
                        3.0, rel_tol=1e-6)


def test_sample_from_runs_the_sampler_on_the_teleported_state() -> None:
    mix, proc = get_mixture("grid25"), VP()
    mom, score = GaussianMoments.from_mixture(mix), mix.score_fn(proc)
    u_T = proc.prior_sample((32, 2), generator=torch.Generator().manual_seed(3))
    grid = log_snr_grid(proc, 4, t_max=landing_time(proc, 2.0))
    got = sample_from("dpm2m", score, proc, u_T, 4, grid=grid, teleport=mom).samples
    by_hand = sample_dpm_solver(score, proc, gaussian_flow(proc, u_T, proc.T, float(grid[0]), mom),
                                grid, order=2, denoise=False).samples
    torch.testing.assert_close(got, by_hand)
    plain = sample_from("dpm2m", score, proc, u_T, 4, grid=grid).samples
    assert not torch.allclose(got, plain)  # without teleport the prior draw is used as is


def test_teleport_reaches_gaussian_data_exactly() -> None:
    """On Gaussian data a one-step DDIM from a teleport just above eps is all but exact, while
    the same five calls from T are not."""
    proc, mom = VP(), _gaussian()
    score = _exact_score(proc, mom)
    gen = torch.Generator().manual_seed(4)
    u_T = proc.prior_sample((20000, 3), generator=gen, dtype=F64)
    grid = log_snr_grid(proc, 400)
    exact = sample_dpm_solver(score, proc, u_T, grid, order=3, denoise=False).samples
    near = torch.tensor([landing_time(proc, 0.02), proc.eps], dtype=F64)
    tele = sample_from("ddim", score, proc, u_T, 1, grid=near, denoise=False, teleport=mom)
    plain = sample_from("ddim", score, proc, u_T, 5, denoise=False)
    assert tele.nfe == 1 and plain.nfe == 5
    err_tele = float((tele.samples - exact).abs().max())
    err_plain = float((plain.samples - exact).abs().max())
    assert err_tele < 2e-3 < err_plain


def test_score_model_sample_takes_teleport() -> None:
    torch.manual_seed(0)
    model = ScoreModel(VP(), MLP(2, 2, hidden=16, depth=1, zero_init=False), (2,))
    mom = GaussianMoments(torch.zeros(2), torch.eye(2))
    res = model.sample(8, "unipc", 5, teleport=mom, teleport_sigma=2.0)
    assert res.nfe == 5 and "teleport" in res.info and res.samples.shape == (8, 2)


def test_teleport_errors_name_the_fix() -> None:
    mix, proc = get_mixture("grid25"), VP()
    mom, score = GaussianMoments.from_mixture(mix), mix.score_fn(proc)
    with pytest.raises(ValueError, match="teleport_sigma: given without teleport"):
        sample("dpm2m", score, proc, (4, 2), 5, teleport_sigma=2.0)
    with pytest.raises(ValueError, match="teleport_sigma: a named grid with teleport"):
        sample("dpm2m", score, proc, (4, 2), 5, teleport=mom)
    with pytest.raises(ValueError, match="grid: the stored 'tuned' grids start at T"):
        sample("dpm2m", score, proc, (4, 2), 5, grid="tuned", teleport=mom, teleport_sigma=2.0)
    with pytest.raises(ValueError, match="teleport_sigma: a tensor grid fixes"):
        sample("dpm2m", score, proc, (4, 2), 5, grid=log_snr_grid(proc, 3), teleport=mom,
               teleport_sigma=2.0)
    with pytest.raises(ValueError, match="teleport_sigma must lie between"):
        sample("dpm2m", score, proc, (4, 2), 5, teleport=mom, teleport_sigma=1e6)
    with pytest.raises(ValueError, match="adaptive"):
        sample("ode", score, proc, (4, 2), 50, teleport=mom, teleport_sigma=2.0)
    with pytest.raises(ValueError, match="needs a scalar process"):
        sample("em", score, CLD(), (4, 2), 5, teleport=mom, teleport_sigma=2.0)
    with pytest.raises(TypeError, match="GaussianMoments"):
        sample("dpm2m", score, proc, (4, 2), 5, teleport=(0, 1), teleport_sigma=2.0)
    with pytest.raises(ValueError, match="the moments have 2 coordinates but each state has 3"):
        sample("dpm2m", score, proc, (4, 3), 5, teleport=mom, teleport_sigma=2.0)


def test_tune_grid_places_the_landing_and_beats_the_plain_grid() -> None:
    mix, proc = get_mixture("grid25"), VP()
    mom, score = GaussianMoments.from_mixture(mix), mix.score_fn(proc)
    kw = {"n_samples": 256, "max_evals": 60, "reference_steps": 64}
    tele = tune_grid(score, proc, 5, "dpm2m", teleport=mom, **kw)
    assert tele.teleport and len(tele.fractions) == 5 and tele.grid.numel() == 6
    assert float(tele.grid[0]) < proc.T and math.isclose(float(tele.grid[-1]), proc.eps)
    assert tele.error <= tele.initial_error
    plain = tune_grid(score, proc, 5, "dpm2m", **kw)
    assert not plain.teleport and float(plain.grid[0]) == proc.T
    assert tele.error < plain.error  # the free stretch is worth more than the tuning alone
    res = sample("dpm2m", score, proc, (16, 2), 5, grid=tele.grid, teleport=mom)
    assert res.nfe == 5
    with pytest.raises(ValueError, match="teleport: the moments have 2 coordinates"):
        tune_grid(score, proc, 5, "dpm2m", data_shape=(3,), teleport=mom, **kw)


def test_grid_error_scores_the_teleported_solve() -> None:
    mix, proc = get_mixture("grid25"), VP()
    mom, score = GaussianMoments.from_mixture(mix), mix.score_fn(proc)
    u_T = proc.prior_sample((128, 2), generator=torch.Generator().manual_seed(5), dtype=F64)
    ref = reference_solve(score, proc, u_T, 64)
    grid = log_snr_grid(proc, 4, t_max=landing_time(proc, 2.0))
    got = grid_error(score, proc, "dpm2m", u_T, grid, ref, teleport=mom)
    out = sample_from("dpm2m", score, proc, u_T, 4, grid=grid, teleport=mom).samples
    assert math.isclose(got, float(((out - ref) ** 2).mean().sqrt()), rel_tol=1e-9)


def test_teleport_options_are_checked_where_configs_and_the_cli_are() -> None:
    check_sampler("dpm2m", "vp", 5, {"teleport": "data", "teleport_sigma": 2.0})
    check_sampler("em", "ve", 5, {"teleport": "data", "grid": [0.5, 0.1, 0.001]})
    for opts, match in (({"teleport": "moments"}, "teleport must be 'data'"),
                        ({"teleport_sigma": 2.0}, "teleport_sigma needs teleport"),
                        ({"teleport": "data", "teleport_sigma": -1}, "positive number"),
                        ({"grid": [0.1, 0.5]}, "strictly decreasing"),
                        ({"grid": [0.5]}, "at least 2")):
        with pytest.raises(ValueError, match=match):
            check_sampler("dpm2m", "vp", 5, opts)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['teleport'\]"):
        check_sampler("sscs", "cld", 5, {"teleport": "data"})
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['teleport'\]"):
        check_sampler("em", "cld", 5, {"teleport": "data"})
    with pytest.raises(TypeError, match="in Python pass GaussianMoments.from_samples"):
        sample("dpm2m", get_mixture("grid25").score_fn(VP()), VP(), (4, 2), 5,
               teleport="data", teleport_sigma=2.0)


def test_resolve_teleport_reads_the_training_data() -> None:
    data = torch.randn(500, 3, generator=torch.Generator().manual_seed(0)) * 2 + 1
    out = resolve_teleport({"teleport": "data", "teleport_sigma": 1.5}, None, data)
    assert out["teleport_sigma"] == 1.5
    torch.testing.assert_close(out["teleport"].mean, data.to(F64).mean(0))
    torch.testing.assert_close(out["teleport"].cov, torch.cov(data.to(F64).T))
    assert resolve_teleport({"eta": 0.0}, None) == {"eta": 0.0}


def test_a_config_samples_with_teleport_during_training(tmp_path) -> None:  # noqa: ANN001

    cfg = {"seed": 0, "device": "cpu", "process": {"name": "vp"},
           "model": {"net": {"name": "mlp", "hidden": 16, "depth": 1}},
           "data": {"name": "toy", "toy": "grid25", "n": 256},
           "train": {"steps": 2, "batch_size": 32, "sample_every": 2, "ckpt_every": 2},
           "sample": {"sampler": "dpm2m", "nfe": 5, "n": 16,
                      "options": {"teleport": "data", "teleport_sigma": 2.0}}}
    trilemma.train(cfg, out=tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "samples" / "step_000002.png").is_file()
    bad = {**cfg, "sample": {**cfg["sample"], "options": {"teleport": "train"}}}
    with pytest.raises(Exception, match="teleport must be 'data'"):
        trilemma.train(bad, out=tmp_path / "bad", progress=False)


def test_transfer_grid_keeps_the_log_snrs_and_the_end_points() -> None:
    vp, ve, sub = VP(), get_process("ve"), get_process("subvp")
    grid = torch.tensor([0.6, 0.3, 0.1, 0.02, vp.eps], dtype=F64)  # a teleported grid
    out = transfer_grid(grid, vp, ve)
    torch.testing.assert_close(ve.log_snr(out[:-1]), vp.log_snr(grid[:-1]), atol=1e-6, rtol=0)
    assert float(out[-1]) == ve.eps and float(out[0]) < ve.T
    back = transfer_grid(out, ve, vp)
    torch.testing.assert_close(back[:-1], grid[:-1], atol=1e-6, rtol=0)
    full = transfer_grid(log_snr_grid(vp, 4), vp, sub)  # from T: ends pinned to T and eps
    assert float(full[0]) == sub.T and float(full[-1]) == sub.eps
    # the same ODE: on the exact score the transferred grid gives VP's samples, up to the
    # different eps and float32
    mix = get_mixture("grid25")
    mom = GaussianMoments.from_mixture(mix)
    a = sample("dpm2m", mix.score_fn(vp), vp, (256, 2), 4, grid=grid, teleport=mom,
               generator=torch.Generator().manual_seed(0)).samples
    b = sample("dpm2m", mix.score_fn(ve), ve, (256, 2), 4, grid=out, teleport=mom,
               generator=torch.Generator().manual_seed(0)).samples
    assert float((a - b).abs().max()) < 0.02
    # a landing above VE's top log-SNR is clipped to its T (VE's closed-form inverse would
    # give a time past T there)
    high = transfer_grid(torch.tensor([0.95, 0.3, vp.eps], dtype=F64), vp, ve)
    assert math.isclose(float(high[0]), ve.T, rel_tol=1e-12) and float(high[0]) <= ve.T
    assert float(high[1]) < ve.T
    with pytest.raises(ValueError, match="strictly decreasing"):
        transfer_grid(torch.tensor([0.1, 0.5]), vp, ve)
