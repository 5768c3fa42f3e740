"""Time embeddings: map a batch of float times ``t`` of shape ``(B,)`` to ``(B, dim)`` features.

Two kinds, both computed in float32 whatever the network's dtype (``sin(1000 t)`` in bfloat16
would lose the time entirely):

- :class:`SinusoidalEmbedding` (DDPM/Transformer positional): geometric frequencies
  ``scale * t * exp(-log(max_period) * i / half)``. ``scale = 1000`` maps ``t in [0, 1]`` onto
  DDPM's integer step range, so nearby times stay distinguishable.
- :class:`GaussianFourierEmbedding` (score SDE / NCSN++): random fixed frequencies
  ``W ~ N(0, scale^2)`` drawn once from ``seed`` and stored as a buffer (saved in checkpoints),
  features ``[sin(2 pi t W), cos(2 pi t W)]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

TIME_EMBEDDINGS = ("fourier", "sinusoidal")


def _check_time(t: Tensor) -> Tensor:
    """Validate a time batch and return it as float32 of shape ``(B,)``."""
    if not isinstance(t, Tensor):
        raise TypeError(f"t must be a torch.Tensor of shape (batch,), got {type(t).__name__}")
    if t.dim() == 0:
        t = t[None]
    if t.dim() != 1:
        raise ValueError(f"t must have shape (batch,), got {tuple(t.shape)}")
    return t.to(torch.float32)


def _pad_odd(emb: Tensor, dim: int) -> Tensor:
    """Append a zero column when ``dim`` is odd."""
    if emb.shape[1] < dim:
        emb = torch.cat([emb, emb.new_zeros(emb.shape[0], dim - emb.shape[1])], dim=1)
    return emb


class SinusoidalEmbedding(nn.Module):
    """Transformer-style sinusoidal features of ``scale * t`` (no parameters)."""

    def __init__(self, dim: int, scale: float = 1000.0, max_period: float = 10000.0) -> None:
        super().__init__()
        if int(dim) != dim or dim < 2:
            raise ValueError(f"dim must be an integer >= 2, got {dim}")
        if max_period <= 1:
            raise ValueError(f"max_period must be > 1, got {max_period}")
        self.dim = int(dim)
        self.scale = float(scale)
        self.max_period = float(max_period)

    def forward(self, t: Tensor) -> Tensor:
        """``(B,)`` times -> ``(B, dim)`` float32 features ``[cos, sin]``."""
        t = _check_time(t)
        half = self.dim // 2
        # built on the fly in float32: a buffer would be rounded by ``model.to(bfloat16)``
        idx = torch.arange(half, dtype=torch.float32, device=t.device)
        freqs = torch.exp(-math.log(self.max_period) * idx / half)
        args = (self.scale * t)[:, None] * freqs[None]
        return _pad_odd(torch.cat([torch.cos(args), torch.sin(args)], dim=1), self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, scale={self.scale}"


class GaussianFourierEmbedding(nn.Module):
    """Random Fourier features ``[sin(2 pi t W), cos(2 pi t W)]``, ``W ~ N(0, scale^2)`` fixed."""

    def __init__(self, dim: int, scale: float = 16.0, seed: int = 0) -> None:
        super().__init__()
        if int(dim) != dim or dim < 2:
            raise ValueError(f"dim must be an integer >= 2, got {dim}")
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.dim = int(dim)
        self.scale = float(scale)
        gen = torch.Generator().manual_seed(int(seed))
        weight = torch.randn(self.dim // 2, generator=gen, dtype=torch.float32) * self.scale
        self.register_buffer("weight", weight)  # persistent: saved with the checkpoint

    def forward(self, t: Tensor) -> Tensor:
        """``(B,)`` times -> ``(B, dim)`` float32 features ``[sin, cos]``."""
        t = _check_time(t)
        args = 2 * math.pi * t[:, None] * self.weight.to(device=t.device, dtype=torch.float32)[None]
        return _pad_odd(torch.cat([torch.sin(args), torch.cos(args)], dim=1), self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, scale={self.scale}"


def time_embedding(kind: str, dim: int, scale: float | None = None) -> nn.Module:
    """Build a time embedding by name (``'fourier'`` or ``'sinusoidal'``); ``scale`` overrides
    the default (16 for Fourier, 1000 for sinusoidal)."""
    if kind == "fourier":
        return GaussianFourierEmbedding(dim, 16.0 if scale is None else scale)
    if kind == "sinusoidal":
        return SinusoidalEmbedding(dim, 1000.0 if scale is None else scale)
    raise ValueError(
        f"unknown time_embed {kind!r}; valid time embeddings: {', '.join(TIME_EMBEDDINGS)}"
    )
