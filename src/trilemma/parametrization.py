"""Network parametrisations of the score, kept apart from the network (EDM-style).

A network knows nothing of diffusion: it maps ``(scaled state, t[, labels])`` to a tensor. A
:class:`Parametrization` wraps any such network with a process: it scales the input, calls the
network and hands the output to the process's one conversion
(:meth:`~trilemma.processes.base.LinearProcess.prediction_to_score`), which returns the score on
the noise-driven block (the convention of every sampler):

- scalar processes: ``eps``, ``x0``, ``v`` or raw ``score``; the input is scaled by
  ``c_in = 1/sqrt(alpha^2 sigma_data^2 + sigma^2)`` so the network sees unit-variance input for
  VP and VE alike;
- CLD: ``mixed`` (REFERENCE.md §2.2, ``s = -v/Sigma_vv(t) - l_t alpha_theta(u, t)``) or
  ``score`` (``s = -l_t alpha_theta``, the ablation); the network sees ``u`` unscaled.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .processes.base import LinearProcess, ScalarProcess, per_sample
from .processes.cld import CLD

SCALAR_PREDICTIONS = ScalarProcess.predictions
CLD_PREDICTIONS = CLD.predictions


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
        if not isinstance(process, (ScalarProcess, CLD)):
            raise ValueError(f"no parametrisation for process {process.name!r}")
        prediction = process.check_prediction(prediction or process.predictions[0])
        if sigma_data <= 0:
            raise ValueError(f"sigma_data must be positive, got {sigma_data}")
        self.net = net
        self.process = process
        self.prediction = prediction
        self.sigma_data = float(sigma_data)

    def c_in(self, u: Tensor, t: Tensor) -> Tensor:
        """Input scale per sample, broadcast like ``u``: unit-variance network input (scalar
        processes, float64 coefficients); 1 for CLD."""
        p = self.process
        if not isinstance(p, ScalarProcess):
            return torch.ones((), dtype=u.dtype, device=u.device)
        a, s = p.alpha(t), p.sigma(t)
        return per_sample(torch.rsqrt(a**2 * self.sigma_data**2 + s**2), u)

    def forward(self, u: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        """The score on the noise-driven block at states ``u`` and times ``t`` (shape ``(B,)``)."""
        t = (
            t.to(u.dtype)
            if t.dim()
            else torch.full((u.shape[0],), float(t), dtype=u.dtype, device=u.device)
        )
        inp = self.c_in(u, t) * u
        out = self.net(inp, t) if labels is None else self.net(inp, t, labels)
        return self.process.prediction_to_score(self.prediction, out, u, t)
