"""Exports of a trained score model: TorchScript (``trilemma export RUN --torchscript F``) and
a Hugging Face diffusers pipeline folder (:mod:`trilemma.diffusers_export`).

The TorchScript file holds the **score function** of a :class:`~trilemma.methods.ScoreModel`:
the network together with its parametrisation, called as ``score = f(u, t)`` with ``u`` a batch
of states (``(B, *data_shape)``; CLD: the data and velocity blocks stacked on the channel axis,
``(B, 2C, ...)``) and ``t`` a float tensor of shape ``(B,)`` of diffusion times in
``[process.eps, process.T]``; it returns the score on the noise-driven block (the whole state
for VP/VE/sub-VP, the velocity for CLD), the function every trilemma sampler integrates. It is
traced with ``torch.jit.trace`` and checked against the eager model on fresh inputs before it
is kept. Load it without trilemma: ``torch.jit.load(F)``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .methods.base import Method
from .methods.score_model import ScoreModel


class ExportError(ValueError):
    """A model that cannot be exported as asked (the message says why)."""


class ScoreFunction(nn.Module):
    """``f(u, t) -> score`` of a score model (unconditional), the module that is traced."""

    def __init__(self, model: ScoreModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, u: Tensor, t: Tensor) -> Tensor:
        return self.model(u, t)


def _example_inputs(model: ScoreModel, batch: int, generator: torch.Generator,
                    device: torch.device) -> tuple[Tensor, Tensor]:
    process = model.process
    u = process.prior_sample(model.state_shape(batch), generator=generator).to(device)
    t = process.eps + (process.T - process.eps) * torch.rand(batch, generator=generator)
    return u, t.to(device)


def export_torchscript(model: Method, path: str | os.PathLike, *, batch: int = 2,
                       atol: float = 1e-4) -> Path:
    """Trace the score function of ``model`` (see the module docstring) and save it to
    ``path``; :class:`ExportError` for a method that has no such function (LSGM, DDGAN) or
    a trace that does not reproduce the eager model on new inputs."""
    if not isinstance(model, ScoreModel):
        raise ExportError(f"TorchScript export covers score models (model.method: score); "
                          f"this run is {model.display_name!r}")
    if getattr(model, "num_classes", None) is not None:
        raise ExportError("TorchScript export of class-conditional score models is not "
                          "supported (the traced function takes no labels)")
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(0)
    fn = ScoreFunction(model).eval()
    example = _example_inputs(model, batch, gen, device)
    with torch.no_grad(), warnings.catch_warnings():
        # shape checks in the networks become constants of the trace; _check_trace below
        # runs it on another batch size and other times against the eager model
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        try:
            traced = torch.jit.trace(fn, example, check_trace=False)
        except (RuntimeError, TypeError) as err:
            raise ExportError(f"torch.jit.trace failed on this network: {err}") from None
        _check_trace(fn, traced, model, gen, device, atol)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(path))
    return path


def _check_trace(fn: nn.Module, traced: Any, model: ScoreModel, gen: torch.Generator,
                 device: torch.device, atol: float) -> None:
    """Compare the trace with the eager function on another batch size and other times."""
    u, t = _example_inputs(model, 3, gen, device)
    want, got = fn(u, t), traced(u, t)
    err = float((want - got).abs().max())
    scale = float(want.abs().max()) or 1.0
    if not err <= atol * max(1.0, scale):
        raise ExportError(f"the traced score function differs from the model by {err:.3g} on "
                          "new inputs (the network has data-dependent Python control flow); "
                          "not exported")
