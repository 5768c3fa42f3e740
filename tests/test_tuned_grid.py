"""Tuned time grids: the stored tables, the 'tuned' grid option and the tuner (closed forms)."""

from __future__ import annotations

import math

import pytest
import torch

from trilemma.oracle import GaussianMixture, get_mixture
from trilemma.processes import get_process
from trilemma.samplers import (
    SAMPLERS,
    check_grid,
    check_sampler,
    get_grid,
    grid_error,
    grid_from_fractions,
    log_snr_grid,
    projection_directions,
    reference_solve,
    sample,
    sliced_w2,
    tune_grid,
    tuned_grid,
    tuned_keys,
)
from trilemma.samplers.grids import check_fractions
from trilemma.samplers.tuned_table import TUNED_FRACTIONS
from trilemma.setup.sections import validate_sample

F64 = torch.float64
SCALAR = ["vp", "ve", "subvp"]
M, S = 0.5, 0.05


def gaussian_mixture() -> GaussianMixture:
    """N(M, S^2) in 1-D as a one-component mixture (its PF-ODE map has a closed form)."""
    return GaussianMixture(torch.tensor([[M]]), None, S)


def pf_map(proc, u_T: torch.Tensor, t0: float, t1: float) -> torch.Tensor:  # noqa: ANN001
    """The exact probability-flow map from ``t0`` to ``t1`` for ``N(M, S^2)`` data."""
    a0, s0 = float(proc.alpha(t0)), float(proc.sigma(t0))
    a1, s1 = float(proc.alpha(t1)), float(proc.sigma(t1))
    return a1 * M + math.hypot(a1 * S, s1) * (u_T - a0 * M) / math.hypot(a0 * S, s0)


# ---------------------------------------------------------------------------- stored grids
def test_table_covers_five_and_ten_calls() -> None:
    for sname in ("dpm2m", "dpm3m", "unipc"):
        for pname in SCALAR:
            assert {k[2] for k in tuned_keys(sname, pname)} >= {5, 10}, (sname, pname)


@pytest.mark.parametrize("key", sorted(TUNED_FRACTIONS))
def test_stored_grid_is_valid(key: tuple[str, str, int]) -> None:
    """Strictly decreasing, starts exactly at T and ends exactly at eps, N + 1 times."""
    sname, pname, n = key
    proc = get_process(pname)
    g = tuned_grid(proc, n, sampler=sname)
    assert g.dtype == F64 and g.shape == (n + 1,)
    assert float(g[0]) == proc.T and float(g[-1]) == proc.eps
    assert bool((g[1:] < g[:-1]).all())
    check_grid(g, proc)
    assert torch.equal(g, get_grid("tuned", proc, n, sampler=sname))


@pytest.mark.parametrize("pname", ["vp", "ve", "subvp", "vp_cosine"])
def test_grid_from_fractions_places_log_snr(pname: str) -> None:
    """lambda(t_i) = lambda(T) + f_i (lambda(eps) - lambda(T)), end points exact."""
    proc = get_process(pname)
    f = torch.tensor([0.1, 0.35, 0.8], dtype=F64)
    g = grid_from_fractions(proc, f)
    lam = proc.log_snr(g)
    lam_hi, lam_lo = float(proc.log_snr(proc.T)), float(proc.log_snr(proc.eps))
    want = lam_hi + torch.cat([torch.zeros(1, dtype=F64), f, torch.ones(1, dtype=F64)]) \
        * (lam_lo - lam_hi)
    assert torch.allclose(lam, want, atol=1e-7)
    assert float(g[0]) == proc.T and float(g[-1]) == proc.eps
    # uniform fractions give the log-SNR grid
    uni = torch.linspace(0, 1, 6, dtype=F64)[1:-1]
    assert torch.allclose(grid_from_fractions(proc, uni), log_snr_grid(proc, 5), atol=1e-9)


@pytest.mark.parametrize("sname", ["dpm2m", "dpm3m", "unipc"])
@pytest.mark.parametrize("nfe", [5, 10])
def test_sample_with_tuned_grid_counts_nfe_exactly(sname: str, nfe: int) -> None:
    """NFE budget = solver steps (no denoising call); the stored grid is the one used."""
    mix = get_mixture("grid25")
    proc = get_process("vp")
    res = sample(sname, mix.score_fn(proc), proc, (16, 2), nfe, grid="tuned",
                 generator=torch.Generator().manual_seed(0), trajectory=True)
    assert res.nfe == nfe and res.info["steps"] == nfe and res.info["denoise"] is False
    assert torch.equal(res.times, tuned_grid(proc, nfe, sampler=sname))
    with_denoise = sample(sname, mix.score_fn(proc), proc, (16, 2), 6, grid="tuned",
                          denoise=True, generator=torch.Generator().manual_seed(0))
    assert with_denoise.nfe == 6 and with_denoise.info["steps"] == 5


@pytest.mark.parametrize("pname", SCALAR)
@pytest.mark.parametrize("sname", ["dpm2m", "dpm3m", "unipc"])
@pytest.mark.parametrize("nfe", [5, 10])
def test_stored_grid_beats_log_snr_on_fresh_draws(pname: str, sname: str, nfe: int) -> None:
    """On prior draws the tuner never saw (seed 7), the stored grid lands closer (sliced W2)
    to the fine solve than the uniform log-SNR grid on the tuning mixture (imbalanced2d): by a
    quarter or more at 5 calls; at 10 calls the gain is small for ve/dpm3m (0.045 vs 0.048)."""
    proc = get_process(pname)
    mix = get_mixture("imbalanced2d")
    fn = mix.score_fn(proc)
    u_T = proc.prior_sample((4000, 2), torch.Generator().manual_seed(7), dtype=F64)
    ref = reference_solve(fn, proc, u_T, 128)
    dirs = projection_directions(2, 128, seed=3)
    tuned = grid_error(fn, proc, sname, u_T, tuned_grid(proc, nfe, sampler=sname), ref,
                       directions=dirs)
    plain = grid_error(fn, proc, sname, u_T, log_snr_grid(proc, nfe), ref, directions=dirs)
    assert tuned < (0.75 if nfe == 5 else 1.0) * plain, (tuned, plain)


def test_sliced_w2_closed_forms() -> None:
    """Zero for a relabelled copy; for a shift c, sqrt(mean over directions of (d . c)^2)."""
    x = torch.randn(500, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    dirs = projection_directions(3, 16, seed=1)
    assert torch.allclose(dirs.norm(dim=1), torch.ones(16, dtype=F64))
    assert sliced_w2(x, x[torch.randperm(500)], dirs) < 1e-12
    c = torch.tensor([0.3, -0.2, 0.5], dtype=F64)
    want = float(((dirs @ c) ** 2).mean().sqrt())
    assert abs(sliced_w2(x + c, x, dirs) - want) < 1e-12


# ---------------------------------------------------------------------------- errors
def test_tuned_grid_errors() -> None:
    vp = get_process("vp")
    with pytest.raises(ValueError, match="no tuned grid for sampler 'dpm2m' on process 'vp' "
                                         "with 7 steps .*stored sampler/process/steps: dpm2m/"):
        tuned_grid(vp, 7, sampler="dpm2m")
    with pytest.raises(ValueError, match="no tuned grid for sampler 'ddim'"):
        sample("ddim", get_mixture("grid25").score_fn(vp), vp, (4, 2), 6, grid="tuned")
    with pytest.raises(ValueError, match="pass sampler='dpm2m'"):
        get_grid("tuned", vp, 5)
    with pytest.raises(TypeError, match="scalar process"):
        tuned_grid(get_process("cld"), 5, sampler="dpm2m")
    with pytest.raises(ValueError, match="n_steps must be a positive integer"):
        tuned_grid(vp, 0, sampler="dpm2m")
    with pytest.raises(ValueError, match="a 3-step grid needs 2 interior fractions, got 3"):
        check_fractions([0.1, 0.2, 0.3], 3)
    for bad in ([0.5, 0.4], [0.0, 0.5], [0.5, 1.0], [0.2, float("nan")]):
        with pytest.raises(ValueError, match="must increase strictly inside"):
            grid_from_fractions(vp, bad)


def test_tune_grid_argument_errors() -> None:
    mix = get_mixture("grid25")
    vp, cld = get_process("vp"), get_process("cld")
    with pytest.raises(ValueError, match="fixed-step sampler on a scalar process"):
        tune_grid(mix.score_fn(cld), cld, 5, "sscs")
    with pytest.raises(ValueError, match="fixed-step sampler"):
        tune_grid(mix.score_fn(vp), vp, 20, "ode")
    with pytest.raises(ValueError, match="sampler: unknown sampler 'dpm4m'"):
        tune_grid(mix.score_fn(vp), vp, 5, "dpm4m")
    with pytest.raises(ValueError, match="at least 2"):
        tune_grid(mix.score_fn(vp), vp, 2, "ddim")
    with pytest.raises(ValueError, match="n_samples must be an integer >= 2"):
        tune_grid(mix.score_fn(vp), vp, 5, "dpm2m", n_samples=1)
    with pytest.raises(ValueError, match="max_evals"):
        tune_grid(mix.score_fn(vp), vp, 5, "dpm2m", max_evals=0)
    with pytest.raises(ValueError, match="objective must be 'sw2' or 'rms'"):
        tune_grid(mix.score_fn(vp), vp, 5, "dpm2m", objective="kl")
    with pytest.raises(ValueError, match="options: unknown option"):
        tune_grid(mix.score_fn(vp), vp, 5, "dpm2m", options={"eta": 0.5})


# ---------------------------------------------------------------------------- the tuner
def test_reference_solve_matches_closed_form() -> None:
    proc = get_process("vp")
    mix = gaussian_mixture()
    u_T = proc.prior_sample((64, 1), torch.Generator().manual_seed(0), dtype=F64)
    ref = reference_solve(mix.score_fn(proc), proc, u_T, 128)
    exact = pf_map(proc, u_T, proc.T, proc.eps)
    assert float((ref - exact).abs().max()) < 1e-5


@pytest.mark.parametrize("pname", ["vp", "ve"])
@pytest.mark.parametrize("objective", ["rms", "sw2"])
def test_tuner_reduces_closed_form_error(pname: str, objective: str) -> None:
    """On N(M, S^2) data the tuned 4-call dpm2m grid is closer to the exact probability-flow
    map than the uniform log-SNR grid, on prior draws the tuner did not see."""
    proc = get_process(pname)
    mix = gaussian_mixture()
    fn = mix.score_fn(proc)
    res = tune_grid(fn, proc, 4, "dpm2m", data_shape=(1,), n_samples=64, max_evals=150,
                    reference_steps=64, objective=objective)
    assert res.n_steps == 4 and res.grid.shape == (5,) and res.evaluations <= 150 + 8
    assert res.objective == objective and res.error < 0.5 * res.initial_error
    u_T = proc.prior_sample((256, 1), torch.Generator().manual_seed(3), dtype=F64)
    exact = pf_map(proc, u_T, proc.T, proc.eps)
    errs = {}
    for name, grid in (("tuned", res.grid), ("log_snr", log_snr_grid(proc, 4))):
        out = SAMPLERS["dpm2m"].fn(fn, proc, u_T, grid, denoise=False, order=2)
        errs[name] = float(((out.samples - exact) ** 2).mean().sqrt())
    assert errs["tuned"] < 0.5 * errs["log_snr"], errs


def test_grid_option_is_checked_like_other_sampler_options() -> None:
    """``options: {grid: tuned}`` (configs, ``--opt grid=tuned``) is validated up front."""
    check_sampler("dpm2m", "vp", 5, {"grid": "tuned"})
    check_sampler("dpm3m", "ve", 10, {"grid": "tuned"})
    check_sampler("em", "cld", 20, {"grid": "quadratic"})
    with pytest.raises(ValueError, match=r"options: no tuned grid for sampler 'dpm2m' on process "
                                         r"'vp' at NFE 7 \(7 steps\); stored for this pair: "
                                         r"NFE 5, NFE 10"):
        check_sampler("dpm2m", "vp", 7, {"grid": "tuned"})
    with pytest.raises(ValueError, match="options: no tuned grid for sampler 'heun'"):
        check_sampler("heun", "vp", 5, {"grid": "tuned"})
    with pytest.raises(ValueError, match="options: grid must be one of uniform, .*tuned, got "
                                         "'tunde'"):
        check_sampler("dpm2m", "vp", 5, {"grid": "tunde"})
    with pytest.raises(ValueError, match="options: grid 'tuned' needs a scalar process"):
        check_sampler("sscs", "cld", 5, {"grid": "tuned"})
    with pytest.raises(ValueError, match=r"options: unknown option\(s\) \['grid'\] for sampler "
                                         "'ode'"):
        check_sampler("ode", "vp", 100, {"grid": "uniform"})


def test_config_sample_section_checks_the_tuned_grid() -> None:
    """A config's ``sample.options.grid`` goes through the same check (and is not consumed)."""
    opts = {"grid": "tuned"}
    problems: list[str] = []
    out = validate_sample({"sampler": "dpm3m", "nfe": 10, "options": opts}, "subvp", problems)
    assert problems == [] and out["options"] == {"grid": "tuned"} and opts == {"grid": "tuned"}
    validate_sample({"sampler": "dpm3m", "nfe": 8, "options": opts}, "subvp", problems)
    assert problems == ["sample.options: no tuned grid for sampler 'dpm3m' on process 'subvp' at "
                        "NFE 8 (8 steps); stored for this pair: NFE 5, NFE 10; use grid log_snr "
                        "or tune one (trilemma.samplers.tune_grid)"]


def test_tuner_on_the_rectified_flow_spends_every_call_on_steps() -> None:
    """A flow ends without the denoising call (N Euler steps = N NFE), and the tuner and the
    tuned-grid check follow the process's default: 4 calls are 4 Euler steps there, 3 + the
    denoising call on VP."""
    mix = gaussian_mixture()
    for pname, steps in (("rectified_flow", 4), ("vp", 3)):
        proc = get_process(pname)
        res = tune_grid(mix.score_fn(proc), proc, 4, "euler", data_shape=(1,), n_samples=16,
                        max_evals=10, reference_steps=16)
        assert res.n_steps == steps and res.grid.shape == (steps + 1,), pname


def test_restarts_keep_the_best_of_several_starts():
    """``restarts=3`` runs Nelder-Mead from the three best starts; the first of them is the one
    ``restarts=1`` runs, so the result can only improve, within 3 x ``max_evals`` solves."""
    mix, proc = get_mixture("grid25"), get_process("vp")
    kw = {"n_samples": 128, "max_evals": 30, "reference_steps": 64}
    one = tune_grid(mix.score_fn(proc), proc, 5, "dpm2m", **kw)
    three = tune_grid(mix.score_fn(proc), proc, 5, "dpm2m", restarts=3, **kw)
    assert three.error <= one.error and three.evaluations <= 3 * 30
    assert three.evaluations > one.evaluations
    with pytest.raises(ValueError, match="restarts must be a positive integer"):
        tune_grid(mix.score_fn(proc), proc, 5, "dpm2m", restarts=0, **kw)
    with pytest.raises(ValueError, match="n_directions must be a positive integer"):
        tune_grid(mix.score_fn(proc), proc, 5, "dpm2m", n_directions=0, **kw)
    # the directions are the objective's: more of them give another error for the same grid
    many = tune_grid(mix.score_fn(proc), proc, 5, "dpm2m", n_directions=512,
                     **{**kw, "max_evals": 4})
    few = tune_grid(mix.score_fn(proc), proc, 5, "dpm2m", **{**kw, "max_evals": 4})
    assert many.initial_error != few.initial_error
