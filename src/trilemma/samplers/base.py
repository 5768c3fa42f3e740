"""What every sampler shares: the result record, NFE counting, and input checks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..processes.base import LinearProcess, ScoreFn


@dataclass
class SampleResult:
    """Output of a sampler.

    ``samples`` is the data block ``x`` (for CLD the velocity is dropped); ``state`` the whole
    final state; ``nfe`` the number of score-model calls actually made (each call on a batch
    counts once); ``trajectory`` the states after every step when asked for.
    """

    samples: Tensor
    state: Tensor
    nfe: int
    trajectory: list[Tensor] | None = None
    times: Tensor | None = None
    info: dict = field(default_factory=dict)


class CountingScore:
    """Wrap a score function: count its calls (NFE) and stop on non-finite values.

    The count lives on this object, not in a module global, so concurrent samplers never
    share it.
    """

    def __init__(self, score_fn: ScoreFn) -> None:
        self.score_fn = score_fn
        self.nfe = 0

    def __call__(self, u: Tensor, t: float | Tensor) -> Tensor:
        if not isinstance(t, Tensor) or t.dim() == 0:
            t = torch.full((u.shape[0],), float(t), device=u.device, dtype=u.dtype)
        else:
            t = t.to(device=u.device, dtype=u.dtype)
        self.nfe += 1
        out = self.score_fn(u, t)
        if not all_finite(out):
            raise FloatingPointError(
                f"score model returned non-finite values at call {self.nfe} (t = {float(t[0]):.6g})"
            )
        return out


def all_finite(x: Tensor) -> bool:
    """Whether every entry is finite; one reduction (NaN and inf survive ``amax`` of ``abs``),
    cheaper than ``isfinite(x).all()`` on a sampler's hot path."""
    return x.numel() == 0 or bool(torch.isfinite(x.abs().amax()))


def check_finite(u: Tensor, step: int, t: float) -> None:
    """Raise with the step and time where a non-finite state appeared."""
    if not all_finite(u):
        raise FloatingPointError(
            f"non-finite sample state after step {step} (t = {t:.6g}); try more steps, a "
            "smaller step near t = 0, or check the score model"
        )


def check_grid(grid: Tensor, process: LinearProcess, min_steps: int = 1) -> Tensor:
    """Validate a time grid: 1-D, strictly decreasing, within ``(0, T]``; returns float64."""
    if not isinstance(grid, Tensor):
        grid = torch.as_tensor(grid, dtype=torch.float64)
    grid = grid.to(torch.float64)
    if grid.dim() != 1 or grid.numel() < min_steps + 1:
        raise ValueError(
            f"time grid must be a 1-D tensor of at least {min_steps + 1} times, got shape "
            f"{tuple(grid.shape)}"
        )
    if not bool((grid[1:] < grid[:-1]).all()):
        raise ValueError("time grid must be strictly decreasing (from T down to eps)")
    if float(grid[-1]) <= 0 or float(grid[0]) > process.T * (1 + 1e-9):
        raise ValueError(
            f"time grid must lie in (0, T = {process.T}], got [{float(grid[-1])}, {float(grid[0])}]"
        )
    return grid


def check_state(u: Tensor, process: LinearProcess) -> None:
    """The initial state must be batched and, for CLD, carry (x, v) on the channel axis."""
    if u.dim() < 2:
        raise ValueError(
            f"initial state must have a batch axis and a data axis, got shape {tuple(u.shape)}"
        )
    if u.shape[1] % process.k:
        raise ValueError(
            f"initial state has {u.shape[1]} channels; a {process.name} state stacks "
            f"{process.k} blocks on dim 1, so it needs a multiple of {process.k}"
        )
    if not math.isfinite(float(u.abs().max())):
        raise ValueError("initial state contains non-finite values")


def denoise_step(score: CountingScore, process: LinearProcess, u: Tensor, t: float) -> Tensor:
    """The final denoising step: Tweedie's ``E[x0 | u_t]`` from one score call (1 NFE)."""
    tt = torch.full((u.shape[0],), t, device=u.device, dtype=u.dtype)
    return process.score_to_x0(u, tt, score(u, tt))
