"""Classifier-free guidance in LSGM's latent space: a class-conditional latent prior (the VAE
stays unconditional), trained from a config with label dropout on every loss path that trains
the prior, and sampled with the guided mixed score ``(1 + w) s_c - w s_null`` (NFE doubled)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import trilemma
from trilemma.build import load_run
from trilemma.cli import main
from trilemma.config import Config, ConfigError
from trilemma.methods.lsgm import LSGM, LatentPrior
from trilemma.nets import MLP
from trilemma.nets.vae import MLPVAE
from trilemma.objectives.lsgm import normal_score
from trilemma.processes import get_process

F64 = torch.float64
K = 3

COND = {
    "seed": 0, "device": "cpu", "process": {"name": "vp"},
    "model": {"method": "lsgm", "vae": {"name": "mlp_vae", "latent_dim": 2, "hidden": 16},
              "net": {"name": "mlp", "hidden": 16, "depth": 1}, "label_dropout": 0.5},
    "data": {"name": "toy", "toy": "imbalanced2d", "n": 256, "labels": True},
    "train": {"steps": 3, "batch_size": 32, "lr": 1e-3, "log_every": 1},
    "sample": {"sampler": "euler", "nfe": 4, "n": 8},
}


class LinearClassNet(nn.Module):
    """``F(u, t, c) = u W^T + t b + E[c]``: linear, depends on its input, time and label (the
    null class ``K`` when labels are None)."""

    def __init__(self, d_in: int, d_out: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.num_classes = K
        self.w = nn.Parameter(torch.randn(d_out, d_in, generator=g, dtype=F64))
        self.b = nn.Parameter(torch.randn(d_out, generator=g, dtype=F64))
        self.emb = nn.Parameter(torch.randn(K + 1, d_out, generator=g, dtype=F64))

    def forward(self, u: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        if labels is None:
            labels = torch.full((u.shape[0],), K, dtype=torch.long)
        return u @ self.w.T + t[:, None] * self.b + self.emb[labels]


def _prior(name: str) -> LatentPrior:
    p = get_process(name)
    return LatentPrior(p, LinearClassNet(p.k * 2, 2), (2,), "normal_mix", logit_init=0.3)


def _state(name: str, n: int = 6) -> Tensor:
    return torch.randn(n, get_process(name).k * 2, generator=torch.Generator().manual_seed(1),
                       dtype=F64)


@pytest.mark.parametrize("name", ["vp", "cld"])
@pytest.mark.parametrize("w", [0.5, 2.0])
def test_guided_latent_score_is_the_combination_of_exact_ingredients(name, w):
    prior = _prior(name)
    p, u = prior.process, _state(name)
    t = torch.linspace(0.1, 0.9, u.shape[0], dtype=F64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    a = prior.mixing()

    def exact(lab: Tensor) -> Tensor:  # LSGM's mixed score by hand, the net's output by hand
        out = prior.net(u, t, lab)
        s_net = p.prediction_to_score(prior.net_prediction, out, u, t)
        return (1 - a) * normal_score(p, u, t) + a * s_net

    s_c, s_null = exact(labels), exact(torch.full_like(labels, K))
    assert not torch.allclose(s_c, s_null)
    torch.testing.assert_close(prior(u, t, labels), s_c)
    torch.testing.assert_close(prior(u, t), s_null)
    torch.testing.assert_close(prior(u, t, labels, w), (1 + w) * s_c - w * s_null)
    model = LSGM(p, MLPVAE((2,), latent_dim=2, hidden=8).to(F64), prior.net,
                 prediction="normal_mix", logit_init=0.3)
    torch.testing.assert_close(model.score_fn(labels, w)(u, t), (1 + w) * s_c - w * s_null)


class _Counting(nn.Module):
    """Wraps a net and counts the samples it evaluates."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.num_classes, self.rows = net, net.num_classes, 0

    def forward(self, u: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        self.rows += u.shape[0]
        return self.net(u, t, labels)


def _cond_lsgm(process: str = "vp", **kw) -> LSGM:
    p = get_process(process)
    torch.manual_seed(0)
    net = _Counting(MLP(p.k * 2, 2, hidden=16, depth=1, num_classes=K, zero_init=False))
    return LSGM(p, MLPVAE((2,), latent_dim=2, hidden=16), net, logit_init=0.0, **kw)


def _draw(model: LSGM, **kw):
    return model.sample(6, "euler", 5, generator=torch.Generator().manual_seed(3), **kw)


@pytest.mark.parametrize("process", ["vp", "cld"])
def test_labels_condition_the_latent_and_guidance_doubles_nfe(process):
    model = _cond_lsgm(process)
    plain = _draw(model)
    assert plain.nfe == 5 and model.prior.net.rows == 30
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    w0 = _draw(model, labels=labels)
    assert w0.nfe == 5
    assert not torch.allclose(w0.info["latents"], plain.info["latents"])
    other = _draw(model, labels=(labels + 1) % K)
    assert not torch.allclose(w0.info["latents"], other.info["latents"])
    model.prior.net.rows = 0
    guided = _draw(model, labels=labels, guidance=2.0)
    assert guided.nfe == 10 and guided.info["score_evals"] == 5
    assert guided.info["net_calls_per_eval"] == 2 and model.prior.net.rows == 60
    assert not torch.allclose(guided.info["latents"], w0.info["latents"])
    assert guided.samples.shape == (6, 2)


def test_misuse_is_a_clear_error():
    p = get_process("vp")
    plain = LSGM(p, MLPVAE((2,), latent_dim=2, hidden=8), MLP(2, 2, hidden=8, depth=1))
    with pytest.raises(ValueError, match="labels: this LSGM is unconditional"):
        plain.sample(4, "euler", 3, labels=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels: this LSGM is unconditional"):
        plain.score_fn(torch.zeros(4, dtype=torch.long))
    model = _cond_lsgm()
    with pytest.raises(ValueError, match="guidance: classifier-free guidance needs labels"):
        model.sample(4, "euler", 3, guidance=1.0)
    with pytest.raises(ValueError, match="labels: classes run from 0 to 2, got 0 .. 3"):
        model.sample(4, "euler", 3, labels=torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"labels: expected shape \(4,\)"):
        model.sample(4, "euler", 3, labels=torch.tensor([0, 1]))
    vae_stage = _cond_lsgm(stage="vae")
    assert vae_stage.num_classes is None
    with pytest.raises(ValueError, match="labels: an LSGM in the vae stage"):
        vae_stage.sample(4, "euler", 3, labels=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"label_dropout must lie in \[0, 1\)"):
        _cond_lsgm(label_dropout=1.0)


@pytest.mark.parametrize("model_cfg", [
    {},  # VP, likelihood weighting: encoder and prior share one t-sample
    {"weighting": "un", "shared_t": False},  # separate t-samples: frozen-prior CE + prior loss
    {"stage": "prior", "weighting": "un", "shared_t": False},  # VAE frozen, the prior alone
])
def test_conditional_lsgm_trains_from_a_config_with_label_dropout(tmp_path, monkeypatch,
                                                                  model_cfg):
    seen: list[Tensor | None] = []
    forward = LatentPrior.forward

    def spy(self, u, t, labels=None, guidance=0.0):
        seen.append(labels)
        return forward(self, u, t, labels, guidance)

    monkeypatch.setattr(LatentPrior, "forward", spy)
    cfg = {**COND, "model": {**COND["model"], **model_cfg}}
    model = trilemma.train(cfg, out=tmp_path / "run", progress=False)
    assert isinstance(model, LSGM) and model.num_classes == 4 and model.label_dropout == 0.5
    train_calls = [lab for lab in seen if lab is not None and lab.shape == (32,)]
    assert len(train_calls) == 3 * (2 if model_cfg.get("shared_t") is False else 1)
    drawn = torch.cat(train_calls)
    assert 0.3 < float((drawn == 4).double().mean()) < 0.7  # the null class, p = 0.5
    assert set(drawn.tolist()) == {0, 1, 2, 3, 4}


def test_config_accepts_labels_for_lsgm_and_checks_label_dropout():
    cfg = Config.from_dict(COND, check_paths=False)
    assert cfg.model["net"]["num_classes"] == 4 and cfg.model["label_dropout"] == 0.5
    with pytest.raises(ConfigError, match="model.label_dropout"):
        Config.from_dict({**COND, "model": {**COND["model"], "label_dropout": 1.5}},
                         check_paths=False)
    ddgan = {**COND, "model": {"method": "ddgan"}}
    with pytest.raises(ConfigError, match="data.labels: class-conditional training is "
                                          "implemented for the methods score, lsgm"):
        Config.from_dict(ddgan, check_paths=False)


def test_cli_samples_and_evaluates_an_lsgm_run_with_guidance(tmp_path, capsys):
    run = tmp_path / "run"
    trilemma.train(COND, out=run, progress=False)
    capsys.readouterr()
    out = tmp_path / "a.npz"
    code = main(["sample", str(run), "--label", "3", "--guidance", "2", "--n", "8",
                 "--out", str(out)])
    assert code == 0 and "class 3, w = 2" in capsys.readouterr().out
    a = np.load(out)
    assert a["labels"].tolist() == [3] * 8 and int(a["nfe"]) == 8  # 4 steps x 2 calls
    assert a["samples"].shape == (8, 2)
    model, _, _ = load_run(run)
    assert isinstance(model, LSGM) and model.num_classes == 4
    code = main(["sample", str(run), "--label", "4", "--out", str(tmp_path / "b.npz")])
    assert code != 0 and "--label/--labels: classes run from 0 to 3" in capsys.readouterr().err
    out = tmp_path / "eval"
    code = main(["evaluate", str(run), "--samplers", "euler:4", "--guidance", "0/2", "--n", "40",
                 "--batch", "20", "--bootstrap", "20", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    rows = json.loads((out / "results.json").read_text())["runs"][0]["rows"]
    assert [(r["guidance"], r["nfe"]) for r in rows] == [(0.0, 4), (2.0, 8)]
    assert all(0 <= r["metrics"]["class_share"] <= 1 for r in rows)
