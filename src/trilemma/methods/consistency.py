"""Consistency distillation (Song, Dhariwal, Chen and Sutskever 2023; REFERENCE §10.1): a
network that maps any point of the teacher's probability-flow ODE trajectory to its origin.

In EDM's VE coordinates of the teacher's scalar process (``x = u / alpha_t``,
``sigma = sigma_t / alpha_t``, :mod:`trilemma.methods.consistency_teacher`) the consistency
function is

    f(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma)),
    c_skip = sigma_d^2 / ((sigma - sigma_min)^2 + sigma_d^2),
    c_out = sigma_d (sigma - sigma_min) / sqrt(sigma_d^2 + sigma^2),
    c_in = 1 / sqrt(sigma^2 + sigma_d^2),   c_noise = ln(sigma) / 4,

so ``f(x, sigma_min) = x`` exactly for any network (``c_skip = 1``, ``c_out = 0``).

Training (:meth:`ConsistencyModel.loss`): an ``N``-point EDM grid (rho = 7)
``sigma_1 < ... < sigma_N`` over the teacher's ``[sigma(eps), sigma(T)]``; per sample
``n ~ U{1..N-1}``, ``x_{n+1} = x0 + sigma_{n+1} z``, one teacher ODE step (Heun or Euler) to
``x^_n`` at ``sigma_n``, and the loss ``d(f_theta(x_{n+1}, sigma_{n+1}), f_theta-(x^_n, sigma_n))``
with ``d`` = mean squared error (``l2``) or pseudo-Huber ``sqrt(|a - b|^2 + c^2) - c``,
``c = 0.00054 sqrt(dim)``, times ``lambda(sigma_n)`` = 1 or ``1 / (sigma_{n+1} - sigma_n)``.
``theta-`` is a frozen copy of the network (:attr:`target`) moved
towards the online one by ``theta- <- mu theta- + (1 - mu) theta`` after every optimizer step
(:meth:`ConsistencyModel.after_optimizer_step`, a hook of the method protocol the trainer calls).

Sampling (sampler ``consistency``, NFE = number of steps): ``x = f(tau_1 z, tau_1)`` with
``tau_1 = sigma_max``; then for ``tau_2 > ... > tau_K``: ``x_tau = x + sqrt(tau_k^2 -
sigma_min^2) z``, ``x = f(x_tau, tau_k)``. Default ``tau_k`` (k >= 2): the training grid's
levels nearest to a log-spacing from ``sigma_data`` towards ``sigma_min``
(:func:`default_taus`); option ``taus`` sets the list.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..nets import count_parameters
from ..processes.base import per_sample, randn_like
from ..samplers.base import SampleResult
from ..samplers.grids import edm_sigmas
from .base import Method
from .consistency_teacher import SOLVERS, Teacher

DISTANCES = ("l2", "pseudo_huber")
#: lambda(sigma_n): 1 (the paper's CD) or 1 / (sigma_{n+1} - sigma_n) (improved consistency
#: training), which keeps the small-sigma pairs, whose distances are tiny, from being drowned
WEIGHTINGS = ("uniform", "inverse_gap")
SAMPLERS = ("consistency",)
SAMPLE_OPTIONS = ("taus", "trajectory")
HUBER_C = 0.00054  # improved consistency training: c = 0.00054 sqrt(dim)
#: relative tolerance above sigma_max for a sampling level (a rounded print of sigma_max)
TAU_RTOL = 1e-3


def consistency_coefs(sigma: Tensor, sigma_min: float, sigma_data: float
                      ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(c_skip, c_out, c_in, c_noise)`` at noise levels ``sigma`` (float64; module doc)."""
    s = sigma.to(torch.float64)
    sd2 = sigma_data**2
    c_skip = sd2 / ((s - sigma_min) ** 2 + sd2)
    c_out = sigma_data * (s - sigma_min) / torch.sqrt(sd2 + s**2)
    c_in = 1.0 / torch.sqrt(s**2 + sd2)
    return c_skip, c_out, c_in, 0.25 * torch.log(s)


def default_taus(nfe: int, sigmas: Tensor, sigma_data: float) -> list[float]:
    """``nfe`` decreasing noise levels of the training grid ``sigmas`` (ascending): ``sigma_max``,
    then the grid levels nearest (in log) to ``nfe - 1`` levels log-spaced from ``sigma_data``
    towards ``sigma_min``, kept distinct (``sigma_min`` itself excluded: a step there returns its
    input). The student only learnt the grid's levels, so sampling stays on them."""
    grid = [float(s) for s in sigmas]
    lo, hi = grid[0], grid[-1]
    top = min(max(sigma_data, lo), hi)
    k = nfe - 1
    wanted = [top * (lo / top) ** (i / k) for i in range(k)]
    if k > len(grid) - 2:  # more steps than inner grid levels: off-grid levels
        return [hi] + wanted
    out, prev = [len(grid) - 1], len(grid) - 1
    for j, w in enumerate(wanted):
        i = min(range(1, len(grid) - 1), key=lambda m: abs(math.log(grid[m] / w)))
        i = max(min(i, prev - 1), k - j)  # strictly decreasing, room left for the rest
        out.append(i)
        prev = i
    return [grid[i] for i in out]


def check_taus(taus: Any, nfe: int, sigma_min: float, sigma_max: float) -> list[float]:
    """``taus`` as floats, or ``ValueError('options: ...')``: ``nfe`` strictly decreasing
    levels in ``(sigma_min, sigma_max]`` (up to :data:`TAU_RTOL` above ``sigma_max`` is read as
    ``sigma_max``)."""
    ok = isinstance(taus, Sequence) and not isinstance(taus, str) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in taus)
    # a level printed with a few digits may round just above sigma_max: take it as sigma_max
    vals = [sigma_max if sigma_max < float(v) <= sigma_max * (1 + TAU_RTOL) else float(v)
            for v in taus] if ok else []
    if not ok or len(vals) != nfe:
        raise ValueError(f"options: taus must be a list of {nfe} numbers (one per step), got "
                         f"{taus!r}")
    if any(not sigma_min < v <= sigma_max for v in vals) or any(
            b >= a for a, b in zip(vals, vals[1:], strict=False)):
        raise ValueError(f"options: taus must decrease strictly within ({sigma_min:.4g}, "
                         f"{sigma_max:.4g}], got {vals}")
    return vals


class ConsistencyModel(Method):
    """A consistency model distilled from a frozen teacher (method ``consistency``).

    Args:
        net: any network ``net(c_in x, c_noise) -> F`` of the data's shape (the student).
        teacher: the frozen :class:`~trilemma.methods.consistency_teacher.Teacher`; its process
            is the student's (same data space, same ``sigma`` range). Not part of the state dict.
        data_shape: shape of one data sample.
        num_scales: ``N``, the points of the training grid (>= 2).
        ema_target: ``mu`` of the target network's EMA, in ``[0, 1)``.
        distance: ``l2`` or ``pseudo_huber``.
        solver: the teacher's ODE step, ``heun`` or ``euler``.
        sigma_data: ``sigma_d`` of the parametrisation.
        rho: the grid's EDM exponent.
        weighting: ``lambda(sigma_n)``, ``uniform`` or ``inverse_gap`` (:data:`WEIGHTINGS`).
    """

    name = "consistency"

    def __init__(self, net: nn.Module, teacher: Teacher, data_shape: tuple[int, ...],
                 num_scales: int = 18, ema_target: float = 0.95, distance: str = "l2",
                 solver: str = "heun", sigma_data: float = 0.5, rho: float = 7.0,
                 weighting: str = "uniform") -> None:
        super().__init__()
        if not isinstance(teacher, Teacher):
            raise TypeError(f"teacher must be a Teacher, got {type(teacher).__name__}")
        if isinstance(num_scales, bool) or not isinstance(num_scales, int) or num_scales < 2:
            raise ValueError(f"num_scales must be an integer >= 2, got {num_scales!r}")
        if not isinstance(ema_target, (int, float)) or not 0.0 <= ema_target < 1.0:
            raise ValueError(f"ema_target must be a number in [0, 1), got {ema_target!r}")
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, got {distance!r}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got "
                             f"{weighting!r}")
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
        if not (isinstance(sigma_data, (int, float)) and math.isfinite(sigma_data)
                and sigma_data > 0):
            raise ValueError(f"sigma_data must be a positive number, got {sigma_data!r}")
        self.net = net
        self.target = copy.deepcopy(net).requires_grad_(False)
        self.teacher = teacher  # a plain attribute: not a submodule, not in the state dict
        self.process = teacher.process
        self.data_shape = tuple(int(s) for s in data_shape)
        self.num_scales, self.ema_target = num_scales, float(ema_target)
        self.distance, self.solver, self.weighting = distance, solver, weighting
        self.sigma_data, self.rho = float(sigma_data), float(rho)
        self.sigma_min, self.sigma_max = teacher.sigma_range()
        grid = edm_sigmas(self.sigma_max, self.sigma_min, num_scales - 1, rho).flip(0)
        grid[0], grid[-1] = self.sigma_min, self.sigma_max  # exact ends
        self.register_buffer("sigmas", grid, persistent=False)

    sigmas: Tensor

    @property
    def display_name(self) -> str:
        """How reports name it, e.g. ``CD N=18 (oracle:grid25)``."""
        return f"CD N={self.num_scales} ({self.teacher.ref})"

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters (the student network's) and its frozen EMA target's copy (the
        teacher's are not part of the model)."""
        return {"total": count_parameters(self), "net": count_parameters(self.net),
                "target": count_parameters(self.target, trainable_only=False)}

    # -- the consistency function ----------------------------------------------------------------

    def consistency(self, x: Tensor, sigma: Tensor, target: bool = False) -> Tensor:
        """``f(x, sigma)`` of the online network (``target=False``) or of the EMA target;
        ``sigma`` per sample ``(B,)`` or one value. A level within float32 rounding of
        ``sigma_min`` counts as ``sigma_min`` (so ``f(x, sigma_min) = x`` exactly from a float32
        ``sigma`` too)."""
        sig = sigma.to(torch.float64).reshape(-1)
        sig = torch.where((sig - self.sigma_min).abs() <= 1e-6 * self.sigma_min,
                          torch.full_like(sig, self.sigma_min), sig)
        if sig.numel() == 1:
            sig = sig.expand(x.shape[0])
        c_skip, c_out, c_in, c_noise = consistency_coefs(sig, self.sigma_min, self.sigma_data)
        net = self.target if target else self.net
        out = net(per_sample(c_in, x) * x, c_noise.to(device=x.device, dtype=x.dtype))
        return per_sample(c_skip, x) * x + per_sample(c_out, out) * out

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        """The online consistency function ``f_theta(x, sigma)``."""
        return self.consistency(x, sigma)

    # -- training ---------------------------------------------------------------------------------

    def dist(self, a: Tensor, b: Tensor) -> Tensor:
        """Per-sample distance ``d(a, b)``: mean squared error or pseudo-Huber (module doc)."""
        sq = (a - b).flatten(1).pow(2)
        if self.distance == "l2":
            return sq.mean(1)
        c = HUBER_C * math.sqrt(sq.shape[1])
        return torch.sqrt(sq.sum(1) + c * c) - c

    def loss(self, batch: Tensor | tuple | list, generator: torch.Generator | None = None,
             **kwargs: Any) -> Tensor:
        """Per-sample consistency-distillation loss of a data batch (module docstring)."""
        x0 = self.batch_data(batch)
        b = x0.shape[0]
        gen_dev = generator.device if generator is not None else "cpu"
        n = torch.randint(0, self.num_scales - 1, (b,), generator=generator, device=gen_dev)
        sigmas = self.sigmas.to(x0.device)
        n = n.to(x0.device)
        s_lo, s_hi = sigmas[n], sigmas[n + 1]
        x_hi = x0 + per_sample(s_hi, x0) * randn_like(x0, generator)
        with torch.no_grad():
            x_lo = self.teacher.to(x0.device).step(x_hi, s_hi, s_lo, self.solver)
            goal = self.consistency(x_lo, s_lo, target=True)
        loss = self.dist(self.consistency(x_hi, s_hi), goal)
        if self.weighting == "inverse_gap":
            loss = loss / (s_hi - s_lo).to(loss.dtype)
        return loss

    @torch.no_grad()
    def prepare_training(self, *, run_dir: str | os.PathLike, config: Mapping[str, Any],
                         is_main: bool = True, resume: bool = False) -> None:
        """Load a deferred teacher now, so a missing or mismatched teacher run stops
        ``trilemma train`` before the first step (sampling never loads it)."""
        load = getattr(self.teacher, "load", None)
        if callable(load):
            load()

    def after_optimizer_step(self, step: int) -> None:
        """Move the target towards the online network: ``theta- <- mu theta- + (1 - mu)
        theta`` (buffers copied)."""
        tgt = list(self.target.parameters())
        src = [p.detach().to(q.dtype) for p, q in zip(self.net.parameters(), tgt, strict=True)]
        if tgt:
            torch._foreach_lerp_(tgt, src, 1.0 - self.ema_target)
        for q, p in zip(self.target.buffers(), self.net.buffers(), strict=True):
            q.copy_(p)

    # -- sampling ---------------------------------------------------------------------------------

    def samplers(self) -> list[str]:
        """A consistency model samples with its own steps only."""
        return list(SAMPLERS)

    def check_sampler(self, sampler: str, nfe: int | None = None,
                      options: dict[str, Any] | None = None) -> None:
        """Raise ``ValueError('sampler: ...' / 'nfe: ...' / 'options: ...')`` for bad arguments."""
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler: a consistency model samples with its own steps; use "
                             f"{', '.join(SAMPLERS)} (got {sampler!r})")
        if nfe is not None and (isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1):
            raise ValueError(f"nfe: the number of consistency steps, an integer >= 1; got {nfe!r}")
        opts = dict(options or {})
        bad = sorted(set(opts) - set(SAMPLE_OPTIONS))
        if bad:
            raise ValueError(f"options: unknown option(s) {bad} for sampler 'consistency'; its "
                             f"options: {', '.join(SAMPLE_OPTIONS)}")
        if opts.get("taus") is not None:
            check_taus(opts["taus"], nfe or 1, self.sigma_min, self.sigma_max)

    def taus(self, nfe: int, taus: Sequence[float] | None = None) -> list[float]:
        """The sampling noise levels of ``nfe`` steps (``taus`` checked, or the default)."""
        if taus is not None:
            return check_taus(taus, nfe, self.sigma_min, self.sigma_max)
        return default_taus(nfe, self.sigmas, self.sigma_data)

    @torch.no_grad()
    def sample(self, n: int, sampler: str = "consistency", nfe: int | None = 1,
               generator: torch.Generator | None = None, taus: Sequence[float] | None = None,
               trajectory: bool = False, **opts: Any) -> SampleResult:
        """``n`` samples in ``nfe`` network calls (module docstring): one call per level."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        nfe = 1 if nfe is None else nfe
        self.check_sampler(sampler, nfe, {**opts, "taus": taus})
        levels = self.taus(nfe, taus)
        param = next(self.net.parameters())
        was_training = self.training
        self.eval()
        calls = 0
        try:
            x = param.new_zeros(self.state_shape(n))
            traj = [] if trajectory else None
            for k, tau in enumerate(levels):
                noise = randn_like(x, generator)
                scale = tau if k == 0 else math.sqrt(tau * tau - self.sigma_min**2)
                x = self.consistency(x + scale * noise, torch.tensor(tau))
                calls += 1
                if not torch.isfinite(x).all():
                    raise FloatingPointError(f"non-finite sample after step {k + 1} "
                                             f"(tau = {tau:.4g})")
                if traj is not None:
                    traj.append(x)
        finally:
            self.train(was_training)
        return SampleResult(samples=x, state=x, nfe=calls, trajectory=traj,
                            times=torch.tensor(levels, dtype=torch.float64),
                            info={"sampler": "consistency", "taus": levels})
