"""Probability-flow ODE samplers: adaptive dopri5 (torchdiffeq) and fixed-step Euler/Heun/RK4.

The ODE is ``du/dt = F u - 1/2 G G^T grad log p_t(u)`` (REFERENCE.md §1), integrated from ``T``
down to ``eps``; it works for every process (CLD included, through its velocity score).
"""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..processes.base import LinearProcess, ScoreFn
from ._common import call_score, check_choice, check_positive, finish, prepare, steps
from .base import CountingScore, SampleResult, check_finite

#: score calls per step of the fixed-step methods
FIXED_STAGES = {"euler": 1, "heun": 2, "rk4": 4}
METHODS = ("dopri5",) + tuple(FIXED_STAGES)


class ODEBudgetExceeded(RuntimeError):
    """The adaptive solver needed more score calls than ``max_nfe`` allowed."""


def pf_drift(score: CountingScore, process: LinearProcess, u: Tensor, t: float,
             step: int, what: str = "sampler step") -> Tensor:
    """The probability-flow ODE's drift at ``(u, t)``: one counted score call (also the
    inpainting sampler's step, :mod:`trilemma.samplers.inpaint`)."""
    sc = call_score(score, u, t, step, what)
    return process.reverse_drift(u, t, sc, probability_flow=True)


def fixed_step(method: str, f, u: Tensor, t: float, s: float) -> Tensor:  # noqa: ANN001
    """One explicit step of ``du/dt = f(u, t)`` from ``t`` to ``s`` (``h = s - t < 0``)."""
    h = s - t
    k1 = f(u, t)
    if method == "euler":
        return u + h * k1
    if method == "heun":
        k2 = f(u + h * k1, s)
        return u + (0.5 * h) * (k1 + k2)
    m = t + 0.5 * h
    k2 = f(u + (0.5 * h) * k1, m)
    k3 = f(u + (0.5 * h) * k2, m)
    k4 = f(u + h * k3, s)
    return u + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def sample_ode(
    score_fn: ScoreFn,
    process: LinearProcess,
    u_T: Tensor,
    grid: Tensor,
    *,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_nfe: int | None = None,
    generator: torch.Generator | None = None,
    denoise: bool = True,
    trajectory: bool = False,
    progress: bool = False,
) -> SampleResult:
    """Integrate the probability-flow ODE from ``u_T`` down ``grid``.

    ``method='dopri5'`` is adaptive (``rtol``/``atol``; the grid only sets where the trajectory is
    reported, so ``[T, eps]`` suffices) and raises :class:`ODEBudgetExceeded` past ``max_nfe``
    calls; ``'euler'``, ``'heun'``, ``'rk4'`` take fixed steps on the grid (1, 2, 4 NFE per step).
    Deterministic: ``generator`` is accepted for a uniform interface and unused.
    """
    del generator
    check_choice("method", method, METHODS)
    score, grid = prepare(score_fn, process, u_T, grid)
    if method == "dopri5":
        return _dopri5(score, process, u_T, grid, rtol=rtol, atol=atol, max_nfe=max_nfe,
                       denoise=denoise, trajectory=trajectory, progress=progress)
    u = u_T
    traj = [u] if trajectory else None
    n = grid.numel() - 1
    for i in steps(n, progress, f"PF-ODE {method}"):
        t, s = float(grid[i]), float(grid[i + 1])

        def f(x: Tensor, tau: float, _i: int = i) -> Tensor:
            return pf_drift(score, process, x, tau, _i)

        u = fixed_step(method, f, u, t, s)
        check_finite(u, i, s)
        if traj is not None:
            traj.append(u)
    return finish(score, process, u, grid, denoise=denoise, traj=traj,
                  info={"sampler": "ode", "method": method})


def _dopri5(score: CountingScore, process: LinearProcess, u_T: Tensor, grid: Tensor, *,
            rtol: float, atol: float, max_nfe: int | None, denoise: bool, trajectory: bool,
            progress: bool) -> SampleResult:
    from torchdiffeq import odeint

    rtol = check_positive("rtol", rtol)
    atol = check_positive("atol", atol)
    if max_nfe is not None and (isinstance(max_nfe, bool) or not isinstance(max_nfe, int)
                                or max_nfe < 1):
        raise ValueError(f"max_nfe must be a positive integer or None, got {max_nfe!r}")
    budget = None if max_nfe is None else max_nfe - int(denoise)
    bar = tqdm(desc="PF-ODE dopri5 (NFE)", disable=not progress, leave=False)

    def func(t: Tensor, u: Tensor) -> Tensor:
        if budget is not None and score.nfe >= budget:
            raise ODEBudgetExceeded(
                f"dopri5 needed more than max_nfe = {max_nfe} score calls (rtol={rtol}, "
                f"atol={atol}) and stopped at t = {float(t):.6g}; raise the NFE budget or "
                "loosen the tolerances"
            )
        bar.update(1)
        return pf_drift(score, process, u, float(t), score.nfe, "dopri5 evaluation")

    try:
        # step_t makes the solver land on eps instead of stepping past it (the score is
        # undefined at t <= 0) and interpolating back
        times = grid.to(u_T.device)
        sol = odeint(func, u_T, times, rtol=rtol, atol=atol, method="dopri5",
                     options={"step_t": times[-1:]})
    finally:
        bar.close()
    u = sol[-1]
    check_finite(u, grid.numel() - 1, float(grid[-1]))
    traj = list(sol.unbind(0)) if trajectory else None
    info = {"sampler": "ode", "method": "dopri5", "rtol": rtol, "atol": atol,
            "ode_nfe": score.nfe}
    return finish(score, process, u, grid, denoise=denoise, traj=traj, info=info)


def sample_euler(score_fn: ScoreFn, process: LinearProcess, u_T: Tensor, grid: Tensor,
                 **kwargs: object) -> SampleResult:
    """Fixed-step Euler on the probability-flow ODE (1 NFE per step)."""
    return sample_ode(score_fn, process, u_T, grid, method="euler", **kwargs)


def sample_heun(score_fn: ScoreFn, process: LinearProcess, u_T: Tensor, grid: Tensor,
                **kwargs: object) -> SampleResult:
    """Fixed-step Heun (2nd order) on the probability-flow ODE (2 NFE per step)."""
    return sample_ode(score_fn, process, u_T, grid, method="heun", **kwargs)


def sample_rk4(score_fn: ScoreFn, process: LinearProcess, u_T: Tensor, grid: Tensor,
               **kwargs: object) -> SampleResult:
    """Fixed-step classical RK4 on the probability-flow ODE (4 NFE per step)."""
    return sample_ode(score_fn, process, u_T, grid, method="rk4", **kwargs)
