"""Greedy tuning of a consistency model's multistep levels: it finds the level a closed-form score
singles out, keeps every level on the training grid, and its data-only score prefers sharp
samples to samples between the modes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from trilemma.methods.consistency import ConsistencyModel, consistency_coefs
from trilemma.methods.consistency_teacher import Teacher
from trilemma.methods.consistency_tuning import prdc_score, tune_taus
from trilemma.oracle import GaussianMixture
from trilemma.processes import get_process

N = 20_000


class ZeroNet(nn.Module):
    """F = 0, so f(x, sigma) = c_skip(sigma) x: the sample variance after each step has a closed
    form in the levels (it still depends on its input through c_skip)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.w * x


def _student() -> ConsistencyModel:
    g = GaussianMixture(torch.zeros(1, 1, dtype=torch.float64), None, 0.5)
    p = get_process("vp")
    return ConsistencyModel(ZeroNet(), Teacher(g.score_fn(p), p, "gaussian"), (1,))


def _std_after(model: ConsistencyModel, taus: list[float]) -> float:
    """The closed-form std of the samples of ``taus`` with F = 0."""
    var = 0.0
    for k, tau in enumerate(taus):
        c_skip = float(consistency_coefs(torch.tensor([tau]), model.sigma_min,
                                         model.sigma_data)[0])
        var = c_skip**2 * (var + (tau**2 if k == 0 else tau**2 - model.sigma_min**2))
    return math.sqrt(var)


def test_tuner_finds_the_level_a_closed_form_score_singles_out():
    model = _student()
    grid = sorted((float(s) for s in model.sigmas), reverse=True)
    inner = grid[1:-1]
    stds = {t: _std_after(model, [grid[0], t]) for t in inner}
    # a level whose closed-form std is at least 5 % away from every other level's
    target = next(t for t in inner[len(inner) // 2:] if all(
        abs(stds[t] - s) > 0.05 * stds[t] for u, s in stds.items() if u != t))
    assert target not in model.taus(2)  # the default does not already hold it

    def score(x: Tensor) -> float:
        return abs(float(x.std()) - stds[target])

    res = tune_taus(model, 2, score, n=N, seed=3)
    assert res.taus == [grid[0], target]
    assert res.score < res.initial_score
    assert res.initial_taus == model.taus(2)
    assert res.evaluations == len(res.history) >= len(inner)


def test_tuned_levels_stay_on_the_grid_and_decrease():
    model = _student()
    grid = [float(s) for s in model.sigmas]
    res = tune_taus(model, 3, lambda x: float(x.abs().mean()), n=512, seed=0)
    assert res.taus[0] == max(grid) and all(t in grid for t in res.taus)
    assert all(b < a for a, b in zip(res.taus, res.taus[1:], strict=False))
    assert min(res.taus) > min(grid)
    assert res.score == min(v for _, v in res.history)


def test_tuner_errors_name_the_argument():
    model = _student()
    with pytest.raises(ValueError, match="nfe"):
        tune_taus(model, 1, lambda x: 0.0)
    with pytest.raises(ValueError, match="n:"):
        tune_taus(model, 2, lambda x: 0.0, n=1)
    with pytest.raises(TypeError, match="model"):
        tune_taus(nn.Linear(1, 1), 2, lambda x: 0.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="data"):
        prdc_score(torch.zeros(3, 2))


def test_prdc_score_prefers_samples_on_the_modes():
    gen = torch.Generator().manual_seed(0)
    modes = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])
    data = modes[torch.randint(0, 2, (2000,), generator=gen)] + 0.05 * torch.randn(
        2000, 2, generator=gen)
    on = modes[torch.randint(0, 2, (1000,), generator=gen)] + 0.05 * torch.randn(
        1000, 2, generator=gen)
    between = on.clone()
    between[:300, 0] = 0.0  # 30 % of the samples between the two modes
    collapsed = modes[0] + 0.05 * torch.randn(1000, 2, generator=gen)  # one mode only
    score = prdc_score(data)
    assert score(on) < 0.15
    assert score(between) > score(on) + 0.2
    assert score(collapsed) > score(on) + 0.3
