"""Straightness of a flow (Liu, Gong and Liu 2022; REFERENCE §10.2).

Along the flow's own trajectories ``Z_t`` (``dZ/dt = v(Z, t)``, started at noise ``Z_1``),

    S = int_0^1 E ||(Z_1 - Z_0) - v(Z_t, t)||^2 dt,

zero exactly when every trajectory is a straight line run at constant speed (then one Euler
step is exact). Here the trajectories run on ``[t_min, t_max]`` (a rectified-flow process
integrates ``[eps, T]``), so the displacement is taken per unit time, ``(Z_max - Z_min) / L``
with ``L = t_max - t_min``, and the integral is averaged over the interval (``= S`` for
``[0, 1]``). The squared norm sums over the data coordinates; ``S_per_dim`` divides by them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

VelocityFn = Callable[[Tensor, Tensor], Tensor]
"""``velocity(x, t) -> dx/dt`` with ``t`` of shape ``(batch,)``."""


@torch.no_grad()
def straightness(velocity: VelocityFn, z1: Tensor, *, t_max: float = 1.0, t_min: float = 0.0,
                 n_steps: int = 100) -> dict:
    """``S`` (module docstring) of ``velocity`` from the start points ``z1`` at ``t_max``.

    The trajectories are integrated by RK4 on a uniform grid of ``n_steps`` steps (its first
    stage is the velocity at each grid point); the time integral is the trapezoid rule on the
    grid. Returns ``S``, ``S_per_dim``, ``S_se`` (standard error over the samples), ``nfe``
    (velocity calls: ``4 n_steps + 1``) and ``z0``, the trajectories' end points.
    """
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    if not t_min < t_max:
        raise ValueError(f"need t_min < t_max, got t_min={t_min!r}, t_max={t_max!r}")
    grid = torch.linspace(t_max, t_min, n_steps + 1, dtype=torch.float64)
    n = z1.shape[0]
    nfe = 0

    def v(x: Tensor, t: float) -> Tensor:
        nonlocal nfe
        nfe += 1
        return velocity(x, torch.full((n,), t, dtype=x.dtype, device=x.device))

    z, vels = z1, []
    for i in range(n_steps):
        t, h = float(grid[i]), float(grid[i + 1] - grid[i])
        k1 = v(z, t)
        vels.append(k1)
        k2 = v(z + 0.5 * h * k1, t + 0.5 * h)
        k3 = v(z + 0.5 * h * k2, t + 0.5 * h)
        k4 = v(z + h * k3, t + h)
        z = z + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
    vels.append(v(z, float(grid[-1])))
    disp = (z1 - z) / (t_max - t_min)
    dev = torch.stack([(disp - vt).flatten(1).pow(2).sum(1) for vt in vels]).double()
    w = torch.full((n_steps + 1,), 1.0 / n_steps, dtype=torch.float64)
    w[0] = w[-1] = 0.5 / n_steps
    per_sample = (w[:, None].to(dev.device) * dev).sum(0)  # average over t, per trajectory
    d = z1[0].numel()
    s = float(per_sample.mean())
    se = float(per_sample.std() / n**0.5) if n > 1 else float("nan")
    return {"S": s, "S_per_dim": s / d, "S_se": se, "nfe": nfe, "z0": z}
