"""Inpainting by replacement, with RePaint resampling as an option (REFERENCE.md §9.3).

Given known data ``x0`` and a mask ``m`` (1 = known), every reverse step to time ``s`` is followed
by ``u_s <- m * draw(q(u_s | x0)) + (1 - m) * u_s``: the known coordinates are a fresh draw from
the forward marginal (for CLD the known ``(x, v)`` pairs jointly, the initial velocity integrated
out as HSM prescribes), the unknown ones are generated. RePaint (Lugmayr et al. 2022) redoes
steps: after reaching a resampling point it diffuses the whole state back ``jump`` grid steps
with the forward transition kernel and denoises again, ``resample`` times per point.

The samplers take single steps here (k-diffusion style: one step function per sampler, no copy
of their loops). Where a step reads the score on an intermediate state (SSCS after its first
half-step, PC before each corrector) the known part is replaced there as well, so the score
always sees known coordinates drawn from the forward marginal.

Sound: the stochastic samplers (EM, PC, SSCS, DDIM with ``eta > 0``), whose noise lets the
unknown part re-equilibrate with the replaced known part. A heuristic: the deterministic ones
(DDIM ``eta = 0``, Euler/Heun/RK4 on the probability-flow ODE), whose state is a deterministic
function of the noise, which replacement breaks. Refused: multistep solvers (DPM-Solver++, UniPC,
gDDIM) keep a history of predictions that replacement invalidates; the adaptive
ODE solver and EDM's Heun take steps this module cannot interleave.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..processes.base import LinearProcess, ScalarProcess, ScoreFn, chol_factor, randn_like
from ._common import (
    call_score,
    check_choice,
    check_nonneg_int,
    check_positive,
    finish,
    prepare,
    steps,
)
from .base import CountingScore, SampleResult, check_finite
from .ddim import ddim_step
from .euler_maruyama import em_step
from .grids import get_grid
from .ode import fixed_step, pf_drift
from .pc import (
    PREDICTORS,
    STEP_NORMS,
    default_predictor,
    default_snr,
    langevin_step,
    reverse_diffusion_step,
)
from .registry import SAMPLERS, check_sampler
from .sscs import sscs_step

Replace = Callable[[Tensor, float], Tensor]
Step = Callable[[CountingScore, LinearProcess, Tensor, float, float, Any, bool, int, dict,
                 Replace], Tensor]

#: why a sampler cannot inpaint
REFUSED = {
    "dpm2m": "a multistep solver: replacing the known part invalidates its history of "
             "predictions",
    "dpm3m": "a multistep solver: replacing the known part invalidates its history of "
             "predictions",
    "gddim": "a multistep exponential integrator: replacement invalidates its history",
    "unipc": "a multistep predictor-corrector: replacing the known part invalidates its "
             "history of predictions",
    "ode": "adaptive: the solver chooses its own steps, so none can be interleaved",
    "edm": "EDM's Heun steps in sigma/alpha with its own last step; use 'heun' instead",
}
#: samplers whose inpainting is exact in the limit (noise re-equilibrates the unknown part)
SOUND = ("em", "pc", "sscs")


def _em(score: CountingScore, process: LinearProcess, u: Tensor, t: float, s: float,
        generator: Any, add_noise: bool, i: int, opts: dict, replace: Replace) -> Tensor:
    return em_step(process, u, call_score(score, u, t, i), t, s, generator, add_noise)[0]


def _ddim(score: CountingScore, process: LinearProcess, u: Tensor, t: float, s: float,
          generator: Any, add_noise: bool, i: int, opts: dict, replace: Replace) -> Tensor:
    sc = call_score(score, u, t, i)
    return ddim_step(process, u, sc, t, s, float(opts.get("eta", 0.0)), generator, add_noise)


def _sscs(score: CountingScore, process: LinearProcess, u: Tensor, t: float, s: float,
          generator: Any, add_noise: bool, i: int, opts: dict, replace: Replace) -> Tensor:
    """SSCS reads the score after its first half-step: the known part is replaced there too
    (oracle, 50 steps, jump 10, seed 0: W1 0.144 / 0.130 / 0.105 at r = 0 / 4 / 16 replacing
    only at the step's end, 0.147 / 0.077 / 0.077 with it; docs/RESULTS.md)."""
    return sscs_step(process, score, u, t, s, generator, i, condition=replace)


def _pc(score: CountingScore, process: LinearProcess, u: Tensor, t: float, s: float,
        generator: Any, add_noise: bool, i: int, opts: dict, replace: Replace) -> Tensor:
    """score_sde's inpainting sampler: predictor, then Langevin correctors at ``s``, the known
    part replaced before each corrector (the step's end replaces it after the last)."""
    predictor = opts.get("predictor") or default_predictor(process)
    predict = reverse_diffusion_step if predictor == "reverse_diffusion" else em_step
    n_corr = int(opts.get("n_corrector", 1))
    snr = opts.get("snr") or default_snr(process)
    u = predict(process, u, call_score(score, u, t, i), t, s, generator,
                add_noise=add_noise or n_corr > 0)[0]
    alpha = 1.0
    if isinstance(process, ScalarProcess):
        alpha = float((process.alpha(t) / process.alpha(s)) ** 2)
    for _ in range(n_corr):
        u = replace(u, s)
        u = langevin_step(process, u, call_score(score, u, s, i), snr, alpha, generator,
                          step_norm=opts.get("step_norm", "batch"))[0]
    return u


def _ode(score: CountingScore, process: LinearProcess, u: Tensor, t: float, s: float,
         generator: Any, add_noise: bool, i: int, opts: dict, replace: Replace) -> Tensor:
    def f(x: Tensor, tau: float) -> Tensor:
        return pf_drift(score, process, x, tau, i)

    return fixed_step(opts["method"], f, u, t, s)


STEPS: dict[str, Step] = {"em": _em, "pc": _pc, "ddim": _ddim, "sscs": _sscs,
                          "euler": _ode, "heun": _ode, "rk4": _ode}


def is_sound(sampler: str, opts: dict | None = None) -> bool:
    """Whether inpainting with ``sampler`` is sound (stochastic) rather than a heuristic."""
    return sampler in SOUND or (sampler == "ddim" and float((opts or {}).get("eta", 0.0)) > 0)


def check_inpaint_sampler(name: str, process: LinearProcess, opts: dict | None = None) -> None:
    """Raise ``ValueError('sampler: ...')`` when ``name`` cannot inpaint on ``process``."""
    fits = ", ".join(n for n in STEPS if SAMPLERS[n].supports(process))
    if name in REFUSED:
        raise ValueError(f"sampler: {name!r} cannot inpaint ({REFUSED[name]}); use one of: "
                         + fits)
    if name in SAMPLERS and not SAMPLERS[name].supports(process):
        raise ValueError(f"sampler: {name!r} does not fit process {process.name!r}; use one "
                         f"of: {fits}")
    check_sampler(name, getattr(process, "name", None), None, opts)


def check_options(opts: dict) -> None:
    """The option values the step functions read (names are checked by ``check_sampler``)."""
    if "eta" in opts:
        check_positive("eta", opts["eta"], allow_zero=True)
    if "n_corrector" in opts:
        check_nonneg_int("n_corrector", opts["n_corrector"])
    if opts.get("snr") is not None:
        check_positive("snr", opts["snr"])
    if opts.get("predictor") is not None:
        check_choice("predictor", opts["predictor"], PREDICTORS)
    if "step_norm" in opts:
        check_choice("step_norm", opts["step_norm"], STEP_NORMS)


def repaint_path(n_steps: int, resample: int = 0, jump: int = 1) -> list[int]:
    """The grid indices visited (0 = ``T``, ``n_steps`` = the end): one reverse step at a time,
    and at every multiple of ``jump`` a jump back by ``jump`` indices, ``resample`` times."""
    left = {i: resample for i in range(jump, n_steps + 1, jump)}
    path, i = [0], 0
    while i < n_steps:
        i += 1
        path.append(i)
        if left.get(i, 0) > 0:
            left[i] -= 1
            i -= jump
            path.append(i)
    return path


def inpaint_nfe(n_steps: int, per_step: int, resample: int, jump: int, denoise: bool) -> int:
    """Exact score calls of an inpainting run: every reverse step costs ``per_step``."""
    return per_step * (n_steps + resample * jump * (n_steps // jump)) + int(denoise)


def state_mask(process: LinearProcess, mask: Tensor) -> Tensor:
    """The data mask on every block of the state (CLD: the known x and their velocities)."""
    return process.join([mask] * process.k)


#: what replacement does with CLD's velocities of the known pixels
VELOCITY_MODES = ("redraw", "keep")


def replace_known(process: LinearProcess, u: Tensor, x0: Tensor, mask: Tensor, t: float,
                  generator: torch.Generator | None, velocity: str = "redraw") -> Tensor:
    """``u`` with its known coordinates replaced by a draw from ``q(u_t | x0)``.

    For CLD, ``velocity='redraw'`` draws the known ``(x, v)`` pairs jointly; ``'keep'`` keeps the
    sampler's ``v`` and draws ``x`` from ``q(x_t | x0, v_t)`` (REFERENCE.md §9.3's variant).
    """
    m = state_mask(process, mask).to(u.dtype)
    if process.k == 1 or velocity == "redraw":
        known, _ = process.perturb(x0.to(u.dtype), t, generator)
        return m * known + (1.0 - m) * u
    cov = process.marginal_cov(t)  # per-coordinate (x, v) covariance given x0
    psi = process.mean_coef(t)[..., :, 0]  # how x0 enters (x, v)
    gain, var = float(cov[0, 1] / cov[1, 1]), float(cov[0, 0] - cov[0, 1] ** 2 / cov[1, 1])
    x, v = process.split(u)
    x0 = x0.to(u.dtype)
    x_known = float(psi[0]) * x0 + gain * (v - float(psi[1]) * x0) \
        + max(var, 0.0) ** 0.5 * randn_like(x, generator)
    return process.join([mask * x_known + (1.0 - mask) * x, v])


def forward_jump(process: LinearProcess, u: Tensor, s: float, t: float,
                 generator: torch.Generator | None) -> Tensor:
    """Diffuse the state forward from ``s`` to ``t > s``: ``Psi(t, s) u + Sigma(t | s)^{1/2} z``."""
    tt = torch.tensor(t, dtype=torch.float64)
    ss = torch.tensor(s, dtype=torch.float64)
    chol = chol_factor(process.transition_cov(tt, ss))
    return process.apply(process.transition(tt, ss), u) + process.apply(
        chol, randn_like(u, generator))


def check_known(x0: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """``x0`` batched and finite; ``mask`` of 0/1 broadcast to its shape."""
    if not isinstance(x0, Tensor) or not isinstance(mask, Tensor):
        raise TypeError("x0 and mask must be torch tensors")
    if not bool(torch.isfinite(x0).all()):
        raise ValueError("x0 (the known data) contains non-finite values")
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask must hold only 0 (unknown) and 1 (known)")
    try:
        mask = torch.broadcast_to(mask.to(x0.dtype), x0.shape)
    except RuntimeError:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to the data's "
                         f"shape {tuple(x0.shape)}") from None
    return x0, mask.to(x0.device)


def sample_inpaint(
    score_fn: ScoreFn,
    process: LinearProcess,
    u_T: Tensor,
    grid: Tensor,
    x0: Tensor,
    mask: Tensor,
    *,
    sampler: str = "em",
    resample: int = 0,
    jump: int = 1,
    velocity: str = "redraw",
    generator: torch.Generator | None = None,
    denoise: bool = True,
    trajectory: bool = False,
    progress: bool = False,
    **opts: Any,
) -> SampleResult:
    """Inpaint ``x0`` where ``mask`` is 0, from prior states ``u_T`` down ``grid``.

    Each reverse step of ``sampler`` is followed by the replacement of the known coordinates;
    with ``resample = r > 0`` RePaint jumps back ``jump`` steps ``r`` times at every multiple
    of ``jump``. ``samples`` hold ``x0`` exactly where known; ``nfe`` counts every call.
    ``velocity`` (CLD): ``'redraw'`` the known pixels' velocities with their positions (default)
    or ``'keep'`` the sampler's (see :func:`replace_known`).
    ``trajectory`` keeps the state after every move, with ``times`` the time of each.
    """
    check_inpaint_sampler(sampler, process, opts)
    resample = check_nonneg_int("resample", resample)
    jump = check_nonneg_int("jump", jump)
    score, grid = prepare(score_fn, process, u_T, grid)
    n = grid.numel() - 1
    if not 1 <= jump <= n:
        raise ValueError(f"jump must lie in [1, {n}] (the number of steps), got {jump}")
    x0, mask = check_known(x0, mask)
    if x0.shape[0] != u_T.shape[0] or process.state_to_data(u_T).shape != x0.shape:
        raise ValueError(f"x0 has shape {tuple(x0.shape)}; the states need data of shape "
                         f"{tuple(process.state_to_data(u_T).shape)}")
    opts = {**SAMPLERS[sampler].defaults, **opts}
    check_options(opts)
    check_choice("velocity", velocity, VELOCITY_MODES)
    step = STEPS[sampler]
    path = repaint_path(n, resample, jump)
    def replace(state: Tensor, time: float) -> Tensor:
        return replace_known(process, state, x0, mask, time, generator, velocity)

    u = replace(u_T, float(grid[0]))
    traj, times = ([u], [float(grid[0])]) if trajectory else (None, None)
    for k in steps(len(path) - 1, progress, "inpaint"):
        a, b = path[k], path[k + 1]
        now, nxt = float(grid[a]), float(grid[b])
        if b > a:  # a reverse step down to the next grid time, then the replacement
            u = step(score, process, u, now, nxt, generator, denoise or b < n, a, opts, replace)
            u = replace(u, nxt)
        else:  # RePaint: back up the grid along the forward kernel
            u = forward_jump(process, u, now, nxt, generator)
        check_finite(u, a, nxt)
        if traj is not None:
            traj.append(u)
            times.append(nxt)
    info = {"sampler": sampler, "inpaint": True, "resample": resample, "jump": jump,
            "velocity": velocity if process.k > 1 else None,
            "reverse_steps": sum(b > a for a, b in zip(path[:-1], path[1:], strict=True)),
            "sound": is_sound(sampler, opts)}
    res = finish(score, process, u, grid, denoise=denoise, traj=traj, info=info)
    res.samples = mask * x0 + (1.0 - mask) * res.samples
    if times is not None:
        res.times = torch.tensor(times, dtype=torch.float64)
    return res


def inpaint(
    name: str,
    score_fn: ScoreFn,
    process: LinearProcess,
    x0: Tensor,
    mask: Tensor,
    nfe: int,
    *,
    resample: int = 0,
    jump: int = 1,
    velocity: str = "redraw",
    generator: torch.Generator | None = None,
    grid: str | None = None,
    denoise: bool | None = None,
    progress: bool = False,
    **opts: Any,
) -> SampleResult:
    """Inpaint with sampler ``name`` within a total budget of ``nfe`` score calls.

    The budget includes the resampling (each redone step costs its calls again) and the
    denoising call: the grid gets the most steps whose exact total fits. ``grid`` names the
    grid (default: the sampler's); the prior draw matches ``x0``'s dtype and device.
    """
    check_inpaint_sampler(name, process, opts)
    spec = SAMPLERS[name]
    denoise = spec.denoises(process.name) if denoise is None else bool(denoise)
    resample = check_nonneg_int("resample", resample)
    jump = check_nonneg_int("jump", jump)
    per = spec.nfe_per_step({**spec.defaults, **opts})
    if isinstance(nfe, bool) or not isinstance(nfe, int):
        raise ValueError(f"nfe must be a positive integer, got {nfe!r}")
    n = 0
    while inpaint_nfe(n + 1, per, resample, jump, denoise) <= nfe:
        n += 1
    if n < max(jump, 1):
        need = inpaint_nfe(max(jump, 1), per, resample, jump, denoise)
        raise ValueError(f"nfe: {name!r} with resample={resample}, jump={jump} needs at least "
                         f"{need} NFE, got {nfe}")
    times = get_grid(grid or spec.default_grid(process), process, n)
    shape = (x0.shape[0],) + tuple(x0.shape[1:])
    u_T = process.prior_sample(shape, generator=generator, device=x0.device, dtype=x0.dtype)
    res = sample_inpaint(score_fn, process, u_T, times, x0, mask, sampler=name,
                         resample=resample, jump=jump, velocity=velocity,
                         generator=generator, denoise=denoise,
                         progress=progress, **opts)
    res.info["nfe_budget"] = nfe
    return res


__all__ = ["REFUSED", "SOUND", "STEPS", "VELOCITY_MODES", "check_inpaint_sampler",
           "forward_jump", "inpaint", "inpaint_nfe", "is_sound", "repaint_path", "replace_known",
           "sample_inpaint", "state_mask"]
