"""A residual MLP for vector data ``(B, in_dim)`` with a time input ``t`` of shape ``(B,)``.

The network knows nothing of diffusion: it maps ``(x, t)`` to ``(B, out_dim)`` and the caller
decides what the output means (score, epsilon, x0, ...). For CLD pass ``in_dim = 2 d`` (x and v
concatenated) and ``out_dim = d``.

Layout: ``Linear(in_dim, hidden)``, then ``depth`` pre-norm residual blocks
``h + W2 act(W1 act(norm(h)) + P temb)``, then ``act(norm(h))`` and a zero-initialised
``Linear(hidden, out_dim)`` (so the network outputs exactly zero at initialisation, which keeps
the first training steps of a parametrised score model well scaled).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .embeddings import time_embedding

NORMS = ("layernorm", "none")


def _norm(kind: str, width: int) -> nn.Module:
    if kind == "layernorm":
        return nn.LayerNorm(width)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; valid norms: {', '.join(NORMS)}")


class _ResidualBlock(nn.Module):
    """Pre-norm residual block with the time embedding added after the first linear map."""

    def __init__(self, width: int, emb_dim: int, norm: str, dropout: float) -> None:
        super().__init__()
        self.norm = _norm(norm, width)
        self.lin1 = nn.Linear(width, width)
        self.emb = nn.Linear(emb_dim, width)
        self.lin2 = nn.Linear(width, width)
        self.act = nn.SiLU()
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        r = self.lin1(self.act(self.norm(h))) + self.emb(emb)
        return h + self.lin2(self.drop(self.act(r)))


class MLP(nn.Module):
    """Residual MLP ``(x (B, in_dim), t (B,)[, labels (B,)]) -> (B, out_dim)``.

    Args:
        in_dim, out_dim: input and output widths.
        hidden: width of the hidden layers.
        depth: number of residual blocks.
        time_embed: ``'fourier'`` (random fixed frequencies) or ``'sinusoidal'``.
        embed_scale: frequency scale of the time embedding (default 16 Fourier, 1000 sinusoidal).
        norm: ``'layernorm'`` or ``'none'``.
        dropout: dropout rate inside the blocks.
        num_classes: enables class conditioning; label ``num_classes`` (or ``labels=None``)
            is the learned null class used for classifier-free guidance.
        zero_init: zero-initialise the output layer (output exactly 0 at initialisation).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: int = 256,
        depth: int = 3,
        time_embed: str = "fourier",
        embed_scale: float | None = None,
        norm: str = "layernorm",
        dropout: float = 0.0,
        num_classes: int | None = None,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        for name, val, lo in (("in_dim", in_dim, 1), ("out_dim", out_dim, 1),
                              ("hidden", hidden, 1), ("depth", depth, 0)):
            if not isinstance(val, int) or isinstance(val, bool) or val < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {val!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"num_classes must be a positive integer or None, got {num_classes!r}")
        self.in_dim, self.out_dim, self.num_classes = in_dim, out_dim, num_classes
        emb_dim = hidden
        self.time_embed = nn.Sequential(
            time_embedding(time_embed, emb_dim, embed_scale),
            nn.Linear(emb_dim, emb_dim),
            nn.SiLU(),
            nn.Linear(emb_dim, emb_dim),
        )
        # one extra row: the learned null class
        self.class_embed = (
            nn.Embedding(num_classes + 1, emb_dim) if num_classes is not None else None
        )
        self.inp = nn.Linear(in_dim, hidden)
        self.blocks = nn.ModuleList(
            [_ResidualBlock(hidden, emb_dim, norm, dropout) for _ in range(depth)]
        )
        self.out_norm = _norm(norm, hidden)
        self.act = nn.SiLU()
        self.out = nn.Linear(hidden, out_dim)
        if zero_init:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        """Network output of shape ``(B, out_dim)``; ``t`` of shape ``(B,)`` (or a scalar)."""
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"x must have shape (batch, {self.in_dim}), got {tuple(x.shape)}")
        t = _batch_time(t, x)
        emb = self.time_embed[0](t).to(self.inp.weight.dtype)
        emb = self.time_embed[1:](emb)
        emb = _add_class(emb, labels, self.class_embed, self.num_classes, x.shape[0])
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(self.act(self.out_norm(h)))


def _batch_time(t: Tensor | float, x: Tensor) -> Tensor:
    """Broadcast a scalar time to ``(batch,)`` on ``x``'s device and check a time batch."""
    batch = x.shape[0]
    if not isinstance(t, Tensor):
        t = torch.tensor(float(t))
    if t.dim() == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"t must have shape ({batch},) or be a scalar, got {tuple(t.shape)}")
    return t.to(x.device)


def _add_class(
    emb: Tensor, labels: Tensor | None, table: nn.Embedding | None, num_classes: int | None,
    batch: int,
) -> Tensor:
    """Add the class embedding (null class when ``labels`` is None) to the time embedding."""
    if table is None:
        if labels is not None:
            raise ValueError("labels were given but the network was built with num_classes=None")
        return emb
    assert num_classes is not None
    if labels is None:
        labels = torch.full((batch,), num_classes, dtype=torch.long, device=emb.device)
    if labels.shape != (batch,):
        raise ValueError(f"labels must have shape ({batch},), got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}] ({num_classes} = null class), got "
            f"range [{int(labels.min())}, {int(labels.max())}]"
        )
    return emb + table(labels.to(device=emb.device, dtype=torch.long)).to(emb.dtype)
