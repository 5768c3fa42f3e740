"""Analytic teleport: skip the first, near-Gaussian stretch of the probability-flow ODE for free.

At high noise every data distribution looks like its Gaussian approximation ``N(mu, Sigma)``, and
for Gaussian data the probability-flow ODE of a scalar process (kernel ``N(alpha_t x0,
sigma_t^2 I)``) has a closed-form solution: the marginal is ``N(alpha_t mu, C_t)`` with
``C_t = alpha_t^2 Sigma + sigma_t^2 I``, and the flow keeps each coordinate in the eigenbasis of
``Sigma`` standardised,

    u_s = alpha_s mu + U diag(sqrt(c_i(s) / c_i(t))) U^T (u_t - alpha_t mu),
    c_i(t) = alpha_t^2 lambda_i + sigma_t^2,   Sigma = U diag(lambda) U^T.

Replacing the network's first steps by this map (Wang and Vastola 2023, "The hidden linear
structure in score-based models", their "analytical teleportation") costs no score calls, so a
five-call budget is spent where the data's structure is decided. The map is exact for Gaussian
data and approximate otherwise; how far down it may go is a property of the data, which is why
:func:`trilemma.samplers.tune_grid` can tune the landing time with the rest of the grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..processes.base import LinearProcess, ScalarProcess

_F64 = torch.float64


@dataclass(frozen=True)
class GaussianMoments:
    """The mean ``(d,)`` and covariance ``(d, d)`` of the data, flattened per sample (float64).

    Build it from training data with :meth:`from_samples`, from an oracle mixture with
    :meth:`from_mixture`, or directly. The eigendecomposition is computed once, at construction.
    """

    mean: Tensor
    cov: Tensor

    def __post_init__(self) -> None:
        mean = torch.as_tensor(self.mean, dtype=_F64).detach().cpu().flatten()
        cov = torch.as_tensor(self.cov, dtype=_F64).detach().cpu()
        d = mean.numel()
        if d == 0:
            raise ValueError("teleport moments: mean must have at least one entry")
        if cov.shape != (d, d):
            raise ValueError(f"teleport moments: cov must have shape ({d}, {d}) to match the "
                             f"mean's {d} entries, got {tuple(cov.shape)}")
        if not (bool(torch.isfinite(mean).all()) and bool(torch.isfinite(cov).all())):
            raise ValueError("teleport moments: mean and cov must be finite")
        scale = max(float(cov.abs().max()), 1e-300)
        if float((cov - cov.T).abs().max()) > 1e-8 * scale:
            raise ValueError("teleport moments: cov must be symmetric")
        evals, evecs = torch.linalg.eigh(0.5 * (cov + cov.T))
        if float(evals.min()) < -1e-8 * scale:
            raise ValueError(f"teleport moments: cov must be positive semi-definite (smallest "
                             f"eigenvalue {float(evals.min()):.3g})")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "cov", cov)
        object.__setattr__(self, "_eig", (evals.clamp_min(0.0), evecs))

    @property
    def eigen(self) -> tuple[Tensor, Tensor]:
        """``(lambda, U)`` with ``cov = U diag(lambda) U^T`` (eigenvalues clipped at 0)."""
        return self._eig  # type: ignore[attr-defined]

    @property
    def dim(self) -> int:
        """Number of data coordinates per sample."""
        return self.mean.numel()

    @classmethod
    def from_samples(cls, x: Tensor) -> GaussianMoments:
        """Sample mean and covariance of ``x`` (batch first, any data shape)."""
        if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[0] < 2:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"teleport moments: need a batch of at least 2 samples (batch "
                             f"first), got {shape}")
        flat = x.detach().to(_F64).cpu().flatten(1)
        mean = flat.mean(0)
        dev = flat - mean
        return cls(mean, dev.T @ dev / (flat.shape[0] - 1))

    @classmethod
    def from_mixture(cls, mixture: object) -> GaussianMoments:
        """Exact moments of a :class:`trilemma.oracle.GaussianMixture` (diagonal components)."""
        w, m, s = (getattr(mixture, k).to(_F64) for k in ("weights", "means", "stds"))
        mean = (w[:, None] * m).sum(0)
        second = torch.diag((w[:, None] * s**2).sum(0)) + torch.einsum("k,ki,kj->ij", w, m, m)
        return cls(mean, second - torch.outer(mean, mean))


def _scalar(process: LinearProcess) -> ScalarProcess:
    if not isinstance(process, ScalarProcess):
        raise TypeError(f"teleport needs a scalar process with kernel N(alpha_t x0, sigma_t^2 I) "
                        f"(vp, subvp, ve, ...), got {getattr(process, 'name', process)!r}")
    return process


def _coef(proc: ScalarProcess, t: float) -> tuple[float, float]:
    tt = torch.tensor(float(t), dtype=_F64)
    return float(proc.alpha(tt)), float(proc.sigma(tt))


def gaussian_flow(process: LinearProcess, u: Tensor, t: float, s: float,
                  moments: GaussianMoments) -> Tensor:
    """Move states ``u`` at time ``t`` to time ``s`` along the probability-flow ODE of Gaussian
    data with ``moments`` (exact for such data; the module doc has the map). No score calls."""
    proc = _scalar(process)
    if not isinstance(u, Tensor) or u.dim() < 2:
        raise ValueError(f"teleport: states must be a batch (batch first), got "
                         f"{tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__}")
    d = math.prod(u.shape[1:])
    if d != moments.dim:
        raise ValueError(f"teleport: the moments have {moments.dim} coordinates but each state "
                         f"has {d} (shape {tuple(u.shape[1:])}); compute them from data of the "
                         "model's shape")
    for name, val in (("t", t), ("s", s)):
        if not (math.isfinite(float(val)) and 0 < float(val) <= process.T * (1 + 1e-9)):
            raise ValueError(f"teleport: {name} must lie in (0, T = {process.T}], got {val!r}")
    a_t, s_t = _coef(proc, t)
    a_s, s_s = _coef(proc, s)
    lam, vecs = (v.to(u.device) for v in moments.eigen)
    scale = torch.sqrt((a_s**2 * lam + s_s**2) / (a_t**2 * lam + s_t**2))
    mean = moments.mean.to(u.device)
    y = (u.detach().to(_F64).flatten(1) - a_t * mean) @ vecs
    out = a_s * mean + (y * scale) @ vecs.T
    return out.reshape(u.shape).to(u.dtype)


def landing_time(process: LinearProcess, sigma: float) -> float:
    """The time at which the scaled noise level ``sigma_t / alpha_t`` equals ``sigma``."""
    proc = _scalar(process)
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not (
            math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"teleport_sigma must be a positive number (the noise level "
                         f"sigma_t/alpha_t to land at), got {sigma!r}")
    top = math.exp(-float(proc.log_snr(process.T)))
    low = math.exp(-float(proc.log_snr(process.eps)))
    if not low < sigma < top:
        raise ValueError(f"teleport_sigma must lie between the process's noise levels at eps "
                         f"and T ({low:.4g} < sigma < {top:.4g}), got {sigma!r}")
    return float(proc.t_from_log_snr(torch.tensor([-math.log(sigma)], dtype=_F64))[0])


def teleport_start(process: LinearProcess, u_T: Tensor, grid: Tensor,
                   moments: GaussianMoments) -> Tensor:
    """The state at ``grid[0]`` from prior draws ``u_T`` at ``T`` (unchanged if the grid starts
    at ``T``): what ``sample(..., teleport=moments)`` hands the sampler."""
    t0 = float(grid[0])
    if t0 >= process.T * (1 - 1e-12):
        return u_T
    return gaussian_flow(process, u_T, process.T, t0, moments)


#: sampler options of :func:`trilemma.samplers.sample` that configure the teleport
TELEPORT_OPTIONS = ("teleport", "teleport_sigma")
#: the ``teleport`` option value that ``trilemma sample``/``evaluate`` and the trainer replace
#: with the moments of the run's training data
FROM_DATA = "data"


def check_teleport_options(options: dict) -> None:
    """``teleport`` must be :class:`GaussianMoments` or ``'data'``, ``teleport_sigma`` a
    positive number given with it (``ValueError('options: ...')`` otherwise)."""
    tp, sig = options.get("teleport"), options.get("teleport_sigma")
    if "teleport" in options and not (isinstance(tp, GaussianMoments) or tp == FROM_DATA):
        raise ValueError(f"options: teleport must be '{FROM_DATA}' (the run's training data) "
                         f"or GaussianMoments, got {tp!r}")
    if "teleport_sigma" in options:
        if "teleport" not in options:
            raise ValueError("options: teleport_sigma needs teleport (e.g. teleport=data)")
        if isinstance(sig, bool) or not isinstance(sig, (int, float)) or not (
                math.isfinite(sig) and sig > 0):
            raise ValueError(f"options: teleport_sigma must be a positive number (the noise "
                             f"level sigma_t/alpha_t to land at), got {sig!r}")
