"""Noise-conditional classifiers ``net(u, t) -> (B, num_classes)`` logits, for classifier
guidance (Dhariwal and Nichol 2021). Like the score networks they know nothing of diffusion:
``u`` is a state (``(x, v)`` stacked along the channel/feature axis for CLD, so pass twice the
data's channels) and ``t`` a float per sample.

- :class:`MLPClassifier` (points ``(B, d)``): the residual :class:`~trilemma.nets.MLP` with a
  ``num_classes``-wide head that is not zero-initialised (a zero head would make the first
  gradients of ``log p(c | u, t)`` with respect to ``u`` vanish).
- :class:`ConvClassifier` (images ``(B, C, H, W)``): the U-Net's encoder half (its residual
  blocks with the time embedding as a channel bias, stride-2 downsampling), then GroupNorm,
  SiLU, a global average pool and a linear head.

:data:`CLASSIFIER_NETS` names them for configs (``model.net.name``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .embeddings import time_embedding
from .mlp import MLP, _batch_time
from .unet import Downsample, ResBlock, _norm


class MLPClassifier(MLP):
    """Residual MLP classifier ``(u (B, in_dim), t (B,)) -> (B, num_classes)`` logits.

    Args: ``in_dim`` (``2 d`` for CLD's ``(x, v)``), ``num_classes`` (>= 2), and the MLP's
    ``hidden``, ``depth``, ``time_embed``, ``embed_scale``, ``norm``, ``dropout``.
    """

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 128, depth: int = 3,
                 time_embed: str = "fourier", embed_scale: float | None = None,
                 norm: str = "layernorm", dropout: float = 0.0) -> None:
        _check_classes(num_classes)
        super().__init__(in_dim, num_classes, hidden=hidden, depth=depth, time_embed=time_embed,
                         embed_scale=embed_scale, norm=norm, dropout=dropout, num_classes=None,
                         zero_init=False)


class ConvClassifier(nn.Module):
    """Convolutional classifier ``(u (B, C, H, W), t (B,)) -> (B, num_classes)`` logits.

    Args:
        in_channels: channels of the state (``2 C`` for CLD's ``(x, v)``).
        num_classes: number of classes (>= 2).
        image_size: side of the (square) images, or ``[H, W]``; only checked against inputs.
        base_channels: width of the first level; level ``i`` has ``base * channel_mults[i]``.
        channel_mults: one entry per level; every level but the last halves the resolution.
        num_res_blocks: residual blocks per level.
        time_embed, embed_scale: the time embedding (:func:`~trilemma.nets.time_embedding`).
        dropout: inside the residual blocks.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int | Sequence[int],
                 base_channels: int = 32, channel_mults: Sequence[int] = (1, 2),
                 num_res_blocks: int = 1, time_embed: str = "fourier",
                 embed_scale: float | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        _check_classes(num_classes)
        for name, val in (("in_channels", in_channels), ("base_channels", base_channels),
                          ("num_res_blocks", num_res_blocks)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {val!r}")
        mults = [int(m) for m in channel_mults]
        if not mults or any(m < 1 for m in mults):
            raise ValueError(f"channel_mults must be positive integers, got {channel_mults!r}")
        size = [int(image_size)] * 2 if isinstance(image_size, int) else list(image_size)
        self.in_channels, self.num_classes, self.image_size = in_channels, num_classes, size
        emb_dim = 4 * base_channels
        self.time_embed = nn.Sequential(time_embedding(time_embed, base_channels, embed_scale),
                                        nn.Linear(base_channels, emb_dim), nn.SiLU(),
                                        nn.Linear(emb_dim, emb_dim))
        self.stem = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        blocks: list[nn.Module] = []
        ch = base_channels
        for level, mult in enumerate(mults):
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(ch, base_channels * mult, emb_dim, dropout,
                                       zero_init=False, skip_rescale=False))
                ch = base_channels * mult
            if level < len(mults) - 1:
                blocks.append(Downsample(ch))
        self.blocks = nn.ModuleList(blocks)
        self.out_norm = _norm(ch)
        self.act = nn.SiLU()
        self.head = nn.Linear(ch, num_classes)

    def forward(self, u: Tensor, t: Tensor) -> Tensor:
        """Logits of shape ``(B, num_classes)``; ``t`` of shape ``(B,)`` (or a scalar)."""
        if u.dim() != 4 or u.shape[1] != self.in_channels or list(u.shape[2:]) != self.image_size:
            raise ValueError(f"u must have shape (batch, {self.in_channels}, "
                             f"{self.image_size[0]}, {self.image_size[1]}), got {tuple(u.shape)}")
        t = _batch_time(t, u)
        emb = self.time_embed[0](t).to(self.stem.weight.dtype)
        emb = self.time_embed[1:](emb)
        h = self.stem(u)
        for block in self.blocks:
            h = block(h, emb) if isinstance(block, ResBlock) else block(h)
        h = self.act(self.out_norm(h)).mean(dim=(2, 3))
        return self.head(h)


def _check_classes(num_classes: object) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")


#: classifier networks by config name (``model.net.name`` of a ``noise_classifier`` run)
CLASSIFIER_NETS: dict[str, type[nn.Module]] = {"mlp": MLPClassifier, "conv": ConvClassifier}
#: the keys of each classifier network derived from the data (and the process: CLD doubles
#: the input) and ``model.num_classes``
CLASSIFIER_DERIVED_KEYS = {"mlp": ("in_dim", "num_classes"),
                           "conv": ("in_channels", "num_classes", "image_size")}

