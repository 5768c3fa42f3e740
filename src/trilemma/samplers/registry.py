"""Samplers by name, and ``sample``: prior draw, NFE budget -> steps -> grid -> sampler.

Each :class:`SamplerSpec` says how many score calls one step costs, so :func:`sample` can pick
the largest number of steps whose total NFE (the denoising call included) fits the budget.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..processes.base import LinearProcess, ScalarProcess, ScoreFn
from ..processes.cld import CLD
from .base import SampleResult
from .ddim import sample_ddim
from .dpm_solver import sample_dpm_solver
from .edm import sample_edm_heun
from .euler_maruyama import sample_euler_maruyama
from .gddim import sample_gddim
from .grids import GRIDS, get_grid, tuned_keys
from .ode import FIXED_STAGES, sample_ode
from .pc import sample_pc
from .sscs import sample_sscs
from .teleport import (
    FROM_DATA,
    TELEPORT_OPTIONS,
    GaussianMoments,
    check_teleport_options,
    landing_time,
    teleport_start,
)
from .unipc import sample_unipc

SCALAR_PROCESSES = ("vp", "vp_cosine", "subvp", "geometric_vp", "ve", "rectified_flow")
CLD_PROCESSES = ("cld",)
ALL_PROCESSES = SCALAR_PROCESSES + CLD_PROCESSES
#: processes whose samplers end without Tweedie's denoising call by default and whose ODE
#: samplers step uniformly in t (Liu et al.'s Euler): the rectified flow's noise at eps is
#: sigma = eps itself (1e-3), so N Euler steps cost N NFE from T to eps
FLOW_PROCESSES = ("rectified_flow",)


@dataclass(frozen=True)
class SamplerSpec:
    """How to run one named sampler.

    ``grid`` / ``grid_cld`` name the default grids for scalar processes and for CLD;
    ``nfe_per_step(opts)`` is the score calls per grid step given the merged options;
    ``processes`` is ``'any'``, ``'scalar'`` or ``'cld'``; ``adaptive`` samplers (dopri5) choose
    their own steps and treat the NFE budget as a cap.
    """

    fn: Callable[..., SampleResult]
    grid: str
    grid_cld: str
    nfe_per_step: Callable[[dict], int]
    processes: str = "any"
    defaults: dict = field(default_factory=dict)
    min_steps: int = 1
    adaptive: bool = False
    description: str = ""
    #: whether ``sample`` ends with Tweedie's denoising call by default (never on a flow)
    denoise: bool = True
    #: the default grid on a flow process (FLOW_PROCESSES); "" for ``grid``
    grid_flow: str = ""

    def default_grid(self, process: LinearProcess) -> str:
        """The grid name used when none is given (CLD and the flows have their own)."""
        if process.name in FLOW_PROCESSES and self.grid_flow:
            return self.grid_flow
        return self.grid_cld if isinstance(process, CLD) else self.grid

    def denoises(self, process: str | None) -> bool:
        """Whether ``sample`` ends with the denoising call on the named process by default."""
        return self.denoise and process not in FLOW_PROCESSES

    def supports(self, process: LinearProcess) -> bool:
        """Whether the sampler can run on ``process``."""
        if self.processes == "scalar":
            return isinstance(process, ScalarProcess)
        if self.processes == "cld":
            return isinstance(process, CLD)
        return True

    def supported_names(self) -> tuple[str, ...]:
        """Process names the sampler supports."""
        return {"scalar": SCALAR_PROCESSES, "cld": CLD_PROCESSES}.get(self.processes,
                                                                      ALL_PROCESSES)

    def min_nfe(self, denoise: bool = True, **opts: Any) -> int:
        """The smallest NFE budget that allows ``min_steps`` steps."""
        if self.adaptive:  # dopri5: 2 calls to choose the first step, 6 per step after
            return 8 + int(denoise)
        return self.min_steps * self.nfe_per_step({**self.defaults, **opts}) + int(denoise)

    def steps_for(self, nfe: int, denoise: bool = True, **opts: Any) -> int:
        """Largest number of steps whose total NFE (with the denoising call) is <= ``nfe``."""
        return (nfe - int(denoise)) // self.nfe_per_step({**self.defaults, **opts})

    def nfe_for(self, n_steps: int, denoise: bool = True, **opts: Any) -> int:
        """Total NFE of ``n_steps`` steps (exact for fixed-step samplers)."""
        return n_steps * self.nfe_per_step({**self.defaults, **opts}) + int(denoise)


def _one(_: dict) -> int:
    return 1


def _pc_cost(opts: dict) -> int:
    nc = opts.get("n_corrector", 1)
    if isinstance(nc, bool) or not isinstance(nc, int) or nc < 0:
        raise ValueError(f"n_corrector must be a non-negative integer, got {nc!r}")
    return 1 + nc


def _stages(method: str) -> Callable[[dict], int]:
    return lambda _opts: FIXED_STAGES[method]


# Default grids: uniform in log-SNR for scalar processes (for VE the same as score_sde's uniform
# grid; for VP it puts steps near the data as DDIM's quadratic skip does: on grid25 at 100 NFE EM's
# per-mode spread is 1.04 mode stds against 1.23 on the uniform grid, target 0.98), CLD's quadratic
# grid (REFERENCE.md §3) for CLD, EDM's rho-grid for EDM and gDDIM's sqrt-grid for gDDIM.
SAMPLERS: dict[str, SamplerSpec] = {
    "em": SamplerSpec(sample_euler_maruyama, "log_snr", "quadratic", _one,
                      description="Euler-Maruyama on the reverse SDE"),
    "pc": SamplerSpec(sample_pc, "log_snr", "quadratic", _pc_cost, defaults={"n_corrector": 1},
                      description="predictor-corrector (reverse diffusion / EM + Langevin)"),
    "ode": SamplerSpec(sample_ode, "uniform", "uniform", _one, adaptive=True,
                       defaults={"method": "dopri5", "rtol": 1e-5, "atol": 1e-5},
                       description="probability-flow ODE, adaptive dopri5 (NFE budget = cap)"),
    "euler": SamplerSpec(sample_ode, "log_snr", "quadratic", _stages("euler"),
                         defaults={"method": "euler"}, grid_flow="uniform",
                         description="probability-flow ODE, fixed-step Euler"),
    "heun": SamplerSpec(sample_ode, "log_snr", "quadratic", _stages("heun"),
                        defaults={"method": "heun"}, grid_flow="uniform",
                        description="probability-flow ODE, fixed-step Heun"),
    "rk4": SamplerSpec(sample_ode, "log_snr", "quadratic", _stages("rk4"),
                       defaults={"method": "rk4"}, grid_flow="uniform",
                       description="probability-flow ODE, fixed-step RK4"),
    "ddim": SamplerSpec(sample_ddim, "log_snr", "log_snr", _one, processes="scalar",
                        defaults={"eta": 0.0}, description="DDIM (eta = 0 deterministic)"),
    # DPM-Solver++ ends at eps without a denoising call, as in Lu et al.: its data-prediction
    # steps already return a near-clean state, and spending the call on one more solver step
    # instead of Tweedie measured better on the oracle benchmark (docs/BENCHMARKS.md).
    "dpm2m": SamplerSpec(sample_dpm_solver, "log_snr", "log_snr", _one, processes="scalar",
                         defaults={"order": 2}, description="DPM-Solver++(2M)", denoise=False),
    "dpm3m": SamplerSpec(sample_dpm_solver, "log_snr", "log_snr", _one, processes="scalar",
                         defaults={"order": 3}, description="DPM-Solver++(3M)", denoise=False),
    # UniPC's corrector reuses the next step's call, so it has no denoising call either
    "unipc": SamplerSpec(sample_unipc, "log_snr", "log_snr", _one, processes="scalar",
                         defaults={"order": 2}, description="UniPC-2 (bh2) predictor-corrector",
                         denoise=False),
    "edm": SamplerSpec(sample_edm_heun, "edm", "edm", lambda _o: 2, processes="scalar",
                       description="EDM Heun in sigma/alpha (Euler last step = denoising)"),
    "sscs": SamplerSpec(sample_sscs, "quadratic", "quadratic", _one, processes="cld",
                        description="symmetric splitting CLD sampler"),
    "gddim": SamplerSpec(sample_gddim, "sqrt", "sqrt", _one, processes="cld",
                         description="gDDIM exponential integrator for CLD (order via opts)"),
}


def _get_spec(name: str) -> SamplerSpec:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid samplers: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def samplers_for(process: str) -> list[str]:
    """Names of the samplers that can run on the named process."""
    return [n for n, spec in SAMPLERS.items() if process in spec.supported_names()]


def sampler_options(name: str) -> list[str]:
    """The keyword options a user may pass to sampler ``name``."""
    params = inspect.signature(_get_spec(name).fn).parameters
    return [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY
            and p not in ("generator", "denoise", "trajectory", "progress", "max_nfe")]


def check_sampler(name: str, process: str | None, nfe: int | None = None,
                  options: dict[str, Any] | None = None) -> None:
    """Raise ``ValueError('sampler: ...')``/``('nfe: ...')``/``('options: ...')`` when a sampler
    does not fit the named process, the NFE budget or its options (the one check that configs,
    ``trilemma sample``, ``trilemma evaluate`` and :func:`sample` share)."""
    if name not in SAMPLERS:
        valid = samplers_for(process) if process else list(SAMPLERS)
        hint = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.6)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        shown = repr(name) if isinstance(name, str) else str(name)
        raise ValueError(f"sampler: unknown sampler {shown}{extra}; use one of: "
                         + ", ".join(valid))
    spec = SAMPLERS[name]
    if process is not None and process not in spec.supported_names():
        raise ValueError(f"sampler: {name!r} does not fit process {process!r}; use one of: "
                         + ", ".join(samplers_for(process)))
    options = dict(options or {})
    allowed = sampler_options(name) + ([] if spec.adaptive else ["grid"])
    if not spec.adaptive and spec.processes != "cld" and process not in CLD_PROCESSES:
        allowed += list(TELEPORT_OPTIONS)  # scalar processes only
    bad = [k for k in options if k not in allowed]
    if bad:
        raise ValueError(f"options: unknown option(s) {bad} for sampler {name!r}; "
                         "its options: " + (", ".join(allowed) or "none"))
    fixed = {k: v for k, v in spec.defaults.items() if k == "method"}
    for key, val in fixed.items():
        if key in options and options[key] != val:
            raise ValueError(f"options: sampler {name!r} fixes {key}={val!r}; pick the sampler "
                             f"named {options[key]!r} instead")
    check_teleport_options(options)
    for key in TELEPORT_OPTIONS:
        options.pop(key, None)
    if "grid" in options:
        _check_grid_option(name, process, nfe, options.pop("grid"))
    if nfe is not None:
        try:
            minimum = spec.min_nfe(spec.denoises(process), **options)
        except ValueError as err:
            raise ValueError(f"options: {err}") from None
        if nfe < minimum:
            raise ValueError(f"nfe: sampler {name!r} needs at least {minimum} NFE, got {nfe}")


def _check_grid_option(name: str, process: str | None, nfe: int | None, grid: object) -> None:
    """``options: grid=...``: a grid name that fits the process (``'tuned'`` needs a stored
    entry for the sampler, process and step count) or a list of decreasing times (e.g. a
    ``tune_grid`` result's ``grid.tolist()``)."""
    if isinstance(grid, (list, tuple)):
        ok = len(grid) >= 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                    and math.isfinite(v) and v > 0 for v in grid)
        if not ok or any(b >= a for a, b in zip(grid, grid[1:], strict=False)):
            raise ValueError(f"options: a grid given as times must be at least 2 positive "
                             f"numbers, strictly decreasing, got {list(grid)!r}")
        return
    if not isinstance(grid, str) or grid not in GRIDS:
        raise ValueError(f"options: grid must be one of {', '.join(GRIDS)}, got {grid!r}")
    if process in CLD_PROCESSES and grid in ("log_snr", "edm", "tuned"):
        raise ValueError(f"options: grid {grid!r} needs a scalar process (log-SNR), not "
                         f"{process!r}; use uniform, quadratic or sqrt")
    if grid != "tuned" or process is None or isinstance(nfe, bool) or not isinstance(nfe, int):
        return
    spec = SAMPLERS[name]
    steps = spec.steps_for(nfe, spec.denoises(process))
    if (name, process, steps) not in tuned_keys(name, process):
        have = ", ".join(f"NFE {spec.nfe_for(k, spec.denoises(process))}"
                         for _, _, k in tuned_keys(name, process)) or "none"
        raise ValueError(f"options: no tuned grid for sampler {name!r} on process {process!r} "
                         f"at NFE {nfe} ({steps} steps); stored for this pair: {have}; use "
                         "grid log_snr or tune one (trilemma.samplers.tune_grid)")


def _budget_grid(name: str, process: LinearProcess, grid: str | None, nfe: int | None,
                 denoise: bool, opts: dict, t_max: float | None = None) -> Tensor:
    """The named (or the sampler's default) grid with the most steps that fit ``nfe``."""
    spec = SAMPLERS[name]
    if nfe is None:
        raise ValueError(f"sampler {name!r} needs an NFE budget (or an explicit grid)")
    minimum = spec.min_nfe(denoise, **opts)
    if nfe < minimum:
        raise ValueError(
            f"nfe = {nfe} is below the minimum {minimum} for sampler {name!r} "
            f"(denoise={denoise}, options {opts or 'default'})"
        )
    n_steps = spec.steps_for(nfe, denoise, **opts)
    gname = spec.default_grid(process) if grid is None else grid
    extra: dict[str, Any] = {"sampler": name} if gname == "tuned" else {}  # per sampler
    if t_max is not None:  # a teleported start
        extra["t_max"] = t_max
    return get_grid(gname, process, n_steps, **extra)


def sample(
    name: str,
    score_fn: ScoreFn,
    process: LinearProcess,
    shape: tuple[int, ...],
    nfe: int | None,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    grid: Tensor | str | None = None,
    denoise: bool | None = None,
    trajectory: bool = False,
    progress: bool = False,
    teleport: GaussianMoments | None = None,
    teleport_sigma: float | None = None,
    **opts: Any,
) -> SampleResult:
    """Draw ``u_T`` from the prior for data of ``shape`` and run sampler ``name`` within ``nfe``.

    ``nfe`` is the total budget of score calls including the denoising call; the number of steps
    is the largest that fits. ``grid`` may be a tensor (then it fixes the steps and ``nfe`` may be
    None; a grid over budget is an error), a grid name (``get_grid``; ``'tuned'`` looks up this
    sampler's stored tuned grid for the process and step count) or None for the sampler's
    default. For the adaptive ``'ode'`` sampler ``nfe`` is a cap (None: no cap). Extra ``opts``
    go to the sampler (e.g. ``eta``, ``order``, ``n_corrector``, ``snr``, ``rtol``).
    ``denoise`` (None: the sampler's default, see ``SAMPLERS[name].denoises``) adds Tweedie's
    final denoising call. ``teleport`` (the data's :class:`GaussianMoments`) replaces the
    stretch from ``T`` down to the grid's first time by the exact probability-flow map of the
    data's Gaussian approximation, for no calls (:mod:`trilemma.samplers.teleport`): give a
    tensor grid that starts below ``T`` (e.g. ``tune_grid(..., teleport=moments).grid``) or
    ``teleport_sigma``, the noise level ``sigma_t/alpha_t`` at which the named grid starts.
    """
    _check_call(name, process, opts)
    if isinstance(shape, int) or not all(isinstance(s, int) and s > 0 for s in shape) \
            or len(shape) < 2:
        raise ValueError(f"shape must be a data shape (batch, ...) of positive ints, got {shape!r}")
    if nfe is not None and (isinstance(nfe, bool) or not isinstance(nfe, int)):
        raise ValueError(f"nfe must be a positive integer, got {nfe!r}")
    grid, kwargs, denoise = _plan(name, process, nfe, grid, denoise, opts,
                                  _teleport_top(name, process, teleport, teleport_sigma, grid))
    u_T = process.prior_sample(tuple(shape), generator=generator, device=device, dtype=dtype)
    if teleport is not None:
        u_T = teleport_start(process, u_T, grid, teleport)
    return _run(name, score_fn, process, u_T, grid, nfe, kwargs, generator=generator,
                denoise=denoise, trajectory=trajectory, progress=progress,
                teleported=teleport is not None)


def sample_from(name: str, score_fn: ScoreFn, process: LinearProcess, u_T: Tensor,
                nfe: int | None, *, generator: torch.Generator | None = None,
                grid: Tensor | str | None = None, denoise: bool | None = None,
                trajectory: bool = False, progress: bool = False,
                teleport: GaussianMoments | None = None, teleport_sigma: float | None = None,
                **opts: Any) -> SampleResult:
    """:func:`sample` from a given start state ``u_T`` at ``T`` instead of a prior draw (reflow
    pairs its own seeded noise with the samples this way); ``teleport`` as in :func:`sample`."""
    _check_call(name, process, opts)
    if nfe is not None and (isinstance(nfe, bool) or not isinstance(nfe, int)):
        raise ValueError(f"nfe must be a positive integer, got {nfe!r}")
    grid, kwargs, denoise = _plan(name, process, nfe, grid, denoise, opts,
                                  _teleport_top(name, process, teleport, teleport_sigma, grid))
    if teleport is not None:
        u_T = teleport_start(process, u_T, grid, teleport)
    return _run(name, score_fn, process, u_T, grid, nfe, kwargs, generator=generator,
                denoise=denoise, trajectory=trajectory, progress=progress,
                teleported=teleport is not None)


def _teleport_top(name: str, process: LinearProcess, teleport: GaussianMoments | None,
                  teleport_sigma: float | None, grid: Tensor | str | None) -> float | None:
    """The landing time a named grid starts from (None: ``T``, or a tensor grid's own start)."""
    if teleport is None:
        if teleport_sigma is not None:
            raise ValueError("teleport_sigma: given without teleport (the data's "
                             "GaussianMoments)")
        return None
    if teleport == FROM_DATA:
        raise TypeError(f"teleport={FROM_DATA!r} names the run's training data, which trilemma "
                        "sample/evaluate and the trainer resolve; in Python pass "
                        "GaussianMoments.from_samples(train_data)")
    if not isinstance(teleport, GaussianMoments):
        raise TypeError(f"teleport must be trilemma.samplers.GaussianMoments (the data's mean "
                        f"and covariance), got {type(teleport).__name__}")
    if not isinstance(process, ScalarProcess):
        raise ValueError(f"teleport: needs a scalar process (vp, subvp, ve, ...), not "
                         f"{process.name!r}")
    if _get_spec(name).adaptive:
        raise ValueError(f"teleport: the adaptive {name!r} sampler takes a time tensor as grid; "
                         "start it at the landing time instead")
    tensor_grid = grid is not None and not isinstance(grid, str)
    if tensor_grid:
        if teleport_sigma is not None:
            raise ValueError("teleport_sigma: a tensor grid fixes the landing time (its first "
                             "time); give one or the other")
        return None
    if teleport_sigma is None:
        raise ValueError("teleport_sigma: a named grid with teleport needs the noise level "
                         "sigma_t/alpha_t to land at (or pass a tensor grid that starts below T, "
                         "e.g. from tune_grid(..., teleport=moments))")
    if grid == "tuned":
        raise ValueError("grid: the stored 'tuned' grids start at T; with teleport tune one for "
                         "the model (tune_grid(..., teleport=moments)) and pass its grid")
    return landing_time(process, teleport_sigma)


def _check_call(name: str, process: LinearProcess, opts: dict[str, Any]) -> None:
    """The sampler exists, fits ``process`` and takes ``opts``."""
    spec = _get_spec(name)
    if not isinstance(process, LinearProcess):
        raise TypeError(f"process must be a trilemma LinearProcess, got {type(process).__name__}")
    if not spec.supports(process):
        raise ValueError(
            f"sampler {name!r} does not support process {process.name!r}; it supports: "
            f"{', '.join(spec.supported_names())}"
        )
    try:
        check_sampler(name, None, None, opts)
    except ValueError as err:
        raise ValueError(str(err).removeprefix("options: ")) from None


def _plan(name: str, process: LinearProcess, nfe: int | None, grid: Tensor | str | None,
          denoise: bool | None, opts: dict[str, Any], t_max: float | None = None
          ) -> tuple[Tensor, dict[str, Any], bool]:
    """The time grid, the sampler's keyword options and the denoising flag for a budget."""
    spec = _get_spec(name)
    denoise = spec.denoises(process.name) if denoise is None else bool(denoise)
    kwargs = {**spec.defaults, **opts}
    if spec.adaptive:
        if isinstance(grid, str):
            raise ValueError("the adaptive 'ode' sampler takes a time tensor or None as grid")
        if grid is None:
            grid = torch.tensor([process.T, process.eps], dtype=torch.float64)
        if nfe is not None and nfe < spec.min_nfe(denoise):
            raise ValueError(f"nfe = {nfe} is below the minimum {spec.min_nfe(denoise)} "
                             f"for sampler {name!r}")
        kwargs["max_nfe"] = nfe
    elif isinstance(grid, Tensor) or (grid is not None and not isinstance(grid, str)):
        grid = torch.as_tensor(grid, dtype=torch.float64)
        if nfe is not None:
            need = spec.nfe_for(grid.numel() - 1, denoise, **opts)
            if need > nfe:
                raise ValueError(
                    f"the given grid ({grid.numel() - 1} steps) needs {need} NFE with sampler "
                    f"{name!r}, over the budget nfe = {nfe}"
                )
    else:
        grid = _budget_grid(name, process, grid, nfe, denoise, opts, t_max)
    return grid, kwargs, denoise


def _run(name: str, score_fn: ScoreFn, process: LinearProcess, u_T: Tensor, grid: Tensor,
         nfe: int | None, kwargs: dict[str, Any], **run: Any) -> SampleResult:
    """Call sampler ``name`` and record its name and budget in the result."""
    teleported = run.pop("teleported", False)
    result = _get_spec(name).fn(score_fn, process, u_T, grid, **run, **kwargs)
    result.info["sampler_name"] = name
    result.info["nfe_budget"] = nfe
    if teleported:
        result.info["teleport"] = {"from": float(process.T), "to": float(grid[0])}
    return result
