"""UniPC (Zhao et al. 2023), data prediction with ``B(h) = e^{-h} - 1`` ("bh2"), in log-SNR.

Each step calls the model once at the current state. That call first *corrects* the state just
reached (UniC: the predictor's step redone with the new ``x0_hat`` as one more interpolation
node, which raises the order by one at no extra call), then *predicts* the next state (UniP,
DPM-Solver++-like multistep). With ``h = lambda_t - lambda_s``, ``phi1 = e^{-h} - 1``, both
updates are ``u_t = (sigma_t/sigma_s) u_s - alpha_t phi1 m0 - alpha_t B(h) sum_k rho_k D_k``
with divided differences ``D_k = (m_k - m0)/r_k`` of earlier ``x0_hat`` at log-SNR offsets
``r_k h``, and ``rho`` from the order conditions ``R rho = b`` (``R_ik = r_k^(i-1)``,
``b_i = i! phi_{i+1}(h) / B(h)`` with the UniPC ``phi`` recursion). The corrector after the
last step is skipped (it would cost a call), so the NFE is the number of steps; as in
DPM-Solver++ the first steps use lower orders and, below 15 steps, so do the final ones.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..processes.base import LinearProcess, ScoreFn
from ._common import call_score, finish, prepare, require_scalar, steps
from .base import SampleResult, check_finite
from .dpm_solver import step_orders


def _rhos(h: float, rks: list[float], predictor: bool) -> list[float]:
    """UniPC's weights for the divided differences (order = ``len(rks)``, last ``r`` = 1)."""
    hh = -h
    h_phi_k = math.expm1(hh) / hh - 1.0
    b_h = math.expm1(hh)
    fact, rows, b = 1.0, [], []
    for i in range(1, len(rks) + 1):
        rows.append([r ** (i - 1) for r in rks])
        b.append(h_phi_k * fact / b_h)
        fact *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / fact
    if predictor:
        if len(rks) == 2:
            return [0.5]
        rows, b = [r[:-1] for r in rows[:-1]], b[:-1]
    elif len(rks) == 1:
        return [0.5]
    sol = torch.linalg.solve(torch.tensor(rows, dtype=torch.float64),
                             torch.tensor(b, dtype=torch.float64))
    return [float(v) for v in sol]


def _update(u: Tensor, hist: list[Tensor], lams: list[float], lam_t: float, ratio: float,
            a_t: float, order: int, model_t: Tensor | None) -> Tensor:
    """One UniP (``model_t`` None) or UniC step from ``lams[0]`` to ``lam_t``; ``hist[k]`` is
    ``x0_hat`` at ``lams[k]`` (newest first), ``ratio = sigma_t / sigma_s``."""
    h = lam_t - lams[0]
    m0 = hist[0]
    n_prev = order - 1
    rks = [(lams[k] - lams[0]) / h for k in range(1, n_prev + 1)] + [1.0]
    d1s = [(hist[k] - m0) / rks[k - 1] for k in range(1, n_prev + 1)]
    u_t = ratio * u - (a_t * math.expm1(-h)) * m0
    b_h = math.expm1(-h)
    if model_t is None:
        if not d1s:
            return u_t
        rhos = _rhos(h, rks, predictor=True)
        return u_t - (a_t * b_h) * sum(r * d for r, d in zip(rhos, d1s, strict=True))
    rhos = _rhos(h, rks, predictor=False)
    res = sum((r * d for r, d in zip(rhos[:-1], d1s, strict=True)), torch.zeros_like(u))
    return u_t - (a_t * b_h) * (res + rhos[-1] * (model_t - m0))


def sample_unipc(
    score_fn: ScoreFn,
    process: LinearProcess,
    u_T: Tensor,
    grid: Tensor,
    *,
    order: int = 2,
    lower_order_final: bool = True,
    generator: torch.Generator | None = None,
    denoise: bool = False,
    trajectory: bool = False,
    progress: bool = False,
) -> SampleResult:
    """UniPC-``order`` (predictor order, 1-3; the corrector adds one); 1 NFE per step.

    Scalar processes only. ``generator`` is accepted for a uniform interface and unused.
    """
    del generator
    proc = require_scalar(process, "UniPC")
    if isinstance(order, bool) or order not in (1, 2, 3):
        raise ValueError(f"UniPC order must be 1, 2 or 3, got {order!r}")
    score, grid = prepare(score_fn, process, u_T, grid)
    alpha, sigma, lam = proc.alpha(grid), proc.sigma(grid), proc.log_snr(grid)
    n = grid.numel() - 1
    orders = step_orders(n, order, lower_order_final)
    u, hist, lams = u_T, [], []
    prev_u: Tensor | None = None
    traj = [u] if trajectory else None
    for i in steps(n, progress, f"UniPC-{order}"):
        t = float(grid[i])
        x0 = proc.score_to_x0(u, t, call_score(score, u, t, i))
        if prev_u is not None:  # UniC: correct the state at grid[i] with this call's x0_hat
            u = _update(prev_u, hist, lams, float(lam[i]), float(sigma[i] / sigma[i - 1]),
                        float(alpha[i]), orders[i - 1], x0)
            if traj is not None:
                traj[-1] = u
        hist.insert(0, x0)
        lams.insert(0, float(lam[i]))
        del hist[3:], lams[3:]
        prev_u = u
        u = _update(u, hist, lams, float(lam[i + 1]), float(sigma[i + 1] / sigma[i]),
                    float(alpha[i + 1]), orders[i], None)
        check_finite(u, i, float(grid[i + 1]))
        if traj is not None:
            traj.append(u)
    info = {"sampler": f"unipc-{order}", "order": order, "orders": orders}
    return finish(score, process, u, grid, denoise=denoise, traj=traj, info=info)
