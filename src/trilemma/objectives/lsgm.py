"""LSGM's latent cross entropy as denoising score matching, for VP-type SDEs and CLD (REFERENCE §7).

Setting: an encoder ``q(z0|x) = N(mu, diag(var))``, a score-based prior ``p_theta`` on the latents
(the reverse SDE of ``process`` started from its prior), ``D`` latent dimensions. With ``kappa_t``
the noise scale of the perturbation kernel (``1/sigma_t`` for VP, ``l_t`` for CLD: the kernel's
noise-block score is ``-kappa_t eps``), ``g_t^2`` the diffusion rate and ``s_theta`` the prior's
noise-block score, every per-sample loss here is written in the ``eps`` form

    (w(t) / r(t)) || eps + s_theta(u_t, t) / kappa_t ||^2,   t ~ r(t),

with the weightings ``w_ll = g^2 kappa^2 / 2`` (likelihood: this makes the loss a bound),
``w_un = 1`` (unweighted: the eps MSE) and ``w_re = g^2`` (reweighted).

The cross-entropy bound (derived in ``docs`` of :func:`ce_constant`; exact for any linear SDE):

    CE(q(z) || p_theta(z)) <= E_{t ~ r} [(w_ll/r) ||eps + s/kappa||^2] + c(mu, var)

    c = CE(Q_T || pi) - (D/2) log(det Sigma_T / det Sigma_tmin) - [CLD] H_Q(v | z)(t_min)

- ``Q_t`` is the diffused encoder distribution (Gaussian, closed form), ``pi`` the SDE prior,
  ``Sigma_t`` the per-coordinate kernel covariance given ``z0`` (``sigma_t^2`` for VP; CLD's HSM
  kernel with ``v0 ~ N(0, gamma M)`` marginalised). The log-det term comes from
  ``d/dt log det Sigma = 2 tr F + g^2 kappa^2``: the entropy of ``Q_t`` changes by
  ``D tr F + (g^2/2) Fisher(Q_t)`` and the DSM/HSM regression target adds the known
  ``E||grad log q(u_t|z0)||^2 = D kappa^2`` over the Fisher information.
- When ``Q_T = pi`` and ``Sigma_T = I`` (VP) this is REFERENCE's constant
  ``(D/2)(1 + log(2 pi sigma^2(t_min)))``; the exact ``CE(Q_T || pi)`` costs nothing (``Q_T`` is
  Gaussian) and removes the ``O(alpha_T^2)`` bias (0.05% of ``||mu||^2 / 2`` for geometric VP).
- CLD (state ``(z, v)``): the bound on the latent marginal uses the auxiliary-variable bound
  ``-log p(z) <= E_{Q(v|z)}[-log p(z, v) + log Q(v|z)]``, hence the conditional entropy of the
  velocity at ``t_min`` (closed form: ``Q_tmin`` is Gaussian). With the CLD "Normal" prior (see
  :func:`normal_score`) the model's ``p(v|z)`` equals ``Q(v|z)`` up to ``O(B(t_min))``, so the
  bound is tight there, as for VP. Only the likelihood weighting ``Gamma beta`` of HSM
  (``w_ll = (g^2/2) l_t^2``) keeps the bound; the reweighted/unweighted HSM losses do not.

All of it bounds the cross entropy of the latent diffused to ``t_min = process.train_eps``
(``z_tmin = alpha z0 + sigma eps``); the decoder reads ``z0``, the LSGM approximation, off by
``O(sigma^2(t_min))`` (1e-6 for VP). The probability-flow ELBO of
:meth:`trilemma.methods.LSGM.nll` has no such gap.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..processes.base import LinearProcess, as_time, per_sample
from ..processes.cld import CLD
from ..processes.scalar import VPFamily
from .tsampling import ImportanceTimes

PRIOR_WEIGHTINGS = ("ll", "un", "re")
T_SAMPLINGS = ("importance", "uniform")
_F64 = torch.float64
_LOG_2PI = math.log(2.0 * math.pi)

#: a latent score network ``model(u, t) -> score``
ScoreNet = Callable[[Tensor, Tensor], Tensor]


def check_latent_process(process: LinearProcess) -> None:
    """Raise unless ``process`` is one LSGM supports in latent space (VP family or CLD)."""
    if not isinstance(process, (VPFamily, CLD)):
        raise ValueError(
            f"LSGM's latent process must be a VP-type SDE (vp, vp_cosine, geometric_vp) or cld, "
            f"got {getattr(process, 'name', type(process).__name__)!r}"
        )


# ------------------------------------------------------------------------ weightings
def noise_scale(process: LinearProcess, t: float | Tensor) -> Tensor:
    """``kappa_t`` (float64): the kernel's noise-block score is ``-kappa_t eps``."""
    if isinstance(process, CLD):
        return process.hsm_ell(t)
    return 1.0 / process.sigma(as_time(t))


def weight(process: LinearProcess, weighting: str, t: float | Tensor) -> Tensor:
    """``w(t)`` (float64): ``ll`` = ``g^2 kappa^2 / 2``, ``un`` = 1, ``re`` = ``g^2``."""
    t = as_time(t)
    if weighting == "ll":
        return 0.5 * process.diffusion_sq(t) * noise_scale(process, t) ** 2
    if weighting == "un":
        return torch.ones_like(t)
    if weighting == "re":
        return process.diffusion_sq(t)
    raise ValueError(f"weighting must be one of {PRIOR_WEIGHTINGS}, got {weighting!r}")


class LatentTimes:
    """Draw ``t`` on ``[train_eps, T]`` for a weighting; ``sample`` returns ``(t, w(t)/r(t))``.

    ``sampling='uniform'``: ``r = 1/(T - t_min)``. ``sampling='importance'``:

    - ``ll`` on a VP-type SDE: LSGM's sampler, ``sigma_t^2`` log-uniform between ``sigma^2(t_min)``
      and ``sigma^2(T)``, i.e. ``r(t) = (d log sigma_t^2/dt) / Delta`` (exact inverse CDF); the
      weight is ``w_ll / r = Delta / (2 alpha_t^2)``. For the geometric VP ``log sigma_t^2`` is
      linear in ``t``, so this is uniform ``t``.
    - ``ll`` on CLD: the same idea, ``r(t) proportional to d log det Sigma_t / dt = 2 (w_ll +
      tr F)`` (``Sigma_t`` the HSM kernel covariance; floored at ``0.01 w_ll`` so ``w/r`` stays
      below ~2000 where the process has equilibrated), tabulated. On the closed-form test of
      ``tests/test_lsgm.py`` it halves the estimator's standard deviation against ``r ~ w_ll``.
    - otherwise ``r(t) proportional to w(t)`` (tabulated, :class:`ImportanceTimes`; uniform for
      ``un``), so ``w/r`` is the constant ``int w``.

    ``E_r[(w/r) f(t)] = int w f dt`` exactly, whichever sampler.
    """

    def __init__(
        self, process: LinearProcess, weighting: str = "ll", sampling: str = "importance",
        n_grid: int = 4096,
    ) -> None:
        check_latent_process(process)
        if weighting not in PRIOR_WEIGHTINGS:
            raise ValueError(f"weighting must be one of {PRIOR_WEIGHTINGS}, got {weighting!r}")
        if sampling not in T_SAMPLINGS:
            raise ValueError(f"t sampling must be one of {T_SAMPLINGS}, got {sampling!r}")
        self.process, self.weighting, self.sampling = process, weighting, sampling
        self.t_min, self.t_max = float(process.train_eps), float(process.T)
        self._table: ImportanceTimes | None = None
        if sampling == "uniform" or weighting == "un":
            self.mode = "uniform"
        elif weighting == "ll" and isinstance(process, VPFamily):
            self.mode = "log_sigma2"
            self._ls_min = float(self._log_sigma2(as_time(self.t_min)))
            self._ls_max = float(self._log_sigma2(as_time(self.t_max)))
            self._delta = self._ls_max - self._ls_min
        elif weighting == "ll":  # CLD
            self.mode = "tabulated"
            self._table = ImportanceTimes(self._cld_log_det_rate, self.t_min, self.t_max,
                                          n_grid=n_grid)
        else:
            self.mode = "tabulated"
            self._table = ImportanceTimes(self.weight, self.t_min, self.t_max, n_grid=n_grid)

    def _cld_log_det_rate(self, t: Tensor) -> Tensor:
        """``max(d log det Sigma_t / dt, 0.01 w_ll)`` for CLD (float64)."""
        p = self.process
        w = weight(p, "ll", t)
        rate = 2.0 * (w - p.Gamma * p.m_inv * p.beta(as_time(t)))
        return torch.maximum(rate, 0.01 * w)

    def _log_sigma2(self, t: Tensor) -> Tensor:
        la = self.process.log_alpha(t)
        return torch.log(-torch.expm1(2.0 * la))

    def weight(self, t: Tensor) -> Tensor:
        """``w(t)`` in float64."""
        return weight(self.process, self.weighting, t)

    def density(self, t: Tensor) -> Tensor:
        """``r(t)`` in float64 (piecewise constant for the tabulated sampler)."""
        t = as_time(t)
        if self.mode == "uniform":
            return torch.full_like(t, 1.0 / (self.t_max - self.t_min))
        if self.mode == "log_sigma2":
            p = self.process
            alpha2 = torch.exp(2.0 * p.log_alpha(t))
            sigma2 = -torch.expm1(2.0 * p.log_alpha(t))
            return p.beta(t) * alpha2 / sigma2 / self._delta
        table = self._table
        idx = torch.searchsorted(table.grid, t.cpu(), right=True).clamp(1, len(table.grid) - 1) - 1
        return table.density[idx].to(t.device)

    def sample(
        self, n: int, generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(t, w(t)/r(t))``, float32 of shape ``(n,)``; the ratio is computed at the float32 t."""
        gen_dev = generator.device if generator is not None else "cpu"
        q = torch.rand(n, generator=generator, device=gen_dev, dtype=_F64).cpu()
        if self.mode == "uniform":
            t = self.t_min + (self.t_max - self.t_min) * q
        elif self.mode == "log_sigma2":
            s2 = torch.exp(self._ls_min + q * self._delta)
            lam = 0.5 * (torch.log1p(-s2) - torch.log(s2))
            t = self.process.t_from_log_snr(lam).clamp(self.t_min, self.t_max)
        else:
            t = self._inverse_cdf(q)
        t32 = t.to(torch.float32)
        t64 = t32.to(_F64)
        ratio = self.weight(t64) / self.density(t64)
        return t32.to(device), ratio.to(device=device, dtype=torch.float32)

    def _inverse_cdf(self, q: Tensor) -> Tensor:
        table = self._table
        idx = torch.searchsorted(table.cdf, q, right=True).clamp(1, len(table.grid) - 1) - 1
        frac = (q - table.cdf[idx]) / (table.cdf[idx + 1] - table.cdf[idx]).clamp_min(1e-300)
        return table.grid[idx] + frac * (table.grid[idx + 1] - table.grid[idx])

    def cdf(self, t: Tensor) -> Tensor:
        """``R(t) = int_{t_min}^t r`` (float64): uniform on [0, 1] under the sampler."""
        t = as_time(t)
        if self.mode == "uniform":
            return (t - self.t_min) / (self.t_max - self.t_min)
        if self.mode == "log_sigma2":
            return (self._log_sigma2(t) - self._ls_min) / self._delta
        table = self._table
        idx = torch.searchsorted(table.grid, t.cpu(), right=True).clamp(1, len(table.grid) - 1) - 1
        return (table.cdf[idx] + table.density[idx] * (t.cpu() - table.grid[idx])).to(t.device)


# ------------------------------------------------------------------------ Gaussian pieces
def gaussian_entropy(log_std: Tensor) -> Tensor:
    """Entropy (nats) of ``N(mu, diag(exp(log_std)^2))`` per sample."""
    d = log_std[0].numel()
    return log_std.flatten(1).sum(1) + 0.5 * d * (1.0 + _LOG_2PI)


def normal_cross_entropy(mu: Tensor, var: Tensor) -> Tensor:
    """``CE(N(mu, diag var) || N(0, I)) = ||mu||^2/2 + sum(var)/2 + (D/2) log 2 pi`` per sample."""
    d = mu[0].numel()
    return 0.5 * (mu.flatten(1).pow(2).sum(1) + var.flatten(1).sum(1)) + 0.5 * d * _LOG_2PI


def _per_coord_cov(process: LinearProcess, t: Tensor) -> tuple[Tensor, Tensor]:
    """``(p, Sigma)``: the kernel's x0 column ``Psi(t,0)[:, 0]`` (k,) and covariance (k, k)."""
    return process.mean_coef(t)[..., :, 0], process.marginal_cov(t)


def ce_constant(process: LinearProcess, mu: Tensor, var: Tensor) -> Tensor:
    """The per-sample analytic term ``c(mu, var)`` of the cross-entropy bound (module docstring).

    ``mu``, ``var``: the encoder's mean and variance, latent-shaped ``(B, ...)``; float64 result
    of shape ``(B,)``, differentiable in ``mu`` and ``var``.
    """
    check_latent_process(process)
    m = mu.flatten(1).to(_F64)
    v = var.flatten(1).to(_F64)
    d = m.shape[1]
    k = process.k
    dev = m.device
    t_end = as_time(process.T, dev)
    t_min = as_time(process.train_eps, dev)
    p1, sig1 = _per_coord_cov(process, t_end)
    p1, sig1 = p1.to(dev), sig1.to(dev)
    prior = process.prior_cov().to(dev)
    prec = torch.linalg.inv(prior)
    a = p1 @ prec @ p1  # p^T P^-1 p
    tr = torch.trace(prec @ sig1)
    ce_end = 0.5 * (d * tr + a * (v.sum(1) + m.pow(2).sum(1))
                    + d * (k * _LOG_2PI + torch.logdet(prior)))
    p0, sig0 = _per_coord_cov(process, t_min)
    p0, sig0 = p0.to(dev), sig0.to(dev)
    const = ce_end - 0.5 * d * (torch.logdet(sig1) - torch.logdet(sig0))
    if k == 2:
        # covariance of Q_tmin per coordinate: Sigma_tmin + var p p^T; entropy of v given z
        cxx = sig0[0, 0] + v * p0[0] ** 2
        cxv = sig0[0, 1] + v * p0[0] * p0[1]
        cvv = sig0[1, 1] + v * p0[1] ** 2
        cond = cvv - cxv**2 / cxx
        const = const - 0.5 * (d * (1.0 + _LOG_2PI) + torch.log(cond).sum(1))
    return const


# ------------------------------------------------------------------------ scores and residuals
def normal_score(process: LinearProcess, u: Tensor, t: Tensor) -> Tensor:
    """Exact noise-block score of the diffused ``N(0, I)`` latent (the Normal prior at time t).

    VP family: ``-u`` (``N(0, I)`` is stationary). CLD: ``z0 ~ N(0, I)``, ``v0 ~ N(0, gamma M)``
    diffuse to ``N(0, S_t)``, ``S_t = Psi diag(1, 0) Psi^T + Sigma_t`` (the HSM kernel
    covariance), so the velocity score is ``-[S_t^-1 u]_v``: linear in ``(z, v)``, exact at every
    t. (The CLD paper's analytic part ``-v / Sigma_vv`` is this score only at ``t = 0`` and
    ``t = T``: it drops the z-v correlation the Hamiltonian part builds up.)
    """
    if isinstance(process, VPFamily):
        return -u
    t64 = as_time(t, u.device)
    if t64.dim() == 0:
        t64 = t64.expand(u.shape[0])
    init = torch.zeros(process.k, process.k, dtype=_F64, device=u.device)
    init[0, 0] = 1.0
    init = init + process.init_cov().to(u.device)
    prec = torch.linalg.inv(process.marginal_cov(t64, init_cov=init))
    return -process.noise_part(process.apply(prec, u))


def eps_residual(process: LinearProcess, score: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """``|| eps + s / kappa_t ||^2`` summed per sample (``eps``: the noise block of ``noise``)."""
    eps = process.noise_part(noise) if noise.shape != score.shape else noise
    kappa = per_sample(noise_scale(process, t), score)
    return (eps + score / kappa).flatten(1).pow(2).sum(1)


def latent_cross_entropy(
    score_model: ScoreNet,
    process: LinearProcess,
    z0: Tensor,
    mu: Tensor,
    var: Tensor,
    *,
    times: LatentTimes | None = None,
    generator: torch.Generator | None = None,
    t: Tensor | None = None,
) -> Tensor:
    """One-sample estimate (per sample, nats) of ``CE(q(z0|x) || p_theta)`` for ``z0 ~ q``.

    ``times`` must use the likelihood weighting (``ll``); by default LSGM's importance sampler.
    With ``t`` given the weight is ``w_ll(t) * (T - t_min)`` (uniform ``t``).
    """
    check_latent_process(process)
    n = z0.shape[0]
    if t is None:
        times = times if times is not None else LatentTimes(process, "ll", "importance")
        if times.weighting != "ll":
            raise ValueError(f"the cross entropy needs the likelihood weighting 'll', the time "
                             f"sampler has {times.weighting!r}")
        t, ratio = times.sample(n, generator, device=z0.device)
    else:
        t = t.to(device=z0.device, dtype=torch.float32)
        ratio = (weight(process, "ll", t) * (process.T - process.train_eps)).to(torch.float32)
    u, noise = process.perturb(z0, t.to(z0.dtype), generator)
    s = score_model(u, t.to(z0.dtype))
    res = eps_residual(process, s, noise, t)
    return ratio.to(z0.dtype) * res + ce_constant(process, mu, var).to(z0.dtype)


__all__ = [
    "PRIOR_WEIGHTINGS",
    "T_SAMPLINGS",
    "LatentTimes",
    "ce_constant",
    "check_latent_process",
    "eps_residual",
    "gaussian_entropy",
    "latent_cross_entropy",
    "noise_scale",
    "normal_cross_entropy",
    "normal_score",
    "weight",
]
