"""Tensor helpers of the processes: float64 times, per-sample broadcasting, the closed-form
2 x 2 Cholesky factor and device-aware seeded noise (re-exported by :mod:`.base`)."""

from __future__ import annotations

import torch
from torch import Tensor

_F64 = torch.float64


def as_time(t: float | Tensor, device: torch.device | str | None = None) -> Tensor:
    """Turn a float or tensor time into a float64 tensor (coefficient math is float64)."""
    if isinstance(t, Tensor):
        return t.to(dtype=_F64, device=device if device is not None else t.device)
    return torch.tensor(float(t), dtype=_F64, device=device)


def per_sample(coef: Tensor, like: Tensor) -> Tensor:
    """Per-sample coefficients ``(B,)`` (or one scalar) shaped to broadcast against ``like``
    ``(B, ...)``, in its dtype and on its device: the one reshape every module shares."""
    return coef.to(device=like.device, dtype=like.dtype).reshape((-1,) + (1,) * (like.dim() - 1))


def chol_factor(cov: Tensor) -> Tensor:
    """Lower Cholesky factor of ``k x k`` covariances in float64 (closed form for k <= 2).

    Tolerates singular (PSD) 1x1 and 2x2 matrices: a zero variance gives a zero row.
    """
    k = cov.shape[-1]
    if k == 1:
        return torch.sqrt(cov.clamp_min(0.0))
    if k == 2:
        l11 = torch.sqrt(cov[..., 0, 0].clamp_min(0.0))
        safe = torch.where(l11 > 0, l11, torch.ones_like(l11))
        l21 = torch.where(l11 > 0, cov[..., 1, 0] / safe, torch.zeros_like(l11))
        l22 = torch.sqrt((cov[..., 1, 1] - l21**2).clamp_min(0.0))
        zero = torch.zeros_like(l11)
        return torch.stack([torch.stack([l11, zero], -1), torch.stack([l21, l22], -1)], dim=-2)
    return torch.linalg.cholesky(cov)


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise like ``x``, from ``generator`` when given (device-aware)."""
    if generator is None:
        return torch.randn_like(x)
    return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(
        x.device
    )
