"""GAN networks for denoising diffusion GANs: latent-conditioned generators and time-conditioned
discriminators. They know nothing of diffusion: ``t`` is just a float per sample.

Generators ``G(x, t, z)`` (``z`` of shape ``(B, z_dim)``, or ``None`` when ``z_dim = 0``):

- :class:`MLPGenerator` (vectors): a mapping network ``w = M(z)`` and FiLM in every layer,
  ``h <- act((W h) * (1 + gamma_i(w)) + beta_i(w))`` (feature-wise scale and shift by the
  latent, the MLP analogue of adaptive normalisation); the time enters as fixed features next to
  ``x``.
- :class:`ZUNet` (images): :class:`~trilemma.nets.UNet` with ``w = M(z)`` (width ``4 * base``)
  added to the time embedding. The U-Net adds that embedding to every ResBlock's features as a
  per-channel shift right before the block's second GroupNorm, so ``z`` modulates every block:
  adaptive group norm with a shift only (DDGAN's AdaGN also learns a scale; the shift keeps the
  U-Net unchanged). ``ZUNet`` keeps every constructor argument of the U-Net (plus ``z_dim``,
  ``map_layers``), so a ``model.net`` section of a DDGAN config reads like a score model's.

Discriminators ``D(x_prev, x_t, t) -> (B,)`` logits on the two inputs concatenated (features for
vectors, channels for images) plus fixed time features; LeakyReLU(0.2) and no normalisation
layers, so every logit depends on its own sample only (the R1 penalty is then exact per sample):
:class:`MLPDiscriminator` and :class:`ConvDiscriminator` (residual blocks, average pooling, a
global sum and a linear head).

Why fixed time features at the input instead of a learned time MLP added to every layer (the
U-Net's way): see :class:`MLPDiscriminator`. :data:`GENERATORS` and :data:`DISCRIMINATORS` name
the networks for configs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .embeddings import time_embedding
from .mlp import _add_class, _batch_time
from .unet import Downsample, UNet, Upsample


def _check_int(name: str, value: object, lo: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return value


class RawTime(nn.Module):
    """The time itself as one feature, ``2 t - 1`` (in ``[-1, 1]`` for ``t in [0, 1]``)."""

    dim = 1

    def forward(self, t: Tensor) -> Tensor:
        return (2.0 * t.to(torch.float32) - 1.0)[:, None]


def _time_features(kind: str, dim: int, scale: float | None) -> tuple[nn.Module, int]:
    """Parameter-free time features and their width: ``'raw'`` (1 feature, ``dim`` unused),
    ``'fourier'`` or ``'sinusoidal'`` (``dim`` features, :func:`~trilemma.nets.time_embedding`)."""
    if kind == "raw":
        return RawTime(), 1
    _check_int("time_dim", dim, 2)
    return time_embedding(kind, dim, scale), dim


def _mapping(z_dim: int, width: int, layers: int) -> nn.Module:
    """The latent mapping MLP ``z -> w``: ``layers`` linear maps with SiLU in between."""
    mods: list[nn.Module] = []
    d = z_dim
    for i in range(layers):
        mods.append(nn.Linear(d, width))
        if i < layers - 1:
            mods.append(nn.SiLU())
        d = width
    return nn.Sequential(*mods)


def per_unique_time(t: Tensor, fn) -> Tensor:
    """``fn(t)`` row by row, computed once per distinct time: a DDGAN batch has only ``T``
    distinct times, so the time-embedding MLPs run on ``T`` rows instead of ``B``."""
    u, inv = torch.unique(t, return_inverse=True)
    if u.numel() == t.numel():
        return fn(t)
    return fn(u)[inv]


def _check_z(z: Tensor | None, z_dim: int, x: Tensor) -> Tensor | None:
    """Validate the latent of a generator call (``None`` iff ``z_dim = 0``)."""
    if z_dim == 0:
        if z is not None:
            raise ValueError("z was given but the generator was built with z_dim=0")
        return None
    if z is None:
        raise ValueError(f"the generator needs a latent z of shape (batch, {z_dim})")
    if z.shape != (x.shape[0], z_dim):
        raise ValueError(f"z must have shape ({x.shape[0]}, {z_dim}), got {tuple(z.shape)}")
    return z.to(device=x.device)


class MLPGenerator(nn.Module):
    """FiLM MLP generator ``(x (B, in_dim), t (B,), z (B, z_dim)) -> (B, out_dim)``.

    ``w = M(z)`` (the mapping network), then ``depth`` layers
    ``h <- act((W_i h) * (1 + gamma_i(w)) + beta_i(w))`` on ``h_0 = [x, f(t)]`` and a linear
    output: every layer's features are scaled and shifted by the latent (FiLM). The time enters
    as ``time_dim`` fixed features ``f(t)`` next to ``x`` (see :class:`MLPDiscriminator` for why
    not a learned time MLP). Lean on purpose: on a CPU budget a GAN needs many cheap steps.

    Args:
        in_dim, out_dim: data widths.
        hidden, depth: width and number of hidden layers.
        z_dim: latent width (0: a deterministic network, no FiLM).
        map_dim, map_layers: width and linear layers of the mapping network.
        time_embed, time_dim, embed_scale: the fixed time features (``'fourier'`` or
            ``'sinusoidal'``, :func:`~trilemma.nets.time_embedding`).
        zero_init: start the output layer at zero (output exactly 0 at initialisation).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: int = 256,
        depth: int = 3,
        z_dim: int = 16,
        map_dim: int = 64,
        map_layers: int = 2,
        time_embed: str = "raw",
        time_dim: int = 16,
        embed_scale: float | None = None,
        zero_init: bool = False,
    ) -> None:
        super().__init__()
        self.in_dim = _check_int("in_dim", in_dim, 1)
        self.out_dim = _check_int("out_dim", out_dim, 1)
        _check_int("hidden", hidden, 1)
        self.depth = _check_int("depth", depth, 1)
        self.z_dim = _check_int("z_dim", z_dim, 0)
        _check_int("map_dim", map_dim, 1)
        _check_int("map_layers", map_layers, 1)
        self.time_features, tdim = _time_features(time_embed, time_dim, embed_scale)
        self.layers = nn.ModuleList(
            [nn.Linear(in_dim + tdim if i == 0 else hidden, hidden) for i in range(depth)]
        )
        if self.z_dim:
            self.mapping = _mapping(self.z_dim, map_dim, map_layers)
            self.film = nn.Linear(map_dim, 2 * depth * hidden)  # every layer's (gamma, beta)
        else:
            self.mapping, self.film = None, None
        self.act = nn.SiLU()
        self.out = nn.Linear(hidden, out_dim)
        if zero_init:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t: Tensor, z: Tensor | None = None) -> Tensor:
        """Generator output ``(B, out_dim)``; ``z`` of shape ``(B, z_dim)`` (None if z_dim = 0)."""
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"x must have shape (batch, {self.in_dim}), got {tuple(x.shape)}")
        z = _check_z(z, self.z_dim, x)
        t = _batch_time(t, x)
        dtype = self.out.weight.dtype
        films = None
        if z is not None:
            films = self.film(self.mapping(z.to(dtype))).chunk(2 * self.depth, 1)
        h = torch.cat([x, per_unique_time(t, self.time_features).to(dtype)], dim=1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if films is not None:
                h = h * (1.0 + films[2 * i]) + films[2 * i + 1]
            h = self.act(h)
        return self.out(h)


class ZUNet(UNet):
    """U-Net generator ``(x (B, C, H, W), t (B,), z (B, z_dim)) -> (B, C_out, H, W)``.

    ``w = mapping(z)`` (width ``4 * base_channels``) is added to the time (and class)
    embedding, which every ResBlock adds per channel before its second GroupNorm (see the
    module docstring). Args besides :class:`~trilemma.nets.UNet`'s: ``z_dim`` (0: no latent),
    ``map_layers``.
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
        z_dim: int = 32,
        map_layers: int = 2,
    ) -> None:
        super().__init__(in_channels, out_channels, base_channels, channel_mults, num_res_blocks,
                         attn_resolutions, dropout, num_classes, image_size, time_embed,
                         embed_scale, num_heads, zero_init, skip_rescale)
        self.z_dim = _check_int("z_dim", z_dim, 0)
        _check_int("map_layers", map_layers, 1)
        emb_dim = 4 * base_channels
        self.mapping = _mapping(self.z_dim, emb_dim, map_layers) if self.z_dim else None

    def forward(  # type: ignore[override]
        self, x: Tensor, t: Tensor, z: Tensor | None = None, labels: Tensor | None = None
    ) -> Tensor:
        """Generator output ``(B, out_channels, H, W)``; ``z`` of shape ``(B, z_dim)``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != self.image_size:
            raise ValueError(
                f"x must have shape (batch, {self.in_channels}, {self.image_size[0]}, "
                f"{self.image_size[1]}), got {tuple(x.shape)}"
            )
        z = _check_z(z, self.z_dim, x)
        t = _batch_time(t, x)
        dtype = self.conv_in.weight.dtype
        emb = per_unique_time(t, lambda s: self.time_embed[1:](self.time_embed[0](s).to(dtype)))
        emb = _add_class(emb, labels, self.class_embed, self.num_classes, x.shape[0])
        if z is not None:
            emb = emb + self.mapping(z.to(emb.dtype))
        # the U-Net body, as in UNet.forward
        h = self.conv_in(x)
        hs = [h]
        for level in self.down:
            for blocks in level:
                h = blocks(h) if isinstance(blocks, Downsample) else self._run(blocks, h, emb)
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


class MLPDiscriminator(nn.Module):
    """Time-conditioned MLP discriminator ``(x_prev (B, d), x_t (B, d), t (B,)) -> (B,)``.

    ``depth`` LeakyReLU layers on ``[x_prev, x_t, f(t)]``, ``f`` fixed time features, and a
    linear head. Why fixed features at the input rather than a learned time MLP added to every
    layer: a DDGAN batch has only ``T`` distinct times, so a learned embedding is a handful of
    constant vectors and its projection acts as an extra bias whose Adam step is about
    ``lr * sum_k |e_k|`` (every weight moves by ``lr`` in step) -- some 100 times a bias's. On
    the toys that made both networks drift too fast to learn anything; ``time_dim`` small fixed
    features keep the factor near ``sum_k |f_k|`` (about 10 for 16 Fourier features).

    Args:
        in_dim: data width ``d`` (the first layer sees ``2 d + time_dim``).
        hidden: width; depth: hidden layers.
        time_embed, time_dim, embed_scale: the fixed time features.
        slope: LeakyReLU negative slope.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int = 256,
        depth: int = 3,
        time_embed: str = "raw",
        time_dim: int = 16,
        embed_scale: float | None = None,
        slope: float = 0.2,
    ) -> None:
        super().__init__()
        self.in_dim = _check_int("in_dim", in_dim, 1)
        _check_int("hidden", hidden, 1)
        _check_int("depth", depth, 1)
        if not 0.0 <= slope < 1.0:
            raise ValueError(f"slope must be in [0, 1), got {slope!r}")
        self.slope = float(slope)
        self.time_features, tdim = _time_features(time_embed, time_dim, embed_scale)
        self.layers = nn.ModuleList(
            [nn.Linear(2 * in_dim + tdim if i == 0 else hidden, hidden) for i in range(depth)]
        )
        self.out = nn.Linear(hidden, 1)

    def forward(self, x_prev: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """Logits of shape ``(B,)``."""
        for name, x in (("x_prev", x_prev), ("x_t", x_t)):
            if x.dim() != 2 or x.shape[1] != self.in_dim:
                raise ValueError(f"{name} must have shape (batch, {self.in_dim}), got "
                                 f"{tuple(x.shape)}")
        if x_prev.shape != x_t.shape:
            raise ValueError(f"x_prev {tuple(x_prev.shape)} and x_t {tuple(x_t.shape)} differ")
        f = per_unique_time(_batch_time(t, x_t), self.time_features).to(self.out.weight.dtype)
        h = torch.cat([x_prev, x_t, f], dim=1)
        for lin in self.layers:
            h = F.leaky_relu(lin(h), self.slope)
        return self.out(h)[:, 0]


class _DBlock(nn.Module):
    """Residual block ``(x + conv2(lrelu(conv1(lrelu(x))))) / sqrt 2``, 1x1 skip on width change."""

    def __init__(self, cin: int, cout: int, slope: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else nn.Identity()
        self.slope = slope

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.leaky_relu(x, self.slope))
        h = self.conv2(F.leaky_relu(h, self.slope))
        return (self.skip(x) + h) / math.sqrt(2.0)


class ConvDiscriminator(nn.Module):
    """Time-conditioned conv discriminator ``(x_prev, x_t (B, C, H, W), t (B,)) -> (B,)``.

    The first conv sees ``[x_prev, x_t, f(t)]``, the time features as constant planes (fixed
    features for the reason given in :class:`MLPDiscriminator`), then residual LeakyReLU blocks,
    2x average pooling between levels, a global sum and a linear head.

    Args:
        in_channels: image channels ``C`` (the first conv sees ``2 C + time channels``).
        base_channels, channel_mults: width per level; every level but the last is followed by
            a 2x average pool (ceil mode, so odd sizes work).
        time_embed, time_dim, embed_scale: the fixed time features (``'raw'``: one plane).
        slope: LeakyReLU negative slope.
    """

    def __init__(
        self,
        in_channels: int,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 2, 2),
        time_embed: str = "raw",
        time_dim: int = 8,
        embed_scale: float | None = None,
        slope: float = 0.2,
    ) -> None:
        super().__init__()
        self.in_channels = _check_int("in_channels", in_channels, 1)
        ch = _check_int("base_channels", base_channels, 1)
        mults = tuple(channel_mults)
        if not mults or any(not isinstance(m, int) or isinstance(m, bool) or m < 1 for m in mults):
            raise ValueError(f"channel_mults must be a non-empty sequence of positive integers, "
                             f"got {channel_mults!r}")
        if not 0.0 <= slope < 1.0:
            raise ValueError(f"slope must be in [0, 1), got {slope!r}")
        self.slope = float(slope)
        self.time_features, tdim = _time_features(time_embed, time_dim, embed_scale)
        self.conv_in = nn.Conv2d(2 * in_channels + tdim, ch, 3, padding=1)
        blocks, cur = [], ch
        for m in mults:
            blocks.append(_DBlock(cur, ch * m, self.slope))
            cur = ch * m
        self.blocks = nn.ModuleList(blocks)
        self.out = nn.Linear(cur, 1)

    def forward(self, x_prev: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """Logits of shape ``(B,)``."""
        for name, x in (("x_prev", x_prev), ("x_t", x_t)):
            if x.dim() != 4 or x.shape[1] != self.in_channels:
                raise ValueError(f"{name} must have shape (batch, {self.in_channels}, H, W), got "
                                 f"{tuple(x.shape)}")
        if x_prev.shape != x_t.shape:
            raise ValueError(f"x_prev {tuple(x_prev.shape)} and x_t {tuple(x_t.shape)} differ")
        f = per_unique_time(_batch_time(t, x_t), self.time_features).to(x_t.dtype)
        planes = f[:, :, None, None].expand(-1, -1, *x_t.shape[2:])
        h = self.conv_in(torch.cat([x_prev, x_t, planes], dim=1))
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i < len(self.blocks) - 1:
                h = F.avg_pool2d(h, 2, ceil_mode=True)
        h = F.leaky_relu(h, self.slope).sum(dim=(2, 3))
        return self.out(h)[:, 0]


GENERATORS = {"mlp": MLPGenerator, "unet": ZUNet}
DISCRIMINATORS = {"mlp": MLPDiscriminator, "conv": ConvDiscriminator}
