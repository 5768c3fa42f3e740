"""Sampling the diffusion time ``t`` for a training loss: uniform, importance-sampled, or EDM's.

Importance sampling draws ``t`` from ``r(t) proportional to w(t)`` (tabulated inverse CDF, piecewise
constant density) and returns the weight ``w(t)/r(t)``, so ``E_r[(w/r) loss] = int w loss dt``
exactly for the piecewise density actually used: the estimator is unbiased whatever the grid.

EDM (Karras et al. 2022): ``ln sigma ~ N(P_mean, P_std^2)`` in the VE-equivalent noise level
``sigma = sigma_t / alpha_t`` of a scalar process (mapped to ``t`` by the inverse of that
function, ``t_from_log_snr(-ln sigma)``), with loss weight
``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..processes.base import ScalarProcess, as_time


def uniform_times(
    n: int,
    t_min: float,
    t_max: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """``t ~ U[t_min, t_max]`` as float32 of shape ``(n,)``."""
    gen_dev = generator.device if generator is not None else "cpu"
    r = torch.rand(n, generator=generator, device=gen_dev, dtype=torch.float64)
    return (t_min + (t_max - t_min) * r).to(device=device, dtype=torch.float32)


class ImportanceTimes:
    """Draw ``t`` with density proportional to ``weight_fn(t)`` on ``[t_min, t_max]``."""

    def __init__(
        self,
        weight_fn: Callable[[Tensor], Tensor],
        t_min: float,
        t_max: float,
        n_grid: int = 4096,
        log_spaced: bool = True,
    ) -> None:
        if not 0 < t_min < t_max:
            raise ValueError(f"need 0 < t_min < t_max, got t_min={t_min}, t_max={t_max}")
        if log_spaced:
            grid = torch.logspace(
                torch.log10(torch.tensor(t_min)),
                torch.log10(torch.tensor(t_max)),
                n_grid,
                dtype=torch.float64,
            )
        else:
            grid = torch.linspace(t_min, t_max, n_grid, dtype=torch.float64)
        grid[0], grid[-1] = t_min, t_max
        w = weight_fn(grid).to(torch.float64)
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise ValueError("importance weight must be finite and non-negative on [t_min, t_max]")
        mass = 0.5 * (w[1:] + w[:-1]) * (grid[1:] - grid[:-1])  # mass of each cell
        self.grid = grid
        self.total = float(mass.sum())
        self.cdf = (
            torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(mass, 0)]) / self.total
        )
        self.density = (mass / self.total) / (grid[1:] - grid[:-1])  # piecewise-constant r(t)
        self.weight_fn = weight_fn

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Return ``(t, w(t)/r(t))``, both float32 of shape ``(n,)``."""
        gen_dev = generator.device if generator is not None else "cpu"
        q = torch.rand(n, generator=generator, device=gen_dev, dtype=torch.float64).cpu()
        idx = torch.searchsorted(self.cdf, q, right=True).clamp(1, len(self.grid) - 1) - 1
        frac = (q - self.cdf[idx]) / (self.cdf[idx + 1] - self.cdf[idx]).clamp_min(1e-300)
        t = self.grid[idx] + frac * (self.grid[idx + 1] - self.grid[idx])
        ratio = self.weight_fn(t) / self.density[idx]
        return t.to(device=device, dtype=torch.float32), ratio.to(
            device=device, dtype=torch.float32
        )


def _finite(name: str, value: object, positive: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (positive and value <= 0):
        raise ValueError(f"{name} must be a {'positive ' if positive else ''}finite number, "
                         f"got {value!r}")
    return float(value)


def edm_sigma_times(
    n: int,
    process: ScalarProcess,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    t_min: float | None = None,
    t_max: float | None = None,
) -> tuple[Tensor, Tensor]:
    """EDM's ``ln sigma ~ N(p_mean, p_std^2)`` as times: ``(t, sigma)``, float32 of shape ``(n,)``.

    ``sigma = sigma_t / alpha_t`` is inverted to ``t`` and clamped to ``[t_min, t_max]`` (default
    the training range ``[process.train_eps, process.T]``), so the tails beyond ``sigma(t_min)`` and
    ``sigma(t_max)`` pile up at the ends; the returned ``sigma`` is that of the returned ``t``.
    """
    if not isinstance(process, ScalarProcess):
        raise TypeError("EDM's noise-level sampling needs a scalar process (vp, vp_cosine, subvp, "
                        f"geometric_vp, ve), got {getattr(process, 'name', process)!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    p_mean = _finite("p_mean", p_mean)
    p_std = _finite("p_std", p_std, positive=True)
    lo = float(process.train_eps if t_min is None else t_min)
    hi = float(process.T if t_max is None else t_max)
    if not 0 < lo < hi <= process.T:
        raise ValueError(f"need 0 < t_min < t_max <= T = {process.T}, got t_min={lo}, t_max={hi}")
    gen_dev = generator.device if generator is not None else "cpu"
    z = torch.randn(n, generator=generator, device=gen_dev, dtype=torch.float64).cpu()
    t = process.t_from_log_snr(-(p_mean + p_std * z)).clamp(lo, hi).to(torch.float32)
    sigma = torch.exp(-process.log_snr(as_time(t)))  # the noise level of the float32 time
    return t.to(device), sigma.to(device=device, dtype=torch.float32)


def edm_loss_weight(sigma: Tensor | float, sigma_data: float = 0.5) -> Tensor:
    """EDM's loss weight ``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2``."""
    sigma_data = _finite("sigma_data", sigma_data, positive=True)
    sigma = torch.as_tensor(sigma)
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
