"""Sampling the diffusion time ``t`` for a training loss: uniform, or importance-sampled.

Importance sampling draws ``t`` from ``r(t) proportional to w(t)`` (tabulated inverse CDF, piecewise
constant density) and returns the weight ``w(t)/r(t)``, so ``E_r[(w/r) loss] = int w loss dt``
exactly for the piecewise density actually used: the estimator is unbiased whatever the grid.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


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
