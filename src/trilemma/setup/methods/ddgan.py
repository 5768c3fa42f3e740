"""Setup of denoising diffusion GANs (``model.method: ddgan``): the generator (``model.net``:
``mlp`` for points, ``unet`` for images), the discriminator (``model.disc``: ``mlp`` /
``conv``), the :class:`~trilemma.methods.DDGAN` arguments, a ``sample`` section of its own
chain (``sampler: ddgan``, ``nfe = num_steps``), and the builder.

The schedule's ``beta_min`` / ``beta_max`` come from ``process`` (must be ``vp``);
``use_z: false`` builds the generator with ``z_dim = 0``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ...methods.ddgan import DDGAN, PREDICTIONS, SAMPLERS, TIME_KINDS
from ...nets import check_kwargs
from ...nets.discriminator import DISCRIMINATORS, GENERATORS
from ..registry import MethodSetup
from ..schema import (
    Field,
    check_section,
    fields_from_signature,
    non_negative,
    one_of,
    positive_int,
)
from ..sections import DERIVED_NET_KEYS, sample_fields, size_net, validate_subnet, wrap_errors

if TYPE_CHECKING:
    from ..config import Config

_NOT_CONFIG = ("generator", "discriminator", "data_shape", "beta_min", "beta_max")
_DISC_DERIVED = {"mlp": ("in_dim",), "conv": ("in_channels",)}
_SUBNETS = ("net", "disc")


def _t_min(v: Any) -> str | None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1
    return None if ok else "a number in (0, 1)"


def _subnet(key: str, raw: dict[str, Any], registry: dict[str, Any],
            derived: dict[str, tuple[str, ...]], want: str | None, what: str,
            data: str | None, problems: list[str]) -> dict[str, Any]:
    kind = "images (n, C, H, W)" if data not in (None, "toy") else "points (n, d)"
    default = want or "mlp"
    out = validate_subnet(f"model.{key}", raw.get(key), registry, derived, problems,
                          default=default, want=want, what=what,
                          fits=f"data {data!r} ({kind})",
                          checks={"time_embed": one_of(*TIME_KINDS)})
    if out is None:
        return {"name": default}
    sig = inspect.signature(registry[out["name"]]).parameters.get("time_embed")
    if sig is not None and sig.default != "raw" and out.get("time_embed") == "raw":
        problems.append(f"model.{key}.time_embed: expected one of: "
                        + ", ".join(map(repr, TIME_KINDS[1:])) + ", got 'raw'")
    return out


def validate_model(raw: dict[str, Any], process: str | None, data: str | None,
                   problems: list[str]) -> dict[str, Any]:
    """The ``model`` section of a DDGAN config (see the module docstring)."""
    if process is not None and process != "vp":
        problems.append(f"process.name: DDGAN discretises the VP SDE; use vp (got {process!r})")
    checks = {"num_steps": positive_int, "prediction": one_of(*PREDICTIONS),
              "r1_gamma": non_negative, "lazy_reg": positive_int, "t_min": _t_min}
    fields = {"method": Field("method", str, "ddgan"),
              **fields_from_signature(DDGAN, exclude=_NOT_CONFIG, checks=checks),
              "objective": Field("objective", str, "adversarial", one_of("adversarial"))}
    body = {k: v for k, v in raw.items() if k not in _SUBNETS}
    out = check_section("model", body, fields, problems)
    images = data is not None and data != "toy"
    want_g = None if data is None else ("unet" if images else "mlp")
    want_d = None if data is None else ("conv" if images else "mlp")
    out["net"] = _subnet("net", raw, GENERATORS, DERIVED_NET_KEYS, want_g, "generator", data,
                         problems)
    out["disc"] = _subnet("disc", raw, DISCRIMINATORS, _DISC_DERIVED, want_d, "discriminator",
                          data, problems)
    if out.get("use_z") is True and out["net"].get("z_dim") == 0:
        problems.append("model.net.z_dim: must be >= 1 with use_z: true (or set use_z: false)")
    return out


def validate_sample(raw: Any, model: dict[str, Any], process: str | None,
                    problems: list[str]) -> dict[str, Any]:
    """The ``sample`` section of a DDGAN: ``sampler: ddgan``, ``nfe = num_steps``."""
    steps = model.get("num_steps") if isinstance(model.get("num_steps"), int) else None
    n_before = len(problems)
    out = check_section("sample", raw, sample_fields("ddgan", steps or 4), problems)
    if len(problems) > n_before:
        return out
    if out["sampler"] not in SAMPLERS:
        problems.append(f"sample.sampler: a DDGAN samples with its own chain; use one of: "
                        f"{', '.join(SAMPLERS)} (got {out['sampler']!r})")
    if steps is not None and out["nfe"] != steps:
        problems.append(f"sample.nfe: a DDGAN with num_steps = {steps} makes {steps} network "
                        f"calls; use nfe: {steps} (got {out['nfe']})")
    if out["options"]:
        problems.append(f"sample.options: the ddgan sampler takes no options in a config, got "
                        f"{sorted(out['options'])}")
    return out


def _seeded(seed: int | None, make: Callable[[], nn.Module]) -> nn.Module:
    """Build a module under a forked RNG seeded with ``seed`` (global RNG untouched)."""
    if seed is None:
        return make()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return make()


def net_kwargs(config: Config, data_shape: tuple[int, ...]) -> dict[str, Any]:
    """The generator's config sized for the data."""
    return size_net(config.model["net"], data_shape, seed=config.seed)


def _disc_kwargs(config: Config, shape: tuple[int, ...]) -> dict[str, Any]:
    """The discriminator's config sized for the data (its input is one sample)."""
    kw = dict(config.model.get("disc") or {"name": "mlp"})
    if kw.get("seed") is None:
        kw["seed"] = config.seed + 1
    if kw["name"] == "mlp":
        if len(shape) != 1:
            raise ValueError(f"model.disc.name: 'mlp' needs points (d,), the data has sample "
                             f"shape {shape}; use: conv")
        kw["in_dim"] = shape[0]
    else:
        if len(shape) != 3:
            raise ValueError(f"model.disc.name: 'conv' needs images (C, H, W), the data has "
                             f"sample shape {shape}; use: mlp")
        kw["in_channels"] = shape[0]
    return kw


def build(config: Config, data_shape: tuple[int, ...]) -> DDGAN:
    """The :class:`~trilemma.methods.DDGAN` of a config for data of ``data_shape``."""
    m = config.model
    shape = tuple(int(s) for s in data_shape)
    gen_kw = net_kwargs(config, shape)
    gname, gseed = gen_kw.pop("name"), gen_kw.pop("seed", None)
    if not m.get("use_z", True):
        gen_kw["z_dim"] = 0
    disc_kw = _disc_kwargs(config, shape)
    dname, dseed = disc_kw.pop("name"), disc_kw.pop("seed")

    def make() -> DDGAN:
        check_kwargs("generator", gname, GENERATORS[gname], gen_kw)
        check_kwargs("discriminator", dname, DISCRIMINATORS[dname], disc_kw)
        gen = _seeded(gseed, lambda: GENERATORS[gname](**gen_kw))
        disc = _seeded(dseed, lambda: DISCRIMINATORS[dname](**disc_kw))
        kw = {k: v for k, v in m.items() if k not in ("method", *_SUBNETS, "objective")}
        return DDGAN(gen, disc, shape, beta_min=config.process["beta_min"],
                     beta_max=config.process["beta_max"], **kw)

    return wrap_errors("model", make)


SETUP = MethodSetup(
    name="ddgan",
    summary="denoising diffusion GAN: T (1-8) large denoising steps, each a conditional GAN",
    validate_model=validate_model,
    build=build,
    net_kwargs=net_kwargs,
    validate_sample=validate_sample,
)
