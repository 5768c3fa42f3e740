"""Score networks (they know nothing of diffusion): a residual MLP and a DDPM-style U-Net.

Every network is called as ``net(x, t, labels=None)`` with ``t`` of shape ``(B,)``; the
parametrisation (epsilon, x0, score, preconditioning) lives with the method, EDM-style.
Build one from a config with :func:`build_net`, e.g.
``build_net({"name": "unet", "in_channels": 1, "out_channels": 1, "image_size": 8})``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .checks import check_kwargs
from .embeddings import GaussianFourierEmbedding, SinusoidalEmbedding, time_embedding
from .external import DiffusersUNet, ExternalNet, build_external, is_class_path
from .mlp import MLP
from .unet import UNet, num_groups

NETS: dict[str, Callable[..., nn.Module]] = {"mlp": MLP, "unet": UNet,
                                              "diffusers_unet": DiffusersUNet}

__all__ = [
    "MLP",
    "DiffusersUNet",
    "ExternalNet",
    "NETS",
    "GaussianFourierEmbedding",
    "SinusoidalEmbedding",
    "UNet",
    "build_net",
    "check_kwargs",
    "count_parameters",
    "num_groups",
    "time_embedding",
]


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable, by default) scalar parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def build_net(config: dict[str, Any]) -> nn.Module:
    """Build a network from ``{"name": "mlp" | "unet" | "diffusers_unet", "seed": int
    (optional), **kwargs}``, or ``{"name": "package.module:Class", **kwargs}`` for a class of
    your own (wrapped in :class:`~trilemma.nets.external.ExternalNet`).

    With ``seed`` the initial weights are reproducible and the global RNG is left untouched
    (the construction runs under a forked RNG state). Lists (from YAML/JSON) are accepted
    wherever a tuple is expected.
    """
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    cfg = dict(config)
    if "name" not in cfg:
        raise ValueError(f"net config needs key 'name' (one of {', '.join(NETS)})")
    name = cfg.pop("name")
    seed = cfg.pop("seed", None)
    if is_class_path(name):
        def make() -> nn.Module:
            return build_external(name, cfg)
    elif name not in NETS:
        raise ValueError(f"unknown net {name!r}; valid nets: {', '.join(NETS)}, or "
                         "'package.module:Class' for a class of your own")
    else:
        cls = NETS[name]
        if name != "diffusers_unet":  # it passes **kwargs on to UNet2DModel, which checks them
            check_kwargs("net", name, cls, cfg)

        def make() -> nn.Module:
            return cls(**cfg)
    if seed is None:
        return make()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return make()
