"""Classifier-free guidance (REFERENCE.md §9.1): exact oracle scores, the score model's
conditional sampling end to end, NFE counting and the errors of misuse."""

from __future__ import annotations

import pytest
import torch

from trilemma.methods import ScoreModel
from trilemma.methods.labels import balanced_labels, check_conditioning, parse_labels
from trilemma.nets import MLP
from trilemma.oracle import GaussianMixture
from trilemma.processes import CLD, VE, VP
from trilemma.samplers import sample as run_sampler

F64 = torch.float64


def four_classes() -> GaussianMixture:
    """Four well-separated classes in 2-D, unequal weights (so guidance has work to do)."""
    means = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]], dtype=F64)
    return GaussianMixture(means, torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=F64), 0.15)


class OracleNet(torch.nn.Module):
    """A class-conditional 'network' whose output is the exact mixture score in the model's
    prediction: label ``c < K`` the component's score, the null label ``K`` the marginal's."""

    def __init__(self, mix: GaussianMixture, process, prediction: str) -> None:
        super().__init__()
        self.mix, self.process, self.prediction = mix, process, prediction
        self.num_classes = mix.n_components
        self.param = None  # the Parametrization, to undo its input scaling
        self.w = torch.nn.Parameter(torch.zeros((), dtype=F64))

    def forward(self, inp, t, labels=None):
        u = inp / self.param.c_in(inp, t)
        labels = torch.full((len(u),), self.num_classes) if labels is None else labels
        null = labels == self.num_classes
        score = self.mix.marginal_score(self.process, u, t)
        if (~null).any():
            cond = self.mix.conditional_score(self.process, u[~null], t[~null], labels[~null])
            score = score.clone()
            score[~null] = cond
        return self.process.score_to_prediction(self.prediction, score, u, t,
                                                sigma_data=self.param.sigma_data)


def oracle_model(mix: GaussianMixture, process, prediction: str) -> ScoreModel:
    net = OracleNet(mix, process, prediction)
    model = ScoreModel(process, net, (mix.dim,), prediction).to(F64)
    net.param = model.model
    return model


# ----------------------------------------------------------------------------- the oracle
@pytest.mark.parametrize("process", [VP(), VE(sigma_max=5.0), CLD()], ids=["vp", "ve", "cld"])
def test_conditional_oracle_score_is_the_component_score(process):
    mix = four_classes()
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(64, mix.dim * process.k, generator=gen, dtype=F64)
    t = torch.rand(64, generator=gen, dtype=F64) * 0.9 + 0.05
    labels = torch.randint(0, 4, (64,), generator=gen)
    cond = mix.conditional_score(process, u, t, labels, full=True)
    for c in range(4):  # a one-component mixture is the class's exact density
        one = GaussianMixture(mix.means[c:c + 1], None, mix.stds[c:c + 1])
        rows = labels == c
        torch.testing.assert_close(cond[rows], one.marginal_score(process, u[rows], t[rows],
                                                                 full=True))
    # Bayes: the marginal score is the posterior-weighted mean of the class scores
    post = torch.stack([torch.softmax(torch.stack([
        GaussianMixture(mix.means[c:c + 1], None, mix.stds[c:c + 1]).marginal_log_prob(
            process, u, t) + mix.weights[c].log() for c in range(4)], 1), 1)], 0)[0]
    mixed = sum(post[:, c:c + 1] * mix.conditional_score(process, u, t, torch.full((64,), c))
                for c in range(4))
    torch.testing.assert_close(mixed, mix.marginal_score(process, u, t))


@pytest.mark.parametrize("process,prediction", [(VP(), "eps"), (VP(), "x0"),
                                                (VE(sigma_max=5.0), "score"), (CLD(), "mixed"),
                                                (CLD(), "edm")])
@pytest.mark.parametrize("w", [0.0, 0.5, 3.0])
def test_model_guidance_is_the_exact_guided_score(process, prediction, w):
    """Guided score of the model = (1 + w) s(u|c) - w s(u) of the exact mixture; CLD's analytic
    part -v/Sigma_vv enters once, so the match is to float64 rounding."""
    mix = four_classes()
    model = oracle_model(mix, process, prediction)
    gen = torch.Generator().manual_seed(1)
    u = torch.randn(40, mix.dim * process.k, generator=gen, dtype=F64)
    t = torch.rand(40, generator=gen, dtype=F64) * 0.9 + 0.05
    labels = torch.randint(0, 4, (40,), generator=gen)
    got = model.score_fn(labels, guidance=w)(u, t)
    want = (1 + w) * mix.conditional_score(process, u, t, labels) \
        - w * mix.marginal_score(process, u, t)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(mix.guided_score_fn(process, labels, w)(u, t), want)


@pytest.mark.parametrize("process,sampler,nfe", [(VP(), "dpm2m", 40), (VP(), "em", 200),
                                                 (CLD(), "sscs", 100)], ids=["vp-dpm2m",
                                                                             "vp-em", "cld-sscs"])
@pytest.mark.parametrize("w", [0.0, 2.0])
def test_class_conditional_oracle_sampling_lands_in_the_asked_component(process, sampler, nfe,
                                                                        w):
    mix = four_classes()
    labels = balanced_labels(400, 4)
    res = run_sampler(sampler, mix.guided_score_fn(process, labels, w), process,
                      (400, mix.dim), nfe, generator=torch.Generator().manual_seed(2),
                      dtype=F64)
    post = mix.posterior(res.samples)
    hit = post[torch.arange(400), labels]
    assert float((hit > 0.5).double().mean()) > 0.99, float((hit > 0.5).double().mean())
    # the smallest class (10% of the mass) gets its full quarter
    assert int((mix.assign(res.samples) == 3).sum()) >= 99


# ----------------------------------------------------------------------------- the model
class LabelNet(torch.nn.Module):
    """A tiny conditional net whose output depends on its input and (strongly) on the class."""

    num_classes = 3

    def __init__(self, in_dim: int = 2) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(in_dim, 2)
        self.table = torch.nn.Embedding(4, 2)

    def forward(self, x, t, labels=None):
        lab = torch.full((len(x),), 3) if labels is None else labels
        return self.lin(x) + 3.0 * self.table(lab)


@pytest.mark.parametrize("process,sampler", [(VP(), "ddim"), (CLD(), "sscs")],
                         ids=["vp", "cld"])
def test_sample_uses_the_labels_and_counts_both_network_calls(process, sampler):
    torch.manual_seed(0)
    model = ScoreModel(process, LabelNet(2 * process.k), (2,))
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    runs = {}
    for name, kw in {"uncond": {}, "cond": {"labels": labels},
                     "guided": {"labels": labels, "guidance": 2.0}}.items():
        runs[name] = model.sample(6, sampler, 10, generator=torch.Generator().manual_seed(3),
                                  **kw)
    assert not torch.allclose(runs["cond"].samples, runs["uncond"].samples)
    assert not torch.allclose(runs["guided"].samples, runs["cond"].samples)
    assert runs["uncond"].nfe == runs["cond"].nfe == 10
    assert runs["guided"].nfe == 20 and runs["guided"].info["score_evals"] == 10
    # other labels, other samples: the labels reach every step
    other = model.sample(6, sampler, 10, generator=torch.Generator().manual_seed(3),
                         labels=labels.roll(1))
    assert not torch.allclose(other.samples, runs["cond"].samples)


def test_misuse_is_a_clear_error():
    cond = ScoreModel(VP(), LabelNet(), (2,))
    plain = ScoreModel(VP(), MLP(2, 2, hidden=8, depth=1), (2,))
    lab = torch.tensor([0, 1, 2, 0])
    cases = [
        (plain, {"labels": lab}, "labels: this model is unconditional"),
        (cond, {"labels": torch.tensor([0, 1, 3, 0])}, r"labels: classes run from 0 to 2"),
        (cond, {"labels": torch.tensor([0, -1, 2, 0])}, r"labels: classes run from 0 to 2"),
        (cond, {"guidance": 1.0}, "guidance: classifier-free guidance needs labels"),
        (cond, {"labels": lab[:3]}, r"labels: expected shape \(4,\)"),
        (cond, {"labels": lab.float()}, "labels: expected integer"),
        (cond, {"labels": lab, "guidance": -1.0}, "guidance: expected a number w >= 0"),
    ]
    for model, kw, msg in cases:
        with pytest.raises(ValueError, match=msg):
            model.sample(4, "ddim", 5, **kw)


def test_label_helpers():
    assert balanced_labels(10, 5).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert torch.bincount(balanced_labels(500, 10)).tolist() == [50] * 10
    assert balanced_labels(7, 3, interleave=True).tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert parse_labels("balanced", 10) is None
    assert parse_labels("0, 1,9", 10).tolist() == [0, 1, 9]
    with pytest.raises(ValueError, match="labels: classes run from 0 to 9"):
        parse_labels("3,10", 10)
    with pytest.raises(ValueError, match="comma-separated list"):
        parse_labels("three", 10)
    assert check_conditioning(None, 0.0, 4, None) is None


def test_a_trained_class_conditional_toy_samples_the_asked_class():
    """A labelled 2-D mixture trained for 400 steps: conditional samples land in the asked
    class (exact component posteriors), unconditional ones spread over the classes."""
    mix = four_classes()
    gen = torch.Generator().manual_seed(0)
    x, y = mix.sample(4096, gen)
    torch.manual_seed(0)
    net = MLP(2, 2, hidden=64, depth=2, num_classes=4)
    model = ScoreModel(VP(), net, (2,), label_dropout=0.2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(400):
        idx = torch.randint(0, len(x), (256,), generator=gen)
        loss = model.loss((x[idx], y[idx]), gen).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    labels = balanced_labels(200, 4)
    for w in (0.0, 1.0):
        res = model.sample(200, "dpm2m", 20, generator=torch.Generator().manual_seed(1),
                           labels=labels, guidance=w)
        share = float((mix.assign(res.samples) == labels).double().mean())
        assert share > 0.9, (w, share)
    free = model.sample(200, "dpm2m", 20, generator=torch.Generator().manual_seed(1))
    assert float((mix.assign(free.samples) == labels).double().mean()) < 0.6


def test_cld_guidance_leaves_the_analytic_part_exact():
    """A network that outputs 0 for every class: the guided mixed score is CLD's analytic part
    -v/Sigma_vv bit for bit in float32 (it enters once, not as (1 + w) a - w a)."""
    net = LabelNet(4)
    torch.nn.init.zeros_(net.lin.weight)
    torch.nn.init.zeros_(net.lin.bias)
    torch.nn.init.zeros_(net.table.weight)
    model = ScoreModel(CLD(), net, (2,), "mixed")
    gen = torch.Generator().manual_seed(4)
    u, t = torch.randn(256, 4, generator=gen), torch.rand(256, generator=gen) * 0.9 + 0.05
    labels = torch.randint(0, 3, (256,), generator=gen)
    plain = model.score_fn(labels)(u, t)
    assert plain.abs().min() > 0
    assert torch.equal(model.score_fn(labels, guidance=0.7)(u, t), plain)
