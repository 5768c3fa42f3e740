"""Hybrid score matching for CLD, and DSM for CLD as its ablation (REFERENCE.md §2.2).

HSM perturbs ``(x0, v0)`` with ``v0 ~ N(0, gamma M)`` marginalised into the kernel, so only the
velocity score ``grad_v log p(u_t | x0) = -l_t eps_v`` is learned. Per-sample losses, averaged
over data dimensions, with ``alpha_hat = s_theta / (-l_t)``:

- ``reweighted`` (quality, ``lambda = l_t^-2``): ``|| alpha_hat - eps_v ||^2``;
- ``likelihood`` (``lambda = Gamma beta``): ``Gamma beta || s_theta + l_t eps_v ||^2``.

``cld_dsm_loss`` instead samples ``v0`` and conditions on it (``Sigma_0 = eps_num I``): the
target is ``-[Sigma^-1 (u - mu)]_v`` of the narrower kernel; the CLD paper's baseline.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..processes.base import chol_factor, per_sample, randn_like
from ..processes.cld import CLD
from .dsm import ScoreNet
from .tsampling import uniform_times

HSM_WEIGHTINGS = ("reweighted", "likelihood")


def _check(process: CLD, weighting: str) -> None:
    if not isinstance(process, CLD):
        raise ValueError(f"HSM needs a CLD process, got {process.name!r}; use DSM instead")
    if weighting not in HSM_WEIGHTINGS:
        raise ValueError(f"unknown HSM weighting {weighting!r}; valid: {', '.join(HSM_WEIGHTINGS)}")


def _weighted(
    process: CLD, s: Tensor, target_eps: Tensor, ell: Tensor, t: Tensor, weighting: str
) -> Tensor:
    ell = per_sample(ell, s)
    if weighting == "reweighted":
        return (s / (-ell) - target_eps).flatten(1).pow(2).mean(1)
    gb = (process.Gamma * process.beta(t)).to(s.dtype)
    return gb * (s + ell * target_eps).flatten(1).pow(2).mean(1)


def _times(process: CLD, x0: Tensor, weighting: str, generator: torch.Generator | None,
           t: Tensor | None) -> Tensor:
    """Check the inputs; the given times, or ``t ~ U[train_eps, T]``, on ``x0``'s device/dtype."""
    _check(process, weighting)
    if t is None:
        t = uniform_times(x0.shape[0], process.train_eps, process.T, generator, device=x0.device)
    return t.to(device=x0.device, dtype=x0.dtype)


def hsm_loss(
    model: ScoreNet,
    process: CLD,
    x0: Tensor,
    *,
    weighting: str = "reweighted",
    generator: torch.Generator | None = None,
    labels: Tensor | None = None,
    t: Tensor | None = None,
) -> Tensor:
    """Per-sample HSM loss (shape ``(B,)``) of a velocity-score model ``model(u, t[, labels])``."""
    t = _times(process, x0, weighting, generator, t)
    u, noise = process.perturb(x0, t, generator)
    s = model(u, t) if labels is None else model(u, t, labels)
    return _weighted(process, s, process.noise_part(noise), process.hsm_ell(t), t, weighting)


def cld_dsm_loss(
    model: ScoreNet,
    process: CLD,
    x0: Tensor,
    *,
    weighting: str = "reweighted",
    generator: torch.Generator | None = None,
    labels: Tensor | None = None,
    t: Tensor | None = None,
) -> Tensor:
    """DSM for CLD: sample ``v0 ~ N(0, gamma M)`` and regress the score of ``p(u_t | x0, v0)``.

    The weighting uses this narrower kernel's ``l_t`` (the ablation baseline of the CLD paper).
    """
    t = _times(process, x0, weighting, generator, t)
    u0 = process.data_to_state(x0, generator)
    zero = torch.zeros_like(t, dtype=torch.float64)
    cov = process.transition_cov(t, zero) + process.eps_num * torch.eye(2, dtype=torch.float64)
    chol = chol_factor(cov)
    noise = randn_like(u0, generator)
    u = process.apply(process.transition(t, zero), u0) + process.apply(chol, noise)
    s = model(u, t) if labels is None else model(u, t, labels)
    return _weighted(process, s, process.noise_part(noise), 1.0 / chol[..., 1, 1], t, weighting)
