"""gDDIM for CLD: a deterministic multistep exponential integrator (REFERENCE.md §3.2).

The score is read as ``s = -K_t^{-T} eps`` with ``K_t = R_t`` (gDDIM's rotated square root of
``Sigma_t``, ``process.gddim_factor``) or ``K_t = L_t`` (Cholesky, ``factor='L'``, the variant that
fails at low NFE). The probability-flow ODE ``du/dt = F u + 1/2 G G^T K^{-T} eps`` is integrated by
variation of constants with ``eps`` replaced by its Lagrange interpolant on the last ``q + 1`` grid
times::

    u_{i+1} = Psi(t_{i+1}, t_i) u_i + sum_j C_ij eps_{i-j},
    C_ij = int_{t_i}^{t_{i+1}} Psi(t_{i+1}, tau) 1/2 G G^T K_tau^{-T} l_j(tau) dtau.

The ``C_ij`` come from Gauss-Legendre quadrature in ``log tau`` (float64), once per
(process, grid, order, factor), and are cached. For ``q = 0`` and ``K = R`` they equal
``R_{t_{i+1}} - Psi R_{t_i}`` and the step is exact for a single data point.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import Tensor

from ..processes.base import LinearProcess, ScoreFn, as_time
from ..processes.cld import CLD
from ._common import call_score, finish, prepare, steps
from .base import SampleResult, check_finite, check_grid
from .sscs import require_cld

#: Gauss-Legendre nodes per panel; each step interval is cut into equal panels in log time, at
#: most ``QUAD_PANEL`` long (coefficients agree with the closed form to ~1e-12 on any grid)
QUAD_NODES = 32
QUAD_PANEL = 0.5
_CACHE_SIZE = 32
_CACHE: OrderedDict[tuple, tuple[Tensor, Tensor, list[Tensor]]] = OrderedDict()


def gddim_factor_matrix(process: CLD, t: Tensor, factor: str) -> Tensor:
    """``K_t``: gDDIM's ``R_t`` (``factor='R'``) or the Cholesky factor ``L_t`` (``'L'``)."""
    return process.gddim_factor(t) if factor == "R" else process.marginal_chol(t)


def lagrange_basis(tau: Tensor, nodes: list[float]) -> Tensor:
    """Lagrange basis polynomials on ``nodes`` at ``tau``: shape ``(len(nodes),) + tau.shape``."""
    out = []
    for j, tj in enumerate(nodes):
        lj = torch.ones_like(tau)
        for m, tm in enumerate(nodes):
            if m != j:
                lj = lj * (tau - tm) / (tj - tm)
        out.append(lj)
    return torch.stack(out)


def gddim_coefficients(
    process: CLD, grid: Tensor, order: int = 0, factor: str = "R", n_nodes: int = QUAD_NODES
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Float64 step coefficients for the grid: ``(Psi, K, C)``.

    ``Psi[i] = Psi(t_{i+1}, t_i)`` and ``K[i] = K_{t_i}`` have shape ``(N, 2, 2)``; ``C[i]`` has
    shape ``(q_i + 1, 2, 2)`` with ``q_i = min(order, i)``, ``C[i][j]`` multiplying ``eps_{i-j}``.
    """
    require_cld(process, "gDDIM")
    grid = check_grid(grid, process).cpu()
    order, factor = _check_options(order, factor)
    key = (type(process).__name__, repr(sorted(process.config().items())), process.T,
           tuple(grid.tolist()), order, factor, n_nodes)
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    n = grid.numel() - 1
    # composite Gauss-Legendre in w = log tau: same panel count for every step
    log_g = torch.log(grid)
    panels = max(1, int(np.ceil(float((log_g[:-1] - log_g[1:]).max()) / QUAD_PANEL)))
    x, w = np.polynomial.legendre.leggauss(n_nodes)
    x, w = torch.from_numpy(x), torch.from_numpy(w)
    frac = torch.arange(panels + 1, dtype=torch.float64) / panels
    edges = log_g[1:, None] + (log_g[:-1] - log_g[1:])[:, None] * frac  # (N, panels + 1)
    lo, hi = edges[:, :-1, None], edges[:, 1:, None]
    logtau = (0.5 * (hi - lo) * x + 0.5 * (hi + lo)).flatten(1)  # (N, panels * n_nodes)
    tau = torch.exp(logtau)
    # int_{t_i}^{t_{i+1}} f dtau = -int_{log t_{i+1}}^{log t_i} f(e^w) e^w dw
    wq = -(0.5 * (hi - lo) * w).flatten(1) * tau
    t_next = grid[1:, None].expand_as(tau)
    psi = process.transition(t_next, tau)  # (N, n, 2, 2)
    k_tau = gddim_factor_matrix(process, tau, factor)
    kinv_t = torch.linalg.inv(k_tau).transpose(-1, -2)
    integrand = psi @ (0.5 * process.diffusion_matrix_sq(tau)) @ kinv_t  # (N, n, 2, 2)
    coefs = []
    for i in range(n):
        q = min(order, i)
        nodes = [float(grid[i - j]) for j in range(q + 1)]
        ell = lagrange_basis(tau[i], nodes)  # (q+1, n)
        coefs.append(torch.einsum("jn,n,nab->jab", ell, wq[i], integrand[i]))
    psi_step = process.transition(grid[1:], grid[:-1])
    k_step = gddim_factor_matrix(process, grid[:-1], factor)
    out = (psi_step, k_step, coefs)
    _CACHE[key] = out
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return out


def _check_options(order: int, factor: str) -> tuple[int, str]:
    """Validate gDDIM's ``order`` and ``factor`` options."""
    is_int = isinstance(order, (int, np.integer)) and not isinstance(order, bool)
    if not is_int or order not in (0, 1, 2):
        raise ValueError(f"gDDIM order must be 0, 1 or 2, got {order!r}")
    if factor not in ("R", "L"):
        raise ValueError(
            f"gDDIM factor must be 'R' (gDDIM's R_t) or 'L' (Cholesky L_t), got {factor!r}"
        )
    return int(order), factor


def sample_gddim(
    score_fn: ScoreFn,
    process: LinearProcess,
    u_T: Tensor,
    grid: Tensor,
    *,
    order: int = 0,
    factor: str = "R",
    generator: torch.Generator | None = None,
    denoise: bool = True,
    trajectory: bool = False,
    progress: bool = False,
) -> SampleResult:
    """Deterministic gDDIM of ``order`` 0, 1 or 2 for CLD down the grid (1 NFE per step).

    ``score_fn`` returns the velocity score; ``factor`` picks ``K_t`` (``'R'`` or ``'L'``).
    ``generator`` is accepted for a uniform sampler interface and unused. ``denoise`` adds
    Tweedie's ``x0_hat`` at ``grid[-1]`` (+1 NFE); ``state`` is the state at ``grid[-1]`` and
    ``trajectory`` holds ``u_T`` and every step's state, aligned with ``times = grid``.
    """
    del generator  # deterministic
    cld = require_cld(process, "gDDIM")
    order, factor = _check_options(order, factor)
    score, grid = prepare(score_fn, cld, u_T, grid)
    psi, k_mat, coefs = gddim_coefficients(cld, grid, order, factor)
    u = u_T
    traj = [u] if trajectory else None
    history: list[Tensor] = []  # eps_i, eps_{i-1}, ...
    n = grid.numel() - 1
    for i in steps(n, progress, f"gDDIM-{order}{factor}"):
        t = float(grid[i])
        s_v = call_score(score, u, t, i)
        s_full = cld.full_score(u, as_time(t, u.device), s_v)
        eps = -cld.apply(k_mat[i].T.to(u.device), s_full)
        history.insert(0, eps)
        del history[order + 1:]
        u_next = cld.apply(psi[i].to(u.device), u)
        for j, c in enumerate(coefs[i]):
            u_next = u_next + cld.apply(c.to(u.device), history[j])
        u = u_next
        check_finite(u, i, float(grid[i + 1]))
        if traj is not None:
            traj.append(u)
    info = {"sampler": "gddim", "order": order, "factor": factor}
    return finish(score, cld, u, grid, denoise=denoise, traj=traj, info=info)
