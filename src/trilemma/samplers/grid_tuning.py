"""Tune a sampler's time grid for a score model: fewer calls for the same probability-flow map.

The objective is the global error of the coarse solve along sampled trajectories: from the
same prior draws ``u_T``, the distance between the sampler's samples on the candidate grid and
a fine reference solve of the probability-flow ODE (DPM-Solver++(3M) on ``reference_steps``
log-SNR-uniform steps, converged on the oracle benchmark): the sliced 2-Wasserstein distance
(default; it measures the distribution error the grid adds) or the RMS per coordinate (which
bounds the W2 error but also charges draws that switch modes). The interior points are
parametrised as log-SNR fractions (0 = T, 1 = eps; ``grids.grid_from_fractions``) through a
softmax of increments above a floor (:data:`MIN_STEP_SHARE`), so every candidate is a valid
grid, and minimised by Nelder-Mead from the uniform log-SNR grid ("align your steps"-style,
Sabour et al. 2024, with the discrepancy to a fine solve in place of their KL bound). With the
data's Gaussian moments (``teleport=``) one more fraction places the landing time of the
analytic teleport (:mod:`trilemma.samplers.teleport`), and the calls start there.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import optimize
from torch import Tensor

from ..processes.base import LinearProcess, ScoreFn
from .dpm_solver import sample_dpm_solver
from .grids import check_fractions, grid_from_fractions, log_snr_grid
from .registry import SAMPLERS, check_sampler
from .teleport import GaussianMoments, teleport_start

_F64 = torch.float64
#: objective value given to grids on which the sampler fails (non-finite states)
_FAILED = 1e6
#: shortest log-SNR step allowed, as a share of the uniform step: without a floor the tuner
#: finds near-zero steps that spend a call on a finite-difference derivative (fragile in float32
#: and with a trained model's noise)
MIN_STEP_SHARE = 0.2


@dataclass
class TunedGrid:
    """A tuned grid and what tuning achieved (``objective`` 'rms' or 'sw2' against the fine
    solve of the tuning draws, for the tuned and for the uniform log-SNR grid)."""

    sampler: str
    process: str
    nfe: int
    n_steps: int
    fractions: tuple[float, ...]
    grid: Tensor
    objective: str
    error: float
    initial_error: float
    evaluations: int
    #: whether the grid starts at a teleport's landing time (sample it with ``teleport=``)
    teleport: bool = False


def reference_solve(score_fn: ScoreFn, process: LinearProcess, u_T: Tensor,
                    reference_steps: int = 256) -> Tensor:
    """The fine probability-flow solve the tuner aims at: DPM-Solver++(3M), log-SNR grid, no
    denoising call (samples at ``eps``, like the dpm samplers)."""
    grid = log_snr_grid(process, reference_steps)
    return sample_dpm_solver(score_fn, process, u_T, grid, order=3, denoise=False).samples


def sliced_w2(x: Tensor, y: Tensor, directions: Tensor) -> float:
    """Sliced 2-Wasserstein distance between equal-size sample sets along ``directions``
    (rows, unit norm): exact 1-D W2 per direction from the sorted projections."""
    px = torch.sort(x.flatten(1).to(_F64) @ directions.T, dim=0).values
    py = torch.sort(y.flatten(1).to(_F64) @ directions.T, dim=0).values
    return math.sqrt(float(((px - py) ** 2).mean()))


def grid_error(score_fn: ScoreFn, process: LinearProcess, sampler: str, u_T: Tensor,
               grid: Tensor, reference: Tensor, denoise: bool | None = None,
               directions: Tensor | None = None, teleport: GaussianMoments | None = None,
               **opts: object) -> float:
    """How far ``sampler``'s samples from ``u_T`` on ``grid`` land from ``reference`` (the fine
    solve of the same draws): the RMS per coordinate, or with ``directions`` the sliced W2,
    which ignores which draw went where (a draw switching modes near a boundary costs RMS but
    not the distribution). With ``teleport`` the draws first jump from ``T`` to ``grid[0]``.
    ``_FAILED`` where the sampler produces non-finite values."""
    spec = SAMPLERS[sampler]
    den = spec.denoises(process.name) if denoise is None else bool(denoise)
    if teleport is not None:
        u_T = teleport_start(process, u_T, grid, teleport)
    try:
        out = spec.fn(score_fn, process, u_T, grid, denoise=den, **{**spec.defaults, **opts})
    except FloatingPointError:
        return _FAILED
    if directions is not None:
        err = sliced_w2(out.samples, reference, directions)
    else:
        err = math.sqrt(float(((out.samples.to(_F64) - reference.to(_F64)) ** 2).mean()))
    return err if math.isfinite(err) and err < _FAILED else _FAILED


def projection_directions(dim: int, n: int = 64, seed: int = 0) -> Tensor:
    """``n`` fixed random unit directions in ``R^dim`` (float64) for :func:`sliced_w2`."""
    d = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=_F64)
    return d / d.norm(dim=1, keepdim=True)


def _fractions(z: np.ndarray) -> np.ndarray:
    """Interior fractions from free parameters: increments ``floor + (1 - N floor) softmax([0,
    z])``, cumulated; no step is shorter than ``MIN_STEP_SHARE`` of the uniform one."""
    n = len(z) + 1
    floor = MIN_STEP_SHARE / n
    v = np.concatenate([[0.0], z])
    w = np.exp(v - v.max())
    return np.cumsum(floor + (1.0 - n * floor) * w / w.sum())[:-1]


def _params(fractions: Tensor) -> np.ndarray:
    """Inverse of :func:`_fractions` (increments below the floor are lifted just above it)."""
    n = fractions.numel() + 1
    floor = MIN_STEP_SHARE / n
    inc = np.diff(np.concatenate([[0.0], fractions.numpy(), [1.0]]))
    soft = np.maximum(inc - floor, 1e-3 / n)
    logs = np.log(soft / soft.sum())
    return logs[1:] - logs[0]


def _check_tuner_args(sampler: str, process: LinearProcess, nfe: int, n_samples: int,
                      reference_steps: int, max_evals: int, options: dict | None) -> None:
    if options is not None and (not isinstance(options, dict) or "grid" in options):
        raise ValueError(f"options must be a dict of sampler options (not grid), got {options!r}")
    check_sampler(sampler, process.name if isinstance(process, LinearProcess) else None, nfe,
                  options)
    spec = SAMPLERS[sampler]
    if spec.adaptive or spec.processes == "cld" or not hasattr(process, "log_snr"):
        raise ValueError(f"tune_grid needs a fixed-step sampler on a scalar process (vp, subvp, "
                         f"ve, ...), got sampler {sampler!r} on {process.name!r}")
    for name, val, low in (("n_samples", n_samples, 2), ("reference_steps", reference_steps, 8),
                           ("max_evals", max_evals, 1)):
        if isinstance(val, bool) or not isinstance(val, int) or val < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {val!r}")


def _check_search_args(objective: str, restarts: int, n_directions: int,
                       teleport: GaussianMoments | None, data_shape: tuple[int, ...]) -> None:
    if objective not in ("sw2", "rms"):
        raise ValueError(f"objective must be 'sw2' or 'rms', got {objective!r}")
    for name, val in (("restarts", restarts), ("n_directions", n_directions)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f"{name} must be a positive integer, got {val!r}")
    if teleport is not None and not isinstance(teleport, GaussianMoments):
        raise TypeError(f"teleport must be GaussianMoments, got {type(teleport).__name__}")
    if teleport is not None and teleport.dim != math.prod(data_shape):
        raise ValueError(f"teleport: the moments have {teleport.dim} coordinates, data_shape "
                         f"{tuple(data_shape)} has {math.prod(data_shape)}")


def tune_grid(
    score_fn: ScoreFn,
    process: LinearProcess,
    nfe: int,
    sampler: str = "dpm3m",
    *,
    data_shape: tuple[int, ...] = (2,),
    n_samples: int = 1024,
    seed: int = 0,
    reference_steps: int = 256,
    max_evals: int = 600,
    init: list[Tensor | list[float]] | None = None,
    denoise: bool | None = None,
    options: dict | None = None,
    objective: str = "sw2",
    teleport: GaussianMoments | None = None,
    restarts: int = 1,
    n_directions: int = 64,
    device: torch.device | str | None = None,
    dtype: torch.dtype = _F64,
) -> TunedGrid:
    """Tune the time grid of ``sampler`` for ``score_fn`` (a trained model or an exact score)
    on ``process`` at a budget of ``nfe`` score calls, the denoising call included.

    Draws ``n_samples`` prior states of data shape ``data_shape`` from ``seed``, solves them
    once finely (:func:`reference_solve`) and minimises :func:`grid_error` (``objective``
    'sw2', 64 fixed directions, or 'rms') over the interior grid points with at most
    ``max_evals`` coarse solves (each costs ``nfe`` calls on the batch). Nelder-Mead starts
    from the best of the uniform log-SNR grid (its error is ``initial_error``), its power
    warps ``f^p`` (p = 0.7, 1.4) and any fraction sets in ``init``, and restarts while it
    improves. ``options`` go to the sampler (e.g.
    ``{"lower_order_final": False}``). Returns a :class:`TunedGrid`; pass its ``grid``
    to :func:`trilemma.samplers.sample` as ``grid=`` (or store its ``fractions`` in
    ``tuned_table.py`` to make them the ``'tuned'`` grid).

    ``teleport`` (the data's :class:`GaussianMoments`) tunes the landing time of the analytic
    teleport too: the first of the ``n_steps`` fractions is the landing point, the starts add
    landings at 0.2, 0.3 and 0.4 of the log-SNR range, and the returned grid begins there;
    sample it with ``sample(..., grid=result.grid, teleport=moments)``. ``restarts`` > 1 runs
    Nelder-Mead from that many of the best starts (``max_evals`` solves each) and keeps the
    best: the objective has local minima, and the grid's few parameters make restarts cheap.
    ``n_directions``: projections of the sliced W2 (64; in high dimension a few hundred keep a
    strong search from fitting the directions, docs/BENCHMARKS.md "Five calls").
    """
    _check_tuner_args(sampler, process, nfe, n_samples, reference_steps, max_evals, options)
    _check_search_args(objective, restarts, n_directions, teleport, data_shape)
    spec = SAMPLERS[sampler]
    den = spec.denoises(process.name) if denoise is None else bool(denoise)
    n_steps = spec.steps_for(nfe, den, **(options or {}))
    if n_steps < max(spec.min_steps, 2):
        raise ValueError(f"nfe = {nfe} gives {n_steps} step(s) with sampler {sampler!r}: "
                         "a grid with interior points needs at least 2")
    gen = torch.Generator().manual_seed(seed)
    u_T = process.prior_sample((n_samples, *data_shape), generator=gen, device=device,
                               dtype=dtype)
    reference = reference_solve(score_fn, process, u_T, reference_steps)
    dirs = (projection_directions(reference[0].numel(), n=n_directions, seed=seed)
            if objective == "sw2" else None)
    segments = n_steps + int(teleport is not None)  # the teleport's stretch is one more
    starts = _starts(segments, init) + (_teleport_starts(n_steps) if teleport else [])

    def to_grid(fractions: np.ndarray) -> Tensor:
        full = grid_from_fractions(process, torch.from_numpy(fractions))
        return full[1:] if teleport is not None else full

    def loss(z: np.ndarray) -> float:
        return math.log(grid_error(score_fn, process, sampler, u_T, to_grid(_fractions(z)),
                                   reference, den, dirs, teleport, **(options or {})))

    best, best_f, initial, evals = _minimise(loss, starts, max_evals, restarts)
    fractions = _fractions(best)
    return TunedGrid(sampler, process.name, nfe, n_steps, tuple(float(f) for f in fractions),
                     to_grid(fractions), objective, math.exp(best_f), initial, evals,
                     teleport is not None)


def _minimise(loss: Callable[[np.ndarray], float], starts: list[Tensor], max_evals: int,
              restarts: int = 1) -> tuple[np.ndarray, float, float, int]:
    """Nelder-Mead from each of the ``restarts`` best ``starts`` (``max_evals`` solves each),
    restarted from its best point while it improves; returns the best parameters, their loss,
    the first start's error and the evaluations."""
    values = [loss(_params(f)) for f in starts]
    initial, evals = math.exp(values[0]), len(values)
    order = sorted(range(len(starts)), key=values.__getitem__)[:restarts]
    best, best_f = _params(starts[order[0]]), values[order[0]]
    for i in order:
        x, fx, spent = _params(starts[i]), values[i], 0
        budget = max_evals - (len(values) if i == order[0] else 0)  # the starts count once
        while spent < budget:
            res = optimize.minimize(loss, x, method="Nelder-Mead",
                                    options={"maxfev": budget - spent, "xatol": 1e-3,
                                             "fatol": 1e-4, "initial_simplex": _simplex(x)})
            spent += int(res.nfev)
            gain = fx - float(res.fun)
            if gain > 0:
                x, fx = np.asarray(res.x), float(res.fun)
            if gain < 1e-3:
                break
        evals += spent
        if fx < best_f:
            best, best_f = x, fx
    return best, best_f, initial, evals


def _starts(n_steps: int, init: list[Tensor | list[float]] | None) -> list[Tensor]:
    """Starting fractions: the uniform log-SNR grid first, its power warps, then ``init``."""
    uniform = torch.linspace(0.0, 1.0, n_steps + 1, dtype=_F64)[1:-1]
    extra = [check_fractions(f, n_steps) for f in (init or [])]
    return [uniform, uniform ** 0.7, uniform ** 1.4, *extra]


def _teleport_starts(n_steps: int) -> list[Tensor]:
    """Landing at 0.2, 0.3 and 0.4 of the log-SNR range, uniform steps below it."""
    return [torch.linspace(f0, 1.0, n_steps + 1, dtype=_F64)[:-1] for f0 in (0.2, 0.3, 0.4)]


def _simplex(z: np.ndarray, scale: float = 0.5) -> np.ndarray:
    """Nelder-Mead's starting simplex around ``z``: one step of ``scale`` along each axis."""
    return np.vstack([z] + [z + scale * np.eye(len(z))[i] for i in range(len(z))])
