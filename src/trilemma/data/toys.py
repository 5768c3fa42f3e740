"""Low-dimensional toy data sets: the oracle's Gaussian mixtures and classic 2-D shapes.

Every sampler takes ``(n, generator)`` and returns float32 ``(n, 2)`` (the oracle mixtures
``mixture64d`` and ``two_mode_1d`` return their own dimension). Shapes are scaled to lie
roughly in ``[-2, 2]^2`` with a spread of order one, which suits a unit-variance prior:

- ``swiss_roll``: the 2-D spiral ``theta (cos theta, sin theta)``, ``theta in [1.5 pi, 4.5 pi]``,
  scaled by 1/7, plus Gaussian noise of std ``noise``;
- ``two_moons``: two interleaved half circles (scikit-learn's layout), centred, scaled by 1.5;
- ``checkerboard``: uniform on the 8 dark squares of a 4 x 4 board covering ``[-2, 2]^2``;
- ``rings``: four concentric circles of radii 0.5, 1, 1.5, 2 (uniform over arc length).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .. import oracle


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return n


def _rand(n: int, generator: torch.Generator | None, *shape: int) -> Tensor:
    return torch.rand(n, *shape, generator=generator, dtype=torch.float64,
                      device=generator.device if generator is not None else "cpu")


def _randn(n: int, generator: torch.Generator | None, *shape: int) -> Tensor:
    return torch.randn(n, *shape, generator=generator, dtype=torch.float64,
                       device=generator.device if generator is not None else "cpu")


def swiss_roll(n: int, generator: torch.Generator | None = None, noise: float = 0.05) -> Tensor:
    """2-D swiss roll: ``theta (cos theta, sin theta) / 7`` with ``theta ~ U[1.5 pi, 4.5 pi]``."""
    _check_n(n)
    theta = 1.5 * math.pi * (1 + 2 * _rand(n, generator))
    x = torch.stack([theta * torch.cos(theta), theta * torch.sin(theta)], dim=1) / 7.0
    return (x + noise * _randn(n, generator, 2)).float().cpu()


def two_moons(n: int, generator: torch.Generator | None = None, noise: float = 0.05) -> Tensor:
    """Two interleaved half circles (half the points each), centred and scaled by 1.5."""
    _check_n(n)
    theta = math.pi * _rand(n, generator)
    upper = _rand(n, generator) < 0.5
    x = torch.where(upper, torch.cos(theta), 1 - torch.cos(theta))
    y = torch.where(upper, torch.sin(theta), 0.5 - torch.sin(theta))
    pts = (torch.stack([x - 0.5, y - 0.25], dim=1)) * 1.5
    return (pts + noise * _randn(n, generator, 2)).float().cpu()


def checkerboard(n: int, generator: torch.Generator | None = None) -> Tensor:
    """Uniform on the 8 dark cells of a 4 x 4 checkerboard on ``[-2, 2]^2``."""
    _check_n(n)
    cell = torch.floor(8 * _rand(n, generator)).clamp(max=7)  # which dark cell, 0..7
    row = torch.floor(cell / 2)
    col = 2 * (cell % 2) + (row % 2)  # dark cells: (row + col) even
    offset = _rand(n, generator, 2)
    return (torch.stack([col, row], dim=1) + offset - 2.0).float().cpu()


def rings(n: int, generator: torch.Generator | None = None, noise: float = 0.04) -> Tensor:
    """Four concentric circles of radii 0.5, 1, 1.5, 2, uniform over total arc length."""
    _check_n(n)
    radii = torch.tensor([0.5, 1.0, 1.5, 2.0], dtype=torch.float64)
    gen_dev = generator.device if generator is not None else "cpu"
    idx = torch.multinomial(radii.to(gen_dev), n, replacement=True, generator=generator)
    r = radii.to(gen_dev)[idx]
    theta = 2 * math.pi * _rand(n, generator)
    pts = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=1)
    return (pts + noise * _randn(n, generator, 2)).float().cpu()


SHAPES: dict[str, Callable[[int, torch.Generator | None], Tensor]] = {
    "swiss_roll": swiss_roll,
    "two_moons": two_moons,
    "checkerboard": checkerboard,
    "rings": rings,
}


def toy_names() -> list[str]:
    """All valid toy names: the oracle mixtures first, then the shapes."""
    return list(oracle.MIXTURES) + list(SHAPES)


def toy_dataset(
    name: str, n: int, generator: torch.Generator | None = None, return_labels: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """``n`` float32 samples of a toy by name (oracle mixture or shape).

    With ``return_labels=True`` also returns int64 labels: the mixture component for oracle
    mixtures (usable for class conditioning), zeros for the shapes.
    """
    _check_n(n)
    if name in oracle.MIXTURES:
        x, labels = oracle.get_mixture(name).sample(n, generator, dtype=torch.float32)
        x = x.contiguous()
    elif name in SHAPES:
        x = SHAPES[name](n, generator)
        labels = torch.zeros(n, dtype=torch.long)
    else:
        raise ValueError(f"unknown toy {name!r}; valid toys: {', '.join(toy_names())}")
    return (x, labels.long()) if return_labels else x
