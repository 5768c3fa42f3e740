"""Euler-Maruyama on the reverse-time SDE (REFERENCE.md §3), for every process including CLD."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..processes.base import LinearProcess, ScoreFn, randn_like
from ._common import call_score, finish, prepare, steps
from .base import SampleResult, check_finite


def em_step(
    process: LinearProcess,
    u: Tensor,
    score: Tensor,
    t: float,
    s: float,
    generator: torch.Generator | None,
    add_noise: bool = True,
) -> tuple[Tensor, Tensor]:
    """One reverse EM step from ``t`` to ``s < t``: ``u - [F u - G G^T s] dt + g sqrt(dt) z``.

    Returns ``(new state, its mean)``; the noise only enters the noise-driven block.
    """
    dt = t - s
    mean = u - process.reverse_drift(u, t, score) * dt
    if not add_noise:
        return mean, mean
    g = math.sqrt(float(process.diffusion_sq(t)) * dt)
    z = randn_like(process.noise_part(u), generator)
    return mean + process.on_noise_block(g * z), mean


def sample_euler_maruyama(
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
    """Sample by Euler-Maruyama on the reverse SDE down ``grid`` (1 NFE per step).

    With ``denoise=False`` the last step returns its mean without noise (as score_sde does);
    with ``denoise=True`` it is a full step followed by Tweedie's ``x0_hat`` (+1 NFE).
    """
    score, grid = prepare(score_fn, process, u_T, grid)
    u = u_T
    traj = [u] if trajectory else None
    n = grid.numel() - 1
    for i in steps(n, progress, "EM"):
        t, s = float(grid[i]), float(grid[i + 1])
        sc = call_score(score, u, t, i)
        u, _ = em_step(process, u, sc, t, s, generator, add_noise=denoise or i < n - 1)
        check_finite(u, i, s)
        if traj is not None:
            traj.append(u)
    return finish(score, process, u, grid, denoise=denoise, traj=traj, info={"sampler": "em"})
