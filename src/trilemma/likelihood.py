"""Log-likelihoods through the probability-flow ODE, and bits/dim (REFERENCE.md §2.2, §5).

The probability-flow ODE ``du/dt = f~(u, t) = F u - 1/2 G G^T grad log p_t(u)`` carries ``p_t``
into ``p_s`` exactly, so along one of its trajectories (continuity equation)::

    log p_{t_min}(u_{t_min}) = log p_T(u_T) + int_{t_min}^T div f~(u_t, t) dt.

:func:`log_likelihood` integrates the state and the divergence integral together (torchdiffeq,
augmented state) forward from ``t_min`` to ``T`` and uses the process prior for ``p_T``.

Conventions and caveats:

- **Time offset.** The ODE starts at ``t_min > 0`` (the score is undefined at 0), so what is
  evaluated is ``log p_{t_min}(x)``, the density of the slightly diffused data, not
  ``log p_0(x)``. For the scalar processes ``p_{t_min}`` is ``p_0`` scaled by ``alpha_{t_min}``
  and blurred by ``N(0, sigma_{t_min}^2)`` (VP at ``t_min = 1e-3``: ``sigma ~ 0.0105``, about
  1.3 bins of 8-bit data on [-1, 1]); for data much wider than ``sigma_{t_min}`` the two agree
  closely; for sharp data (or dequantised bins) a smaller ``t_min`` (e.g. the process's
  ``train_eps``) gets closer at the price of a stiffer ODE. The tests compare with the exact
  ``p_{t_min}`` of Gaussian mixtures (``trilemma.oracle``).
- **Prior.** ``p_T`` is replaced by the process prior (``process.prior_logp``). Per sample the
  mismatch is dominated by a term linear in ``u_T`` that averages out over the data: about
  ``c <m, u_T>`` for data of mean ``m``, with ``c = alpha_T = 6.6e-3`` for VP / sub-VP (default
  schedule), ``9 e^{-8} = 3e-3`` for CLD (default beta = 4) and ``1 / sigma_max^2`` for VE
  (there ``u_T ~ sigma_max``: ~``|m| / sigma_max`` nat/dim, 0.03 for ``imbalanced2d`` at
  ``sigma_max = 20``, plus a systematic ``~ var(data) / (2 sigma_max^2)`` per dimension).
  ``prior_logp`` and ``final_state`` are returned so a caller can swap in another ``p_T``.
- **Divergence.** Only the score term needs autograd: ``div f~ = d tr F(t) - 1/2 g(t)^2
  div_n s(u, t)``, where ``div_n`` is the divergence of the score w.r.t. the noise-driven block
  (the whole state for k = 1, the velocity for CLD). ``'exact'`` takes one backward pass per
  coordinate (small ``d``); ``'hutchinson'`` estimates it with ``n_probes`` Rademacher or
  Gaussian probes on the noise block, fixed along the trajectory (the trajectory does not depend
  on them, so the estimate of ``log p`` is unbiased).
- **CLD.** The ODE starts from ``u_0 = (x, v_0)`` with ``v_0 ~ N(0, gamma M)`` drawn from
  ``generator``; ``state_log_p`` is the joint ``log p_{t_min}(x, v_0)`` and ``log_p`` the
  REFERENCE §2.2 bound ``log p(x) >= E_{v_0}[state_log_p] + H(q)``,
  ``H(q) = d/2 (1 + log 2 pi + log gamma M)``, estimated with one ``v_0`` per sample (so it is a
  bound in expectation; the per-sample ELBO ``state_log_p - log q(v_0)`` is
  ``state_log_p - v0_log_q``, with the same expectation).
- **Batch independence.** Per-sample divergences come from gradients of batch sums, so the
  score model must treat samples independently: the model is evaluated exactly as passed
  (its ``train``/``eval`` mode is not touched, nothing is wrapped in DDP and no
  ``torch.distributed`` call is made). Callers pass an EMA / eval-mode model.
- **NFE** counts score-model calls; the exact or Hutchinson divergence reuses the forward pass
  of the call (backward passes are not counted).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torchdiffeq import odeint
from tqdm.auto import tqdm

from .processes.base import LinearProcess, ScoreFn, as_time
from .samplers.base import CountingScore
from .samplers.ode import ODEBudgetExceeded

DIVERGENCES = ("exact", "hutchinson")
NOISES = ("rademacher", "gaussian")
ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "adaptive_heun", "fehlberg2")
FIXED_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4")
METHODS = ADAPTIVE_METHODS + FIXED_METHODS

_F64 = torch.float64
_LN2 = math.log(2.0)


@dataclass
class LikelihoodResult:
    """Per-sample log-likelihoods (nats, float64) and the pieces they are made of.

    ``log_p``: ``log p_{t_min}(x)`` for k = 1 processes; for CLD the lower bound
    ``state_log_p + v0_entropy`` on ``log p(x)``. ``state_log_p = prior_logp + delta_logp``
    is the ODE's log-density of the initial state ``initial_state`` (= ``x`` for k = 1,
    ``(x, v_0)`` for CLD); ``final_state`` is ``u_T``.
    """

    log_p: Tensor
    nfe: int
    state_log_p: Tensor
    prior_logp: Tensor
    delta_logp: Tensor
    initial_state: Tensor
    final_state: Tensor
    t_min: float
    dim: int
    v0_log_q: Tensor | None = None
    v0_entropy: float | None = None
    info: dict = field(default_factory=dict)

    @property
    def nll(self) -> Tensor:
        """Per-sample negative log-likelihood (an upper bound for CLD), nats."""
        return -self.log_p

    def bits_per_dim(self, *, levels: int | None = 256) -> Tensor:
        """Per-sample bits/dim of ``log_p`` (see :func:`bits_per_dim`)."""
        return bits_per_dim(self.log_p, self.dim, levels=levels)


# ---------------------------------------------------------------------------------- checks
def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def _check_pos_float(name: str, value: object) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _check_pos_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


# ---------------------------------------------------------------------------------- divergence
def _draw_probes(shape: tuple[int, ...], noise: str, generator: torch.Generator | None,
                 like: Tensor) -> Tensor:
    """Hutchinson probes of ``shape`` (unit second moment), on ``like``'s device and dtype."""
    dev = generator.device if generator is not None else like.device
    if noise == "gaussian":
        z = torch.randn(shape, generator=generator, device=dev, dtype=like.dtype)
    else:
        z = torch.randint(0, 2, shape, generator=generator, device=dev).to(like.dtype) * 2 - 1
    return z.to(like.device)


def _score_divergence(s: Tensor, v: Tensor, probes: Tensor | None) -> Tensor:
    """``sum_i d s_i / d v_i`` per sample (exact) or its Hutchinson estimate (float64, (B,))."""
    if not s.requires_grad:
        raise RuntimeError(
            "score_fn's output does not depend differentiably on its input u; the likelihood "
            "needs autograd through the score model (do not run it under torch.no_grad or "
            "detach its output)"
        )
    batch = s.shape[0]
    if probes is None:
        flat = s.reshape(batch, -1)
        n = flat.shape[1]
        div = torch.zeros(batch, dtype=_F64, device=s.device)
        for i in range(n):
            (g,) = torch.autograd.grad(flat[:, i].sum(), v, retain_graph=i < n - 1,
                                       allow_unused=True)
            if g is not None:
                div = div + g.reshape(batch, -1)[:, i].to(_F64)
        return div
    est = torch.zeros(batch, dtype=_F64, device=s.device)
    n_probes = probes.shape[0]
    for p in range(n_probes):
        eps = probes[p]
        (g,) = torch.autograd.grad((s * eps).sum(), v, retain_graph=p < n_probes - 1,
                                   allow_unused=True)
        if g is not None:
            est = est + (g * eps).reshape(batch, -1).sum(1).to(_F64)
    return est / n_probes


# ---------------------------------------------------------------------------------- pieces
def _check_inputs(score_fn: ScoreFn, process: LinearProcess, x: Tensor, divergence: str,
                  noise: str, method: str) -> None:
    """Reject a process, score, data batch or choice the likelihood ODE cannot work with."""
    if not isinstance(process, LinearProcess):
        raise TypeError(f"process must be a trilemma LinearProcess, got {type(process).__name__}")
    if not callable(score_fn):
        raise TypeError(
            f"score_fn must be callable as score_fn(u, t), got {type(score_fn).__name__}"
        )
    if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[0] < 1:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a batched tensor (B, C, ...) or (B, d), got {got}")
    if not x.is_floating_point():
        raise ValueError(
            f"x must be floating point (dequantise integer data first), got dtype {x.dtype}"
        )
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains non-finite values")
    _check_choice("divergence", divergence, DIVERGENCES)
    _check_choice("noise", noise, NOISES)
    _check_choice("method", method, METHODS)


def _start_time(process: LinearProcess, t_min: float | None) -> float:
    """The ODE's start time: ``t_min`` (checked to lie in (0, T)) or ``process.eps``."""
    t0 = float(process.eps) if t_min is None else _check_pos_float("t_min", t_min)
    if not t0 < process.T:
        raise ValueError(f"t_min must lie in (0, T = {process.T}), got {t0!r}")
    return t0


def _solver_options(method: str, step_size: float | None) -> dict:
    """torchdiffeq options: the step of a fixed-step method (which needs one), else none."""
    options: dict = {}
    if method in FIXED_METHODS:
        if step_size is None:
            raise ValueError(f"method {method!r} is fixed-step: pass step_size")
        options["step_size"] = _check_pos_float("step_size", step_size)
    elif step_size is not None:
        raise ValueError(f"step_size is only for the fixed-step methods {list(FIXED_METHODS)}")
    return options


def _flow_rhs(
    score: CountingScore, process: LinearProcess, probes: Tensor | None, dim: int,
    bar: tqdm, max_nfe: int | None, rtol: float, atol: float,
) -> Callable[[Tensor, tuple[Tensor, Tensor]], tuple[Tensor, Tensor]]:
    """Right-hand side of the augmented ODE: ``(du/dt, div f~)`` for the state ``(u, acc)``.

    ``div f~ = d tr F(t) - 1/2 g(t)^2 div_n s`` (module docstring); each call is one score
    evaluation, stopped with :class:`ODEBudgetExceeded` beyond ``max_nfe`` calls.
    """
    nb = process.noise_block

    def func(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        if max_nfe is not None and score.nfe >= max_nfe:
            raise ODEBudgetExceeded(
                f"the likelihood ODE needed more than max_nfe = {max_nfe} score calls (rtol="
                f"{rtol}, atol={atol}) and stopped at t = {float(t):.6g}"
            )
        u = state[0].detach()
        tf = float(t)
        with torch.enable_grad():
            blocks = process.split(u)
            v = blocks[nb].requires_grad_(True)
            blocks[nb] = v
            u_in = process.join(blocks)
            try:
                s = score(u_in, tf)
            except FloatingPointError as err:
                raise FloatingPointError(f"in the likelihood ODE at t = {tf:.6g}: {err}") from err
            div_s = _score_divergence(s, v, probes)
        bar.update(1)
        s = s.detach()
        tt = as_time(tf, u.device).reshape(1)
        trace_f = torch.diagonal(process.drift_matrix(tt), dim1=-2, dim2=-1).sum(-1)
        g2 = process.diffusion_sq(tt)
        div = dim * trace_f - 0.5 * g2 * div_s  # float64, (B,)
        du = process.reverse_drift(u, tf, s, probability_flow=True)
        return du, div.to(u.dtype)

    return func


def _check_solution(u_T: Tensor, delta: Tensor) -> None:
    """Raise when the ODE's final state or divergence integral is not finite."""
    if not bool(torch.isfinite(u_T).all()) or not bool(torch.isfinite(delta).all()):
        raise FloatingPointError(
            "the likelihood ODE produced non-finite values; tighten rtol/atol, raise t_min or "
            "check the score model"
        )


def _velocity_entropy(process: LinearProcess, u0: Tensor, dim: int) -> tuple[float, Tensor]:
    """CLD: entropy ``H(q)`` of the initial-velocity law and each ``log q(v_0)`` (float64).

    ``q = N(0, gamma M)`` per coordinate; ``H(q)`` turns the joint density into the
    REFERENCE §2.2 bound on ``log p(x)``.
    """
    nb = process.noise_block
    var_v = float(process.init_cov()[nb, nb])
    entropy = 0.5 * dim * (1.0 + math.log(2.0 * math.pi) + math.log(var_v))
    v0 = process.split(u0)[nb].to(_F64).reshape(u0.shape[0], -1)
    v0_log_q = -0.5 * (v0**2).sum(1) / var_v - 0.5 * dim * math.log(2.0 * math.pi * var_v)
    return entropy, v0_log_q


# ---------------------------------------------------------------------------------- main entry
def log_likelihood(
    score_fn: ScoreFn,
    process: LinearProcess,
    x: Tensor,
    *,
    divergence: str = "exact",
    noise: str = "rademacher",
    n_probes: int = 1,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    t_min: float | None = None,
    step_size: float | None = None,
    max_nfe: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> LikelihoodResult:
    """Per-sample ``log p_{t_min}(x)`` (a bound for CLD) by the probability-flow ODE.

    Args:
        score_fn: ``score_fn(u, t)`` returning the noise-block score (trilemma convention); it
            must be differentiable in ``u`` and treat batch entries independently.
        process: the forward process the score belongs to.
        x: data batch ``(B, C, ...)`` or ``(B, d)``; integrated in its dtype (use float64 for
            tight tolerances with an analytic score).
        divergence: ``'exact'`` (one backward pass per data coordinate) or ``'hutchinson'``.
        noise: Hutchinson probe distribution, ``'rademacher'`` or ``'gaussian'``.
        n_probes: Hutchinson probes per sample (averaged; one forward pass for all of them).
        rtol, atol: tolerances of the adaptive solver.
        method: a torchdiffeq solver; adaptive ones in ``ADAPTIVE_METHODS``, fixed-step ones in
            ``FIXED_METHODS`` (these need ``step_size``).
        t_min: start time of the ODE (default ``process.eps``); the result is the density of
            the data diffused to ``t_min`` (module docstring).
        step_size: step of a fixed-step ``method``.
        max_nfe: raise :class:`~trilemma.samplers.ODEBudgetExceeded` beyond this many calls.
        generator: draws CLD's initial velocity and the Hutchinson probes (in that order).
        progress: show a tqdm bar counting score calls.
    """
    _check_inputs(score_fn, process, x, divergence, noise, method)
    n_probes = _check_pos_int("n_probes", n_probes)
    rtol, atol = _check_pos_float("rtol", rtol), _check_pos_float("atol", atol)
    max_nfe = None if max_nfe is None else _check_pos_int("max_nfe", max_nfe)
    t0 = _start_time(process, t_min)
    options = _solver_options(method, step_size)

    x = x.detach()
    batch, dim = x.shape[0], x[0].numel()
    u0 = process.data_to_state(x, generator)
    probes = None
    if divergence == "hutchinson":
        noise_shape = process.split(u0)[process.noise_block].shape
        probes = _draw_probes((n_probes, *noise_shape), noise, generator, u0)
    score = CountingScore(score_fn)
    bar = tqdm(desc="likelihood ODE (NFE)", disable=not progress, leave=False)
    func = _flow_rhs(score, process, probes, dim, bar, max_nfe, rtol, atol)
    times = torch.tensor([t0, float(process.T)], dtype=u0.dtype, device=u0.device)
    acc0 = torch.zeros(batch, dtype=u0.dtype, device=u0.device)
    try:
        with torch.no_grad():
            sol_u, sol_acc = odeint(func, (u0, acc0), times, rtol=rtol, atol=atol, method=method,
                                    options=options or None)
    finally:
        bar.close()
    u_T, delta = sol_u[-1], sol_acc[-1].to(_F64)
    _check_solution(u_T, delta)
    prior = process.prior_logp(u_T.to(_F64)).to(_F64)
    state_log_p = prior + delta
    info = {"divergence": divergence, "method": method, "rtol": rtol, "atol": atol,
            "process": process.name}
    if divergence == "hutchinson":
        info.update(noise=noise, n_probes=n_probes)
    entropy, v0_log_q = _velocity_entropy(process, u0, dim) if process.k > 1 else (None, None)
    log_p = state_log_p if entropy is None else state_log_p + entropy
    return LikelihoodResult(log_p=log_p, nfe=score.nfe, state_log_p=state_log_p,
                            prior_logp=prior, delta_logp=delta, initial_state=u0,
                            final_state=u_T, t_min=t0, dim=dim, v0_log_q=v0_log_q,
                            v0_entropy=entropy, info=info)


# ---------------------------------------------------------------------------------- bits / dim
def bits_per_dim(
    log_p: Tensor | float, dim: int, *, levels: int | None = 256, eight_bit: bool | None = None
) -> Tensor:
    """Bits/dim of discrete data from a density ``log_p`` (nats) on its [-1, 1] scaling.

    Convention (:func:`dequantize`): ``levels`` equally likely-sized bins of width
    ``2 / levels`` tile [-1, 1); value ``k`` owns ``[-1 + 2k/levels, -1 + 2(k+1)/levels)``.
    Rescaling the bins to unit width multiplies densities by ``(2 / levels)^d``, so
    ``bpd = -log_p / (d ln 2) + log2(levels / 2)``: ``+7`` for 8-bit data (``levels = 256``),
    ``+log2(8.5)`` for the 17-level digits. ``levels=None`` gives plain continuous bits/dim
    (no offset). ``eight_bit`` (legacy switch): ``True`` is ``levels=256``, ``False`` is
    ``levels=None``. With uniform dequantisation the result bounds the discrete model's
    bits/dim from above (in expectation over the dequantisation noise).
    """
    if eight_bit is not None:
        levels = 256 if eight_bit else None
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive integer (dimensions per sample), got {dim!r}")
    if levels is not None and (isinstance(levels, bool) or not isinstance(levels, int)
                               or levels < 2):
        raise ValueError(f"levels must be an integer >= 2 or None, got {levels!r}")
    lp = torch.as_tensor(log_p, dtype=_F64) if not isinstance(log_p, Tensor) else log_p.to(_F64)
    offset = 0.0 if levels is None else math.log2(levels / 2.0)
    return -lp / (dim * _LN2) + offset


def dequantize(
    x_int: Tensor, generator: torch.Generator | None = None, *, levels: int = 256,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Uniformly dequantise integers ``0..levels-1`` into [-1, 1): ``2 (k + U[0,1)) / levels - 1``.

    For 8-bit images this is ``u = (x + U) / 256`` scaled to [-1, 1] (REFERENCE §5). Pair it with
    :func:`bits_per_dim` at the same ``levels``. Integer data stored as [-1, 1] floats by the
    loaders (``k * 2 / (levels - 1) - 1``) can be turned back with :func:`to_levels`.
    """
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
    if not isinstance(x_int, Tensor):
        raise TypeError(f"x_int must be an integer tensor, got {type(x_int).__name__}")
    if x_int.is_floating_point() or x_int.is_complex() or x_int.dtype == torch.bool:
        raise ValueError(f"x_int must have an integer dtype (e.g. uint8), got {x_int.dtype}")
    if x_int.numel() and (int(x_int.min()) < 0 or int(x_int.max()) > levels - 1):
        raise ValueError(
            f"x_int must lie in 0..{levels - 1} for levels={levels}, got range "
            f"[{int(x_int.min())}, {int(x_int.max())}]"
        )
    dev = generator.device if generator is not None else x_int.device
    noise = torch.rand(x_int.shape, generator=generator, device=dev, dtype=_F64).to(x_int.device)
    return ((x_int.to(_F64) + noise) * (2.0 / levels) - 1.0).to(dtype)


def to_levels(x: Tensor, levels: int, *, atol: float = 1e-3) -> Tensor:
    """Integers ``0..levels-1`` from [-1, 1] data stored as ``k * 2 / (levels - 1) - 1``.

    That is how the image loaders scale (e.g. digits 0..16 with ``levels = 17``, 8-bit with
    ``256``); raises if ``x`` is not on that lattice (e.g. resized images).
    """
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
    k = (x.to(_F64) + 1.0) * ((levels - 1) / 2.0)
    r = torch.round(k)
    if x.numel() and (float((k - r).abs().max()) > atol or float(r.min()) < 0
                      or float(r.max()) > levels - 1):
        raise ValueError(
            f"x is not data with {levels} levels scaled to [-1, 1] as k * 2 / {levels - 1} - 1"
        )
    return r.to(torch.long)


__all__ = [
    "ADAPTIVE_METHODS",
    "DIVERGENCES",
    "FIXED_METHODS",
    "METHODS",
    "NOISES",
    "LikelihoodResult",
    "bits_per_dim",
    "dequantize",
    "log_likelihood",
    "to_levels",
]
