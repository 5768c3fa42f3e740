"""Classifier guidance (REFERENCE.md §9.2): Bayes' rule with the exact labelled mixture, a
briefly trained noise classifier, ScoreModel.sample's checks, and the noise_classifier runs."""

from __future__ import annotations

import pytest
import torch

import trilemma
from trilemma.classifier_guidance import class_log_prob_grad, classifier_guided_score
from trilemma.errors import ConfigError, RunError
from trilemma.methods import NoiseClassifier, ScoreModel
from trilemma.nets import MLP
from trilemma.nets.classifier import ConvClassifier, MLPClassifier
from trilemma.oracle import GaussianMixture
from trilemma.processes import CLD, VE, VP, SubVP
from trilemma.samplers import sample as run_sampler

PROCESSES = [VP(), SubVP(), VE(sigma_max=5.0), CLD()]
IDS = ["vp", "subvp", "ve", "cld"]


def _mixture() -> GaussianMixture:
    """Four labelled 2-D classes (each class one component), unequal weights and spreads."""
    means = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]],
                         dtype=torch.float64)
    return GaussianMixture(means, torch.tensor([0.4, 0.3, 0.2, 0.1]),
                           torch.tensor([0.2, 0.15, 0.25, 0.1]))


def _exact_classifier(mix: GaussianMixture, process):
    def clf(u, t):
        return mix.component_log_joint(process, u, t)  # logits: log w_c + log N_c
    return clf


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
@pytest.mark.parametrize("t", [0.02, 0.3, 0.8])
def test_scale_one_with_exact_parts_is_the_exact_conditional_score(process, t):
    """grad log p_t(u) + grad log p_t(c | u) = grad log p_t(u | c) (noise block; v for CLD)."""
    mix = _mixture()
    gen = torch.Generator().manual_seed(0)
    u = mix.marginal_sample(process, 64, t, gen, dtype=torch.float64)
    labels = torch.randint(0, 4, (64,), generator=gen)
    tt = torch.full((64,), t, dtype=torch.float64)
    guided = classifier_guided_score(mix.score_fn(process), _exact_classifier(mix, process),
                                     process, labels, scale=1.0)
    want = mix.conditional_score(process, u, tt, labels)
    got = guided(u, tt)
    torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-7)
    assert guided.classifier_calls == 1
    # and scale 2 is the score of p(u) p(c | u)^2: one more posterior gradient
    twice = classifier_guided_score(mix.score_fn(process), _exact_classifier(mix, process),
                                    process, labels, scale=2.0)(u, tt)
    torch.testing.assert_close(twice - got, want - mix.score_fn(process)(u, tt),
                               rtol=1e-7, atol=1e-7)


def test_the_cld_guidance_enters_through_the_velocity_gradient():
    """For CLD the posterior depends on v too, and the v-gradient is what is added."""
    mix, process = _mixture(), CLD()
    gen = torch.Generator().manual_seed(1)
    u = mix.marginal_sample(process, 32, 0.3, gen, dtype=torch.float64)
    tt = torch.full((32,), 0.3, dtype=torch.float64)
    labels = torch.zeros(32, dtype=torch.long)
    grad = class_log_prob_grad(_exact_classifier(mix, process), u, tt, labels)
    gx, gv = process.split(grad)
    assert gv.abs().max() > 1e-3 and gx.abs().max() > 1e-3
    guided = classifier_guided_score(mix.score_fn(process), _exact_classifier(mix, process),
                                     process, labels, 1.0)(u, tt)
    torch.testing.assert_close(guided - mix.score_fn(process)(u, tt), gv)


def test_scale_zero_is_the_plain_score_and_calls_no_classifier():
    mix, process = _mixture(), VP()
    u = mix.marginal_sample(process, 16, 0.5, torch.Generator().manual_seed(2),
                            dtype=torch.float64)
    tt = torch.full((16,), 0.5, dtype=torch.float64)
    guided = classifier_guided_score(mix.score_fn(process), _exact_classifier(mix, process),
                                     process, torch.zeros(16, dtype=torch.long), 0.0)
    assert torch.equal(guided(u, tt), mix.score_fn(process)(u, tt))
    assert guided.classifier_calls == 0


def _train_toy_classifier(mix: GaussianMixture, process, steps: int = 300) -> NoiseClassifier:
    torch.manual_seed(0)
    net = MLPClassifier(2 * process.k, 4, hidden=64, depth=2)
    clf = NoiseClassifier(process, net, (2,), 4)
    opt = torch.optim.Adam(clf.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(3)
    for _ in range(steps):
        x, y = mix.sample(256, gen)
        loss = clf.loss((x, y), generator=gen).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return clf.eval()


def test_a_briefly_trained_classifier_beats_chance_and_its_guidance_moves_samples():
    mix, process = _mixture(), VP()
    clf = _train_toy_classifier(mix, process)
    gen = torch.Generator().manual_seed(4)
    x, y = mix.sample(2000, gen)
    t = torch.full((2000,), 0.05)
    u, _ = process.perturb(x, t, gen)
    with torch.no_grad():
        acc = float((clf(u, t).argmax(1) == y).float().mean())
    assert acc > 0.9  # chance: 0.4 (always the heaviest class)
    # guidance toward the lightest class (10% of the mass) with the exact unconditional score
    labels = torch.full((500,), 3, dtype=torch.long)
    shares = {}
    for scale in (0.0, 2.0):
        guided = classifier_guided_score(mix.score_fn(process), clf, process, labels, scale)
        res = run_sampler("em", guided, process, (500, 2), 100,
                          generator=torch.Generator().manual_seed(5))
        shares[scale] = float((mix.assign(res.samples) == 3).float().mean())
        assert guided.classifier_calls == (0 if scale == 0 else res.nfe)
    assert shares[0.0] < 0.2 < 0.6 < shares[2.0]


# ---------------------------------------------------------------- ScoreModel.sample
def _score_model(process=None, shape=(2,)) -> ScoreModel:
    process = process or VP()
    torch.manual_seed(0)
    k = 2 if isinstance(process, CLD) else 1
    net = MLP(k * shape[0], shape[0], hidden=16, depth=1, zero_init=False)
    return ScoreModel(process, net, shape).eval()


def _classifier(process=None, dim: int = 2, classes: int = 4) -> NoiseClassifier:
    process = process or VP()
    torch.manual_seed(1)
    k = 2 if isinstance(process, CLD) else 1
    return NoiseClassifier(process, MLPClassifier(k * dim, classes, hidden=16, depth=1),
                           (dim,), classes).eval()


def _draw(model, **kw):
    return model.sample(8, "em", 10, generator=torch.Generator().manual_seed(0), **kw)


@pytest.mark.parametrize("process", [VP(), CLD()], ids=["vp", "cld"])
def test_score_model_samples_with_a_classifier(process):
    model, clf = _score_model(process), _classifier(process)
    labels = torch.arange(8) % 4
    plain = _draw(model)
    zero = _draw(model, classifier=clf, classifier_scale=0.0, labels=labels)
    guided = _draw(model, classifier=clf, classifier_scale=3.0, labels=labels)
    assert torch.equal(zero.samples, plain.samples)
    assert not torch.allclose(guided.samples, plain.samples)
    assert guided.nfe == plain.nfe == 10  # NFE: score-network calls only
    assert guided.info["classifier_calls"] == 10 and zero.info["classifier_calls"] == 0


def test_a_class_conditional_model_is_conditioned_on_the_classifier_labels_too():
    """With a class-conditional score model the labels condition the model as well as the
    classifier, and classifier-free guidance combines with classifier guidance (NFE counts
    both network calls of each guided score evaluation)."""
    torch.manual_seed(0)
    model = ScoreModel(VP(), MLP(2, 2, hidden=16, depth=1, zero_init=False, num_classes=4),
                       (2,)).eval()
    clf, labels = _classifier(), torch.arange(8) % 4
    cond = _draw(model, labels=labels)
    zero = _draw(model, classifier=clf, classifier_scale=0.0, labels=labels)
    assert torch.equal(zero.samples, cond.samples)  # the model saw the labels
    both = _draw(model, classifier=clf, classifier_scale=2.0, labels=labels, guidance=1.0)
    cfg = _draw(model, labels=labels, guidance=1.0)
    assert both.nfe == cfg.nfe == 20 and both.info["classifier_calls"] == 10
    assert not torch.allclose(both.samples, cfg.samples)


@pytest.mark.parametrize("kw, match", [
    (dict(labels=torch.zeros(8, dtype=torch.long), classifier_scale=-1.0), "classifier_scale"),
    (dict(), "labels: classifier guidance needs"),
    (dict(labels=torch.zeros(5, dtype=torch.long)), r"labels: expected shape \(8,\)"),
    (dict(labels=torch.full((8,), 4)), r"labels: classes run from 0 to 3"),
    (dict(labels=torch.zeros(8)), "labels: expected integer"),
])
def test_score_model_refuses_bad_guidance_arguments(kw, match):
    model, clf = _score_model(), _classifier()
    with pytest.raises(ValueError, match=match):
        _draw(model, classifier=clf, **kw)


def test_score_model_refuses_a_classifier_of_another_run():
    model = _score_model()
    labels = torch.zeros(8, dtype=torch.long)
    with pytest.raises(ValueError, match=r"classifier: trained on data of shape \(3,\)"):
        _draw(model, classifier=_classifier(dim=3), labels=labels)
    with pytest.raises(ValueError, match="classifier: trained on process ve"):
        _draw(model, classifier=_classifier(VE()), labels=labels)
    with pytest.raises(ValueError, match="classifier: trained on process vp.*beta_max"):
        _draw(model, classifier=_classifier(VP(beta_max=10.0)), labels=labels)
    conditional = ScoreModel(VP(), MLP(2, 2, hidden=8, depth=1, num_classes=3), (2,)).eval()
    with pytest.raises(ValueError, match="classifier: trained on 4 classes, the score model "
                       "knows 3"):
        _draw(conditional, classifier=_classifier(), labels=labels)
    with pytest.raises(ValueError, match="classifier: expected a noise classifier"):
        _draw(model, classifier=_score_model(), labels=labels)
    with pytest.raises(ValueError, match="classifier_scale: given without a classifier"):
        _draw(model, classifier_scale=1.0, labels=labels)


def test_conv_classifier_depends_on_its_input_and_time():
    net = ConvClassifier(2, 10, 8, base_channels=8)
    u = torch.randn(3, 2, 8, 8)
    out = net(u, torch.full((3,), 0.5))
    assert out.shape == (3, 10)
    assert not torch.allclose(out, net(u + 0.5 * torch.randn_like(u), torch.full((3,), 0.5)))
    assert not torch.allclose(out, net(u, torch.full((3,), 0.1)))
    with pytest.raises(ValueError, match="num_classes"):
        ConvClassifier(2, 1, 8)


# ---------------------------------------------------------------- runs
def _toy_config(process: str = "vp", **model):
    return {"process": {"name": process},
            "model": {"method": "noise_classifier", "net": {"name": "mlp", "hidden": 16,
                                                              "depth": 1}, **model},
            "data": {"name": "toy", "toy": "imbalanced2d", "n": 2000, "labels": True},
            "train": {"steps": 20, "batch_size": 64, "warmup_steps": 0, "log_every": 10}}


@pytest.mark.parametrize("process", [VP(), CLD()], ids=["vp", "cld"])
def test_train_and_load_a_noise_classifier_run(tmp_path, process):
    clf = trilemma.train(_toy_config(process.name, num_classes=4), tmp_path / "clf",
                         progress=False)
    assert isinstance(clf, NoiseClassifier) and clf.num_classes == 4
    again = trilemma.load(tmp_path / "clf")
    assert isinstance(again, NoiseClassifier)
    assert again.net.in_dim == 2 * process.k  # CLD's classifier sees (x, v)
    assert not (tmp_path / "clf" / "samples").exists()
    with pytest.raises(ValueError, match="sampler: a noise classifier"):
        again.sample(4, "em", 10)
    res = _score_model(process).sample(6, "em", 5, classifier=again, classifier_scale=2.0,
                                       labels=torch.arange(6) % 4)
    assert res.nfe == 5 and res.info["classifier_calls"] == 5


def test_noise_classifier_configs_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="model.num_classes: required for data 'toy'"):
        trilemma.resolve_config(_toy_config())
    with pytest.raises(ConfigError, match="model.num_classes: expected an integer >= 2"):
        trilemma.resolve_config(_toy_config(num_classes=1))
    cfg = _toy_config(num_classes=4)
    cfg["data"]["labels"] = False
    with pytest.raises(RunError, match="data: this method trains on labelled data"):
        trilemma.train(cfg, tmp_path / "unlabelled", progress=False)
    cfg = _toy_config(num_classes=4)
    cfg["model"]["net"] = {"name": "conv"}
    with pytest.raises(ConfigError, match="model.net.name: 'conv' does not fit data 'toy'"):
        trilemma.resolve_config(cfg)


@pytest.mark.parametrize("process, sampler, nfe", [(VP(), "em", 200), (VP(), "ddim", 50),
                                                   (VP(), "dpm2m", 30), (CLD(), "sscs", 100)],
                         ids=["vp-em", "vp-ddim", "vp-dpm2m", "cld-sscs"])
def test_exact_guidance_at_scale_one_samples_the_asked_class(process, sampler, nfe):
    """Stochastic and deterministic samplers driven by the exact guided score (scale 1, the
    exact conditional score) put (nearly) every sample in the asked component."""
    mix = _mixture()
    labels = torch.arange(400) % 4
    guided = classifier_guided_score(mix.score_fn(process), _exact_classifier(mix, process),
                                     process, labels, 1.0)
    res = run_sampler(sampler, guided, process, (400, 2), nfe,
                      generator=torch.Generator().manual_seed(6))
    assert float((mix.assign(res.samples) == labels).float().mean()) > 0.97
