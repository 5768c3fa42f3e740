"""Reflow (Liu, Gong and Liu 2022; REFERENCE §10.2): a rectified flow trained on fixed
(noise, sample) pairs drawn from a trained teacher flow, the k+1-rectified flow.

:func:`reflow_pairs` draws ``eps`` from ``N(0, I)`` with a seed and integrates the teacher's
probability-flow ODE from it with a deterministic sampler, so the pairs are a function of the
seed, the teacher and the sampler (and, for the adaptive ``ode``, of ``batch_size``, since its
steps depend on the batch). :class:`Reflow` then trains the velocity objective on the coupled
interpolant ``x_t = (1 - t) x0_hat + t eps``; sampling and likelihood are the score model's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..objectives.dsm import dsm_loss
from ..objectives.tsampling import uniform_times
from ..processes.base import LinearProcess, ScalarProcess
from ..processes.flow import RectifiedFlow
from ..samplers import sample_from
from .score_model import ScoreModel

#: deterministic samplers a teacher may integrate with (the pairs must not depend on noise)
PAIR_SAMPLERS = ("ode", "heun", "euler", "rk4", "dpm2m", "dpm3m", "edm", "ddim")
PAIRS_FILE = "reflow_pairs.safetensors"


def check_teacher(teacher: Any) -> ScoreModel:
    """``teacher`` if it is a score model of one block with the prior ``N(0, I)`` (the noise
    reflow pairs its samples with), else a ValueError saying what fits."""
    if not isinstance(teacher, ScoreModel):
        raise ValueError(f"the teacher must be a trained score model or flow (method score or "
                         f"reflow), got {getattr(teacher, 'name', type(teacher).__name__)!r}")
    proc = teacher.process
    if not isinstance(proc, ScalarProcess) or float(proc.prior_cov()[0, 0]) != 1.0:
        raise ValueError(f"the teacher's process {proc.name!r} has no N(0, I) prior; use a "
                         "rectified_flow, vp, vp_cosine, subvp or geometric_vp teacher")
    if teacher.num_classes is not None:
        raise ValueError("a class-conditional teacher is not supported by reflow yet")
    return teacher


@torch.no_grad()
def reflow_pairs(teacher: ScoreModel, n: int, *, sampler: str = "heun", nfe: int = 100,
                 seed: int = 0, batch_size: int = 1000) -> tuple[Tensor, Tensor, int]:
    """``(noise, samples, nfe_per_sample)``: ``n`` seeded draws of ``N(0, I)`` (float32, CPU)
    and the teacher's deterministic ODE solution from each (float32, CPU)."""
    check_teacher(teacher)
    if sampler not in PAIR_SAMPLERS:
        raise ValueError(f"sampler {sampler!r} is not deterministic; use one of: "
                         + ", ".join(PAIR_SAMPLERS))
    for key, val in (("n", n), ("batch_size", batch_size), ("nfe", nfe)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f"{key} must be a positive integer, got {val!r}")
    gen = torch.Generator().manual_seed(int(seed))
    noise = torch.randn((n, *teacher.data_shape), generator=gen)
    param = next(teacher.parameters())
    score = teacher.score_fn()
    was_training = teacher.training
    teacher.eval()
    out, calls = [], 0
    try:
        for chunk in noise.split(batch_size):
            res = sample_from(sampler, score, teacher.process,
                              chunk.to(device=param.device, dtype=param.dtype), nfe)
            out.append(res.samples.float().cpu())
            calls = max(calls, res.nfe)
    finally:
        teacher.train(was_training)
    return noise, torch.cat(out), calls


def flow_velocity(model: ScoreModel) -> Callable[[Tensor, Tensor], Tensor]:
    """``velocity(x, t)``: a rectified-flow model's ``dx/dt`` (no grad), for
    :func:`trilemma.metrics.straightness.straightness` and Euler steps by hand."""
    proc = model.process
    if not isinstance(proc, RectifiedFlow):
        raise ValueError(f"a velocity needs a rectified-flow model, got process {proc.name!r}")
    score = model.score_fn()

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        with torch.no_grad():
            return proc.velocity(x, t, score(x, t))

    return velocity


def save_pairs(path: str | os.PathLike, noise: Tensor, samples: Tensor,
               meta: dict[str, Any]) -> None:
    """Write the pairs and what made them (``meta``, as strings) to a safetensors file,
    atomically (a reader never sees half a file)."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_file({"noise": noise.contiguous(), "samples": samples.contiguous()}, str(tmp),
              metadata={k: str(v) for k, v in meta.items()})
    os.replace(tmp, path)


def pairs_meta(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a pairs file (what made the pairs)."""
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_pairs(path: str | os.PathLike) -> tuple[Tensor, Tensor]:
    """The ``(noise, samples)`` of a pairs file written by :func:`save_pairs`."""
    tensors = load_file(str(path))
    return tensors["noise"], tensors["samples"]


class Reflow(ScoreModel):
    """A rectified flow trained on fixed (noise, sample) pairs (method ``reflow``).

    The pairs come from :meth:`set_pairs` (``trilemma train`` draws or reloads them before
    training, :mod:`trilemma.setup.methods.reflow`); each training batch takes as many pairs
    as the data batch has samples, drawn uniformly with the trainer's generator (the data
    batch itself only sets the size). With ``distill`` it trains only the one-step map
    (:meth:`one_step_loss`), best started from the reflow run whose pairs it uses. Sampling,
    likelihood and checkpoints are the score model's: a reflow run loads and samples like any
    rectified-flow run.
    """

    name = "reflow"

    def __init__(self, process: LinearProcess, net: nn.Module, data_shape: tuple[int, ...],
                 sigma_data: float = 0.5, distill: bool = False) -> None:
        if not isinstance(process, RectifiedFlow):
            raise ValueError(f"reflow trains a rectified flow; process {process.name!r} does "
                             "not fit (process.name: rectified_flow)")
        super().__init__(process, net, data_shape, prediction="velocity", objective="dsm",
                         weighting="velocity", sigma_data=sigma_data, label_dropout=0.0)
        self.pairs: tuple[Tensor, Tensor] | None = None
        self.distill = bool(distill)

    def set_pairs(self, noise: Tensor, samples: Tensor) -> None:
        """The fixed pairs to train on: ``noise[i]`` flows to ``samples[i]``."""
        want = self.data_shape
        if noise.shape != samples.shape or tuple(noise.shape[1:]) != want or not len(noise):
            raise ValueError(f"reflow pairs must both have shape (n, {', '.join(map(str, want))})"
                             f", got {tuple(noise.shape)} and {tuple(samples.shape)}")
        if not (torch.isfinite(noise).all() and torch.isfinite(samples).all()):
            raise ValueError("reflow pairs contain non-finite values")
        self.pairs = (noise.detach().float().cpu(), samples.detach().float().cpu())

    def loss(self, batch: Tensor | tuple, generator: torch.Generator | None = None) -> Tensor:
        """Velocity loss ``||v(x_t, t) - (eps - x0_hat)||^2`` on pairs, per sample."""
        if self.pairs is None:
            raise RuntimeError("reflow has no pairs: call set_pairs (trilemma train draws them "
                               "from model.teacher)")
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        n, dev = x.shape[0], x.device
        gdev = generator.device if generator is not None else torch.device("cpu")
        idx = torch.randint(len(self.pairs[0]), (n,), generator=generator, device=gdev).cpu()
        noise = self.pairs[0][idx].to(device=dev, dtype=x.dtype)
        x0 = self.pairs[1][idx].to(device=dev, dtype=x.dtype)
        if self.distill:
            return self.one_step_loss(noise, x0)
        t = uniform_times(n, self.process.train_eps, self.process.T, generator, device=dev)
        return dsm_loss(self.model, self.process, x0, weighting="velocity", t=t, noise=noise)

    def one_step_loss(self, noise: Tensor, x0: Tensor) -> Tensor:
        """Distillation of the one-step map (Liu et al.): ``||eps - (T - eps_t) v(eps, T) -
        x0_hat||^2`` per sample (mean over coordinates), the error of one Euler step from the
        prior draw to ``eps_t``, the step ``euler`` at 1 NFE takes."""
        p = self.process
        t = torch.full((noise.shape[0],), p.T, device=noise.device, dtype=noise.dtype)
        v = p.velocity(noise, t, self.model(noise, t))
        return (noise - (p.T - p.eps) * v - x0).flatten(1).pow(2).mean(1)
