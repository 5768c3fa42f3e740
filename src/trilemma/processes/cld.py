"""Critically-damped Langevin diffusion (Dockhorn, Vahdat, Kreis 2022; REFERENCE.md §1.4).

State ``u = (x, v)`` stacked on the channel axis. Per coordinate, with mass ``M``, friction
``Gamma`` and time scale ``beta(t)``::

    dx = M^-1 v beta dt,   dv = (-x - Gamma M^-1 v) beta dt + sqrt(2 Gamma beta) dw.

Critical damping ``Gamma^2 = 4 M`` gives the closed forms below, all functions of
``b = int_s^t beta``. The initial velocity has covariance ``gamma M`` (HSM); ``eps_num`` is added
to the data's variance so every covariance stays positive definite at ``t = 0``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .base import LinearProcess, bmat
from .tensors import as_time, per_sample


def _exp_rem3(x: Tensor) -> Tensor:
    """``e^x - 1 - x - x^2/2`` without cancellation for small ``x``."""
    small = x.abs() < 1e-2
    xs = torch.where(small, x, torch.zeros_like(x))
    series = xs**3 / 6 + xs**4 / 24 + xs**5 / 120 + xs**6 / 720
    return torch.where(small, series, torch.expm1(x) - x - 0.5 * x**2)


class CLD(LinearProcess):
    """Critically-damped Langevin diffusion with the official hyperparameters as defaults.

    ``beta(t) = beta_min + t (beta_max - beta_min)`` (constant 4 by default), ``M = 0.25``,
    ``Gamma = 1`` (critical: ``Gamma^2 = 4 M``), ``gamma = 0.04``, ``eps_num = 1e-6``.
    Prior ``N(x; 0, I) N(v; 0, M I)``.
    """

    k = 2
    noise_block = 1
    name = "cld"

    def __init__(
        self,
        beta_min: float = 4.0,
        beta_max: float | None = None,
        m_inv: float = 4.0,
        gamma: float = 0.04,
        eps_num: float = 1e-6,
        eps: float = 1e-3,
    ) -> None:
        beta_max = beta_min if beta_max is None else beta_max
        for name, val in (("beta_min", beta_min), ("beta_max", beta_max), ("m_inv", m_inv),
                          ("gamma", gamma)):
            if not (math.isfinite(val) and val > 0):
                raise ValueError(f"CLD {name} must be positive and finite, got {val!r}")
        if not (math.isfinite(eps_num) and eps_num >= 0):
            raise ValueError(f"CLD eps_num must be >= 0 and finite, got {eps_num!r}")
        if not (math.isfinite(eps) and 0 < eps < self.T):
            raise ValueError(f"CLD eps must lie in (0, T = {self.T}), got {eps!r}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)
        self.m_inv = float(m_inv)
        self.mass = 1.0 / self.m_inv
        # critical damping fixes the friction: Gamma^2 = 4 M
        self.Gamma = 2.0 * math.sqrt(self.mass)
        self.gamma = float(gamma)
        self.eps_num = float(eps_num)
        self.eps = float(eps)
        self._r_cache: object | None = None

    # ------------------------------------------------------------------ schedule
    def beta(self, t: Tensor) -> Tensor:
        t = as_time(t)
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integral_beta(self, t: Tensor) -> Tensor:
        """``B(t) = int_0^t beta``."""
        t = as_time(t)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    # ------------------------------------------------------------------ coefficients
    def drift_matrix(self, t: Tensor) -> Tensor:
        b = self.beta(t)
        return bmat([[0.0, self.m_inv * b], [-b, -self.Gamma * self.m_inv * b]], b)

    def diffusion_sq(self, t: Tensor) -> Tensor:
        return 2.0 * self.Gamma * self.beta(t)

    def _psi_b(self, b: Tensor) -> Tensor:
        g = self.Gamma
        e = torch.exp(-2.0 * b / g)
        return bmat(
            [[e * (1 + 2 * b / g), e * 4 * b / g**2], [-e * b, e * (1 - 2 * b / g)]], b
        )

    def _cov_b(self, b: Tensor) -> Tensor:
        """``Sigma(t | s)`` from a fixed state, as a function of ``b = int_s^t beta``."""
        g = self.Gamma
        x = 4.0 * b / g
        e = torch.exp(-x)
        sxx = e * _exp_rem3(x)  # e^x - 1 - 4b/G - 8b^2/G^2
        sxv = e * 4.0 * b**2 / g
        svv = e * ((g**2 / 4) * torch.expm1(x) + b * g - 2.0 * b**2)
        return bmat([[sxx, sxv], [sxv, svv]], b)

    def transition(self, t: Tensor, s: Tensor) -> Tensor:
        return self._psi_b(self.integral_beta(t) - self.integral_beta(s))

    def transition_cov(self, t: Tensor, s: Tensor) -> Tensor:
        return self._cov_b(self.integral_beta(t) - self.integral_beta(s))

    def init_cov(self) -> Tensor:
        return torch.diag(torch.tensor([self.eps_num, self.gamma * self.mass], dtype=torch.float64))

    def prior_cov(self) -> Tensor:
        return torch.diag(torch.tensor([1.0, self.mass], dtype=torch.float64))

    def hsm_ell(self, t: float | Tensor) -> Tensor:
        """``l_t = 1 / L22``: the HSM target is ``grad_v log p(u_t | x0) = -l_t eps_v``."""
        chol = self.marginal_chol(t)
        return 1.0 / chol[..., 1, 1]

    # ------------------------------------------------------------------ network outputs
    #: ``edm`` is the mixed score with EDM-style input scaling (each block divided by its
    #: marginal std, :class:`trilemma.parametrization.Parametrization`): the same conversion
    predictions = ("mixed", "score", "edm")

    def _mixed_coefs(self, t: float | Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """``(l_t, Sigma_vv(t))`` per sample (float64) of the HSM kernel."""
        t = self._time_batch(t, like.shape[0], like.device)
        return self.hsm_ell(t), self.marginal_cov(t)[..., 1, 1]

    def prediction_to_score(self, prediction: str, out: Tensor, u: Tensor, t: Tensor,
                            sigma_data: float | None = None) -> Tensor:
        """``mixed`` and ``edm`` (REFERENCE.md §2.2): ``s = -v / Sigma_vv(t) - l_t out``, the
        analytic part exact at ``t = 0`` and ``t = T``; ``score``: ``s = -l_t out``."""
        mixed = self.check_prediction(prediction) != "score"
        ell, svv = self._mixed_coefs(t, u)
        s = -per_sample(ell, out) * out
        return s - self.noise_part(u) / per_sample(svv, out) if mixed else s

    def score_to_prediction(self, prediction: str, score: Tensor, u: Tensor, t: Tensor,
                            sigma_data: float | None = None) -> Tensor:
        """Inverse of :meth:`prediction_to_score`: ``out = -(s + v / Sigma_vv) / l_t``."""
        mixed = self.check_prediction(prediction) != "score"
        ell, svv = self._mixed_coefs(t, u)
        if mixed:
            score = score + self.noise_part(u) / per_sample(svv, score)
        return -score / per_sample(ell, score)

    # ------------------------------------------------------------------ SSCS half-step
    def sscs_a_step(self, b: Tensor) -> tuple[Tensor, Tensor]:
        """Mean map and covariance of SSCS's exactly-solved part A over ``b = int beta > 0``.

        A is the reverse-time Hamiltonian + Ornstein-Uhlenbeck part; it equals the forward
        kernel with ``x -> -x`` (REFERENCE.md §3.1).
        """
        flip = torch.tensor([[-1.0, 0.0], [0.0, 1.0]], dtype=torch.float64, device=b.device)
        return flip @ self._psi_b(b) @ flip, flip @ self._cov_b(b) @ flip

    # ------------------------------------------------------------------ gDDIM factor R_t
    def gddim_factor(self, t: float | Tensor) -> Tensor:
        """gDDIM's square root ``R_t`` of ``Sigma_t`` solving ``dR/dt = F R + 1/2 G G^T R^{-T}``.

        ``R_0 = S0^{1/2}``. ``F`` and ``G G^T`` are ``beta(t)`` times constants, so the ODE is
        solved once in ``b = B(t)`` with a high-order adaptive solver and cached (dense output).
        """
        t = as_time(t)
        sol = self._r_solution()
        b = self.integral_beta(t).detach().cpu().numpy()
        vals = np.asarray(sol(b.reshape(-1))).T.reshape(*b.shape, 2, 2)
        return torch.as_tensor(vals, dtype=torch.float64, device=t.device)

    def _r_solution(self):  # noqa: ANN202 - scipy's OdeSolution
        if self._r_cache is None:
            from scipy.integrate import solve_ivp

            g = self.Gamma
            f = np.array([[0.0, self.m_inv], [-1.0, -g * self.m_inv]])
            gg = np.array([[0.0, 0.0], [0.0, 2.0 * g]])

            def rhs(_b: float, y: np.ndarray) -> np.ndarray:
                r = y.reshape(2, 2)
                return (f @ r + 0.5 * gg @ np.linalg.inv(r).T).reshape(-1)

            r0 = np.sqrt(np.diag(self.init_cov().numpy()))
            b_end = float(self.integral_beta(torch.tensor(max(self.T, 1.0)))) * 1.05
            sol = solve_ivp(rhs, (0.0, b_end), np.diag(r0).reshape(-1), method="DOP853",
                            rtol=1e-12, atol=1e-14, dense_output=True)
            if not sol.success:  # pragma: no cover - numerical failure is a bug
                raise RuntimeError(f"gDDIM R_t integration failed: {sol.message}")
            self._r_cache = sol.sol
        return self._r_cache

    def config(self) -> dict:
        return {"beta_min": self.beta_min, "beta_max": self.beta_max, "m_inv": self.m_inv,
                "gamma": self.gamma, "eps_num": self.eps_num, "eps": self.eps}
