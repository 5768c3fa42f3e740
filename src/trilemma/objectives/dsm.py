"""Denoising score matching for processes on x alone (REFERENCE.md §2.1).

``x_t = alpha_t x0 + sigma_t eps``; target score ``-eps/sigma_t``. Per-sample loss, averaged over
data dimensions, ``lambda(t) || s_theta(x_t, t) + eps/sigma_t ||^2`` with

- ``quality``: ``lambda = sigma_t^2`` — the epsilon MSE ``||eps_theta - eps||^2`` of DDPM;
- ``likelihood``: ``lambda = g(t)^2`` with uniform ``t``; the loss estimates
  ``(1/D) int g^2 E||s - grad log p(x_t|x0)||^2 dt``, and ``D/2`` times it is the score-matching
  term of the NLL bound (Song et al. 2021, maximum likelihood training);
- ``likelihood_is``: the same weighting with ``t`` importance-sampled from ``r(t) ∝ g^2/sigma^2``,
  which cuts the estimator's variance; the loss carries the weight ``g^2/(sigma^2 r)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..processes.base import ScalarProcess, per_sample
from .tsampling import ImportanceTimes, uniform_times

DSM_WEIGHTINGS = ("quality", "likelihood", "likelihood_is")

#: a parametrised score network ``model(u, t[, labels]) -> score`` (what the losses train)
ScoreNet = Callable[..., Tensor]


def likelihood_importance(process: ScalarProcess) -> ImportanceTimes:
    """The importance sampler ``r(t) ∝ g(t)^2 / sigma_t^2`` on ``[train_eps, T]``."""
    return ImportanceTimes(
        lambda t: process.diffusion_sq(t) / process.sigma(t) ** 2, process.train_eps, process.T
    )


def dsm_loss(
    model: ScoreNet,
    process: ScalarProcess,
    x0: Tensor,
    *,
    weighting: str = "quality",
    generator: torch.Generator | None = None,
    labels: Tensor | None = None,
    t: Tensor | None = None,
    importance: ImportanceTimes | None = None,
) -> Tensor:
    """Per-sample DSM loss (shape ``(B,)``) of a score model ``model(u, t[, labels])``."""
    if weighting not in DSM_WEIGHTINGS:
        raise ValueError(f"unknown DSM weighting {weighting!r}; valid: {', '.join(DSM_WEIGHTINGS)}")
    if not isinstance(process, ScalarProcess):
        raise ValueError(f"DSM here is for VP/sub-VP/VE processes; use HSM for {process.name!r}")
    n = x0.shape[0]
    ratio = None
    if t is None:
        if weighting == "likelihood_is":
            sampler = importance if importance is not None else likelihood_importance(process)
            t, ratio = sampler.sample(n, generator, device=x0.device)
        else:
            t = uniform_times(n, process.train_eps, process.T, generator, device=x0.device)
    t = t.to(device=x0.device, dtype=x0.dtype)
    u, eps = process.perturb(x0, t, generator)
    s = model(u, t) if labels is None else model(u, t, labels)
    sigma = per_sample(process.sigma(t), u)
    residual = (sigma * s + eps).flatten(1).pow(2).mean(1)  # = sigma^2 ||s + eps/sigma||^2 / D
    if weighting == "quality":
        return residual
    g2_over_s2 = (process.diffusion_sq(t) / process.sigma(t) ** 2).to(x0.dtype)
    if weighting == "likelihood":
        # (T - eps) makes both likelihood estimators estimate int g^2 E||s - target||^2 dt / D
        return (process.T - process.train_eps) * g2_over_s2 * residual
    return ratio.to(x0.dtype) * residual
