"""VP (linear, cosine), sub-VP, geometric VP and VE: processes on x alone (REFERENCE §1.1-1.3)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import ScalarProcess
from .tensors import as_time


def _check_positive(name: str, value: float) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is a positive finite real number."""
    if not (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    ):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _check_eps(eps: float, T: float) -> None:
    """Raise a ValueError unless the sampler's end time ``eps`` lies in ``(0, T)``."""
    _check_positive("eps", eps)
    if not eps < T:
        raise ValueError(f"eps must lie in (0, T = {T}), got {eps!r}")


class VPFamily(ScalarProcess):
    """Variance-preserving processes ``dx = -1/2 beta x dt + sqrt(beta) dw``, kernel
    ``N(alpha_t x0, (1 - alpha_t^2) I)``; subclasses give ``log alpha_t`` and ``beta(t)``."""

    def log_alpha(self, t: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def beta(self, t: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(self.log_alpha(as_time(t)))

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(2.0 * self.log_alpha(as_time(t))))

    def log_snr(self, t: float | Tensor) -> Tensor:
        la = self.log_alpha(as_time(t))
        return la - 0.5 * torch.log(-torch.expm1(2.0 * la))

    def f(self, t: Tensor) -> Tensor:
        return -0.5 * self.beta(as_time(t))

    def diffusion_sq(self, t: Tensor) -> Tensor:
        return self.beta(as_time(t))

    def transition_var(self, t: Tensor, s: Tensor) -> Tensor:
        return -torch.expm1(2.0 * (self.log_alpha(as_time(t)) - self.log_alpha(as_time(s))))

    def prior_cov(self) -> Tensor:
        return torch.ones(1, 1, dtype=torch.float64)


class VP(VPFamily):
    """Continuous DDPM: linear ``beta(t) = beta_min + t (beta_max - beta_min)``."""

    name = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, eps: float = 1e-3) -> None:
        _check_positive("beta_min", beta_min)
        _check_positive("beta_max", beta_max)
        if beta_max < beta_min:
            raise ValueError(f"beta_max ({beta_max}) must be >= beta_min ({beta_min})")
        _check_eps(eps, self.T)
        self.beta_min, self.beta_max, self.eps = float(beta_min), float(beta_max), float(eps)

    def integral_beta(self, t: Tensor) -> Tensor:
        """``B(t) = int_0^t beta``."""
        t = as_time(t)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def log_alpha(self, t: Tensor) -> Tensor:
        return -0.5 * self.integral_beta(t)

    def beta(self, t: Tensor) -> Tensor:
        t = as_time(t)
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        # sigma^2 / alpha^2 = e^B - 1 = e^{-2 lambda}  =>  B = softplus(-2 lambda); solve
        # beta_min t + d t^2 / 2 = B in the rationalised form (no cancellation at small B)
        b = torch.nn.functional.softplus(-2.0 * as_time(lam))
        d = self.beta_max - self.beta_min
        return 2.0 * b / (self.beta_min + torch.sqrt(self.beta_min**2 + 2.0 * d * b))

    def config(self) -> dict:
        return {"beta_min": self.beta_min, "beta_max": self.beta_max, "eps": self.eps}


class VPCosine(VPFamily):
    """Cosine schedule (Nichol & Dhariwal 2021): ``alpha_t^2 = f(t)/f(0)``,
    ``f(t) = cos^2(((t + s)/(1 + s)) pi/2)``. ``T = 0.9946`` keeps ``beta`` finite (as DPM-Solver).
    """

    name = "vp_cosine"

    def __init__(self, s: float = 0.008, T: float = 0.9946, eps: float = 1e-3) -> None:
        _check_positive("s", s)
        if not 0 < T < 1:
            raise ValueError(
                f"T must lie in (0, 1) for the cosine schedule (beta(1) is infinite), got {T}"
            )
        _check_eps(eps, T)
        self.s, self.T, self.eps = float(s), float(T), float(eps)

    def _theta(self, t: Tensor) -> Tensor:
        return (as_time(t) + self.s) / (1.0 + self.s) * (math.pi / 2)

    def log_alpha(self, t: Tensor) -> Tensor:
        # log(cos th / cos th0) with cos th - cos th0 = -2 sin((th + th0)/2) sin((th - th0)/2):
        # no cancellation at small t (log cos th - log cos th0 loses ~1e-9 relative there)
        theta0 = self.s / (1.0 + self.s) * (math.pi / 2)
        half = as_time(t) / (1.0 + self.s) * (math.pi / 4)  # (th - th0) / 2
        ratio = -2.0 * torch.sin(theta0 + half) * torch.sin(half) / math.cos(theta0)
        return torch.log1p(ratio)

    def beta(self, t: Tensor) -> Tensor:
        return math.pi / (1.0 + self.s) * torch.tan(self._theta(t))

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        # log alpha = 1/2 log_alpha2; alpha^2 = 1 / (1 + e^{-2 lam})
        log_a2 = -torch.nn.functional.softplus(-2.0 * as_time(lam))
        c0 = math.log(math.cos(self.s / (1.0 + self.s) * math.pi / 2))
        theta = torch.arccos(torch.exp(0.5 * log_a2 + c0))
        return theta * 2 / math.pi * (1.0 + self.s) - self.s

    def config(self) -> dict:
        return {"s": self.s, "T": self.T, "eps": self.eps}


class GeometricVP(VPFamily):
    """LSGM's geometric VP: ``sigma_t^2 = sigma2_min (sigma2_max / sigma2_min)^t``, ``alpha_t^2 =
    1 - sigma_t^2``. Nearly flat likelihood weighting ``g^2 / sigma^2`` in t."""

    name = "geometric_vp"

    def __init__(
        self, sigma2_min: float = 3e-5, sigma2_max: float = 0.999, eps: float = 1e-3
    ) -> None:
        _check_positive("sigma2_min", sigma2_min)
        if not sigma2_min < sigma2_max < 1:
            raise ValueError(
                f"need 0 < sigma2_min < sigma2_max < 1, got sigma2_min={sigma2_min}, "
                f"sigma2_max={sigma2_max}"
            )
        _check_eps(eps, self.T)
        self.sigma2_min, self.sigma2_max = float(sigma2_min), float(sigma2_max)
        self.eps = float(eps)

    def _sigma2(self, t: Tensor) -> Tensor:
        return self.sigma2_min * (self.sigma2_max / self.sigma2_min) ** as_time(t)

    def log_alpha(self, t: Tensor) -> Tensor:
        return 0.5 * torch.log1p(-self._sigma2(t))

    def beta(self, t: Tensor) -> Tensor:
        s2 = self._sigma2(t)
        return s2 * math.log(self.sigma2_max / self.sigma2_min) / (1.0 - s2)

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        s2 = torch.sigmoid(-2.0 * as_time(lam))  # sigma^2 = 1 / (1 + e^{2 lam})
        return torch.log(s2 / self.sigma2_min) / math.log(self.sigma2_max / self.sigma2_min)

    def config(self) -> dict:
        return {"sigma2_min": self.sigma2_min, "sigma2_max": self.sigma2_max, "eps": self.eps}


class SubVP(ScalarProcess):
    """sub-VP: VP's drift with ``g^2 = beta (1 - e^{-2 B})``; kernel std ``1 - alpha_t^2``."""

    name = "subvp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, eps: float = 1e-3) -> None:
        self._vp = VP(beta_min, beta_max, eps)
        self.beta_min, self.beta_max, self.eps = self._vp.beta_min, self._vp.beta_max, float(eps)

    def alpha(self, t: Tensor) -> Tensor:
        return self._vp.alpha(t)

    def sigma(self, t: Tensor) -> Tensor:
        return -torch.expm1(-self._vp.integral_beta(t))

    def f(self, t: Tensor) -> Tensor:
        return -0.5 * self._vp.beta(t)

    def diffusion_sq(self, t: Tensor) -> Tensor:
        return self._vp.beta(t) * -torch.expm1(-2.0 * self._vp.integral_beta(t))

    def transition_var(self, t: Tensor, s: Tensor) -> Tensor:
        # sigma_t^2 - (alpha_t/alpha_s)^2 sigma_s^2 = 1 - e^{Bs-Bt} - e^{-Bt-Bs} + e^{-2Bt}
        # = (1 - e^{-(Bt-Bs)}) (1 - e^{-(Bt+Bs)}): the factored form keeps full relative
        # precision at small t (the expanded one cancels to ~1e-4 relative at t = 1e-5)
        bt, bs = self._vp.integral_beta(t), self._vp.integral_beta(s)
        return torch.expm1(bs - bt) * torch.expm1(-bt - bs)

    def prior_cov(self) -> Tensor:
        return torch.ones(1, 1, dtype=torch.float64)

    def config(self) -> dict:
        return {"beta_min": self.beta_min, "beta_max": self.beta_max, "eps": self.eps}


class VE(ScalarProcess):
    """Variance exploding (SMLD/NCSN): ``dx = sqrt(d sigma^2/dt) dw``,
    ``sigma(t) = sigma_min (sigma_max/sigma_min)^t``; kernel ``N(x0, sigma(t)^2)`` as in score_sde
    (the data counts as already blurred by ``sigma_min``); prior ``N(0, sigma_max^2)``."""

    name = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, eps: float = 1e-5) -> None:
        _check_positive("sigma_min", sigma_min)
        _check_positive("sigma_max", sigma_max)
        if sigma_max <= sigma_min:
            raise ValueError(f"sigma_max ({sigma_max}) must exceed sigma_min ({sigma_min})")
        _check_eps(eps, self.T)
        self.sigma_min, self.sigma_max, self.eps = float(sigma_min), float(sigma_max), float(eps)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(as_time(t))

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** as_time(t)

    def f(self, t: Tensor) -> Tensor:
        return torch.zeros_like(as_time(t))

    def diffusion_sq(self, t: Tensor) -> Tensor:
        return 2.0 * self.sigma(t) ** 2 * math.log(self.sigma_max / self.sigma_min)

    def transition_var(self, t: Tensor, s: Tensor) -> Tensor:
        # sigma_t^2 - sigma_s^2 = -sigma_t^2 expm1(2 (s - t) log(sigma_max / sigma_min))
        t, s = as_time(t), as_time(s)
        rate = 2.0 * math.log(self.sigma_max / self.sigma_min)
        return -(self.sigma(t) ** 2) * torch.expm1(rate * (s - t))

    def t_from_sigma(self, sigma: Tensor) -> Tensor:
        """Inverse of ``sigma(t)``."""
        log_ratio = math.log(self.sigma_max / self.sigma_min)
        return torch.log(as_time(sigma) / self.sigma_min) / log_ratio

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        return self.t_from_sigma(torch.exp(-as_time(lam)))

    def prior_cov(self) -> Tensor:
        return torch.full((1, 1), self.sigma_max**2, dtype=torch.float64)

    def config(self) -> dict:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "eps": self.eps}
