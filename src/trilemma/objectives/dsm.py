"""Denoising score matching for processes on x alone (REFERENCE.md §2.1).

``x_t = alpha_t x0 + sigma_t eps``; target score ``-eps/sigma_t``. Per-sample loss, averaged over
data dimensions, ``lambda(t) || s_theta(x_t, t) + eps/sigma_t ||^2`` with

- ``quality``: ``lambda = sigma_t^2`` — the epsilon MSE ``||eps_theta - eps||^2`` of DDPM;
- ``likelihood``: ``lambda = g(t)^2`` with uniform ``t``; the loss estimates
  ``(1/D) int g^2 E||s - grad log p(x_t|x0)||^2 dt``, and ``D/2`` times it is the score-matching
  term of the NLL bound (Song et al. 2021, maximum likelihood training);
- ``likelihood_is``: the same weighting with ``t`` importance-sampled from ``r(t) ∝ g^2/sigma^2``,
  which cuts the estimator's variance; the loss carries the weight ``g^2/(sigma^2 r)``;
- ``edm``: EDM's ``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2`` on the
  denoiser error ``||x0_hat - x0||^2`` in the VE-equivalent ``sigma = sigma_t/alpha_t``; as the
  epsilon MSE is ``||x0_hat - x0||^2 / sigma^2``, the loss is the epsilon MSE times
  ``1 + sigma^2/sigma_data^2``. With the ``edm`` prediction it is ``||F_theta - F_target||^2``,
  unit weight on the network's own output at every noise level;
- ``velocity``: the rectified flow's objective ``||v_theta - (eps - x0)||^2`` (REFERENCE §10.2):
  with ``s = -(x + (1 - t) v)/t`` the residual ``sigma^2 ||s + eps/sigma||^2`` is
  ``(1 - t)^2 ||v - (eps - x0)||^2``, so the weight is ``1/alpha_t^2`` (rectified flow only).

Times: ``t_sampling = "uniform"`` draws ``t ~ U[train_eps, T]`` (``likelihood_is`` draws its
own); ``"lognormal"`` draws EDM's ``ln sigma ~ N(p_mean, p_std^2)``
(:func:`~trilemma.objectives.tsampling.edm_sigma_times`), for the ``quality`` and ``edm``
weightings only (the likelihood weightings are bounds for uniform / importance-sampled ``t``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..processes.base import ScalarProcess, per_sample
from ..processes.flow import RectifiedFlow
from .tsampling import ImportanceTimes, edm_loss_weight, edm_sigma_times, uniform_times

DSM_WEIGHTINGS = ("quality", "likelihood", "likelihood_is", "edm", "velocity")
#: the weightings that need the rectified flow (``alpha_t = 1 - t``, ``sigma_t = t``)
FLOW_WEIGHTINGS = ("velocity",)
T_SAMPLINGS = ("uniform", "lognormal")
#: the weightings that may use EDM's log-normal noise levels
LOGNORMAL_WEIGHTINGS = ("quality", "edm")

#: a parametrised score network ``model(u, t[, labels]) -> score`` (what the losses train)
ScoreNet = Callable[..., Tensor]


def likelihood_importance(process: ScalarProcess) -> ImportanceTimes:
    """The importance sampler ``r(t) ∝ g(t)^2 / sigma_t^2`` on ``[train_eps, T]``."""
    return ImportanceTimes(
        lambda t: process.diffusion_sq(t) / process.sigma(t) ** 2, process.train_eps, process.T
    )


def check_t_sampling(t_sampling: str, weighting: str) -> None:
    """A ValueError unless ``t_sampling`` is known and fits ``weighting``."""
    if t_sampling not in T_SAMPLINGS:
        raise ValueError(f"unknown t_sampling {t_sampling!r}; valid: {', '.join(T_SAMPLINGS)}")
    if t_sampling == "lognormal" and weighting not in LOGNORMAL_WEIGHTINGS:
        raise ValueError(f"t_sampling 'lognormal' does not fit weighting {weighting!r} (a "
                         "likelihood bound needs its own t); use it with: "
                         + ", ".join(LOGNORMAL_WEIGHTINGS))


def _draw_times(process: ScalarProcess, n: int, weighting: str, t_sampling: str,
                generator: torch.Generator | None, device: torch.device,
                importance: ImportanceTimes | None, lognormal: tuple[float, float]
                ) -> tuple[Tensor, Tensor | None]:
    """Training times ``t`` (and the importance ratio for ``likelihood_is``)."""
    if weighting == "likelihood_is":
        sampler = importance if importance is not None else likelihood_importance(process)
        return sampler.sample(n, generator, device=device)
    if t_sampling == "lognormal":
        return edm_sigma_times(n, process, *lognormal, generator=generator, device=device)[0], None
    return uniform_times(n, process.train_eps, process.T, generator, device=device), None


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
    t_sampling: str = "uniform",
    p_mean: float = -1.2,
    p_std: float = 1.2,
    sigma_data: float = 0.5,
    noise: Tensor | None = None,
) -> Tensor:
    """Per-sample DSM loss (shape ``(B,)``) of a score model ``model(u, t[, labels])``;
    ``noise`` (default: fresh) couples each ``x0`` with a given ``eps`` (reflow's pairs)."""
    if weighting not in DSM_WEIGHTINGS:
        raise ValueError(f"unknown DSM weighting {weighting!r}; valid: {', '.join(DSM_WEIGHTINGS)}")
    check_t_sampling(t_sampling, weighting)
    if not isinstance(process, ScalarProcess):
        raise ValueError(f"DSM here is for VP/sub-VP/VE processes; use HSM for {process.name!r}")
    if weighting in FLOW_WEIGHTINGS and not isinstance(process, RectifiedFlow):
        raise ValueError(f"weighting {weighting!r} is the rectified flow's objective; process "
                         f"{process.name!r} needs another weighting")
    ratio = None
    if t is None:
        t, ratio = _draw_times(process, x0.shape[0], weighting, t_sampling, generator,
                               x0.device, importance, (p_mean, p_std))
    t = t.to(device=x0.device, dtype=x0.dtype)
    if noise is None:
        u, eps = process.perturb(x0, t, generator)
    else:
        if noise.shape != x0.shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)}, x0 {tuple(x0.shape)}")
        eps = noise.to(x0.dtype)
        u = per_sample(process.alpha(t), x0) * x0 + per_sample(process.sigma(t), x0) * eps
    s = model(u, t) if labels is None else model(u, t, labels)
    sigma = per_sample(process.sigma(t), u)
    residual = (sigma * s + eps).flatten(1).pow(2).mean(1)  # = sigma^2 ||s + eps/sigma||^2 / D
    if weighting == "quality":
        return residual
    if weighting == "velocity":  # (1 - t)^2 ||v - (eps - x0)||^2 / (1 - t)^2
        return residual / (process.alpha(t) ** 2).to(x0.dtype)
    if weighting == "edm":  # sigma^2 lambda(sigma) = 1 + sigma^2 / sigma_data^2
        sig = torch.exp(-process.log_snr(t))
        return (sig**2 * edm_loss_weight(sig, sigma_data)).to(x0.dtype) * residual
    g2_over_s2 = (process.diffusion_sq(t) / process.sigma(t) ** 2).to(x0.dtype)
    if weighting == "likelihood":
        # (T - eps) makes both likelihood estimators estimate int g^2 E||s - target||^2 dt / D
        return (process.T - process.train_eps) * g2_over_s2 * residual
    return ratio.to(x0.dtype) * residual
