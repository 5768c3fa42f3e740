"""A DDPM/NCSN++-style U-Net for images ``(B, C, H, W)`` with a time input ``t`` of shape ``(B,)``.

Layout (Ho et al. 2020, with NCSN++ options):

- time embedding (sinusoidal or Gaussian Fourier) -> ``Linear, SiLU, Linear`` to ``4 * base``;
  an optional class embedding (``num_classes + 1`` rows, the last the learned null class for
  classifier-free guidance) is added to it;
- encoder: per level ``num_res_blocks`` Wide-ResNet blocks (GroupNorm, SiLU, 3x3 conv, time
  injection as a per-channel bias, GroupNorm, SiLU, dropout, 3x3 conv, 1x1 skip when the width
  changes), self-attention where the level's resolution is in ``attn_resolutions``, then a
  stride-2 3x3 conv (``n -> ceil(n / 2)``, so 28 -> 14 -> 7 -> 4 works);
- middle: ResBlock, attention, ResBlock;
- decoder: ``num_res_blocks + 1`` ResBlocks per level on the concatenated encoder skips, nearest
  upsampling *to the skip's exact size* followed by a 3x3 conv (so odd sizes round-trip);
- GroupNorm, SiLU and a 3x3 output conv.

With ``zero_init=True`` (default) the output conv, the second conv of every ResBlock and the
attention output projection start at zero (as in DDPM/improved DDPM), so every block is the
identity and the network outputs exactly zero at initialisation.

GroupNorm groups adapt to small widths: the largest divisor of the width that is at most 32
and leaves at least two channels per group.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .embeddings import time_embedding
from .mlp import _add_class, _batch_time


def num_groups(channels: int, max_groups: int = 32, min_per_group: int = 2) -> int:
    """GroupNorm group count: largest divisor of ``channels`` <= ``max_groups`` with at least
    ``min_per_group`` channels each (1 group for tiny widths)."""
    best = 1
    for g in range(1, min(max_groups, channels) + 1):
        if channels % g == 0 and channels // g >= min_per_group:
            best = g
    return best


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups(channels), channels, eps=1e-6)


class ResBlock(nn.Module):
    """Wide-ResNet block with the time (and class) embedding injected as a channel bias."""

    def __init__(
        self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, zero_init: bool,
        skip_rescale: bool,
    ) -> None:
        super().__init__()
        self.norm1 = _norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2 = _norm(out_ch)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        if zero_init:
            nn.init.zeros_(self.conv2.weight)
            nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.act = nn.SiLU()
        self.rescale = 1 / math.sqrt(2.0) if skip_rescale else 1.0

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = h + self.emb(self.act(emb))[:, :, None, None]
        h = self.conv2(self.drop(self.act(self.norm2(h))))
        return (self.skip(x) + h) * self.rescale


class AttnBlock(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, with a residual connection."""

    def __init__(self, channels: int, num_heads: int, zero_init: bool, skip_rescale: bool) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide the width {channels}")
        self.num_heads = num_heads
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        if zero_init:
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)
        self.rescale = 1 / math.sqrt(2.0) if skip_rescale else 1.0

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, h * w)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # (b, heads, hw, c/heads)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return (x + self.proj(out)) * self.rescale


class Downsample(nn.Module):
    """Stride-2 3x3 conv: ``n -> ceil(n / 2)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest upsampling to an exact target size, then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, size: Sequence[int]) -> Tensor:
        return self.conv(F.interpolate(x, size=tuple(size), mode="nearest"))


def _check_unet_args(
    channels: dict[str, int], channel_mults: Sequence[int], dropout: float,
    num_classes: int | None, image_size: int | Sequence[int],
) -> tuple[tuple[int, ...], tuple[int, int]]:
    """Validate :class:`UNet`'s arguments; returns the level multipliers and ``(H, W)``.

    ``channels`` maps each integer argument that must be >= 1 to its value.
    """
    for name, val in channels.items():
        if not isinstance(val, int) or isinstance(val, bool) or val < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {val!r}")
    mults = tuple(channel_mults)
    if not mults or any(not isinstance(m, int) or m < 1 for m in mults):
        raise ValueError(f"channel_mults must be a non-empty sequence of positive integers, "
                         f"got {channel_mults!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"num_classes must be a positive integer or None, got {num_classes!r}")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or any(not isinstance(s, int) or s < 1 for s in size):
        raise ValueError(f"image_size must be a positive int or (H, W), got {image_size!r}")
    return mults, size


def _level_resolutions(size: tuple[int, int], n_levels: int) -> list[tuple[int, ...]]:
    """``(H, W)`` of each level: a stride-2 conv with padding 1 maps ``n -> ceil(n / 2)``."""
    res = [size]
    for _ in range(n_levels - 1):
        res.append(tuple(-(-s // 2) for s in res[-1]))
    return res


def fit_attn_resolutions(attn_resolutions: Sequence[int] | None, image_size: int | Sequence[int],
                         channel_mults: Sequence[int]) -> tuple[list[int] | None, str | None]:
    """``attn_resolutions`` fitted to this U-Net's level resolutions: each listed size that is
    no level's ``max(H, W)`` becomes the nearest level's (on a log scale); returns the fitted
    list and a note saying what changed (None when nothing did). Configs use it so that one
    written for 8 x 8 images (``[4]``) still builds for 32 x 32 ones (``[8]``)."""
    if attn_resolutions is None:
        return None, None
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    levels = [max(r) for r in _level_resolutions(tuple(size), len(tuple(channel_mults)))]
    fitted: list[int] = []
    for r in attn_resolutions:
        best = r if r in levels else min(levels, key=lambda v: abs(math.log(v / max(r, 1))))
        if best not in fitted:
            fitted.append(best)
    if sorted(fitted) == sorted(set(attn_resolutions)):
        return list(attn_resolutions), None
    return fitted, (f"attn_resolutions {list(attn_resolutions)} match no level of this U-Net "
                    f"(level resolutions {levels}); using {fitted}")


def _attention_levels(res: list[tuple[int, ...]], attn_resolutions: Sequence[int] | None,
                      ) -> set[int]:
    """Levels with self-attention: those whose ``max(H, W)`` is listed (None: the lowest)."""
    if attn_resolutions is None:
        return {len(res) - 1}
    wanted = set(attn_resolutions)
    missing = wanted - {max(r) for r in res}
    if missing:
        raise ValueError(
            f"attn_resolutions {sorted(missing)} match no level; this U-Net's level "
            f"resolutions are {[max(r) for r in res]}"
        )
    return {i for i, r in enumerate(res) if max(r) in wanted}


def _encoder(
    ch: int, mults: tuple[int, ...], num_res_blocks: int, attn_levels: set[int],
    res_block: Callable[[int, int], ResBlock], attn: Callable[[int], AttnBlock],
) -> tuple[nn.ModuleList, list[int], int]:
    """Encoder levels (ResBlocks [+ attention], then a Downsample but at the last level).

    Returns the levels, the width of every skip connection they leave (the input conv's
    first) and the final width.
    """
    down = nn.ModuleList()
    skips = [ch]
    cur = ch
    for i, m in enumerate(mults):
        level = nn.ModuleList()
        for _ in range(num_res_blocks):
            blocks = nn.ModuleList([res_block(cur, ch * m)])
            cur = ch * m
            if i in attn_levels:
                blocks.append(attn(cur))
            level.append(blocks)
            skips.append(cur)
        if i < len(mults) - 1:
            level.append(Downsample(cur))
            skips.append(cur)
        down.append(level)
    return down, skips, cur


def _decoder(
    ch: int, mults: tuple[int, ...], num_res_blocks: int, attn_levels: set[int],
    skips: list[int], cur: int, res_block: Callable[[int, int], ResBlock],
    attn: Callable[[int], AttnBlock],
) -> tuple[nn.ModuleList, int]:
    """Decoder levels (ResBlocks on concatenated skips [+ attention], then an Upsample but at
    the top level), consuming every skip width; returns the levels and the final width."""
    up = nn.ModuleList()
    for i, m in reversed(list(enumerate(mults))):
        level = nn.ModuleList()
        for _ in range(num_res_blocks + 1):
            blocks = nn.ModuleList([res_block(cur + skips.pop(), ch * m)])
            cur = ch * m
            if i in attn_levels:
                blocks.append(attn(cur))
            level.append(blocks)
        if i > 0:
            level.append(Upsample(cur))
        up.append(level)
    if skips:
        raise AssertionError(f"{len(skips)} encoder skips left unused")
    return up, cur


class UNet(nn.Module):
    """DDPM/NCSN++-style U-Net ``(x (B, C_in, H, W), t (B,)[, labels]) -> (B, C_out, H, W)``.

    Args:
        in_channels, out_channels: image channels in and out (for CLD: ``2 C`` in, ``C`` out).
        base_channels: width of the first level.
        channel_mults: width multiplier of each level; ``len - 1`` downsamplings.
        num_res_blocks: ResBlocks per encoder level (the decoder has one more).
        attn_resolutions: feature-map sizes ``max(H, W)`` of a level (e.g. ``(16,)`` at 32x32) where
            self-attention is used; ``None`` = the lowest resolution only; ``()`` = none
            (the middle block always has attention).
        dropout: dropout rate inside the ResBlocks.
        num_classes: enables class conditioning; label ``num_classes`` (or ``labels=None``)
            is the learned null class.
        image_size: input size ``H = W`` (int) or ``(H, W)``; inputs are checked against it.
        time_embed: ``'sinusoidal'`` (DDPM) or ``'fourier'`` (NCSN++).
        embed_scale: frequency scale of the time embedding (default 1000 / 16).
        num_heads: attention heads.
        zero_init: start the output conv and every residual branch at zero.
        skip_rescale: divide residual sums by ``sqrt(2)`` (NCSN++).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        base_channels: int = 64,
        channel_mults: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] | None = None,
        dropout: float = 0.1,
        num_classes: int | None = None,
        image_size: int | Sequence[int] = 32,
        time_embed: str = "sinusoidal",
        embed_scale: float | None = None,
        num_heads: int = 1,
        zero_init: bool = True,
        skip_rescale: bool = False,
    ) -> None:
        super().__init__()
        mults, size = _check_unet_args(
            {"in_channels": in_channels, "out_channels": out_channels,
             "base_channels": base_channels, "num_res_blocks": num_res_blocks,
             "num_heads": num_heads}, channel_mults, dropout, num_classes, image_size)
        res = _level_resolutions(size, len(mults))
        attn_levels = _attention_levels(res, attn_resolutions)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.image_size, self.num_classes = size, num_classes
        self.resolutions = [max(r) for r in res]
        self.attn_levels = sorted(attn_levels)

        ch = base_channels
        emb_dim = 4 * ch
        self.time_embed = nn.Sequential(
            time_embedding(time_embed, ch, embed_scale),
            nn.Linear(ch, emb_dim),
            nn.SiLU(),
            nn.Linear(emb_dim, emb_dim),
        )
        self.class_embed = (
            nn.Embedding(num_classes + 1, emb_dim) if num_classes is not None else None
        )

        def res_block(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, cout, emb_dim, dropout, zero_init, skip_rescale)

        def attn(c: int) -> AttnBlock:
            return AttnBlock(c, num_heads, zero_init, skip_rescale)

        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down, skips, cur = _encoder(ch, mults, num_res_blocks, attn_levels, res_block, attn)
        self.mid = nn.ModuleList([res_block(cur, cur), attn(cur), res_block(cur, cur)])
        self.up, cur = _decoder(ch, mults, num_res_blocks, attn_levels, skips, cur, res_block,
                                attn)
        self.norm_out = _norm(cur)
        self.act = nn.SiLU()
        self.conv_out = nn.Conv2d(cur, out_channels, 3, padding=1)
        if zero_init:
            nn.init.zeros_(self.conv_out.weight)
            nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        """Network output of shape ``(B, out_channels, H, W)``; ``t`` of shape ``(B,)``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != self.image_size:
            raise ValueError(
                f"x must have shape (batch, {self.in_channels}, {self.image_size[0]}, "
                f"{self.image_size[1]}), got {tuple(x.shape)}"
            )
        t = _batch_time(t, x)
        emb = self.time_embed[0](t).to(self.conv_in.weight.dtype)
        emb = self.time_embed[1:](emb)
        emb = _add_class(emb, labels, self.class_embed, self.num_classes, x.shape[0])

        h = self.conv_in(x)
        hs = [h]
        for level in self.down:
            for blocks in level:
                if isinstance(blocks, Downsample):
                    h = blocks(h)
                else:
                    h = self._run(blocks, h, emb)
                hs.append(h)

        h = self.mid[0](h, emb)
        h = self.mid[1](h)
        h = self.mid[2](h, emb)

        for level in self.up:
            for blocks in level:
                if isinstance(blocks, Upsample):
                    h = blocks(h, hs[-1].shape[2:])
                else:
                    h = self._run(blocks, torch.cat([h, hs.pop()], dim=1), emb)
        return self.conv_out(self.act(self.norm_out(h)))

    @staticmethod
    def _run(blocks: nn.ModuleList, h: Tensor, emb: Tensor) -> Tensor:
        h = blocks[0](h, emb)
        for b in blocks[1:]:
            h = b(h)
        return h
