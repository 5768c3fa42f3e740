"""The diffusers peer: diffusers schedulers driven by the same exact oracle score.

The oracle becomes an epsilon-prediction model at each scheduler's own discrete noise levels
(:class:`OracleEpsModel`), so diffusers' samplers and trilemma's are compared on identical
scores and prior noise (VP only). diffusers is the optional ``bench`` extra: without it
:func:`diffusers_version` is None and the benchmark leaves the peer out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..oracle import GaussianMixture
from ..processes.base import LinearProcess

#: diffusers schedulers compared on VP: label -> (class name, constructor options)
DIFFUSERS_SCHEDULERS: dict[str, tuple[str, dict]] = {
    "dpmpp2m": ("DPMSolverMultistepScheduler", {}),
    "dpmpp2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
    # clip_sample=False: DDIM's default clips x0_hat to [-1, 1] (an image-range assumption
    # that would delete grid25's outer modes)
    "ddim": ("DDIMScheduler", {"clip_sample": False}),
    "euler": ("EulerDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
}
#: the beta schedule shared by every diffusers scheduler here (DDPM's linear 1e-4 .. 0.02)
DIFFUSERS_BETAS = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02,
                   "beta_schedule": "linear"}


def diffusers_version() -> str | None:
    """The installed diffusers version, or None when the optional ``bench`` extra is missing."""
    try:
        import diffusers
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None
    return str(diffusers.__version__)


def make_scheduler(label: str) -> Any:
    """A fresh diffusers scheduler for ``label`` (see :data:`DIFFUSERS_SCHEDULERS`)."""
    import diffusers

    if label not in DIFFUSERS_SCHEDULERS:
        raise ValueError(f"unknown diffusers scheduler {label!r}; valid: "
                         f"{', '.join(DIFFUSERS_SCHEDULERS)}")
    cls_name, opts = DIFFUSERS_SCHEDULERS[label]
    cls = getattr(diffusers, cls_name)
    return cls(**DIFFUSERS_BETAS, prediction_type="epsilon", **opts)


class OracleEpsModel:
    """An epsilon-prediction "network" for diffusers built from the exact VP oracle.

    For the timestep it is given, the noise level is the scheduler's own: ``sigma_d =
    sqrt((1 - abar)/abar)`` at integer timesteps, linearly interpolated in ``sigma_d`` at
    fractional ones (as Euler/Heun's ``set_timesteps`` do). The continuous VP time with the
    same log-SNR ``lambda = -log sigma_d`` is found by ``process.t_from_log_snr`` and the
    exact ``eps = -sigma_t * score`` returned. Model inputs are in VP form (Euler/Heun's
    ``scale_model_input`` already divided by ``sqrt(sigma_d^2 + 1)``). ``calls`` counts NFE.
    """

    def __init__(self, mixture: GaussianMixture, process: LinearProcess, scheduler: Any) -> None:
        abar = scheduler.alphas_cumprod.to(torch.float64)
        self.train_sigmas = torch.sqrt((1 - abar) / abar).numpy()
        self.grid = np.arange(len(self.train_sigmas), dtype=np.float64)
        self.process = process
        self.score = mixture.score_fn(process)
        self.calls = 0

    def noise_time(self, timestep: float | Tensor) -> Tensor:
        """The continuous VP time whose log-SNR matches the scheduler's ``timestep``."""
        sig = float(np.interp(float(timestep), self.grid, self.train_sigmas))
        return self.process.t_from_log_snr(torch.tensor(-math.log(sig), dtype=torch.float64))

    def __call__(self, x: Tensor, timestep: float | Tensor) -> Tensor:
        self.calls += 1
        t = self.noise_time(timestep)
        tt = torch.full((x.shape[0],), float(t), dtype=x.dtype)
        sigma = float(self.process.sigma(t))
        return -sigma * self.score(x, tt)


def diffusers_n_steps(label: str, nfe: int) -> int:
    """Inference steps whose model calls fit ``nfe`` (Heun: ``2N - 1`` calls, others ``N``)."""
    return max(1, (nfe + 1) // 2) if label == "heun" else nfe


def run_diffusers(
    mixture: GaussianMixture, process: LinearProcess, label: str, nfe: int, n: int, seed: int
) -> tuple[Tensor, dict]:
    """Sample with a diffusers scheduler driven by the exact oracle (VP only)."""
    if process.name != "vp":
        raise ValueError(f"the diffusers peer runs on the 'vp' process, got {process.name!r}")
    sched = make_scheduler(label)
    model = OracleEpsModel(mixture, process, sched)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    n_steps = diffusers_n_steps(label, nfe)
    sched.set_timesteps(n_steps)
    # same draw as trilemma's VP prior sample (N(0, I) from the same seed)
    x = process.prior_sample((n, mixture.dim), generator=gen, dtype=torch.float32)
    x = x * sched.init_noise_sigma
    for t in sched.timesteps:
        x_in = sched.scale_model_input(x, t)
        eps = model(x_in, t).to(x.dtype)
        x = sched.step(eps, t, x).prev_sample
    secs = time.perf_counter() - t0
    if not bool(torch.isfinite(x).all()):
        raise FloatingPointError(f"diffusers {label} produced non-finite samples at NFE {nfe}")
    return x, {"nfe": model.calls, "steps": n_steps, "seconds": secs, "adaptive": False}


def diffusers_overhead_run(label: str, batch: int, dim: int,
                           n_steps: int) -> tuple[Callable[[], None], int]:
    """A closure running a diffusers scheduler's whole loop (``set_timesteps``,
    ``scale_model_input``, ``step``) with a constant model output, and its model calls."""
    eps = 0.1 * torch.randn(batch, dim, generator=torch.Generator().manual_seed(0))
    x0 = torch.randn(batch, dim, generator=torch.Generator().manual_seed(1))
    n_inf = diffusers_n_steps(label, n_steps)

    def run() -> None:
        sched = make_scheduler(label)
        sched.set_timesteps(n_inf)
        x = x0 * sched.init_noise_sigma
        for t in sched.timesteps:
            sched.scale_model_input(x, t)
            x = sched.step(eps, t, x).prev_sample

    sched = make_scheduler(label)
    sched.set_timesteps(n_inf)
    return run, len(sched.timesteps)


