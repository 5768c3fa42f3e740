"""Time grids: end points, monotonicity and each grid's defining formula."""

from __future__ import annotations

import math

import pytest
import torch

from trilemma.processes import get_process
from trilemma.samplers import check_grid
from trilemma.samplers.grids import (
    GRIDS,
    edm_grid,
    edm_sigmas,
    get_grid,
    log_snr_grid,
    quadratic_grid,
    sqrt_grid,
    uniform_grid,
)

SCALAR = ["vp", "vp_cosine", "subvp", "geometric_vp", "ve"]


def _equally_spaced(x: torch.Tensor, rtol: float = 1e-9) -> bool:
    d = x[1:] - x[:-1]
    return bool(torch.allclose(d, d.mean().expand_as(d), rtol=rtol, atol=0.0))


@pytest.mark.parametrize("name", [g for g in GRIDS if g != "tuned"])  # tuned: test_tuned_grid
@pytest.mark.parametrize("pname", SCALAR + ["cld"])
def test_grid_shape_ends_and_order(name: str, pname: str) -> None:
    proc = get_process(pname)
    if pname == "cld" and name in ("log_snr", "edm"):
        with pytest.raises(TypeError, match="scalar process"):
            get_grid(name, proc, 10)
        return
    for n in (1, 7, 200):
        g = get_grid(name, proc, n)
        assert g.dtype == torch.float64 and g.shape == (n + 1,)
        assert float(g[0]) == proc.T and float(g[-1]) == proc.eps
        assert bool((g[1:] < g[:-1]).all())
        check_grid(g, proc)


def test_uniform_and_t_min() -> None:
    proc = get_process("vp")
    g = uniform_grid(proc, 10)
    assert _equally_spaced(g)
    g = uniform_grid(proc, 4, t_min=0.2)
    assert torch.allclose(g, torch.tensor([1.0, 0.8, 0.6, 0.4, 0.2], dtype=torch.float64))


def test_quadratic_grid_formula() -> None:
    proc = get_process("cld")
    n = 8
    g = quadratic_grid(proc, n)
    k = torch.arange(n + 1, dtype=torch.float64)
    fwd = proc.eps + (proc.T - proc.eps) * (k / n) ** 2
    assert torch.allclose(g, fwd.flip(0), rtol=0, atol=1e-15)
    # dense near the data: the last step is the smallest
    d = g[:-1] - g[1:]
    assert float(d[-1]) < float(d[0]) / 10


def test_sqrt_grid_formula() -> None:
    proc = get_process("cld")
    g = sqrt_grid(proc, 12)
    assert _equally_spaced(g.sqrt())
    assert math.isclose(float(g[1]), (1 - (1 - math.sqrt(1e-3)) / 12) ** 2, rel_tol=1e-12)


@pytest.mark.parametrize("pname", SCALAR)
def test_log_snr_grid_is_uniform_in_lambda(pname: str) -> None:
    proc = get_process(pname)
    g = log_snr_grid(proc, 25)
    assert _equally_spaced(proc.log_snr(g), rtol=1e-7)


@pytest.mark.parametrize("pname", SCALAR)
@pytest.mark.parametrize("rho", [1.0, 7.0])
def test_edm_grid_follows_rho_schedule(pname: str, rho: float) -> None:
    proc = get_process(pname)
    g = edm_grid(proc, 18, rho=rho)
    sig = torch.exp(-proc.log_snr(g))  # sigma_t / alpha_t
    assert _equally_spaced(sig ** (1 / rho), rtol=1e-7)
    # EDM's own numbers for sigma in [0.002, 80], rho = 7, N = 18 steps (19 levels)
    s = edm_sigmas(80.0, 0.002, 18, 7.0)
    assert math.isclose(float(s[0]), 80.0) and math.isclose(float(s[-1]), 0.002)
    assert math.isclose(float(s[1]), (80 ** (1 / 7) + (0.002 ** (1 / 7) - 80 ** (1 / 7)) / 18) ** 7)


def test_grid_errors() -> None:
    proc = get_process("vp")
    with pytest.raises(ValueError, match="unknown grid 'nope'; valid grids: uniform"):
        get_grid("nope", proc, 10)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="n_steps must be a positive integer"):
            uniform_grid(proc, bad)
    with pytest.raises(ValueError, match="t_min"):
        uniform_grid(proc, 10, t_min=0.0)
    with pytest.raises(ValueError, match="t_min"):
        uniform_grid(proc, 10, t_min=2.0)
    with pytest.raises(ValueError, match="rho"):
        edm_grid(proc, 10, rho=0.0)
    with pytest.raises(TypeError, match="LinearProcess"):
        uniform_grid("vp", 10)  # type: ignore[arg-type]
