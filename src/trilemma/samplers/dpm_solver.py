"""DPM-Solver++ multistep (Lu et al. 2022), data prediction, in ``lambda = log(alpha/sigma)``.

The exact solution of the probability-flow ODE from ``t`` to ``s`` (``h = lambda_s - lambda_t``) is
``u_s = (sigma_s/sigma_t) u_t + sigma_s int_{lambda_t}^{lambda_s} e^lambda x0_hat(lambda) dlambda``.
Order 1 freezes ``x0_hat`` (DDIM); 2M is Lu et al.'s ``D = (1 + 1/2r) x0_i - (1/2r) x0_{i-1}``
(REFERENCE.md §3); 3M integrates the quadratic through the last three ``x0_hat`` exactly:
with ``phi1 = e^{-h} - 1``, ``phi2 = phi1/h + 1``, ``phi3 = phi2/h - 1/2``,

    u_s = (sigma_s/sigma_t) u_t - alpha_s phi1 x0 + alpha_s h phi2 a - 2 alpha_s h^2 phi3 b

for ``x0_hat(lambda_t + tau) = x0 + a tau + b tau^2``. The first steps use lower orders (no
history yet) and, for fewer than 15 steps, so do the final ones (Lu et al.'s
``lower_order_final``, which keeps the large last steps stable).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..processes.base import LinearProcess, ScoreFn
from ._common import call_score, finish, prepare, require_scalar, steps
from .base import SampleResult, check_finite

#: below this many steps the last ``order - 1`` steps drop to lower order
LOWER_ORDER_FINAL_STEPS = 15


def step_orders(n_steps: int, order: int, lower_order_final: bool = True) -> list[int]:
    """The order used at each of ``n_steps`` steps (warm-up, and optionally the final steps)."""
    out = []
    for i in range(n_steps):
        q = min(order, i + 1)
        if lower_order_final and n_steps < LOWER_ORDER_FINAL_STEPS:
            q = min(q, n_steps - i)
        out.append(q)
    return out


def sample_dpm_solver(
    score_fn: ScoreFn,
    process: LinearProcess,
    u_T: Tensor,
    grid: Tensor,
    *,
    order: int = 2,
    lower_order_final: bool = True,
    generator: torch.Generator | None = None,
    denoise: bool = True,
    trajectory: bool = False,
    progress: bool = False,
) -> SampleResult:
    """DPM-Solver++(``order``M), ``order`` in 1, 2, 3; 1 NFE per step, deterministic.

    Scalar processes only (VP family, sub-VP, VE). ``generator`` is accepted for a uniform
    interface and unused.
    """
    del generator
    proc = require_scalar(process, "DPM-Solver++")
    if isinstance(order, bool) or order not in (1, 2, 3):
        raise ValueError(f"DPM-Solver++ order must be 1, 2 or 3, got {order!r}")
    score, grid = prepare(score_fn, process, u_T, grid)
    alpha = proc.alpha(grid)
    sigma = proc.sigma(grid)
    lam = proc.log_snr(grid)
    orders = step_orders(grid.numel() - 1, order, lower_order_final)
    u = u_T
    traj = [u] if trajectory else None
    hist: list[Tensor] = []  # x0_hat at grid[i], grid[i-1], grid[i-2]
    n = grid.numel() - 1
    for i in steps(n, progress, f"DPM-Solver++({order}M)"):
        t, s = float(grid[i]), float(grid[i + 1])
        sc = call_score(score, u, t, i)
        x0 = proc.score_to_x0(u, t, sc)
        hist.insert(0, x0)
        del hist[3:]
        h = float(lam[i + 1] - lam[i])
        a_s = float(alpha[i + 1])
        phi1 = math.expm1(-h)
        u_lin = (float(sigma[i + 1]) / float(sigma[i])) * u
        q = orders[i]
        if q == 1:
            u = u_lin - (a_s * phi1) * x0
        elif q == 2:
            r = float(lam[i] - lam[i - 1]) / h
            d = (1.0 + 0.5 / r) * x0 - (0.5 / r) * hist[1]
            u = u_lin - (a_s * phi1) * d
        else:
            h0 = float(lam[i] - lam[i - 1])
            h1 = float(lam[i - 1] - lam[i - 2])
            d01 = (x0 - hist[1]) / h0
            d12 = (hist[1] - hist[2]) / h1
            b = (d01 - d12) / (h0 + h1)
            a = d01 + h0 * b
            phi2 = phi1 / h + 1.0
            phi3 = phi2 / h - 0.5
            u = u_lin - (a_s * phi1) * x0 + (a_s * h * phi2) * a - (2.0 * a_s * h * h * phi3) * b
        check_finite(u, i, s)
        if traj is not None:
            traj.append(u)
    info = {"sampler": f"dpm_solver++({order}M)", "order": order, "orders": orders}
    return finish(score, process, u, grid, denoise=denoise, traj=traj, info=info)
