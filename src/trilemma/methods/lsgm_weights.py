"""Stage-wise LSGM training: a previous LSGM run's weights (the VAE, and the prior when it fits)
loaded into a new model, for ``model.init_from`` (stage 1 -> stage 2)."""

from __future__ import annotations

import os

import torch
from torch import nn

from ..runs import locate_run
from ..train.checkpoint import load_weights


def load_lsgm_weights(model: nn.Module, path: str | os.PathLike,
                      prior: bool | None = None) -> list[str]:
    """Load a previous LSGM run's (EMA) weights into ``model``: the VAE always, the prior when
    ``prior`` is True (default: when the source run trained it, i.e. its stage was not ``vae``,
    and its shapes match). Returns the loaded keys; the step counter is not loaded."""
    saved = locate_run(path)
    tensors, _ = load_weights(saved.weights)
    src_model = (saved.config or {}).get("model", {})
    if src_model.get("method") != "lsgm":
        raise ValueError(f"init_from {os.fspath(path)!r} is not an LSGM run "
                         "(its config has no model.method: lsgm)")
    if prior is None:
        prior = src_model.get("stage", "joint") != "vae"
    own = model.state_dict()
    vae_keys = [k for k in own if k.startswith("vae.")]
    missing = [k for k in vae_keys if k not in tensors]
    bad = [k for k in vae_keys if k in tensors and tensors[k].shape != own[k].shape]
    if missing or bad:
        raise ValueError(f"init_from {os.fspath(path)!r}: its VAE does not fit this one "
                         f"(missing {missing[:4]}, shape mismatch {bad[:4]}); use the same "
                         "model.vae settings and data")
    keys = list(vae_keys)
    if prior:
        pk = [k for k in own if k.startswith("prior.")]
        if all(k in tensors and tensors[k].shape == own[k].shape for k in pk):
            keys += pk
        elif prior is True and src_model.get("stage") != "vae":
            raise ValueError(f"init_from {os.fspath(path)!r}: its prior does not fit this "
                             "one (same model.net, process, prediction and classes needed)")
    with torch.no_grad():
        for k in keys:
            own[k].copy_(tensors[k].to(own[k].device, own[k].dtype))
    return keys
