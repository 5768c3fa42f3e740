"""Samplers: one pure function per method (k-diffusion style), time grids, and ``sample``.

Every sampler has the signature ``fn(score_fn, process, u_T, grid, *, generator=None,
denoise=True, trajectory=False, progress=False, **options) -> SampleResult`` and counts its
score calls exactly (``SampleResult.nfe``). ``sample(name, ...)`` picks steps for an NFE budget.
"""

from .base import CountingScore, SampleResult, check_finite, check_grid, check_state, denoise_step
from .ddim import sample_ddim
from .dpm_solver import sample_dpm_solver
from .edm import sample_edm_heun
from .euler_maruyama import sample_euler_maruyama
from .gddim import sample_gddim
from .grid_tuning import (
    TunedGrid,
    grid_error,
    projection_directions,
    reference_solve,
    sliced_w2,
    tune_grid,
)
from .grids import (
    GRIDS,
    edm_grid,
    edm_sigmas,
    get_grid,
    grid_from_fractions,
    log_snr_grid,
    quadratic_grid,
    sqrt_grid,
    transfer_grid,
    tuned_grid,
    tuned_keys,
    uniform_grid,
)
from .ode import ODEBudgetExceeded, sample_euler, sample_heun, sample_ode, sample_rk4
from .pc import sample_pc
from .registry import SAMPLERS, SamplerSpec, check_sampler, sample, sample_from, samplers_for
from .sscs import sample_sscs
from .teleport import GaussianMoments, gaussian_flow, landing_time, teleport_start
from .unipc import sample_unipc

__all__ = [
    "GRIDS",
    "SAMPLERS",
    "CountingScore",
    "GaussianMoments",
    "ODEBudgetExceeded",
    "SampleResult",
    "SamplerSpec",
    "TunedGrid",
    "check_finite",
    "check_grid",
    "check_sampler",
    "check_state",
    "denoise_step",
    "edm_grid",
    "edm_sigmas",
    "gaussian_flow",
    "get_grid",
    "grid_from_fractions",
    "grid_error",
    "landing_time",
    "log_snr_grid",
    "projection_directions",
    "quadratic_grid",
    "reference_solve",
    "sample",
    "sample_from",
    "sample_ddim",
    "sample_dpm_solver",
    "sample_edm_heun",
    "sample_euler",
    "sample_euler_maruyama",
    "sample_gddim",
    "sample_heun",
    "sample_ode",
    "sample_pc",
    "sample_rk4",
    "sample_sscs",
    "sample_unipc",
    "samplers_for",
    "sliced_w2",
    "sqrt_grid",
    "teleport_start",
    "transfer_grid",
    "tune_grid",
    "tuned_grid",
    "tuned_keys",
    "uniform_grid",
]
