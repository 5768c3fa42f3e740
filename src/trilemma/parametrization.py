"""Network parametrisations of the score, kept apart from the network (EDM-style).

A network knows nothing of diffusion: it maps ``(scaled state, t[, labels])`` to a tensor. A
:class:`Parametrization` wraps any such network with a process and turns its output into the
score on the noise-driven block (the convention of every sampler):

- scalar processes: ``eps`` (``s = -eps/sigma``), ``x0``, ``v`` (``v = alpha eps - sigma x0``) or
  raw ``score``; the input is scaled by ``c_in = 1/sqrt(alpha^2 sigma_data^2 + sigma^2)`` so the
  network sees unit-variance input for VP and VE alike;
- CLD: ``mixed`` (REFERENCE.md §2.2): ``s = -v/Sigma_vv(t) - l_t alpha_theta(u, t)``, the analytic
  part exact at ``t = 0`` and ``t = 1``; or ``score`` (``s = -l_t alpha_theta``, no analytic part,
  the ablation).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .processes.base import LinearProcess, ScalarProcess
from .processes.cld import CLD

SCALAR_PREDICTIONS = ("eps", "x0", "v", "score")
CLD_PREDICTIONS = ("mixed", "score")


def _view(coef: Tensor, like: Tensor) -> Tensor:
    return coef.to(like.dtype).reshape((-1,) + (1,) * (like.dim() - 1))


class Parametrization(nn.Module):
    """Turn a plain network into a score model ``model(u, t, labels=None) -> score``."""

    def __init__(
        self,
        net: nn.Module,
        process: LinearProcess,
        prediction: str | None = None,
        sigma_data: float = 0.5,
    ) -> None:
        super().__init__()
        is_cld = isinstance(process, CLD)
        valid = CLD_PREDICTIONS if is_cld else SCALAR_PREDICTIONS
        prediction = prediction or ("mixed" if is_cld else "eps")
        if prediction not in valid:
            raise ValueError(
                f"prediction {prediction!r} does not fit process {process.name!r}; "
                f"valid predictions: {', '.join(valid)}"
            )
        if not is_cld and not isinstance(process, ScalarProcess):
            raise ValueError(f"no parametrisation for process {process.name!r}")
        if sigma_data <= 0:
            raise ValueError(f"sigma_data must be positive, got {sigma_data}")
        self.net = net
        self.process = process
        self.prediction = prediction
        self.sigma_data = float(sigma_data)

    def _call_net(self, inp: Tensor, t: Tensor, labels: Tensor | None) -> Tensor:
        if labels is None:
            return self.net(inp, t)
        return self.net(inp, t, labels)

    def forward(self, u: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        """The score on the noise-driven block at states ``u`` and times ``t`` (shape ``(B,)``)."""
        p = self.process
        t = (
            t.to(u.dtype)
            if t.dim()
            else torch.full((u.shape[0],), float(t), dtype=u.dtype, device=u.device)
        )
        if isinstance(p, CLD):
            out = self._call_net(u, t, labels)
            cov = p.marginal_cov(t)
            ell = _view(p.hsm_ell(t), out)
            s = -ell * out
            if self.prediction == "mixed":
                s = s - p.noise_part(u) / _view(cov[..., 1, 1], out)
            return s
        alpha, sigma = _view(p.alpha(t), u), _view(p.sigma(t), u)
        c_in = torch.rsqrt(alpha**2 * self.sigma_data**2 + sigma**2)
        out = self._call_net(c_in * u, t, labels)
        if self.prediction == "eps":
            return -out / sigma
        if self.prediction == "x0":
            return -(u - alpha * out) / sigma**2
        if self.prediction == "v":
            eps = (sigma * u + alpha * out) / (alpha**2 + sigma**2)
            return -eps / sigma
        return out
