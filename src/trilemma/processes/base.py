"""The linear forward SDE abstraction shared by every process.

Every process in trilemma is linear and acts identically on each data coordinate:
``du = F(t) u dt + G(t) dw``, where the state ``u`` stacks ``k`` blocks of the data's shape
along the channel axis (``k = 1`` for VP/sub-VP/VE, ``k = 2`` for CLD's ``(x, v)``). So every
coefficient is a ``k x k`` matrix per time, computed in float64, and the perturbation kernel is
Gaussian: ``p(u_t | u_0) = N(Psi(t, 0) u_0, Sigma_t)``.

Score convention: a *score model* returns the score with respect to the coordinates the noise
drives (the range of ``G``): the whole state for ``k = 1``, the velocity ``v`` for CLD. Any
score of that kind determines the denoised estimate ``x0_hat`` (Tweedie), and through it the
full-state score, so every sampler can work from the same score model.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor

from .precond import edm_score_coefs
from .tensors import as_time, chol_factor, per_sample, randn_like

ScoreFn = Callable[[Tensor, Tensor], Tensor]
"""``score_fn(u, t) -> score`` on the noise-driven coordinates; ``t`` has shape ``(batch,)``."""

_F64 = torch.float64


def bmat(rows: list[list[Tensor | float]], like: Tensor) -> Tensor:
    """Stack scalar-or-tensor entries into a ``like.shape + (k, k)`` float64 matrix."""
    entries = [
        [torch.as_tensor(e, dtype=_F64, device=like.device).expand(like.shape) for e in row]
        for row in rows
    ]
    return torch.stack([torch.stack(r, dim=-1) for r in entries], dim=-2)


class LinearProcess(ABC):
    """A linear forward SDE ``du = F(t) u dt + G(t) dw`` acting per data coordinate.

    Subclasses give the per-coordinate ``k x k`` blocks of ``F``, ``G G^T``, the transition
    ``Psi(t, s)`` and the transition covariance ``Sigma(t | s)`` in closed form; this base class
    builds the kernel, perturbation, prior, reverse drifts and the parametrisation conversions
    from them, so a new process only writes its formulas.
    """

    #: number of state blocks: 1 for x alone, 2 for CLD's (x, v)
    k: int = 1
    #: index of the block the noise drives (and the score model predicts)
    noise_block: int = 0
    #: terminal time
    T: float = 1.0
    #: smallest time a sampler integrates down to (then an optional denoising step)
    eps: float = 1e-3
    #: smallest training time
    train_eps: float = 1e-5
    name: str = "process"

    # ---------------------------------------------------------------- coefficients (float64)
    @abstractmethod
    def drift_matrix(self, t: Tensor) -> Tensor:
        """``F(t)``: shape ``t.shape + (k, k)``."""

    @abstractmethod
    def diffusion_sq(self, t: Tensor) -> Tensor:
        """``g(t)^2``: the scalar variance rate on the noise block (``G G^T = g^2 e e^T``)."""

    @abstractmethod
    def transition(self, t: Tensor, s: Tensor) -> Tensor:
        """``Psi(t, s)``: the solution map of ``du = F u dt`` from ``s`` to ``t``."""

    @abstractmethod
    def transition_cov(self, t: Tensor, s: Tensor) -> Tensor:
        """``Sigma(t | s)``: covariance of ``u_t`` given a fixed ``u_s``."""

    def init_cov(self) -> Tensor:
        """Covariance (``k x k``) of the initial state given the data (zero for k = 1)."""
        return torch.zeros(self.k, self.k, dtype=_F64)

    @abstractmethod
    def prior_cov(self) -> Tensor:
        """Covariance (``k x k``) of the prior ``p_T`` per coordinate."""

    def diffusion_matrix_sq(self, t: Tensor) -> Tensor:
        """``G(t) G(t)^T`` as a ``k x k`` matrix (noise only on the noise block)."""
        t = as_time(t)
        out = torch.zeros(*t.shape, self.k, self.k, dtype=_F64, device=t.device)
        out[..., self.noise_block, self.noise_block] = self.diffusion_sq(t)
        return out

    # ---------------------------------------------------------------- marginals
    def mean_coef(self, t: float | Tensor) -> Tensor:
        """``Psi(t, 0)``: the marginal mean is ``mean_coef(t) @ u_0``."""
        t = as_time(t)
        return self.transition(t, torch.zeros_like(t))

    def marginal_cov(self, t: float | Tensor, init_cov: Tensor | None = None) -> Tensor:
        """``Sigma_t = Psi S0 Psi^T + Sigma(t | 0)`` for initial covariance ``S0``."""
        t = as_time(t)
        s0 = (self.init_cov() if init_cov is None else init_cov).to(t.device, _F64)
        psi = self.mean_coef(t)
        return psi @ s0 @ psi.transpose(-1, -2) + self.transition_cov(t, torch.zeros_like(t))

    def marginal_chol(self, t: float | Tensor) -> Tensor:
        """Lower Cholesky factor ``L_t`` of the marginal covariance (closed form for 2 x 2)."""
        return chol_factor(self.marginal_cov(t))

    # ---------------------------------------------------------------- tensor helpers
    def split(self, u: Tensor) -> list[Tensor]:
        """Split a state ``(B, k*C, ...)`` into its ``k`` data-shaped blocks."""
        if self.k == 1:
            return [u]
        if u.dim() < 2 or u.shape[1] % self.k:
            raise ValueError(
                f"state u has shape {tuple(u.shape)}; a {self.name} state needs a channel axis "
                f"(dim 1) divisible by {self.k}"
            )
        return list(u.chunk(self.k, dim=1))

    def join(self, blocks: list[Tensor]) -> Tensor:
        """Inverse of :meth:`split`."""
        return blocks[0] if self.k == 1 else torch.cat(blocks, dim=1)

    def apply(self, m: Tensor, u: Tensor) -> Tensor:
        """Apply per-sample ``k x k`` matrices ``m`` (shape ``(B, k, k)`` or ``(k, k)``)."""
        blocks = self.split(u)
        m = m.to(device=u.device, dtype=u.dtype)  # coefficients may live on the CPU (prior)
        if m.dim() == 2:
            m = m.expand(u.shape[0], self.k, self.k)
        out = []
        for i in range(self.k):
            acc = per_sample(m[:, i, 0], u) * blocks[0]
            for j in range(1, self.k):
                acc = acc + per_sample(m[:, i, j], u) * blocks[j]
            out.append(acc)
        return self.join(out)

    def data_to_state(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Lift data to an initial state: ``(x0, v0)`` with ``v0 ~ N(0, init_cov_vv)`` for CLD."""
        if self.k == 1:
            return x0
        s0 = self.init_cov()
        blocks = [x0]
        for i in range(1, self.k):
            std = math.sqrt(float(s0[i, i]))
            blocks.append(std * randn_like(x0, generator))
        return self.join(blocks)

    def state_to_data(self, u: Tensor) -> Tensor:
        """The data block ``x`` of a state."""
        return self.split(u)[0]

    def _time_batch(self, t: float | Tensor, batch: int, device: torch.device) -> Tensor:
        t = as_time(t, device)
        if t.dim() == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise ValueError(
                f"time t must be a scalar or have shape ({batch},), got {tuple(t.shape)}"
            )
        return t

    # ---------------------------------------------------------------- forward
    def perturb(
        self, x0: Tensor, t: float | Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Sample ``u_t ~ p(u_t | x_0)`` with the initial velocity marginalised (HSM for CLD).

        Returns ``(u_t, noise)`` with ``u_t = Psi(t, 0) (x0, 0) + L_t noise`` and ``noise``
        standard normal of the state's shape.
        """
        t = self._time_batch(t, x0.shape[0], x0.device)
        u0 = self.join([x0] + [torch.zeros_like(x0)] * (self.k - 1))
        noise = randn_like(u0, generator)
        u_t = self.apply(self.mean_coef(t), u0) + self.apply(self.marginal_chol(t), noise)
        return u_t, noise

    def prior_sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Sample the prior ``p_T`` for data of ``shape`` (batch first); returns a state."""
        data = torch.empty(shape, device=device, dtype=dtype)
        blocks = self.join([data] * self.k)
        z = randn_like(blocks, generator)
        chol = chol_factor(self.prior_cov())
        return self.apply(chol, z)

    def prior_logp(self, u: Tensor) -> Tensor:
        """Log-density of the prior at states ``u``, summed over all but the batch axis."""
        cov = self.prior_cov().to(u.device)
        prec = torch.linalg.inv(cov).to(u.dtype)
        blocks = self.split(u)
        quad = torch.zeros_like(blocks[0])
        for i in range(self.k):
            for j in range(self.k):
                quad = quad + prec[i, j] * blocks[i] * blocks[j]
        n = blocks[0][0].numel()
        logdet = float(torch.logdet(cov))
        const = -0.5 * n * (self.k * math.log(2 * math.pi) + logdet)
        return const - 0.5 * quad.flatten(1).sum(1)

    # ---------------------------------------------------------------- reverse time
    def drift(self, u: Tensor, t: Tensor) -> Tensor:
        """Forward drift ``F(t) u``."""
        t = self._time_batch(t, u.shape[0], u.device)
        return self.apply(self.drift_matrix(t), u)

    def on_noise_block(self, block_value: Tensor) -> Tensor:
        """A state that is ``block_value`` on the noise block and zero elsewhere."""
        if self.k == 1:
            return block_value
        blocks = [torch.zeros_like(block_value) for _ in range(self.k)]
        blocks[self.noise_block] = block_value
        return self.join(blocks)

    def replace_noise_block(self, u: Tensor, block_value: Tensor) -> Tensor:
        """``u`` with its noise-driven block replaced by ``block_value``."""
        if self.k == 1:
            return block_value
        blocks = self.split(u)
        blocks[self.noise_block] = block_value
        return self.join(blocks)

    def noise_part(self, u: Tensor) -> Tensor:
        """The noise-driven block of a state (what a score model predicts the score of)."""
        return self.split(u)[self.noise_block]

    def reverse_drift(
        self, u: Tensor, t: Tensor, score: Tensor, probability_flow: bool = False
    ) -> Tensor:
        """Reverse-SDE drift ``F u - G G^T s`` (or ODE ``F u - 1/2 G G^T s``), in forward time."""
        t = self._time_batch(t, u.shape[0], u.device)
        g2 = per_sample(self.diffusion_sq(t), u)
        factor = 0.5 if probability_flow else 1.0
        return self.drift(u, t) - self.on_noise_block(factor * g2 * score)

    # ---------------------------------------------------------------- parametrisations
    def score_to_x0(self, u: Tensor, t: Tensor, score: Tensor) -> Tensor:
        """Tweedie: the data estimate ``E[x0 | u_t]`` implied by a noise-block score.

        Uses ``score = -[Sigma_t^{-1} (u - Psi (x0, 0))]_noise``, linear in ``x0``.
        """
        t = self._time_batch(t, u.shape[0], u.device)
        prec = torch.linalg.inv(self.marginal_cov(t))  # (B, k, k)
        psi0 = self.mean_coef(t)[..., :, 0]  # (B, k): column acting on x0
        n = self.noise_block
        row = prec[..., n, :]  # (B, k)
        a = (row * psi0).sum(-1)  # score = -(row . u) + a x0
        ru = self.apply(_row_as_matrix(row, self.k), u)
        ru = self.split(ru)[0]
        return (score + ru) / per_sample(a, score)

    def x0_to_score(self, u: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """Noise-block score of ``N(Psi (x0, 0), Sigma_t)`` at ``u`` (inverse of score_to_x0)."""
        return self.noise_part(self.x0_to_full_score(u, t, x0))

    def x0_to_full_score(self, u: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """The full-state score ``-Sigma_t^{-1} (u - Psi (x0, 0))``."""
        t = self._time_batch(t, u.shape[0], u.device)
        u0 = self.join([x0] + [torch.zeros_like(x0)] * (self.k - 1))
        mean = self.apply(self.mean_coef(t), u0)
        prec = torch.linalg.inv(self.marginal_cov(t))
        return -self.apply(prec, u - mean)

    def full_score(self, u: Tensor, t: Tensor, score: Tensor) -> Tensor:
        """Full-state score from a noise-block score (exact for any data distribution)."""
        if self.k == 1:
            return score
        return self.x0_to_full_score(u, t, self.score_to_x0(u, t, score))

    # ---------------------------------------------------------------- network outputs
    #: what a network may predict (first: the default); subclasses add their own kinds
    predictions: tuple[str, ...] = ("score",)

    def check_prediction(self, prediction: str) -> str:
        """``prediction`` if this process converts it, else a ValueError naming the valid ones."""
        if prediction not in self.predictions:
            raise ValueError(f"prediction {prediction!r} does not fit process {self.name!r}; "
                             f"valid predictions: {', '.join(self.predictions)}")
        return prediction

    def prediction_to_score(self, prediction: str, out: Tensor, u: Tensor, t: Tensor,
                            sigma_data: float | None = None) -> Tensor:
        """The noise-block score at ``(u, t)`` meant by a network output ``out`` of kind
        ``prediction`` (the one conversion of network outputs every score model shares);
        ``sigma_data`` is read by the kinds that need the data's scale (``edm``)."""
        self.check_prediction(prediction)
        return out

    def score_to_prediction(self, prediction: str, score: Tensor, u: Tensor, t: Tensor,
                            sigma_data: float | None = None) -> Tensor:
        """Inverse of :meth:`prediction_to_score` (samplers read ``eps_hat`` this way)."""
        self.check_prediction(prediction)
        return score

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({fields})"

    def config(self) -> dict:
        """Constructor arguments, for checkpoints and reports."""
        return {}


class ScalarProcess(LinearProcess):
    """A process on x alone with kernel ``N(alpha_t x0, sigma_t^2 I)`` (VP, sub-VP, VE).

    Subclasses give ``alpha(t)``, ``sigma(t)`` (marginal std from the data), ``f(t)`` (drift
    scalar) and ``g2(t)``; ``transition_var(t, s)`` is the variance of ``x_t`` given ``x_s``.
    """

    k = 1

    @abstractmethod
    def alpha(self, t: Tensor) -> Tensor:
        """Mean coefficient ``alpha_t`` of the kernel from the data."""

    @abstractmethod
    def sigma(self, t: Tensor) -> Tensor:
        """Standard deviation ``sigma_t`` of the kernel from the data."""

    @abstractmethod
    def f(self, t: Tensor) -> Tensor:
        """Scalar drift coefficient ``f(t)`` in ``dx = f x dt + g dw``."""

    @abstractmethod
    def transition_var(self, t: Tensor, s: Tensor) -> Tensor:
        """Variance of ``x_t`` given ``x_s``."""

    def log_snr(self, t: float | Tensor) -> Tensor:
        """``lambda_t = log(alpha_t / sigma_t)``, the half log signal-to-noise ratio."""
        t = as_time(t)
        return torch.log(self.alpha(t)) - torch.log(self.sigma(t))

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        """Inverse of :meth:`log_snr` (bisection in float64; subclasses may override)."""
        lam = as_time(lam)
        lo = torch.full_like(lam, self.train_eps * 0.1)
        hi = torch.full_like(lam, self.T)
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            above = self.log_snr(mid) > lam  # log-SNR decreases in t
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return 0.5 * (lo + hi)

    def drift_matrix(self, t: Tensor) -> Tensor:
        return self.f(as_time(t))[..., None, None]

    def transition(self, t: Tensor, s: Tensor) -> Tensor:
        t, s = as_time(t), as_time(s)
        return (self.alpha(t) / self.alpha(s))[..., None, None]

    def transition_cov(self, t: Tensor, s: Tensor) -> Tensor:
        return self.transition_var(as_time(t), as_time(s))[..., None, None]

    def mean_coef(self, t: float | Tensor) -> Tensor:
        return self.alpha(as_time(t))[..., None, None]

    def marginal_cov(self, t: float | Tensor, init_cov: Tensor | None = None) -> Tensor:
        t = as_time(t)
        base = (self.sigma(t) ** 2)[..., None, None]
        if init_cov is None:
            return base
        return base + self.alpha(t)[..., None, None] ** 2 * init_cov.to(t.device, _F64)

    def marginal_chol(self, t: float | Tensor) -> Tensor:
        return self.sigma(as_time(t))[..., None, None]

    # ---- fast paths for k = 1 (no matrices); coefficients combined in float64, then cast
    def _alpha_sigma(self, t: float | Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        t = self._time_batch(t, like.shape[0], like.device)
        return self.alpha(t), self.sigma(t)

    def perturb(
        self, x0: Tensor, t: float | Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        noise = randn_like(x0, generator)
        a, s = self._alpha_sigma(t, x0)
        return per_sample(a, x0) * x0 + per_sample(s, x0) * noise, noise

    def score_to_x0(self, u: Tensor, t: Tensor, score: Tensor) -> Tensor:
        a, s = self._alpha_sigma(t, u)
        return (u + per_sample(s**2, u) * score) / per_sample(a, u)

    def x0_to_full_score(self, u: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        a, s = self._alpha_sigma(t, u)
        return -(u - per_sample(a, u) * x0) / per_sample(s**2, u)

    predictions = ("eps", "x0", "v", "score", "edm")

    def prediction_to_score(self, prediction: str, out: Tensor, u: Tensor, t: Tensor,
                            sigma_data: float | None = None) -> Tensor:
        """``eps``: ``s = -eps/sigma``; ``x0``: Tweedie inverted; ``v = alpha eps - sigma x0``
        (Salimans & Ho 2022; with ``u = alpha x0 + sigma eps``, ``eps = (sigma u + alpha v) /
        (alpha^2 + sigma^2)`` for any scalar kernel): ``s = -(u + (alpha/sigma) v) / (alpha^2 +
        sigma^2)``; ``score`` as is; ``edm``: EDM's ``F`` with ``x0_hat = c_skip x + c_out F``
        (:mod:`.precond`: ``s = -k_u u + k_F F``, needs ``sigma_data``)."""
        if self.check_prediction(prediction) in ("score", "x0"):
            return out if prediction == "score" else self.x0_to_score(u, t, out)
        a, s = self._alpha_sigma(t, u)
        if prediction == "eps":
            return -out / per_sample(s, out)
        if prediction == "edm":
            k_u, k_f = edm_score_coefs(a, s, sigma_data)
            return per_sample(k_f, out) * out - per_sample(k_u, out) * u
        return -(u + per_sample(a / s, out) * out) / per_sample(a**2 + s**2, out)

    def score_to_prediction(self, prediction: str, score: Tensor, u: Tensor, t: Tensor,
                            sigma_data: float | None = None) -> Tensor:
        """Inverse of :meth:`prediction_to_score`: ``eps = -sigma s``, ``x0`` by Tweedie,
        ``v = -(sigma/alpha) (u + (alpha^2 + sigma^2) s)``, ``F = (s + k_u u) / k_F``."""
        if self.check_prediction(prediction) in ("score", "x0"):
            return score if prediction == "score" else self.score_to_x0(u, t, score)
        a, s = self._alpha_sigma(t, u)
        if prediction == "eps":
            return -per_sample(s, score) * score
        if prediction == "edm":
            k_u, k_f = edm_score_coefs(a, s, sigma_data)
            return (score + per_sample(k_u, score) * u) / per_sample(k_f, score)
        return -per_sample(s / a, score) * (u + per_sample(a**2 + s**2, score) * score)

    def config(self) -> dict:
        return {}


def _row_as_matrix(row: Tensor, k: int) -> Tensor:
    """Put a ``(B, k)`` row vector in the first row of a ``(B, k, k)`` matrix."""
    m = torch.zeros(*row.shape[:-1], k, k, dtype=row.dtype, device=row.device)
    m[..., 0, :] = row
    return m
