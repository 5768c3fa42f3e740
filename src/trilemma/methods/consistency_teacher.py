"""The frozen teacher of consistency distillation (REFERENCE §10.1): the probability-flow ODE of a
score function of a scalar process, written in EDM's VE coordinates.

Every scalar process (VP, sub-VP, VE, cosine VP) is ``x = x0 + sigma n`` after ``x = u / alpha_t``
and ``sigma = sigma_t / alpha_t`` (:mod:`trilemma.processes.precond`); its probability-flow ODE is
``dx/dsigma = (x - D(x, sigma)) / sigma`` with ``D`` the Tweedie denoiser
``D = (u + sigma_t^2 s(u, t)) / alpha_t``, so the slope is ``-sigma_t s(alpha_t x, t)`` (no
cancellation). A teacher step is one explicit step of that ODE in ``sigma``
(:func:`trilemma.samplers.ode.fixed_step`: Heun, 2 score calls, or Euler, 1).

The teacher is either a trained score model (its ``score_fn``) or the exact score of a Gaussian
mixture (:mod:`trilemma.oracle`), so a student distilled from the oracle carries distillation
error only. It is never trained and never saved with the student: the student's config names it
(``model.teacher``) and the setup layer loads it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..processes.base import LinearProcess, ScalarProcess, ScoreFn, per_sample
from ..samplers.ode import fixed_step

#: the one-step solvers of the teacher's ODE and their score calls
SOLVERS = {"heun": 2, "euler": 1}


class Teacher:
    """A frozen score function of a scalar process seen as an ODE in ``sigma`` (module doc).

    Args:
        score_fn: ``score_fn(u, t) -> score`` of the process's marginals (no gradient needed).
        process: the scalar process the score belongs to (the student's process too).
        ref: what names the teacher in a config: a run path or ``oracle:NAME``.
        module: the teacher's network when it has one (moved with :meth:`to`, kept in eval
            mode with frozen parameters); None for the oracle.
    """

    def __init__(self, score_fn: ScoreFn, process: LinearProcess, ref: str,
                 module: nn.Module | None = None) -> None:
        if not isinstance(process, ScalarProcess):
            raise ValueError(f"consistency distillation needs a scalar process (vp, subvp, ve, "
                             f"vp_cosine); the teacher's is {process.name!r}")
        if not callable(score_fn):
            raise TypeError("score_fn must be callable(u, t) -> score")
        self.score_fn, self.process, self.ref, self.module = score_fn, process, str(ref), module
        if module is not None:
            module.eval()
            module.requires_grad_(False)

    def to(self, device: torch.device | str) -> Teacher:
        """Move the teacher's network (if any) to ``device``; returns self."""
        if self.module is not None:
            param = next(self.module.parameters(), None)
            if param is not None and param.device != torch.device(device):
                self.module.to(device)
        return self

    def sigma_range(self) -> tuple[float, float]:
        """``(sigma_min, sigma_max)``: ``sigma_t / alpha_t`` at the process's ``eps`` and ``T``."""
        p = self.process
        lo = math.exp(-float(p.log_snr(torch.tensor(p.eps, dtype=torch.float64))))
        hi = math.exp(-float(p.log_snr(torch.tensor(p.T, dtype=torch.float64))))
        return lo, hi

    def time_of(self, sigma: Tensor) -> Tensor:
        """The process time ``t`` (float64) at which ``sigma_t / alpha_t = sigma``."""
        lam = -torch.log(sigma.to(torch.float64))
        return self.process.t_from_log_snr(lam).clamp(0.0, self.process.T)

    @torch.no_grad()
    def slope(self, x: Tensor, sigma: Tensor) -> Tensor:
        """``dx/dsigma = (x - D(x, sigma)) / sigma = -sigma_t s(alpha_t x, t)`` per sample
        (``sigma`` of shape ``(B,)`` or broadcastable like ``x``)."""
        sig = sigma.reshape(-1).to(torch.float64)
        if sig.numel() == 1:
            sig = sig.expand(x.shape[0])
        t = self.time_of(sig)
        a, s_t = self.process.alpha(t), self.process.sigma(t)
        score = self.score_fn(per_sample(a, x) * x, t.to(x.dtype))
        return -per_sample(s_t, x) * score

    @torch.no_grad()
    def denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Tweedie's ``D(x, sigma) = x - sigma dx/dsigma`` (one score call)."""
        return x - per_sample(sigma.reshape(-1).to(torch.float64), x) * self.slope(x, sigma)

    @torch.no_grad()
    def step(self, x: Tensor, sigma_from: Tensor, sigma_to: Tensor, solver: str = "heun"
             ) -> Tensor:
        """One ``solver`` step of the probability-flow ODE from ``sigma_from`` to ``sigma_to``
        (per-sample ``(B,)`` float64 noise levels): ``SOLVERS[solver]`` score calls."""
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
        s0, s1 = per_sample(sigma_from, x), per_sample(sigma_to, x)
        return fixed_step(solver, self.slope, x, s0, s1)

    def __repr__(self) -> str:
        return f"Teacher({self.ref!r}, process={self.process.name})"


def teacher_from_model(model: Any, ref: str) -> Teacher:
    """A teacher from a trained score model (anything with ``score_fn()`` and ``process``)."""
    if not callable(getattr(model, "score_fn", None)) or getattr(model, "process", None) is None:
        raise ValueError(f"the teacher {ref!r} is a {getattr(model, 'display_name', '?')} run; "
                         "a teacher must be a score model (model.method: score)")
    return Teacher(model.score_fn(), model.process, ref, module=model)
