"""EDM's Heun sampler (Karras et al. 2022, Alg. 1; stochastic churn of Alg. 2) for scalar processes.

With ``x = u / alpha_t`` and ``sigma = sigma_t / alpha_t`` every scalar process becomes EDM's
``x = x0 + sigma n`` with probability-flow ODE ``dx/dsigma = (x - D(x; sigma)) / sigma``, ``D`` the
Tweedie denoiser. Heun steps in ``sigma`` down the grid; the final Euler step of EDM (from the
smallest ``sigma`` to 0) is exactly Tweedie's ``x0_hat``, i.e. ``denoise=True``. So a grid of ``N``
times (``N - 1`` Heun steps) plus that step costs ``2N - 1`` NFE, as in EDM.

Churn (Alg. 2): before the step from ``sigma_i`` (when ``s_tmin <= sigma_i <= s_tmax``) the noise
level is raised to ``sigma_hat = sigma_i (1 + gamma)``, ``gamma = min(s_churn / N, sqrt(2) - 1)``
with ``N`` the number of grid times, by adding ``N(0, (sigma_hat^2 - sigma_i^2) s_noise^2)`` noise
to ``x``; the step then starts from ``sigma_hat`` at the time ``t_hat`` with that noise level.
Churn adds no score calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..processes.base import LinearProcess, ScalarProcess, ScoreFn, randn_like
from ._common import call_score, check_positive, finish, prepare, require_scalar, steps
from .base import SampleResult, check_finite

_GAMMA_MAX = math.sqrt(2.0) - 1.0


def _check_churn(s_churn: float, s_tmin: float, s_tmax: float, s_noise: float) -> None:
    """Validate the churn options (``s_tmax`` may be ``inf``)."""
    check_positive("s_churn", s_churn, allow_zero=True)
    check_positive("s_tmin", s_tmin, allow_zero=True)
    check_positive("s_noise", s_noise)
    if isinstance(s_tmax, bool) or not isinstance(s_tmax, (int, float)) or math.isnan(s_tmax):
        raise ValueError(f"s_tmax must be a number (inf allowed; YAML: .inf), got {s_tmax!r}")
    if s_tmin > s_tmax:
        raise ValueError(f"need s_tmin <= s_tmax, got s_tmin={s_tmin!r} > s_tmax={s_tmax!r}")


def _churn_time(proc: ScalarProcess, t: float, sig: float, gamma: float,
                sig_top: float) -> tuple[float, float] | None:
    """``(t_hat, sigma_hat)`` for ``sigma_hat = sigma (1 + gamma)`` capped at ``sigma(T)``, or
    None when that is no increase (no churn: the caller keeps ``t`` and draws no noise)."""
    target = sig * (1.0 + gamma)
    if target >= sig_top:
        t_hat = proc.T
    else:
        t_hat = float(proc.t_from_log_snr(torch.tensor([-math.log(target)], dtype=torch.float64)))
        t_hat = min(max(t_hat, t), proc.T)
    if t_hat <= t:
        return None
    sig_hat = math.exp(-float(proc.log_snr(t_hat)))  # the noise level the score is evaluated at
    return (t_hat, sig_hat) if sig_hat > sig else None


def _slope(score: ScoreFn, x: Tensor, t: float, a: float, s: float, i: int) -> Tensor:
    """``(x - D(x; s)) / s`` at time ``t`` (``alpha_t = a``, ``s = sigma_t / a``); step ``i``."""
    sc = call_score(score, a * x, t, i)
    # x - D = (u - alpha x0_hat) / alpha = -sigma_t^2 s / alpha;  / sigma~ = -sigma_t s
    return (-s * a) * sc


@dataclass
class _Churn:
    """EDM's churn before a step: the raised level and the fresh noise (see module doc)."""

    proc: ScalarProcess
    grid: Tensor
    sig: Tensor
    gamma: float
    s_tmin: float
    s_tmax: float
    s_noise: float
    generator: torch.Generator | None

    def __call__(self, x: Tensor, i: int) -> tuple[Tensor, float, float, float] | None:
        """Churned ``(x_hat, t_hat, alpha_hat, sigma_hat)`` before step ``i``, or None."""
        s_i = float(self.sig[i])
        if self.gamma <= 0.0 or not self.s_tmin <= s_i <= self.s_tmax:
            return None
        sig_top = math.exp(-float(self.proc.log_snr(self.proc.T)))
        hat = _churn_time(self.proc, float(self.grid[i]), s_i, self.gamma, sig_top)
        if hat is None:
            return None
        t_hat, s_hat = hat
        std = math.sqrt(max(s_hat * s_hat - s_i * s_i, 0.0)) * self.s_noise
        x_hat = x + std * randn_like(x, self.generator)
        a_hat = float(self.proc.alpha(torch.tensor([t_hat], dtype=torch.float64)))
        return x_hat, t_hat, a_hat, s_hat


def sample_edm_heun(
    score_fn: ScoreFn,
    process: LinearProcess,
    u_T: Tensor,
    grid: Tensor,
    *,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
    generator: torch.Generator | None = None,
    denoise: bool = True,
    trajectory: bool = False,
    progress: bool = False,
) -> SampleResult:
    """EDM Heun (2nd order) in ``sigma_t/alpha_t``: 2 NFE per step; optional churn (EDM Alg. 2).

    Scalar processes only. ``s_churn = 0`` (default) is the deterministic sampler (``generator``
    unused). ``s_churn > 0`` adds fresh noise from ``generator`` before each step whose noise
    level ``sigma = sigma_t/alpha_t`` lies in ``[s_tmin, s_tmax]`` (units of ``sigma``, not of
    ``t``); ``gamma = min(s_churn / len(grid), sqrt(2) - 1)``, noise std scaled by ``s_noise``.
    With ``denoise=True`` the final denoising call (EDM's Euler step to 0) gets churn too. The
    raised level is capped at the process's ``sigma(T)`` (the score is not defined beyond ``T``),
    so a step that starts at ``T`` gets none.
    """
    _check_churn(s_churn, s_tmin, s_tmax, s_noise)
    proc = require_scalar(process, "EDM Heun")
    score, grid = prepare(score_fn, process, u_T, grid)
    alpha = proc.alpha(grid)
    sig = torch.exp(-proc.log_snr(grid))  # sigma_t / alpha_t, float64
    gamma = min(s_churn / grid.numel(), _GAMMA_MAX)
    churn = _Churn(proc, grid, sig, gamma, s_tmin, s_tmax, s_noise, generator)

    x = u_T / float(alpha[0])
    traj = [u_T] if trajectory else None
    n = grid.numel() - 1
    for i in steps(n, progress, "EDM Heun"):
        hat = churn(x, i)
        if hat is None:
            x_hat, t_hat, a_hat, s_hat = x, float(grid[i]), float(alpha[i]), float(sig[i])
            h = float(sig[i + 1] - sig[i])
        else:
            x_hat, t_hat, a_hat, s_hat = hat
            h = float(sig[i + 1]) - s_hat
        d1 = _slope(score, x_hat, t_hat, a_hat, s_hat, i)
        x_euler = x_hat + h * d1
        d2 = _slope(score, x_euler, float(grid[i + 1]), float(alpha[i + 1]), float(sig[i + 1]), i)
        x = x_hat + (0.5 * h) * (d1 + d2)
        check_finite(x, i, float(grid[i + 1]))
        if traj is not None:
            traj.append(float(alpha[i + 1]) * x)
    u = float(alpha[-1]) * x
    info = {"sampler": "edm", "s_churn": s_churn, "gamma": gamma}
    hat = churn(x, n) if denoise else None
    if hat is None:
        return finish(score, process, u, grid, denoise=denoise, traj=traj, info=info)
    # EDM's last step from the churned level: Tweedie's x0_hat at t_hat; ``state`` stays the
    # sampler's state at grid[-1] (before the churn), as for every sampler
    x_hat, t_hat, a_hat, _ = hat
    end = grid.clone()
    end[-1] = t_hat
    res = finish(score, process, a_hat * x_hat, end, denoise=True, traj=traj,
                 info={**info, "t_denoise": t_hat})
    res.state = u
    res.times = grid if traj is not None else None
    res.info["t_end"] = float(grid[-1])
    return res
