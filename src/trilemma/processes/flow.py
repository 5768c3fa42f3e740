"""The rectified flow (Liu, Gong and Liu 2022) as a scalar process (REFERENCE §10.2).

The linear interpolant ``x_t = (1 - t) x0 + t eps`` is the kernel ``N(alpha_t x0, sigma_t^2 I)``
with ``alpha_t = 1 - t``, ``sigma_t = t``; the SDE with that marginal has
``f = alpha'/alpha = -1/(1 - t)`` and ``g^2 = d sigma^2/dt - 2 f sigma^2 = 2t + 2t^2/(1 - t) =
2t/(1 - t)``, whose probability-flow ODE is ``dx/dt = v`` with the velocity ``v = eps_hat -
x0_hat``. So the process plugs into every scalar-process sampler, and a network may predict
``velocity`` (the flow's own target ``eps - x0``): ``score = -(x + (1 - t) v)/t``,
``x0_hat = x - t v`` (so Tweedie's final denoising call is an exact Euler step to ``t = 0``).

Time range: ``f`` and ``g^2`` blow up at ``t = 1``, where the score ``-x`` carries no
information about the velocity, so samplers start at ``T = 1 - 1e-3`` (default) and end at
``eps = 1e-3``. The prior is ``N(0, I)``: not exact at ``T`` (the marginal there is
``T eps + (1 - T) x0``); coupling both through the same ``eps``, the start point's error is
``W2 <= (1 - T) sqrt(E||x0||^2 + d)`` for ``d`` data coordinates (0.001 times that scale by
default). The float32 velocity recovered from a score at ``T`` loses about ``1/(1 - T)`` in
relative precision (1e3: ~1e-4 absolute at unit scale).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import ScalarProcess
from .tensors import as_time, per_sample

#: the network output kinds: the flow's velocity first (the default), then the scalar ones
FLOW_PREDICTIONS = ("velocity",) + ScalarProcess.predictions


class RectifiedFlow(ScalarProcess):
    """``x_t = (1 - t) x0 + t eps`` on ``[eps, T]`` with ``T < 1`` (module docstring)."""

    name = "rectified_flow"
    predictions = FLOW_PREDICTIONS

    def __init__(self, T: float = 1.0 - 1e-3, eps: float = 1e-3) -> None:
        for key, val in (("T", T), ("eps", eps)):
            if not (isinstance(val, (int, float)) and not isinstance(val, bool)
                    and math.isfinite(val)):
                raise ValueError(f"{key} must be a finite number, got {val!r}")
        if not 0.5 < T < 1:
            raise ValueError(f"T must lie in (0.5, 1) for the rectified flow (f and g^2 are "
                             f"infinite at t = 1), got {T!r}")
        if not 0 < eps < 0.5:
            raise ValueError(f"eps must lie in (0, 0.5), got {eps!r}")
        self.T, self.eps = float(T), float(eps)

    def alpha(self, t: Tensor) -> Tensor:
        return 1.0 - as_time(t)

    def sigma(self, t: Tensor) -> Tensor:
        return as_time(t).clone()

    def f(self, t: Tensor) -> Tensor:
        return -1.0 / (1.0 - as_time(t))

    def diffusion_sq(self, t: Tensor) -> Tensor:
        t = as_time(t)
        return 2.0 * t / (1.0 - t)

    def transition_var(self, t: Tensor, s: Tensor) -> Tensor:
        # t^2 - ((1-t)/(1-s))^2 s^2 factored: (t - s)(t + s - 2ts)/(1 - s)^2 (no cancellation)
        t, s = as_time(t), as_time(s)
        return (t - s) * (t + s - 2.0 * t * s) / (1.0 - s) ** 2

    def log_snr(self, t: float | Tensor) -> Tensor:
        t = as_time(t)
        return torch.log1p(-t) - torch.log(t)

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        return torch.sigmoid(-as_time(lam))

    def prior_cov(self) -> Tensor:
        return torch.ones(1, 1, dtype=torch.float64)

    def prediction_to_score(self, prediction: str, out: Tensor, u: Tensor, t: Tensor,
                            sigma_data: float | None = None) -> Tensor:
        """``velocity``: ``v = eps_hat - x0_hat`` with ``u = (1 - t) x0_hat + t eps_hat``, so
        ``eps_hat = u + (1 - t) v`` and ``score = -eps_hat / t``; others as every scalar process."""
        if self.check_prediction(prediction) != "velocity":
            return super().prediction_to_score(prediction, out, u, t, sigma_data)
        a, s = self._alpha_sigma(t, u)
        return -(u + per_sample(a, out) * out) / per_sample(s, out)

    def score_to_prediction(self, prediction: str, score: Tensor, u: Tensor, t: Tensor,
                            sigma_data: float | None = None) -> Tensor:
        """Inverse of :meth:`prediction_to_score`: ``v = -(u + t score)/(1 - t)``."""
        if self.check_prediction(prediction) != "velocity":
            return super().score_to_prediction(prediction, score, u, t, sigma_data)
        a, s = self._alpha_sigma(t, u)
        return -(u + per_sample(s, score) * score) / per_sample(a, score)

    def reverse_drift(self, u: Tensor, t: Tensor, score: Tensor,
                      probability_flow: bool = False) -> Tensor:
        """The PF-ODE drift is the velocity itself (``f u - g^2 s / 2 = v`` exactly), computed
        so, without the two ``u/(1 - t)`` terms that cancel; the SDE drift as every process."""
        if not probability_flow:
            return super().reverse_drift(u, t, score)
        return self.velocity(u, self._time_batch(t, u.shape[0], u.device), score)

    def velocity(self, u: Tensor, t: Tensor, score: Tensor) -> Tensor:
        """The flow's velocity ``dx/dt`` at ``(u, t)`` implied by a score (the PF-ODE drift)."""
        return self.score_to_prediction("velocity", score, u, t)

    def config(self) -> dict:
        return {"T": self.T, "eps": self.eps}
