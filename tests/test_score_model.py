"""ScoreModel: every process/objective/parametrisation trains, and a short run learns the score."""

from __future__ import annotations

import pytest
import torch

from trilemma.methods import ScoreModel
from trilemma.nets import MLP
from trilemma.oracle import two_mode_1d
from trilemma.processes import CLD, VE, VP, SubVP

COMBOS = [
    (VP(), "eps", "dsm", "quality"),
    (VP(), "x0", "dsm", "likelihood"),
    (VP(), "v", "dsm", "likelihood_is"),
    (SubVP(), "eps", "dsm", "quality"),
    (VE(sigma_max=5.0), "score", "dsm", "quality"),
    (CLD(), "mixed", "hsm", "reweighted"),
    (CLD(), "mixed", "hsm", "likelihood"),
    (CLD(), "score", "cld_dsm", "reweighted"),
    (VP(), "edm", "dsm", "edm"),
    (VE(sigma_max=5.0), "edm", "dsm", "quality"),
    (CLD(), "edm", "hsm", "reweighted"),
]


@pytest.mark.parametrize("process,prediction,objective,weighting", COMBOS)
def test_losses_are_per_sample_and_differentiable(process, prediction, objective, weighting):
    d = 2
    net = MLP(d * process.k, d, hidden=32, depth=1, zero_init=False)
    model = ScoreModel(process, net, (d,), prediction, objective, weighting)
    loss = model.loss(torch.randn(16, d), torch.Generator().manual_seed(0))
    assert loss.shape == (16,) and torch.isfinite(loss).all()
    loss.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_bad_configurations_are_named():
    net = MLP(2, 2, hidden=8, depth=1)
    with pytest.raises(ValueError, match="does not fit process"):
        ScoreModel(VP(), net, (2,), objective="hsm")
    with pytest.raises(ValueError, match="valid: reweighted, likelihood"):
        ScoreModel(CLD(), MLP(4, 2, hidden=8, depth=1), (2,), weighting="quality")
    with pytest.raises(ValueError, match="does not fit weighting 'likelihood_is'"):
        ScoreModel(VP(), net, (2,), weighting="likelihood_is", t_sampling="lognormal")
    with pytest.raises(ValueError, match="needs a scalar process"):
        ScoreModel(CLD(), MLP(4, 2, hidden=8, depth=1), (2,), t_sampling="lognormal")
    with pytest.raises(ValueError, match="valid: quality, likelihood, likelihood_is, edm"):
        ScoreModel(VP(), net, (2,), weighting="reweighted")
    model = ScoreModel(VP(), net, (2,))
    with pytest.raises(ValueError, match=r"sample shape \(3,\)"):
        model.loss(torch.zeros(4, 3))


def _train(model: ScoreModel, steps: int, seed: int = 0) -> None:
    mix = two_mode_1d()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        x0, _ = mix.sample(512, gen)
        opt.zero_grad()
        model.loss(x0, gen).mean().backward()
        opt.step()


EDM = {"prediction": "edm", "weighting": "edm", "t_sampling": "lognormal", "sigma_data": 0.67}


@pytest.mark.parametrize("process,kw", [(VP(), {}), (CLD(), {}), (VP(), EDM),
                                        (CLD(), {"prediction": "edm", "sigma_data": 0.67})],
                         ids=["vp", "cld", "vp-edm", "cld-edm"])
def test_short_training_learns_the_exact_score(process, kw):
    """After a few hundred steps the learned score is close to the oracle's, and much closer than
    at initialisation (for CLD the mixed score's analytic part is already good at init)."""
    torch.manual_seed(0)
    mix = two_mode_1d()
    net = MLP(process.k, 1, hidden=64, depth=2)
    model = ScoreModel(process, net, (1,), **kw)
    gen = torch.Generator().manual_seed(1)

    def rel_error() -> float:
        errs = []
        for t in (0.1, 0.3, 0.6):
            u = mix.marginal_sample(process, 2000, t, gen)
            tt = torch.full((2000,), t)
            exact = mix.marginal_score(process, u, tt)
            with torch.no_grad():
                learned = model(u, tt)
            errs.append(float(((learned - exact) ** 2).mean() / (exact**2).mean()))
        return max(errs)

    before = rel_error()
    _train(model, 400)
    after = rel_error()
    assert after < 0.1 and after < 0.5 * before, (before, after)


class SpyNet(torch.nn.Module):
    """Records the labels it is called with; output depends on the label."""

    num_classes = 3

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.seen: list = []

    def forward(self, x, t, labels=None):
        self.seen.append(None if labels is None else labels.clone())
        lab = torch.full((x.shape[0],), 3) if labels is None else labels
        return self.w * x + lab[:, None].to(x.dtype)


def test_labels_reach_the_network_with_dropout_to_the_null_class():
    net = SpyNet()
    model = ScoreModel(VP(), net, (2,), label_dropout=0.25)
    labels = torch.randint(0, 3, (4000,), generator=torch.Generator().manual_seed(0))
    model.loss((torch.randn(4000, 2), labels), torch.Generator().manual_seed(1))
    seen = net.seen[-1]
    dropped = seen == 3
    assert 0.22 < float(dropped.double().mean()) < 0.28
    assert torch.equal(seen[~dropped], labels[~dropped])
    # unlabelled batches train unconditionally
    model.loss(torch.randn(8, 2))
    assert net.seen[-1] is None


def test_classifier_free_guidance_combines_conditional_and_null_scores():
    net = SpyNet()
    model = ScoreModel(VP(), net, (2,))
    u, t = torch.randn(5, 2), torch.full((5,), 0.5)
    labels = torch.tensor([0, 1, 2, 0, 1])
    cond = model.score_fn(labels)(u, t)
    uncond = model.score_fn()(u, t)
    guided = model.score_fn(labels, guidance=2.0)(u, t)
    torch.testing.assert_close(guided, 3.0 * cond - 2.0 * uncond)
    with pytest.raises(ValueError, match="needs labels"):
        model.score_fn(guidance=1.0)
    plain = ScoreModel(VP(), MLP(2, 2, hidden=8, depth=1), (2,))
    with pytest.raises(ValueError, match="labels: this model is unconditional"):
        plain.score_fn(labels)


def test_t_sampling_reaches_the_loss():
    """``ScoreModel(t_sampling='lognormal', p_mean, p_std)``: the net sees EDM's log-normal
    noise levels (a VE wide enough that nothing is clamped); the default stays uniform."""
    seen = {}

    class Spy(torch.nn.Module):
        def forward(self, x, t):
            seen["t"] = t
            return torch.zeros_like(x)

    proc = VE(sigma_min=1e-4, sigma_max=1e3)
    x0 = torch.zeros(40_000, 1)
    ScoreModel(proc, Spy(), (1,), t_sampling="lognormal", p_mean=0.4, p_std=0.6).loss(
        x0, torch.Generator().manual_seed(0))
    ls = torch.log(proc.sigma(seen["t"].double()))
    assert abs(float(ls.mean()) - 0.4) < 0.02 and abs(float(ls.std()) - 0.6) < 0.02
    ScoreModel(proc, Spy(), (1,)).loss(x0, torch.Generator().manual_seed(0))
    assert abs(float(seen["t"].double().mean()) - 0.5) < 0.01


def test_score_fn_takes_float64_states_on_a_float32_network():
    """A float64 sampler (or the grid tuner) on a float32 model: the states are cast to the
    network's dtype and the score comes back in float64, equal to the float32 call."""
    import torch

    from trilemma.methods import ScoreModel
    from trilemma.nets import MLP
    from trilemma.processes import get_process

    torch.manual_seed(0)
    model = ScoreModel(get_process("vp"), MLP(2, 2, hidden=16, depth=1, time_embed="fourier"),
                       (2,))
    fn = model.score_fn()
    u = torch.randn(8, 2, dtype=torch.float64)
    t = torch.full((8,), 0.3, dtype=torch.float64)
    out = fn(u, t)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.float(), fn(u.float(), t.float()))
