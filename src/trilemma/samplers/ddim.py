"""DDIM (Song, Meng, Ermon 2021) in the general ``alpha/sigma`` form (REFERENCE.md §3).

Step ``t -> s < t`` with ``x0_hat`` (Tweedie) and ``eps_hat = -sigma_t s_theta``, both read off
the score by the process (``score_to_x0``, ``score_to_prediction``)::

    u_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z,
    c = eta (sigma_s / sigma_t) sqrt(sigma_t^2 - (alpha_t / alpha_s)^2 sigma_s^2).

The last root is the std of ``u_t`` given ``u_s``, so ``c`` is DDPM's posterior std at ``eta = 1``
for any scalar kernel (VP: ``sqrt(1 - alpha_t^2/alpha_s^2)``; VE: ``sqrt(sigma_t^2 - sigma_s^2)``),
and ``eta = 0`` is the exponential-integrator Euler step of the probability-flow ODE.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..processes.base import LinearProcess, ScalarProcess, ScoreFn, randn_like
from ._common import (
    call_score,
    check_positive,
    finish,
    prepare,
    require_scalar,
    steps,
)
from .base import SampleResult, check_finite


def ddim_step(proc: ScalarProcess, u: Tensor, score: Tensor, t: float, s: float, eta: float,
              generator: torch.Generator | None, add_noise: bool = True) -> Tensor:
    """One DDIM step from ``t`` to ``s < t`` given the score at ``(u, t)`` (the module's formula;
    ``add_noise=False`` drops the ``c z`` term, as the last step without denoising does)."""
    ts = torch.tensor([t, s], dtype=torch.float64)
    a_t, a_s = (float(a) for a in proc.alpha(ts))
    sg_t, sg_s = (float(v) for v in proc.sigma(ts))
    x0_hat = proc.score_to_x0(u, t, score)
    eps_hat = proc.score_to_prediction("eps", score, u, t)
    c = 0.0
    if eta > 0:
        cond_var = max(sg_t**2 - (a_t / a_s) ** 2 * sg_s**2, 0.0)
        c = min(eta * sg_s / sg_t * math.sqrt(cond_var), sg_s)
    out = a_s * x0_hat + math.sqrt(max(sg_s**2 - c**2, 0.0)) * eps_hat
    if add_noise and c > 0:
        out = out + c * randn_like(u, generator)
    return out


def sample_ddim(
    score_fn: ScoreFn,
    process: LinearProcess,
    u_T: Tensor,
    grid: Tensor,
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    denoise: bool = True,
    trajectory: bool = False,
    progress: bool = False,
) -> SampleResult:
    """DDIM with stochasticity ``eta`` (0 deterministic, 1 ancestral DDPM); 1 NFE per step.

    Scalar processes only (VP, cosine VP, sub-VP, geometric VP, VE); for CLD use gDDIM. With
    ``denoise=False`` the last step adds no noise.
    """
    proc = require_scalar(process, "DDIM")
    eta = check_positive("eta", eta, allow_zero=True)
    score, grid = prepare(score_fn, process, u_T, grid)
    u = u_T
    traj = [u] if trajectory else None
    n = grid.numel() - 1
    for i in steps(n, progress, "DDIM"):
        t, s = float(grid[i]), float(grid[i + 1])
        sc = call_score(score, u, t, i)
        u = ddim_step(proc, u, sc, t, s, eta, generator, add_noise=denoise or i < n - 1)
        check_finite(u, i, s)
        if traj is not None:
            traj.append(u)
    return finish(score, process, u, grid, denoise=denoise, traj=traj,
                  info={"sampler": "ddim", "eta": eta})
