"""VAE backbones for LSGM: Gaussian encoders ``q(z0|x)`` and decoders ``p(x|z0)`` (no diffusion).

Two backbones, both ``encode(x) -> (mu, log_std)`` and ``log_likelihood(x, z) -> (B,)`` nats:

- :class:`MLPVAE`: any data shape, flattened; a flat latent ``(latent_dim,)``.
- :class:`ConvVAE`: images ``(C, H, W)``; a spatial latent ``(latent_channels, H/2^k, W/2^k)``
  after ``num_down`` stride-2 convolutions (8x8 digits -> ``latent_channels x 4 x 4``).

Decoders (the data conventions of :mod:`trilemma.data`, everything in [-1, 1]):

- ``gaussian``: ``N(x; m, s^2)`` per coordinate, a density on continuous data; ``decoder_std``
  fixes ``s`` (a float) or, when None, the decoder outputs ``log s`` per coordinate;
- ``bernoulli``: binary data in {-1, 1} (``x > 0`` is a one); the decoder outputs logits;
- ``categorical``: ``levels`` discrete values ``k * 2/(levels - 1) - 1`` (17 for the digits,
  256 for 8-bit images); the decoder outputs ``levels`` logits per coordinate.

Standard deviations are bounded below softly, ``log s = m + softplus(raw - m)`` with
``m = min_log_std``, so no variance collapses to zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import check_kwargs
from .unet import num_groups

DECODERS = ("gaussian", "bernoulli", "categorical")
_LOG_2PI = math.log(2.0 * math.pi)


def _soft_floor(raw: Tensor, floor: float) -> Tensor:
    """``floor + softplus(raw - floor)``: smooth, > floor, ~raw above it."""
    return floor + F.softplus(raw - floor)


# ------------------------------------------------------------------ log-likelihoods (closed forms)
def gaussian_log_prob(x: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """``sum log N(x; mean, exp(log_std)^2)`` per sample."""
    z = (x - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * _LOG_2PI).flatten(1).sum(1)


def bernoulli_log_prob(x: Tensor, logits: Tensor) -> Tensor:
    """``sum log Bernoulli(b; sigmoid(logits))`` per sample, ``b = x > 0`` (data in {-1, 1})."""
    b = (x > 0).to(logits.dtype)
    return -F.binary_cross_entropy_with_logits(logits, b, reduction="none").flatten(1).sum(1)


def to_level_index(x: Tensor, levels: int) -> Tensor:
    """Integer level ``k`` of data stored as ``k * 2/(levels - 1) - 1`` (rounded, clamped)."""
    k = torch.round((x.to(torch.float64) + 1.0) * ((levels - 1) / 2.0))
    return k.clamp(0, levels - 1).to(torch.long)


def categorical_log_prob(x: Tensor, logits: Tensor, levels: int) -> Tensor:
    """``sum log Cat(k; softmax(logits))`` per sample; ``logits``: ``(B, levels, *x[0])``."""
    if logits.shape[1] != levels or logits.shape[2:] != x.shape[1:]:
        raise ValueError(f"categorical logits must have shape (B, {levels}, "
                         f"{', '.join(map(str, x.shape[1:]))}), got {tuple(logits.shape)}")
    logp = torch.log_softmax(logits, dim=1)
    k = to_level_index(x, levels).unsqueeze(1)
    return logp.gather(1, k).squeeze(1).flatten(1).sum(1)


# ------------------------------------------------------------------ the shared VAE logic
class VAE(nn.Module):
    """Base class: a Gaussian encoder and a decoder of kind ``gaussian``/``bernoulli``/
    ``categorical``. Subclasses build ``_encode_raw(x) -> (B, 2, *latent_shape)`` and
    ``_decode_raw(z) -> (B, P, *data_shape)`` with ``P = self.params_per_dim``."""

    def __init__(
        self,
        data_shape: Sequence[int],
        latent_shape: Sequence[int],
        decoder: str = "gaussian",
        decoder_std: float | None = None,
        levels: int = 256,
        min_log_std: float = -7.0,
    ) -> None:
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {list(DECODERS)}, got {decoder!r}")
        if decoder_std is not None and not (isinstance(decoder_std, (int, float))
                                            and math.isfinite(decoder_std) and decoder_std > 0):
            raise ValueError(f"decoder_std must be a positive number or None, got {decoder_std!r}")
        if decoder == "categorical" and (isinstance(levels, bool) or not isinstance(levels, int)
                                         or levels < 2):
            raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
        if not math.isfinite(min_log_std):
            raise ValueError(f"min_log_std must be finite, got {min_log_std!r}")
        self.data_shape = tuple(int(s) for s in data_shape)
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.decoder = decoder
        self.decoder_std = None if decoder_std is None else float(decoder_std)
        self.levels = int(levels)
        self.min_log_std = float(min_log_std)

    @property
    def params_per_dim(self) -> int:
        """Decoder outputs per data coordinate."""
        if self.decoder == "gaussian":
            return 1 if self.decoder_std is not None else 2
        if self.decoder == "bernoulli":
            return 1
        return self.levels

    @property
    def latent_dim(self) -> int:
        """Number of latent coordinates ``D``."""
        return math.prod(self.latent_shape)

    @property
    def data_dim(self) -> int:
        """Number of data coordinates."""
        return math.prod(self.data_shape)

    def _check_x(self, x: Tensor) -> None:
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"x has sample shape {tuple(x.shape[1:])}, the VAE expects "
                             f"{self.data_shape}")

    def _check_z(self, z: Tensor) -> None:
        if tuple(z.shape[1:]) != self.latent_shape:
            raise ValueError(f"z has sample shape {tuple(z.shape[1:])}, the VAE's latent shape "
                             f"is {self.latent_shape}")

    def _encode_raw(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _decode_raw(self, z: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- encoder
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, log_std)`` of ``q(z0|x)``, latent-shaped."""
        self._check_x(x)
        raw = self._encode_raw(x)
        mu, raw_log_std = raw[:, 0], raw[:, 1]
        return mu, _soft_floor(raw_log_std, self.min_log_std)

    @staticmethod
    def reparameterize(mu: Tensor, log_std: Tensor,
                       generator: torch.Generator | None = None) -> Tensor:
        """``z0 = mu + exp(log_std) * eps``, ``eps`` from ``generator``."""
        dev = generator.device if generator is not None else mu.device
        eps = torch.randn(mu.shape, generator=generator, device=dev, dtype=mu.dtype).to(mu.device)
        return mu + torch.exp(log_std) * eps

    # ---- decoder
    def decoder_params(self, z: Tensor) -> Tensor:
        """Raw decoder output ``(B, P, *data_shape)``."""
        self._check_z(z)
        return self._decode_raw(z)

    def _gaussian(self, out: Tensor) -> tuple[Tensor, Tensor]:
        mean = out[:, 0]
        if self.decoder_std is not None:
            return mean, torch.full_like(mean, math.log(self.decoder_std))
        return mean, _soft_floor(out[:, 1], self.min_log_std)

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """``log p(x | z)`` per sample (nats; a density for the Gaussian decoder)."""
        self._check_x(x)
        out = self.decoder_params(z)
        if self.decoder == "gaussian":
            mean, log_std = self._gaussian(out)
            return gaussian_log_prob(x, mean, log_std)
        if self.decoder == "bernoulli":
            return bernoulli_log_prob(x, out[:, 0])
        return categorical_log_prob(x, out, self.levels)

    def decode(self, z: Tensor, sample: bool = False,
               generator: torch.Generator | None = None) -> Tensor:
        """Data from latents: the decoder's mean (``sample=False``) or a draw from it."""
        out = self.decoder_params(z)
        dev = generator.device if generator is not None else z.device
        if self.decoder == "gaussian":
            mean, log_std = self._gaussian(out)
            if not sample:
                return mean
            noise = torch.randn(mean.shape, generator=generator, device=dev, dtype=mean.dtype)
            return mean + torch.exp(log_std) * noise.to(mean.device)
        if self.decoder == "bernoulli":
            p = torch.sigmoid(out[:, 0])
            if not sample:
                return 2.0 * p - 1.0
            u = torch.rand(p.shape, generator=generator, device=dev, dtype=p.dtype).to(p.device)
            return (u < p).to(p.dtype) * 2.0 - 1.0
        probs = torch.softmax(out, dim=1)
        values = torch.linspace(-1.0, 1.0, self.levels, device=z.device, dtype=probs.dtype)
        if not sample:
            return (probs * values.reshape((1, -1) + (1,) * (probs.dim() - 2))).sum(1)
        flat = probs.movedim(1, -1).reshape(-1, self.levels)
        idx = torch.multinomial(flat.to(dev), 1, generator=generator).to(z.device)
        return values[idx.reshape(probs.movedim(1, -1).shape[:-1])]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Alias of :meth:`encode`."""
        return self.encode(x)


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class MLPVAE(VAE):
    """A VAE with MLP encoder and decoder on flattened data and a flat latent.

    Args:
        data_shape: shape of one sample (flattened inside).
        latent_dim: ``D``.
        hidden, depth: width and number of hidden layers of encoder and decoder.
        decoder, decoder_std, levels, min_log_std: see :class:`VAE` and the module docstring.
    """

    def __init__(
        self,
        data_shape: Sequence[int],
        latent_dim: int = 2,
        hidden: int = 128,
        depth: int = 2,
        decoder: str = "gaussian",
        decoder_std: float | None = None,
        levels: int = 256,
        min_log_std: float = -7.0,
    ) -> None:
        for name, val, lo in (("latent_dim", latent_dim, 1), ("hidden", hidden, 1),
                              ("depth", depth, 1)):
            if isinstance(val, bool) or not isinstance(val, int) or val < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {val!r}")
        super().__init__(data_shape, (latent_dim,), decoder, decoder_std, levels, min_log_std)
        d = self.data_dim
        self.encoder = _mlp([d] + [hidden] * depth + [2 * latent_dim])
        self.decoder_net = _mlp([latent_dim] + [hidden] * depth + [d * self.params_per_dim])

    def _encode_raw(self, x: Tensor) -> Tensor:
        return self.encoder(x.flatten(1)).reshape(x.shape[0], 2, *self.latent_shape)

    def _decode_raw(self, z: Tensor) -> Tensor:
        return self.decoder_net(z).reshape(z.shape[0], self.params_per_dim, *self.data_shape)


class _Res(nn.Module):
    """GroupNorm-SiLU-conv residual block (no time input)."""

    def __init__(self, ch: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(num_groups(ch), ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1),
            nn.GroupNorm(num_groups(ch), ch), nn.SiLU(), nn.Dropout(dropout),
            nn.Conv2d(ch, ch, 3, padding=1),
        )

    def forward(self, h: Tensor) -> Tensor:
        return h + self.body(h)


class ConvVAE(VAE):
    """A convolutional VAE for images ``(C, H, W)`` with a spatial latent.

    Args:
        data_shape: ``(C, H, W)``.
        latent_channels: channels of the latent map.
        base_channels: width at full resolution (doubled after each downsampling).
        num_down: stride-2 downsamplings (``H -> ceil(H/2)`` each) to the latent resolution.
        num_res_blocks: residual blocks per resolution in encoder and decoder.
        dropout: dropout inside the residual blocks.
        decoder, decoder_std, levels, min_log_std: see :class:`VAE`.
    """

    def __init__(
        self,
        data_shape: Sequence[int],
        latent_channels: int = 2,
        base_channels: int = 32,
        num_down: int = 1,
        num_res_blocks: int = 1,
        dropout: float = 0.0,
        decoder: str = "gaussian",
        decoder_std: float | None = None,
        levels: int = 256,
        min_log_std: float = -7.0,
    ) -> None:
        if len(tuple(data_shape)) != 3:
            raise ValueError(f"ConvVAE needs image data (C, H, W), got shape {tuple(data_shape)}")
        for name, val, lo in (("latent_channels", latent_channels, 1),
                              ("base_channels", base_channels, 1), ("num_down", num_down, 0),
                              ("num_res_blocks", num_res_blocks, 0)):
            if isinstance(val, bool) or not isinstance(val, int) or val < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {val!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        c, h, w = (int(s) for s in data_shape)
        sizes = [(h, w)]
        for _ in range(num_down):
            sizes.append((-(-sizes[-1][0] // 2), -(-sizes[-1][1] // 2)))
        super().__init__(data_shape, (latent_channels, *sizes[-1]), decoder, decoder_std,
                         levels, min_log_std)
        self.sizes = sizes
        chans = [base_channels * 2**i for i in range(num_down + 1)]
        enc: list[nn.Module] = [nn.Conv2d(c, chans[0], 3, padding=1)]
        for i in range(num_down + 1):
            enc += [_Res(chans[i], dropout) for _ in range(num_res_blocks)]
            if i < num_down:
                enc.append(nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1))
        top = chans[-1]
        enc += [nn.GroupNorm(num_groups(top), top), nn.SiLU(),
                nn.Conv2d(top, 2 * latent_channels, 1)]
        self.encoder = nn.Sequential(*enc)
        self.dec_in = nn.Conv2d(latent_channels, top, 3, padding=1)
        self.dec_blocks = nn.ModuleList()
        self.dec_up = nn.ModuleList()
        for i in reversed(range(num_down + 1)):
            self.dec_blocks.append(nn.Sequential(*[_Res(chans[i], dropout)
                                                   for _ in range(num_res_blocks)]))
            if i > 0:
                self.dec_up.append(nn.Conv2d(chans[i], chans[i - 1], 3, padding=1))
        self.dec_out = nn.Sequential(
            nn.GroupNorm(num_groups(chans[0]), chans[0]), nn.SiLU(),
            nn.Conv2d(chans[0], c * self.params_per_dim, 3, padding=1),
        )

    def _encode_raw(self, x: Tensor) -> Tensor:
        out = self.encoder(x)
        return out.reshape(x.shape[0], 2, *self.latent_shape)

    def _decode_raw(self, z: Tensor) -> Tensor:
        h = self.dec_in(z)
        n = len(self.dec_blocks)
        for j, blocks in enumerate(self.dec_blocks):
            h = blocks(h)
            if j < n - 1:
                size = self.sizes[n - 2 - j]
                h = self.dec_up[j](F.interpolate(h, size=size, mode="nearest"))
        out = self.dec_out(h)
        c = self.data_shape[0]
        p = self.params_per_dim
        return out.reshape(z.shape[0], p, c, *self.data_shape[1:])


VAES: dict[str, type[VAE]] = {"mlp_vae": MLPVAE, "conv_vae": ConvVAE}


def latent_shape_of(config: dict, data_shape: Sequence[int]) -> tuple[int, ...]:
    """The latent shape a VAE config gives for ``data_shape`` (without building it)."""
    name = config.get("name")
    if name == "mlp_vae":
        return (int(config.get("latent_dim", 2)),)
    if name == "conv_vae":
        if len(tuple(data_shape)) != 3:
            raise ValueError(f"conv_vae needs image data (C, H, W), got shape {tuple(data_shape)}")
        size = [int(s) for s in tuple(data_shape)[1:]]
        for _ in range(int(config.get("num_down", 1))):
            size = [-(-s // 2) for s in size]
        return (int(config.get("latent_channels", 2)), *size)
    raise ValueError(f"unknown VAE {name!r}; valid VAEs: {', '.join(VAES)}")


def build_vae(config: dict, data_shape: Sequence[int]) -> VAE:
    """Build a VAE from ``{"name": "mlp_vae" | "conv_vae", **kwargs}`` for ``data_shape``."""
    cfg = dict(config)
    name = cfg.pop("name", None)
    if name not in VAES:
        raise ValueError(f"unknown VAE {name!r}; valid VAEs: {', '.join(VAES)}")
    seed = cfg.pop("seed", None)
    check_kwargs("vae", name, VAES[name], {"data_shape": data_shape, **cfg})
    if seed is None:
        return VAES[name](data_shape, **cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return VAES[name](data_shape, **cfg)


__all__ = [
    "DECODERS",
    "VAE",
    "VAES",
    "ConvVAE",
    "MLPVAE",
    "bernoulli_log_prob",
    "build_vae",
    "categorical_log_prob",
    "gaussian_log_prob",
    "latent_shape_of",
    "to_level_index",
]
