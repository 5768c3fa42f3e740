"""Loop helpers shared by the samplers in this package (input checks, noise, the final step).

Conventions every sampler follows: ``trajectory`` holds ``u_T`` and the state after each step,
aligned with ``times = grid``; ``state`` is the state at ``grid[-1]``; with ``denoise=True``
``samples`` is Tweedie's ``x0_hat`` from that state (+1 NFE), else its data block.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..processes.base import LinearProcess, ScalarProcess, ScoreFn
from .base import CountingScore, SampleResult, check_grid, check_state, denoise_step


def prepare(
    score_fn: ScoreFn, process: LinearProcess, u_T: Tensor, grid: Tensor | list[float]
) -> tuple[CountingScore, Tensor]:
    """Validate the inputs; return the NFE-counting score and the float64 CPU grid."""
    if not isinstance(process, LinearProcess):
        raise TypeError(f"process must be a trilemma LinearProcess, got {type(process).__name__}")
    if not callable(score_fn):
        raise TypeError(
            f"score_fn must be callable as score_fn(u, t), got {type(score_fn).__name__}"
        )
    if not isinstance(u_T, Tensor):
        raise TypeError(f"u_T must be a torch.Tensor (a prior sample), got {type(u_T).__name__}")
    check_state(u_T, process)
    grid = check_grid(grid, process).detach().cpu()
    return CountingScore(score_fn), grid


def require_scalar(process: LinearProcess, sampler: str) -> ScalarProcess:
    """Reject CLD (and any non-scalar process) with an error that points to its samplers."""
    if not isinstance(process, ScalarProcess):
        raise TypeError(
            f"{sampler} needs a scalar process with kernel N(alpha_t x0, sigma_t^2) (vp, "
            f"vp_cosine, subvp, geometric_vp, ve), got {getattr(process, 'name', process)!r}; "
            "for CLD use the 'sscs' or 'gddim' samplers (or 'em', 'pc', 'ode')"
        )
    return process


def steps(n: int, progress: bool, desc: str) -> Iterable[int]:
    """``range(n)``, with a tqdm bar when ``progress``."""
    return tqdm(range(n), desc=desc, disable=not progress, leave=False)


def call_score(score: CountingScore, u: Tensor, t: float, step: int,
               what: str = "sampler step") -> Tensor:
    """One counted score call; a non-finite output is re-raised naming the sampler step."""
    try:
        return score(u, t)
    except FloatingPointError as err:
        raise FloatingPointError(f"at {what} {step} (t = {t:.6g}): {err}") from err


def sym_sqrt(cov: Tensor) -> Tensor:
    """A square root ``R`` with ``R R^T = cov`` of a PSD ``k x k`` float64 matrix (eigh-based)."""
    vals, vecs = torch.linalg.eigh(cov)
    return vecs @ torch.diag_embed(vals.clamp_min(0.0).sqrt()) @ vecs.transpose(-1, -2)


def finish(
    score: CountingScore,
    process: LinearProcess,
    u: Tensor,
    grid: Tensor,
    *,
    denoise: bool,
    traj: list[Tensor] | None,
    info: dict,
) -> SampleResult:
    """Optional Tweedie denoising at ``grid[-1]``, then the :class:`SampleResult`."""
    t_end = float(grid[-1])
    if denoise:
        try:
            samples = denoise_step(score, process, u, t_end)
        except FloatingPointError as err:
            raise FloatingPointError(f"at the denoising step (t = {t_end:.6g}): {err}") from err
        if not torch.isfinite(samples).all():
            raise FloatingPointError(
                f"non-finite samples after the denoising step (t = {t_end:.6g})"
            )
    else:
        samples = process.state_to_data(u)
    info = {**info, "steps": grid.numel() - 1, "denoise": denoise, "t_end": t_end}
    return SampleResult(
        samples=samples,
        state=u,
        nfe=score.nfe,
        trajectory=traj,
        times=grid if traj is not None else None,
        info=info,
    )


def check_choice(name: str, value: object, choices: Iterable[object]) -> None:
    """Raise naming the option and its valid values."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_nonneg_int(name: str, value: object) -> int:
    """A non-negative integer option."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def check_positive(name: str, value: object, allow_zero: bool = False) -> float:
    """A finite positive (or non-negative) float option."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a {kind} finite number, got {value!r}")
    return float(value)
