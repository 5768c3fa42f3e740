"""Network parametrisations of the score, kept apart from the network (EDM-style).

A network knows nothing of diffusion: it maps ``(scaled state, t[, labels])`` to a tensor. A
:class:`Parametrization` wraps any such network with a process: it scales the input, calls the
network and hands the output to the process's one conversion
(:meth:`~trilemma.processes.base.LinearProcess.prediction_to_score`), which returns the score on
the noise-driven block (the convention of every sampler):

- scalar processes: ``eps``, ``x0``, ``v``, raw ``score`` or ``edm`` (and ``velocity``,
  ``eps - x0``, on the rectified flow: :mod:`trilemma.processes.flow`); the input is scaled by
  ``c_in = 1/sqrt(alpha^2 sigma_data^2 + sigma^2)`` so the network sees unit-variance input for
  VP and VE alike. ``edm`` is EDM's full preconditioning (Karras et al. 2022) through the VE
  equivalent ``sigma = sigma_t/alpha_t``, ``x = u/alpha_t``: the same ``c_in`` (it is EDM's
  ``1/sqrt(sigma^2 + sigma_data^2)`` applied to ``x``), the time input ``c_noise = ln(sigma)/4``
  instead of ``t``, and the output ``F`` read as ``x0_hat = c_skip x + c_out F``
  (:mod:`trilemma.processes.precond`);
- CLD: ``mixed`` (REFERENCE.md §2.2, ``s = -v/Sigma_vv(t) - l_t alpha_theta(u, t)``) or
  ``score`` (``s = -l_t alpha_theta``, the ablation); the network sees ``u`` unscaled. ``edm``
  is the mixed score with each block of the input divided by its marginal std at ``t`` for data
  of second moment ``sigma_data^2`` (the analytic part stays exact; the time input stays ``t``).
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
        processes, float64 coefficients); per block for CLD's ``edm``, else 1 for CLD."""
        p = self.process
        if isinstance(p, ScalarProcess):
            a, s = p.alpha(t), p.sigma(t)
            return per_sample(torch.rsqrt(a**2 * self.sigma_data**2 + s**2), u)
        if self.prediction != "edm":
            return torch.ones((), dtype=u.dtype, device=u.device)
        init = p.init_cov().to(t.device) + torch.diag(
            torch.tensor([self.sigma_data**2, 0.0], dtype=torch.float64, device=t.device))
        cov = p.marginal_cov(t, init_cov=init)
        x = p.split(u)[0]
        shape = x.shape[:2] + (1,) * (u.dim() - 2)
        return torch.cat([per_sample(torch.rsqrt(cov[..., i, i]), u).expand(shape)
                          for i in range(2)], dim=1)

    def c_noise(self, t: Tensor) -> Tensor:
        """The network's time input: ``ln(sigma)/4`` for a scalar process's ``edm``, else ``t``."""
        if self.prediction != "edm" or not isinstance(self.process, ScalarProcess):
            return t
        return (-0.25 * self.process.log_snr(t)).to(t.dtype)

    def forward(self, u: Tensor, t: Tensor, labels: Tensor | None = None,
                guidance: float = 0.0) -> Tensor:
        """The score on the noise-driven block at states ``u`` and times ``t`` (shape ``(B,)``);
        ``guidance = w > 0`` with ``labels``: classifier-free guidance (:meth:`net_output`)."""
        t = (
            t.to(u.dtype)
            if t.dim()
            else torch.full((u.shape[0],), float(t), dtype=u.dtype, device=u.device)
        )
        out = self.net_output(self.c_in(u, t) * u, self.c_noise(t), labels, guidance)
        return self.process.prediction_to_score(self.prediction, out, u, t,
                                                sigma_data=self.sigma_data)

    def net_output(self, inp: Tensor, tn: Tensor, labels: Tensor | None,
                   guidance: float) -> Tensor:
        """The network's output; with ``guidance = w > 0`` the combination
        ``(1 + w) F(c) - w F(null)`` of one batched call on the class and the null class.

        Every prediction maps to the score affinely (``s = A(u, t) + B(u, t) F``), so combining
        outputs is combining scores while the analytic part ``A`` (CLD's ``-v/Sigma_vv``, the
        ``x0`` and ``edm`` skips) enters once: exact, not a near-cancellation."""
        if labels is None:
            return self.net(inp, tn)
        if not guidance:
            return self.net(inp, tn, labels)
        null = torch.full_like(labels, int(self.net.num_classes))
        both = self.net(torch.cat([inp, inp]), torch.cat([tn, tn]), torch.cat([labels, null]))
        cond, uncond = both.chunk(2)
        return cond + guidance * (cond - uncond)
