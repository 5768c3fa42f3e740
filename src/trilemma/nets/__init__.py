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
from .mlp import MLP
from .unet import UNet, num_groups

NETS: dict[str, Callable[..., nn.Module]] = {"mlp": MLP, "unet": UNet}

__all__ = [
    "MLP",
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
    """Build a network from ``{"name": "mlp" | "unet", "seed": int (optional), **kwargs}``.

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
    if name not in NETS:
        raise ValueError(f"unknown net {name!r}; valid nets: {', '.join(NETS)}")
    seed = cfg.pop("seed", None)
    cls = NETS[name]
    check_kwargs("net", name, cls, cfg)
    if seed is None:
        return cls(**cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return cls(**cfg)
