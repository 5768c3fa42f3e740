"""EDM's deterministic Heun sampler (Karras et al. 2022, Alg. 1) for scalar processes.

With ``x = u / alpha_t`` and ``sigma = sigma_t / alpha_t`` every scalar process becomes EDM's
``x = x0 + sigma n`` with probability-flow ODE ``dx/dsigma = (x - D(x; sigma)) / sigma``, ``D`` the
Tweedie denoiser. Heun steps in ``sigma`` down the grid; the final Euler step of EDM (from the
smallest ``sigma`` to 0) is exactly Tweedie's ``x0_hat``, i.e. ``denoise=True``. So a grid of ``N``
times (``N - 1`` Heun steps) plus that step costs ``2N - 1`` NFE, as in EDM.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..processes.base import LinearProcess, ScoreFn
from ._common import call_score, finish, prepare, require_scalar, steps
from .base import SampleResult, check_finite


def sample_edm_heun(
    score_fn: ScoreFn,
    process: LinearProcess,
    u_T: Tensor,
    grid: Tensor,
    *,
    generator: torch.Generator | None = None,
    denoise: bool = True,
    trajectory: bool = False,
    progress: bool = False,
) -> SampleResult:
    """EDM Heun (2nd order, deterministic) in ``sigma_t/alpha_t``: 2 NFE per step.

    Scalar processes only. ``generator`` is accepted for a uniform interface and unused.
    """
    del generator
    proc = require_scalar(process, "EDM Heun")
    score, grid = prepare(score_fn, process, u_T, grid)
    alpha = proc.alpha(grid)
    sig = torch.exp(-proc.log_snr(grid))  # sigma_t / alpha_t, float64

    def slope(x: Tensor, i: int, j: int) -> Tensor:
        """``(x - D(x; sigma_j)) / sigma_j`` at grid time ``j`` (counted during step ``i``)."""
        a = float(alpha[j])
        u = a * x
        sc = call_score(score, u, float(grid[j]), i)
        # x - D = (u - alpha x0_hat) / alpha = -sigma_t^2 s / alpha;  / sigma~ = -sigma_t s
        return (-float(sig[j]) * a) * sc

    x = u_T / float(alpha[0])
    traj = [u_T] if trajectory else None
    n = grid.numel() - 1
    for i in steps(n, progress, "EDM Heun"):
        h = float(sig[i + 1] - sig[i])
        d1 = slope(x, i, i)
        x_euler = x + h * d1
        d2 = slope(x_euler, i, i + 1)
        x = x + (0.5 * h) * (d1 + d2)
        check_finite(x, i, float(grid[i + 1]))
        if traj is not None:
            traj.append(float(alpha[i + 1]) * x)
    u = float(alpha[-1]) * x
    return finish(score, process, u, grid, denoise=denoise, traj=traj, info={"sampler": "edm"})
