"""Exact Gaussian-mixture oracle: diffused log-densities and scores for every linear process.

If ``x0 ~ sum_k w_k N(m_k, diag(S_k))`` and the forward process is linear, then
``u_t ~ sum_k w_k N(Psi (m_k, 0), Psi S~_k Psi^T + Sigma(t | 0))`` (REFERENCE.md §4), with
``S~_k`` including the process's initial covariance (CLD's velocity). So the exact score of
every diffused marginal is known in closed form; a sampler driven by it must reproduce the
mixture as its NFE grows. All math runs in float64 with log-sum-exp; outputs follow the input's
dtype and device.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .processes.base import LinearProcess, ScoreFn, as_time

_F64 = torch.float64


class GaussianMixture:
    """A mixture of Gaussians with diagonal (or isotropic) covariances in ``R^d``.

    Args:
        means: ``(K, d)`` component means.
        weights: ``(K,)`` non-negative weights (normalised here).
        stds: ``(K,)`` isotropic or ``(K, d)`` diagonal standard deviations.
    """

    def __init__(
        self, means: Tensor, weights: Tensor | None = None, stds: Tensor | float = 0.1
    ) -> None:
        means = torch.as_tensor(means, dtype=_F64)
        if means.dim() != 2:
            raise ValueError(f"means must have shape (K, d), got {tuple(means.shape)}")
        n_comp, dim = means.shape
        weights = (
            torch.full((n_comp,), 1.0 / n_comp, dtype=_F64)
            if weights is None
            else torch.as_tensor(weights, dtype=_F64)
        )
        if weights.shape != (n_comp,) or bool((weights < 0).any()) or float(weights.sum()) <= 0:
            raise ValueError(
                f"weights must be {n_comp} non-negative numbers with a positive sum, got {weights}"
            )
        stds = torch.as_tensor(stds, dtype=_F64)
        if stds.dim() == 0:
            stds = stds.expand(n_comp)
        if stds.dim() == 1:
            if stds.shape != (n_comp,):
                raise ValueError(f"stds must have shape ({n_comp},) or ({n_comp}, {dim})")
            stds = stds[:, None].expand(n_comp, dim)
        if stds.shape != (n_comp, dim) or bool((stds <= 0).any()):
            raise ValueError(
                f"stds must be positive with shape ({n_comp},) or ({n_comp}, {dim}), "
                f"got {tuple(stds.shape)}"
            )
        self.means = means.clone()
        self.weights = weights / weights.sum()
        self.stds = stds.clone()

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.n_components}, d={self.dim})"

    # ------------------------------------------------------------------ data space
    def sample(
        self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
    ) -> tuple[Tensor, Tensor]:
        """Draw ``n`` exact samples; returns ``(x, component labels)``."""
        gen_dev = generator.device if generator is not None else "cpu"
        labels = torch.multinomial(
            self.weights.to(gen_dev), n, replacement=True, generator=generator
        )
        z = torch.randn(n, self.dim, generator=generator, device=gen_dev, dtype=_F64)
        labels = labels.cpu()
        x = self.means[labels] + self.stds[labels] * z.cpu()
        return x.to(dtype), labels

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density of data ``x`` of shape ``(B, d)``."""
        x64 = self._check(x, self.dim, "x").to(_F64).cpu()
        var = self.stds**2
        diff = x64[:, None, :] - self.means[None]
        comp = -0.5 * ((diff**2) / var + torch.log(2 * math.pi * var)).sum(-1)
        return torch.logsumexp(comp + torch.log(self.weights), dim=1).to(x.dtype).to(x.device)

    def assign(self, x: Tensor) -> Tensor:
        """The most likely component of each sample (for mode metrics)."""
        return torch.argmax(self.posterior(x), dim=1)

    def posterior(self, x: Tensor) -> Tensor:
        """Exact component posteriors ``p(k | x)`` of data ``x``, shape ``(B, K)`` (float64):
        with each component a class, the probability that a sample belongs to each class."""
        x64 = self._check(x, self.dim, "x").to(_F64).cpu()
        var = self.stds**2
        diff = x64[:, None, :] - self.means[None]
        comp = -0.5 * ((diff**2) / var + torch.log(2 * math.pi * var)).sum(-1)
        return torch.softmax(comp + torch.log(self.weights), dim=1)

    def conditional(self, values: Tensor, known: Tensor) -> GaussianMixture:
        """The exact ``p(x_unknown | x_known = values)`` (REFERENCE.md §9.3), the reference of
        inpainting: covariances are diagonal, so each component keeps its unknown coordinates'
        means and stds and is reweighted by ``w_k N(values; m_k, S_k)`` on the known ones.

        ``values`` and ``known`` (bool) have shape ``(d,)``; ``values`` is read where known.
        """
        known = torch.as_tensor(known, dtype=torch.bool)
        values = torch.as_tensor(values, dtype=_F64).reshape(-1)
        if known.shape != (self.dim,) or values.shape != (self.dim,):
            raise ValueError(f"values and known must have shape ({self.dim},), got "
                             f"{tuple(values.shape)} and {tuple(known.shape)}")
        if bool(known.all()) or not bool(known.any()):
            raise ValueError("known must mark some, but not all, coordinates")
        var = self.stds[:, known] ** 2
        diff = values[known][None] - self.means[:, known]
        loglik = -0.5 * (diff**2 / var + torch.log(2 * math.pi * var)).sum(-1)
        logw = torch.log(self.weights) + loglik
        weights = torch.softmax(logw, dim=0)
        return GaussianMixture(self.means[:, ~known], weights, self.stds[:, ~known])

    def cdf_1d(self, x: Tensor) -> Tensor:
        """The exact CDF of a 1-D mixture at points ``x`` (for Wasserstein distances)."""
        if self.dim != 1:
            raise ValueError(f"cdf_1d needs a 1-D mixture, this one has d = {self.dim}")
        z = (torch.as_tensor(x, dtype=_F64)[..., None] - self.means[:, 0]) / self.stds[:, 0]
        return (0.5 * (1 + torch.erf(z / math.sqrt(2.0))) * self.weights).sum(-1)

    # ------------------------------------------------------------------ diffused marginals
    def _components(self, process: LinearProcess, t: Tensor) -> tuple[Tensor, Tensor]:
        """Per-component means ``(T, K, d, k)`` and covariances ``(T, K, d, k, k)`` at ``t``."""
        psi = process.mean_coef(t).cpu()  # (T, k, k)
        base = process.marginal_cov(t).cpu()  # (T, k, k): kernel from a fixed x0 (+ init cov)
        col = psi[..., :, 0]  # (T, k): how x0 enters the state
        outer = col[..., :, None] * col[..., None, :]  # (T, k, k)
        cov = base[:, None, None] + outer[:, None, None] * (self.stds**2)[None, :, :, None, None]
        mean = psi[:, None, None, :, 0] * self.means[None, :, :, None]  # (T, K, d, k)
        return mean, cov

    def _per_sample(self, process: LinearProcess, u: Tensor, t: float | Tensor):
        """Flattened float64 state ``(B, d, k)`` and component stats indexed per sample."""
        k = process.k
        u64 = self._check(u, self.dim * k, "u").to(_F64).cpu()
        ub = u64.reshape(u64.shape[0], k, self.dim).transpose(1, 2)  # (B, d, k)
        t = as_time(t).cpu()
        if t.dim() == 0:
            t = t.expand(u64.shape[0])
        if t.shape != (u64.shape[0],):
            raise ValueError(
                f"t must be a scalar or have shape ({u64.shape[0]},), got {tuple(t.shape)}"
            )
        uniq, inv = torch.unique(t, return_inverse=True)
        mean, cov = self._components(process, uniq)
        prec = torch.linalg.inv(cov)
        logdet = torch.logdet(cov).sum(-1)  # (T, K)
        return ub, mean, prec, logdet, inv

    def marginal_log_prob(self, process: LinearProcess, u: Tensor, t: float | Tensor) -> Tensor:
        """Exact ``log p_t(u)`` of the diffused mixture (the joint (x, v) density for CLD)."""
        logp, _ = self._log_prob_and_score(process, u, t, want_score=False)
        return logp.to(u.dtype).to(u.device)

    def marginal_score(
        self, process: LinearProcess, u: Tensor, t: float | Tensor, full: bool = False
    ) -> Tensor:
        """Exact score of the diffused marginal: the noise-block score (``∇_v`` for CLD) by
        default, the full-state score ``∇_u log p_t`` with ``full=True``."""
        _, score = self._log_prob_and_score(process, u, t, want_score=True)
        score = score.to(u.dtype).to(u.device)
        return score if full else process.noise_part(score)

    def conditional_score(
        self, process: LinearProcess, u: Tensor, t: float | Tensor, labels: Tensor,
        full: bool = False,
    ) -> Tensor:
        """Exact class-conditional score ``∇ log p_t(u | c)`` with each component a class
        (``labels``: one component per sample): the diffused component's Gaussian score."""
        labels = torch.as_tensor(labels).cpu().long()
        if labels.shape != (u.shape[0],) or labels.numel() and (
                int(labels.min()) < 0 or int(labels.max()) >= self.n_components):
            raise ValueError(f"labels must be ({u.shape[0]},) components in [0, "
                             f"{self.n_components - 1}], got shape {tuple(labels.shape)}")
        _, score = self._log_prob_and_score(process, u, t, want_score=True, labels=labels)
        score = score.to(u.dtype).to(u.device)
        return score if full else process.noise_part(score)

    def guided_score_fn(self, process: LinearProcess, labels: Tensor,
                        guidance: float = 0.0) -> ScoreFn:
        """Classifier-free guidance with exact scores (REFERENCE.md §9.1):
        ``(1 + w) ∇ log p_t(u | c) - w ∇ log p_t(u)``; ``w = 0`` is the conditional score."""

        def fn(u: Tensor, t: Tensor) -> Tensor:
            cond = self.conditional_score(process, u, t, labels)
            if not guidance:
                return cond
            return (1.0 + guidance) * cond - guidance * self.marginal_score(process, u, t)

        return fn

    def _log_prob_and_score(
        self, process: LinearProcess, u: Tensor, t: float | Tensor, want_score: bool,
        labels: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """``log p_t(u)`` and the score; with ``labels`` the score of each sample's component
        (its responsibility set to one)."""
        k = process.k
        ub, mean, prec, logdet, inv = self._per_sample(process, u, t)
        n = ub.shape[0]
        chunk = max(1, 2_000_000 // max(1, self.n_components * self.dim * k * k))
        logps, scores = [], []
        for lo in range(0, n, chunk):
            sl = slice(lo, lo + chunk)
            idx = inv[sl]
            diff = ub[sl, None] - mean[idx]  # (b, K, d, k)
            pd = (prec[idx] @ diff[..., None])[..., 0]  # (b, K, d, k)
            quad = (diff * pd).sum((-1, -2))  # (b, K)
            comp = (
                -0.5 * quad
                - 0.5 * logdet[idx]
                - 0.5 * self.dim * k * math.log(2 * math.pi)
                + torch.log(self.weights)
            )
            logp = torch.logsumexp(comp, dim=1)
            logps.append(logp)
            if want_score:
                resp = (torch.softmax(comp, dim=1) if labels is None  # (b, K)
                        else torch.nn.functional.one_hot(labels[sl], comp.shape[1]).to(_F64))
                score = -(resp[..., None, None] * pd).sum(1)  # (b, d, k)
                scores.append(score.transpose(1, 2).reshape(score.shape[0], k * self.dim))
        logp = torch.cat(logps)
        return logp, (torch.cat(scores) if want_score else None)

    # ------------------------------------------------------------------ labelled mixture
    def component_log_joint(self, process: LinearProcess, u: Tensor, t: float | Tensor
                            ) -> Tensor:
        """``log w_c + log N(u; diffused component c)`` of every component c, ``(B, K)``
        float64 on the CPU, differentiable in ``u``: with each component a class, its
        ``log_softmax`` is the exact class posterior ``log p_t(c | u)`` (REFERENCE.md §9.2)."""
        k = process.k
        ub, mean, prec, logdet, inv = self._per_sample(process, u, t)
        diff = ub[:, None] - mean[inv]  # (B, K, d, k)
        pd = (prec[inv] @ diff[..., None])[..., 0]
        quad = (diff * pd).sum((-1, -2))
        return (-0.5 * quad - 0.5 * logdet[inv] - 0.5 * self.dim * k * math.log(2 * math.pi)
                + torch.log(self.weights))

    def class_log_posterior(self, process: LinearProcess, u: Tensor, t: float | Tensor
                            ) -> Tensor:
        """Exact ``log p_t(c | u)`` of every component ``c`` (``(B, K)``, float64 on the CPU,
        differentiable in ``u``): the ideal noise-conditional classifier."""
        return torch.log_softmax(self.component_log_joint(process, u, t), dim=1)

    def score_fn(self, process: LinearProcess) -> ScoreFn:
        """The exact score as a score model ``score_fn(u, t)`` (noise-block convention)."""

        def fn(u: Tensor, t: Tensor) -> Tensor:
            return self.marginal_score(process, u, t)

        return fn

    def marginal_sample(
        self,
        process: LinearProcess,
        n: int,
        t: float,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Exact samples of the diffused marginal ``p_t`` (states, shape ``(n, k d)``)."""
        x0, _ = self.sample(n, generator, dtype=_F64)
        u_t, _ = process.perturb(x0, as_time(t).expand(n), generator)
        return u_t.to(dtype)

    @staticmethod
    def _check(u: Tensor, width: int, name: str) -> Tensor:
        if u.dim() != 2 or u.shape[1] != width:
            raise ValueError(
                f"{name} must have shape (batch, {width}) for this mixture, got {tuple(u.shape)}"
            )
        return u


# ---------------------------------------------------------------------- ready-made mixtures
def grid25(spacing: float = 1.0, std: float = 0.05) -> GaussianMixture:
    """25 equally weighted sharp modes on a 5 x 5 grid centred at 0 (DDGAN's coverage toy)."""
    ax = (torch.arange(5, dtype=_F64) - 2) * spacing
    gx, gy = torch.meshgrid(ax, ax, indexing="ij")
    return GaussianMixture(torch.stack([gx.flatten(), gy.flatten()], 1), None, std)


def imbalanced2d() -> GaussianMixture:
    """Four 2-D modes with weights 0.55, 0.30, 0.14, 0.01: the smallest holds 1% of the mass."""
    means = torch.tensor([[-1.0, -1.0], [1.2, -0.8], [-0.6, 1.3], [1.4, 1.4]], dtype=_F64)
    weights = torch.tensor([0.55, 0.30, 0.14, 0.01], dtype=_F64)
    stds = torch.tensor([0.25, 0.15, 0.1, 0.08], dtype=_F64)
    return GaussianMixture(means, weights, stds)


def mixture64d(seed: int = 0) -> GaussianMixture:
    """16 components in 64-D: random unit-scale means, diagonal stds in [0.05, 0.3] (fixed seed)."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(16, 64, generator=gen, dtype=_F64) / math.sqrt(2.0)
    stds = 0.05 + 0.25 * torch.rand(16, 64, generator=gen, dtype=_F64)
    weights = 0.5 + torch.rand(16, generator=gen, dtype=_F64)
    return GaussianMixture(means, weights, stds)


def two_mode_1d() -> GaussianMixture:
    """REFERENCE.md §3.2's 1-D check: 0.3 N(-0.8, 0.05^2) + 0.7 N(0.6, 0.05^2)."""
    return GaussianMixture(
        torch.tensor([[-0.8], [0.6]], dtype=_F64), torch.tensor([0.3, 0.7], dtype=_F64), 0.05
    )


MIXTURES = {
    "grid25": grid25,
    "imbalanced2d": imbalanced2d,
    "mixture64d": mixture64d,
    "two_mode_1d": two_mode_1d,
}


def get_mixture(name: str) -> GaussianMixture:
    """A ready-made mixture by name; an unknown name lists the valid ones."""
    if name not in MIXTURES:
        raise ValueError(f"unknown mixture {name!r}; valid mixtures: {', '.join(MIXTURES)}")
    return MIXTURES[name]()
