"""Choose a consistency model's multistep sampling levels by search, as the consistency-model
paper does (Song et al. 2023 picked the intermediate levels of its 2-step samples by a greedy
search on FID).

A multistep consistency sample denoises at ``tau_1 = sigma_max`` and then re-noises to
``tau_2 > ... > tau_K`` and denoises again (:class:`~trilemma.methods.ConsistencyModel`). Which
levels work best depends on the student: too high a level throws away what the first call got
right, too low a one cannot repair it. :func:`tune_taus` runs a greedy coordinate search over the
levels of the student's training grid (the only levels it has learnt): each inner level in turn
takes the candidate that minimises a sample-quality score, from the same seeded noise, until a
sweep changes nothing. The score is any function of a batch of samples, lower is better; the
default, :func:`prdc_score`, needs only data: ``(1 - precision) + (1 - recall)`` of k-NN balls
(Kynkäänniemi et al. 2019) in data space or in the features a user passes, which penalises
samples between modes (precision) without rewarding a collapse (recall). Tune on one noise seed
and report on another: the tuned levels are fit to the tuning draws.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..metrics.prdc import precision_recall
from .consistency import ConsistencyModel

Score = Callable[[Tensor], float]


@dataclass
class TunedTaus:
    """The levels :func:`tune_taus` found and what they scored, against the default levels."""

    nfe: int
    taus: list[float]
    score: float
    initial_taus: list[float]
    initial_score: float
    evaluations: int
    history: list[tuple[list[float], float]] = field(default_factory=list)


def prdc_score(data: Tensor, k: int = 5,
               features: Callable[[Tensor], Tensor] | None = None) -> Score:
    """A data-only score for :func:`tune_taus`: ``(1 - precision) + (1 - recall)`` of the
    samples against ``data`` (rows flattened, or mapped by ``features`` first), k-NN balls."""
    if not isinstance(data, Tensor) or data.dim() < 2 or data.shape[0] <= k:
        raise ValueError(f"data: a tensor of more than k = {k} samples, got "
                         f"{getattr(data, 'shape', type(data).__name__)}")
    embed = features or (lambda x: x.reshape(x.shape[0], -1))
    real = embed(data).detach().to(torch.float64).cpu()

    def score(samples: Tensor) -> float:
        fake = embed(samples).detach().to(torch.float64).cpu()
        precision, recall = precision_recall(real, fake, k=k)
        return (1.0 - precision) + (1.0 - recall)

    return score


def tune_taus(model: ConsistencyModel, nfe: int, score: Score, *, n: int = 2048, seed: int = 0,
              max_sweeps: int = 3) -> TunedTaus:
    """Greedy search of the ``nfe - 1`` inner levels of ``nfe``-step consistency sampling over
    the model's training grid, minimising ``score(samples)`` (module doc); ``tau_1`` stays
    ``sigma_max``. Every candidate is sampled from the same ``seed``; ``n`` samples each."""
    if not isinstance(model, ConsistencyModel):
        raise TypeError(f"model: a ConsistencyModel, got {type(model).__name__}")
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 2:
        raise ValueError(f"nfe: tuning needs at least 2 steps (one inner level), got {nfe!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n: samples per evaluation, an integer >= 2; got {n!r}")
    grid = sorted((float(s) for s in model.sigmas), reverse=True)  # sigma_max first
    inner = grid[1:-1]  # sigma_min excluded: a step there returns its input
    if len(inner) < nfe - 1:
        raise ValueError(f"nfe: the training grid has {len(inner)} inner levels, fewer than the "
                         f"{nfe - 1} that {nfe} steps need")
    history: list[tuple[list[float], float]] = []

    def evaluate(taus: list[float]) -> float:
        res = model.sample(n, "consistency", nfe, taus=taus,
                           generator=torch.Generator().manual_seed(seed))
        val = float(score(res.samples))
        history.append((list(taus), val))
        return val

    taus = model.taus(nfe)
    if any(t not in grid for t in taus):  # default off the grid (more steps than levels)
        taus = [grid[0], *inner[:nfe - 1]]
    initial_taus, best = list(taus), evaluate(taus)
    initial = best
    for _ in range(max_sweeps):
        changed = False
        for k in range(1, nfe):
            upper = taus[k - 1]
            lower = taus[k + 1] if k + 1 < nfe else grid[-1]
            for cand in (c for c in inner if lower < c < upper and c != taus[k]):
                trial = [*taus[:k], cand, *taus[k + 1:]]
                val = evaluate(trial)
                if val < best:
                    best, taus, changed = val, trial, True
        if not changed:
            break
    return TunedTaus(nfe=nfe, taus=taus, score=best, initial_taus=initial_taus,
                     initial_score=initial, evaluations=len(history), history=history)
