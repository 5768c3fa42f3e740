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
from collections.abc import Callable
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


def _not_loaded(u: Tensor, t: Tensor) -> Tensor:  # pragma: no cover - replaced on load
    raise RuntimeError("the deferred teacher was not loaded")


class DeferredTeacher(Teacher):
    """A teacher whose run is loaded on first use (or by :meth:`load`), so that a trained
    student samples without its teacher: only the distillation steps need the teacher's network.

    Args:
        loader: returns the real :class:`Teacher` (and raises a clear error when it cannot).
        process: the student's process; the loaded teacher's must have the same name.
        ref: the run path, as in the config.
    """

    def __init__(self, loader: Callable[[], Teacher], process: LinearProcess, ref: str) -> None:
        super().__init__(_not_loaded, process, ref)
        self._loader: Callable[[], Teacher] | None = loader
        self._device: torch.device | str | None = None

    @property
    def loaded(self) -> bool:
        """Whether the teacher's network has been loaded."""
        return self._loader is None

    def load(self) -> DeferredTeacher:
        """Load the teacher now (idempotent); returns self."""
        if self._loader is not None:
            real = self._loader()
            if real.process.name != self.process.name:
                raise ValueError(f"process: the teacher {self.ref!r} runs {real.process.name!r}, "
                                 f"the student {self.process.name!r}")
            self.score_fn, self.module, self._loader = real.score_fn, real.module, None
            if self._device is not None:
                super().to(self._device)
        return self

    def to(self, device: torch.device | str) -> DeferredTeacher:
        """Remember ``device`` and move the loaded network there; returns self."""
        self._device = device
        return super().to(device) if self.loaded else self

    @torch.no_grad()
    def slope(self, x: Tensor, sigma: Tensor) -> Tensor:
        """As :meth:`Teacher.slope`, loading the teacher first."""
        return super(DeferredTeacher, self.load()).slope(x, sigma)


def teacher_from_model(model: Any, ref: str) -> Teacher:
    """A teacher from a trained score model (anything with ``score_fn()`` and ``process``)."""
    if not callable(getattr(model, "score_fn", None)) or getattr(model, "process", None) is None:
        raise ValueError(f"the teacher {ref!r} is a {getattr(model, 'display_name', '?')} run; "
                         "a teacher must be a score model (model.method: score)")
    return Teacher(model.score_fn(), model.process, ref, module=model)
