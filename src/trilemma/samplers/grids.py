"""Time grids for the samplers (REFERENCE.md §3): strictly decreasing float64 from T to eps.

Every grid has ``n_steps + 1`` times, starts exactly at ``t_max`` (default ``process.T``) and ends
exactly at ``t_min`` (default ``process.eps``, where the optional denoising step takes over).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..processes.base import LinearProcess, ScalarProcess
from .tuned_table import TUNED_FRACTIONS

_F64 = torch.float64


def _bounds(process: LinearProcess, n_steps: int, t_min: float | None,
            t_max: float | None) -> tuple[int, float, float]:
    if not isinstance(process, LinearProcess):
        raise TypeError(f"process must be a trilemma LinearProcess, got {type(process).__name__}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    lo = float(process.eps if t_min is None else t_min)
    hi = float(process.T if t_max is None else t_max)
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi <= process.T * (1 + 1e-12)):
        raise ValueError(
            f"need 0 < t_min < t_max <= T = {process.T}, got t_min={lo!r}, t_max={hi!r}"
        )
    return n_steps, lo, hi


def _finalise(t: Tensor, lo: float, hi: float, name: str) -> Tensor:
    """Pin the end points exactly and make sure the grid is strictly decreasing."""
    t = t.to(_F64).clone()
    t[0], t[-1] = hi, lo
    if not bool((t[1:] < t[:-1]).all()):
        raise ValueError(
            f"{name} grid is not strictly decreasing at this resolution ({t.numel() - 1} steps "
            f"over [{lo}, {hi}]); use fewer steps or another grid"
        )
    return t


def uniform_grid(process: LinearProcess, n_steps: int, t_min: float | None = None,
                 t_max: float | None = None) -> Tensor:
    """Equally spaced times from ``T`` to ``eps`` (score_sde's default)."""
    n, lo, hi = _bounds(process, n_steps, t_min, t_max)
    return _finalise(torch.linspace(hi, lo, n + 1, dtype=_F64), lo, hi, "uniform")


def quadratic_grid(process: LinearProcess, n_steps: int, t_min: float | None = None,
                   t_max: float | None = None) -> Tensor:
    """CLD's quadratic schedule ("QS"): forward times ``eps + (T - eps)(k/N)^2``, dense at t = 0."""
    n, lo, hi = _bounds(process, n_steps, t_min, t_max)
    k = torch.arange(n, -1, -1, dtype=_F64)
    return _finalise(lo + (hi - lo) * (k / n) ** 2, lo, hi, "quadratic")


def sqrt_grid(process: LinearProcess, n_steps: int, t_min: float | None = None,
              t_max: float | None = None) -> Tensor:
    """gDDIM's grid: uniform in ``sqrt(t)``, ``t_i = linspace(sqrt(T), sqrt(eps), N + 1)^2``."""
    n, lo, hi = _bounds(process, n_steps, t_min, t_max)
    return _finalise(torch.linspace(math.sqrt(hi), math.sqrt(lo), n + 1, dtype=_F64) ** 2,
                     lo, hi, "sqrt")


def _require_scalar(process: LinearProcess, grid: str) -> ScalarProcess:
    if not isinstance(process, ScalarProcess):
        raise TypeError(
            f"the {grid} grid needs a scalar process with a log-SNR (vp, vp_cosine, subvp, "
            f"geometric_vp, ve, rectified_flow), got {getattr(process, 'name', process)!r}"
        )
    return process


def log_snr_grid(process: LinearProcess, n_steps: int, t_min: float | None = None,
                 t_max: float | None = None) -> Tensor:
    """Uniform in ``lambda = log(alpha/sigma)`` (DPM-Solver's default), via ``t_from_log_snr``."""
    proc = _require_scalar(process, "log_snr")
    n, lo, hi = _bounds(process, n_steps, t_min, t_max)
    lam_hi, lam_lo = float(proc.log_snr(hi)), float(proc.log_snr(lo))
    lam = torch.linspace(lam_hi, lam_lo, n + 1, dtype=_F64)
    return _finalise(proc.t_from_log_snr(lam), lo, hi, "log_snr")


def edm_sigmas(sigma_max: float, sigma_min: float, n_steps: int, rho: float = 7.0) -> Tensor:
    """EDM's ``sigma_i = (smax^(1/rho) + i/N (smin^(1/rho) - smax^(1/rho)))^rho``, i = 0..N."""
    if not (math.isfinite(rho) and rho > 0):
        raise ValueError(f"rho must be a positive finite number, got {rho!r}")
    i = torch.arange(n_steps + 1, dtype=_F64) / n_steps
    a, b = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    return (a + i * (b - a)) ** rho


def edm_grid(process: LinearProcess, n_steps: int, rho: float = 7.0, t_min: float | None = None,
             t_max: float | None = None) -> Tensor:
    """EDM's rho-grid in the scaled noise level ``sigma_t / alpha_t``, mapped back to times."""
    proc = _require_scalar(process, "edm")
    n, lo, hi = _bounds(process, n_steps, t_min, t_max)
    s_hi = math.exp(-float(proc.log_snr(hi)))
    s_lo = math.exp(-float(proc.log_snr(lo)))
    sig = edm_sigmas(s_hi, s_lo, n, rho)
    return _finalise(proc.t_from_log_snr(-torch.log(sig)), lo, hi, "edm")


def check_fractions(fractions: Tensor | list[float] | tuple[float, ...], n_steps: int) -> Tensor:
    """The ``n_steps - 1`` interior log-SNR fractions as float64, increasing strictly in (0, 1)."""
    f = torch.as_tensor(fractions, dtype=_F64).flatten()
    if f.numel() != n_steps - 1:
        raise ValueError(f"a {n_steps}-step grid needs {n_steps - 1} interior fractions, "
                         f"got {f.numel()}")
    full = torch.cat([torch.zeros(1, dtype=_F64), f, torch.ones(1, dtype=_F64)])
    if not bool(torch.isfinite(f).all()) or not bool((full[1:] > full[:-1]).all()):
        raise ValueError(f"grid fractions must increase strictly inside (0, 1), got {f.tolist()}")
    return f


def grid_from_fractions(process: LinearProcess, fractions: Tensor | list[float],
                        t_min: float | None = None, t_max: float | None = None) -> Tensor:
    """Times ``T = t_0 > ... > t_N = eps`` whose log-SNR lies at the given interior fractions
    of the way from ``lambda(t_max)`` to ``lambda(t_min)`` (``N = len(fractions) + 1``)."""
    proc = _require_scalar(process, "tuned")
    f = torch.as_tensor(fractions, dtype=_F64).flatten()
    n, lo, hi = _bounds(process, int(f.numel()) + 1, t_min, t_max)
    f = check_fractions(f, n)
    lam_hi, lam_lo = float(proc.log_snr(hi)), float(proc.log_snr(lo))
    full = torch.cat([torch.zeros(1, dtype=_F64), f, torch.ones(1, dtype=_F64)])
    return _finalise(proc.t_from_log_snr(lam_hi + full * (lam_lo - lam_hi)), lo, hi, "tuned")


def tuned_keys(sampler: str | None = None, process: str | None = None
               ) -> list[tuple[str, str, int]]:
    """The stored (sampler, process, steps) tuned grids, optionally of one sampler/process."""
    return sorted(k for k in TUNED_FRACTIONS
                  if (sampler is None or k[0] == sampler) and (process is None or k[1] == process))


def tuned_grid(process: LinearProcess, n_steps: int, sampler: str | None = None,
               t_min: float | None = None, t_max: float | None = None) -> Tensor:
    """The stored tuned grid of ``sampler`` on ``process`` with ``n_steps`` solver steps
    (``tuned_table.py``); an error names the stored entries when there is none."""
    proc = _require_scalar(process, "tuned")
    _bounds(process, n_steps, t_min, t_max)
    if not isinstance(sampler, str):
        raise ValueError("the tuned grid is per sampler: pass sampler='dpm2m' or 'dpm3m' "
                         f"(sample() does this for you), got sampler={sampler!r}")
    key = (sampler, proc.name, n_steps)
    if key not in TUNED_FRACTIONS:
        have = ", ".join(f"{s}/{p}/{k}" for s, p, k in tuned_keys()) or "none"
        raise ValueError(
            f"no tuned grid for sampler {sampler!r} on process {proc.name!r} with {n_steps} "
            f"steps (stored sampler/process/steps: {have}); use another grid such as "
            "'log_snr', or tune one with trilemma.samplers.tune_grid and pass its grid"
        )
    return grid_from_fractions(proc, TUNED_FRACTIONS[key], t_min, t_max)


def transfer_grid(grid: Tensor, source: LinearProcess, target: LinearProcess) -> Tensor:
    """The times of ``target`` at the log-SNRs of ``source``'s ``grid``: every scalar process has
    the same probability-flow ODE in ``(x/alpha, sigma/alpha)``, so a grid tuned on one serves
    the others. The end points map to ``target``'s ``T`` and ``eps`` (a grid starting below
    ``T``, a teleport's landing, keeps its log-SNR); log-SNRs outside ``target``'s range are
    clipped to it."""
    src, dst = _require_scalar(source, "transfer"), _require_scalar(target, "transfer")
    grid = torch.as_tensor(grid, dtype=_F64).flatten()
    if grid.numel() < 2 or not bool((grid[1:] < grid[:-1]).all()):
        raise ValueError("grid must hold at least 2 strictly decreasing times")
    lam_top, lam_low = float(dst.log_snr(dst.T)), float(dst.log_snr(dst.eps))
    lam = src.log_snr(grid).clamp(lam_top, lam_low)
    out = dst.t_from_log_snr(lam).to(_F64)  # _finalise pins the last time to eps
    if float(grid[0]) >= src.T * (1 - 1e-12):
        out[0] = dst.T
    return _finalise(out, dst.eps, float(out[0]), "transferred")


GRIDS: dict[str, Callable[..., Tensor]] = {
    "uniform": uniform_grid,
    "quadratic": quadratic_grid,
    "sqrt": sqrt_grid,
    "log_snr": log_snr_grid,
    "edm": edm_grid,
    "tuned": tuned_grid,
}


def get_grid(name: str, process: LinearProcess, n_steps: int, **kwargs: float | str) -> Tensor:
    """Build a grid by name (uniform, quadratic, sqrt, log_snr, edm, tuned); extra options pass
    through (``tuned`` needs ``sampler=``)."""
    if name not in GRIDS:
        raise ValueError(f"unknown grid {name!r}; valid grids: {', '.join(GRIDS)}")
    return GRIDS[name](process, n_steps, **kwargs)
