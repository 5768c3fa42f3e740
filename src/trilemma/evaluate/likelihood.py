"""Bits/dim of held-out data through the method protocol (``model.nll``).

A method with a likelihood (``model.has_likelihood``: score models by the probability-flow ODE,
LSGM by its negative ELBO) scores ``nll_n`` held-out points: the data set's reference split for
images, fresh exact samples for toys. The dequantisation policy is decided here, from the data
and ``model.likelihood_decoder``:

- held-out images are binarised as the run's data was; a Bernoulli decoder needs {-1, 1}, so
  its points are binarised (threshold) even when the run's data did not say how;
- discrete decoders (``'bernoulli'``, ``'categorical'``) give a probability mass function: the
  data is scored as it is, without dequantisation;
- a density of binarised images is scored with uniform dequantisation of 2 levels, of other
  images with the data's levels (digits: 17, 8-bit images: 256), falling back to continuous
  bits/dim when the images are not on that lattice (resized);
- toys are continuous data.

With a toy of an oracle mixture, the true bits/dim of the same points is recorded too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from ..data import binarize
from ..likelihood import bits_per_dim, dequantize, to_levels
from ..train.progress import progress_bar
from .common import EvaluationError
from .dataspec import DataSpec

if TYPE_CHECKING:
    from ..methods.base import Method

NLL_SEED_OFFSET = 77_777


def check_likelihood(model: Method, spec: DataSpec) -> None:
    """Raise :class:`EvaluationError` (``--nll: ...``) when the method has no likelihood or the
    data has no held-out split (checked before any sampling)."""
    if not model.has_likelihood:
        raise EvaluationError(f"--nll: no likelihood for {model.display_name}: it is defined "
                              "for score models (probability-flow ODE) and LSGM (its NELBO)")
    if spec.kind == "image" and spec.problem:
        raise EvaluationError(f"--nll: {spec.problem}")


def heldout_points(spec: DataSpec, n: int, split: str,
                   generator: torch.Generator) -> tuple[Tensor, str]:
    """``n`` held-out points (random images of ``split``, or fresh toy points) and their
    source, drawn with ``generator``."""
    if spec.kind != "image":
        return spec.toy_points(n, generator), f"fresh samples of the toy {spec.name!r}"
    if spec.problem:
        raise EvaluationError(f"--nll: {spec.problem}")
    x = spec.split_images(split)
    if n > len(x):
        raise EvaluationError(f"--nll {n}: the {spec.name!r} split {split!r} holds only "
                              f"{len(x)} images")
    return x[torch.randperm(len(x), generator=generator)[:n]], f"{spec.name} split {split!r}"


@dataclass
class Dequantisation:
    """How held-out points are scored: the points, their levels and integer values (None:
    continuous or a pmf), a description and notes."""

    x: Tensor
    levels: int | None
    k: Tensor | None
    text: str
    notes: list[str] = field(default_factory=list)


def dequantisation(x: Tensor, spec: DataSpec, decoder: str | None,
                   generator: torch.Generator) -> Dequantisation:
    """The dequantisation policy of the module docstring for points ``x``."""

    notes: list[str] = []
    levels = spec.levels if spec.kind == "image" else None
    binarized = (spec.binarize or "threshold") if decoder == "bernoulli" else (
        spec.binarize if levels is not None else None)
    if binarized:

        x = binarize(x, binarized, generator=generator)
        notes.append(f"held-out images binarised ({binarized}) as the run's data")
    if decoder in ("bernoulli", "categorical"):
        return Dequantisation(x, None, None, f"none (LSGM {decoder} decoder: a probability "
                              "mass function)", notes)
    if binarized:
        return Dequantisation(x, 2, to_levels(x, 2),
                              "uniform dequantisation of 2 levels (binarised data)", notes)
    if levels is None:
        return Dequantisation(x, None, None, "none (continuous data)", notes)
    try:
        return Dequantisation(x, levels, to_levels(x, levels),
                              f"uniform dequantisation of {levels} levels", notes)
    except ValueError:
        notes.append(f"the images are not on a {levels}-level lattice (resized?): continuous "
                     "bits/dim without dequantisation")
        return Dequantisation(x, None, None, "none (continuous bits/dim)", notes)


def _nll_batches(model: Method, dq: Dequantisation, generator: torch.Generator, seed: int,
                 batch_size: int, device: torch.device, rtol: float, atol: float,
                 progress: bool) -> tuple[Tensor, list[dict[str, Any]]]:
    """Per-point NLL (nats, float64, CPU) in batches, and each batch's ``model.nll`` result."""

    dtype = next(model.parameters()).dtype
    nll, results = [], []
    for s in progress_bar(range(0, len(dq.x), batch_size), desc="likelihood", disable=not progress,
                  leave=False):
        xb = dq.x[s:s + batch_size]
        if dq.k is not None:
            xb = dequantize(dq.k[s:s + batch_size], generator, levels=dq.levels)
        g = torch.Generator(device=device).manual_seed(seed + NLL_SEED_OFFSET + s)
        res = model.nll(xb.to(device, dtype), generator=g, divergence="auto", rtol=rtol,
                        atol=atol)
        nll.append(res["nll"].detach().cpu().to(torch.float64))
        results.append(res)
    return torch.cat(nll), results


def likelihood(
    model: Method,
    spec: DataSpec,
    nll_n: int,
    seed: int,
    reference_split: str = "test",
    batch_size: int = 100,
    device: str | torch.device = "cpu",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    progress: bool = False,
) -> dict[str, Any]:
    """Bits/dim of ``nll_n`` held-out points by ``model.nll`` (see the module docstring)."""

    check_likelihood(model, spec)
    gen = torch.Generator().manual_seed(seed + NLL_SEED_OFFSET)
    x, source = heldout_points(spec, nll_n, reference_split, gen)
    dq = dequantisation(x, spec, model.likelihood_decoder, gen)
    nll, results = _nll_batches(model, dq, gen, seed, batch_size, torch.device(device), rtol,
                                atol, progress)
    d = int(x[0].numel())
    bpd = bits_per_dim(-nll, d, levels=dq.levels)
    nfes = [int(r["nfe"]) for r in results]
    divergence = results[0]["divergence"]
    out = {
        "n": nll_n, "source": source, "bits_per_dim": float(bpd.mean()),
        "bits_per_dim_sem": float(bpd.std() / math.sqrt(len(bpd))) if len(bpd) > 1 else None,
        "nll_nats_per_dim": float(nll.mean() / d), "dim": d, "levels": dq.levels,
        "dequantization": dq.text, "divergence": divergence,
        "hutchinson": "1 Rademacher probe per sample" if divergence == "hutchinson" else None,
        "rtol": rtol, "atol": atol, "nfe_mean": float(np.mean(nfes)), "nfe_max": max(nfes),
        "batches": len(nfes), "bound": any(bool(r["bound"]) for r in results),
        "meaning": results[0]["meaning"], "notes": dq.notes,
    }
    if spec.kind == "toy" and spec.mixture is not None:
        true = spec.mixture.log_prob(dq.x.to(torch.float64))
        out["true_bits_per_dim"] = float(bits_per_dim(true, d, levels=None).mean())
        out["true_nll_nats_per_dim"] = float(-true.mean() / d)
    return out
