"""Denoising diffusion GANs: schedule, posterior, losses, R1, the GAN trainer, sampling, configs."""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist
import yaml
from torch import nn

from trilemma.config import ConfigError, load_config, validate
from trilemma.methods.ddgan import DDGAN, DDGANSchedule
from trilemma.nets.discriminator import (
    ConvDiscriminator,
    MLPDiscriminator,
    MLPGenerator,
    ZUNet,
)
from trilemma.objectives.adversarial import (
    discriminator_loss,
    generator_loss,
    r1_penalty,
    r1_weight,
)
from trilemma.train import TrainConfig, Trainer, latest_checkpoint, load_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
F64 = torch.float64


def _abar_sde(t: float, beta_min: float = 0.1, beta_max: float = 20.0) -> float:
    """REFERENCE §8: abar(t) = exp(-t^2 (beta_max - beta_min) / 2 - t beta_min)."""
    return math.exp(-0.5 * t * t * (beta_max - beta_min) - t * beta_min)


# --------------------------------------------------------------------------- schedule
def test_t4_schedule_matches_the_paper():
    s = DDGANSchedule(4)
    assert s.betas[1:].tolist() == pytest.approx([0.478, 0.849, 0.956, 0.987], abs=6e-4)


@pytest.mark.parametrize("T", [1, 2, 3, 8])
def test_schedule_from_the_formula(T):
    s = DDGANSchedule(T)
    times = [(i / T) * (1 - 1e-3) + 1e-3 for i in range(T + 1)]
    betas = [1 - _abar_sde(times[i]) / _abar_sde(times[i - 1]) for i in range(1, T + 1)]
    assert s.times.tolist() == pytest.approx(times, rel=1e-12)
    assert s.betas[1:].tolist() == pytest.approx(betas, rel=1e-9)
    abar = [1.0]
    for b in betas:
        abar.append(abar[-1] * (1 - b))
    assert s.alpha_bars.tolist() == pytest.approx(abar, rel=1e-9)
    assert float(s.alpha_bars[-1]) < 1e-4  # x_T is (almost) pure noise for every T


def test_posterior_equals_bayes_rule():
    """DDPM's closed form against an independent derivation: the Gaussian conditional of
    x_{t-1} given x_t and x_0 from q(x_{t-1} | x_0) q(x_t | x_{t-1})."""
    s = DDGANSchedule(4).double()
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 3, generator=gen, dtype=F64)
    xt = torch.randn(6, 3, generator=gen, dtype=F64)
    for t in range(1, 5):
        mean, var = s.posterior(xt, x0, t)
        abar_prev = float(s.alpha_bars[t - 1])
        beta = float(s.betas[t])
        if t == 1:  # x_0 is known exactly: no noise, the mean is x_0
            assert torch.allclose(var, torch.zeros(6, dtype=F64))
            assert torch.allclose(mean, x0, atol=1e-12)
            continue
        prior_var = 1 - abar_prev  # q(x_{t-1} | x_0) = N(sqrt(abar_prev) x0, 1 - abar_prev)
        prec = 1 / prior_var + (1 - beta) / beta
        want_var = 1 / prec
        want_mean = want_var * (math.sqrt(abar_prev) * x0 / prior_var
                                + math.sqrt(1 - beta) * xt / beta)
        assert torch.allclose(var, torch.full((6,), want_var, dtype=F64), rtol=1e-10)
        assert torch.allclose(mean, want_mean, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("T", [2, 4])
def test_posterior_chain_reproduces_the_forward_marginals(T):
    """Start at x_T ~ q(x_T | x_0) and step down with the exact x_0: every x_t must be
    N(sqrt(abar_t) x_0, 1 - abar_t). Monte Carlo, n = 200k: mean SE <= 0.0023, std SE <= 0.0016;
    tolerances are about 5 SE."""
    s = DDGANSchedule(T).double()
    n = 200_000
    gen = torch.Generator().manual_seed(1)
    x0 = torch.where(torch.rand(n, 1, generator=gen, dtype=F64) < 0.3, -0.8, 0.6)
    x = s.marginal(x0, T, gen)
    for t in range(T, 0, -1):
        x = s.posterior_sample(x, x0, t, gen)
        abar = float(s.alpha_bars[t - 1])
        resid = x - math.sqrt(abar) * x0
        assert abs(float(resid.mean())) < 0.012, t
        assert float(resid.std()) == pytest.approx(math.sqrt(1 - abar), abs=0.008), t
    assert torch.allclose(x, x0)  # the last step returns x_0 itself


def test_one_step_and_pairs_are_consistent_with_the_marginals():
    s = DDGANSchedule(4).double()
    gen = torch.Generator().manual_seed(2)
    n = 200_000
    x0 = torch.full((n, 1), 1.5, dtype=F64)
    for t in (1, 3):
        prev, xt = s.pairs(x0, torch.full((n,), t), gen)
        for x, i in ((prev, t - 1), (xt, t)):
            abar = float(s.alpha_bars[i])
            assert float(x.mean()) == pytest.approx(1.5 * math.sqrt(abar), abs=0.012)
            assert float(x.std()) == pytest.approx(math.sqrt(1 - abar), abs=0.008)
        # Cov(x_{t-1}, x_t) = sqrt(1 - beta_t) Var(x_{t-1})
        cov = float(((prev - prev.mean()) * (xt - xt.mean())).mean())
        want = math.sqrt(1 - float(s.betas[t])) * (1 - float(s.alpha_bars[t - 1]))
        assert cov == pytest.approx(want, abs=0.01)


def test_schedule_rejects_bad_input():
    with pytest.raises(ValueError, match="num_steps"):
        DDGANSchedule(0)
    s = DDGANSchedule(2)
    with pytest.raises(ValueError, match="t must lie in 1..2"):
        s.posterior(torch.zeros(3, 1), torch.zeros(3, 1), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="integer tensor"):
        s.step(torch.zeros(3, 1), torch.tensor([1.0, 1.0, 1.0]))


# --------------------------------------------------------------------------- losses
def test_gan_losses_on_hand_made_logits():
    real = torch.tensor([0.0, 2.0, -1.0])
    fake = torch.tensor([0.0, -3.0, 1.0])
    sp = lambda v: math.log1p(math.exp(v))  # noqa: E731
    want_d = [sp(-r) + sp(f) for r, f in zip(real.tolist(), fake.tolist(), strict=True)]
    assert discriminator_loss(real, fake).tolist() == pytest.approx(want_d, rel=1e-6)
    assert generator_loss(fake).tolist() == pytest.approx([sp(-f) for f in fake], rel=1e-6)
    assert discriminator_loss(real, fake)[0] == pytest.approx(2 * math.log(2))  # chance: log 4
    # signs: D improves by raising real and lowering fake logits; G by raising fake logits
    assert discriminator_loss(real + 1, fake - 1).sum() < discriminator_loss(real, fake).sum()
    assert generator_loss(fake + 1).sum() < generator_loss(fake).sum()
    assert discriminator_loss(real[:, None], fake[:, None]).shape == (3,)
    with pytest.raises(ValueError, match="same shape"):
        discriminator_loss(real, fake[:2])


def test_r1_penalty_of_a_linear_and_a_quadratic_discriminator():
    gamma = 0.7
    w = torch.tensor([0.5, -2.0, 1.0], requires_grad=True)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    pen = r1_penalty(x @ w + 3.0, x, gamma)
    want = 0.5 * gamma * float((w.detach() ** 2).sum())  # grad_x (w.x + b) = w for every sample
    assert pen.tolist() == pytest.approx([want] * 5, rel=1e-6)
    # the penalty is differentiable in D's weights: d/dw (gamma/2 |w|^2) = gamma w per sample
    (gw,) = torch.autograd.grad(pen.sum(), w)
    assert gw.tolist() == pytest.approx((5 * gamma * w).tolist(), rel=1e-6)
    # quadratic D(x) = x^T A x / 2: grad = A x (A symmetric)
    a = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, -1.0]])
    y = x.detach().clone().requires_grad_(True)
    pen = r1_penalty(0.5 * ((y @ a) * y).sum(1), y, gamma)
    assert torch.allclose(pen, 0.5 * gamma * ((y @ a) ** 2).sum(1), rtol=1e-6)
    with pytest.raises(ValueError, match="require grad"):
        r1_penalty(x.detach() @ w, x.detach(), gamma)
    with pytest.raises(ValueError, match="gamma"):
        r1_penalty(x @ w, x, -1.0)


def test_lazy_r1_weights():
    assert [r1_weight(s, 1) for s in range(3)] == [1.0, 1.0, 1.0]
    assert [r1_weight(s, 3) for s in range(7)] == [1.0, 0, 0, 1.0, 0, 0, 1.0]  # not rescaled
    assert [r1_weight(s, 3, rescale=True) for s in range(4)] == [3.0, 0, 0, 3.0]
    with pytest.raises(ValueError, match="every"):
        r1_weight(0, 0)


def test_d_loss_includes_r1_on_lazy_steps_only():
    torch.manual_seed(0)
    m = _toy_model(T=2, r1_gamma=5.0, lazy_reg=2)
    x = torch.randn(64, 2)

    def d_loss(step, gamma):
        m.r1_gamma = gamma
        return m.loss(x, torch.Generator().manual_seed(3), phase="d", step=step).mean().detach()

    plain = d_loss(0, 0.0)
    assert float(d_loss(0, 5.0)) > float(plain) + 1e-6  # step 0: penalty on
    assert torch.allclose(d_loss(1, 5.0), d_loss(1, 0.0))  # step 1: off
    m.r1_rescale = True
    on = d_loss(2, 5.0)
    m.r1_rescale = False
    # rescaled: the penalty counts twice (lazy_reg = 2)
    assert float(on - plain) == pytest.approx(2 * float(d_loss(2, 5.0) - plain), rel=1e-5)


# --------------------------------------------------------------------------- model + trainer
def _toy_model(T: int = 4, use_z: bool = True, prediction: str = "x0", **kw) -> DDGAN:
    gen = MLPGenerator(2, 2, hidden=16, depth=2, z_dim=4 if use_z else 0, map_dim=8)
    disc = MLPDiscriminator(2, hidden=16, depth=2)
    return DDGAN(gen, disc, (2,), num_steps=T, use_z=use_z, prediction=prediction, **kw)


def _grid_data(n: int = 256, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [1.0, -1.0]])
    return centres[torch.randint(0, 4, (n,), generator=g)] + 0.05 * torch.randn(n, 2, generator=g)


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=6, batch_size=32, lr=2e-3, betas=(0.5, 0.9), grad_clip=None,
                log_every=2, ckpt_every=0, keep_last=2, ema_decay=0.9,
                group_lr={"g": 1e-3, "d": 2e-3}, seed=5)
    base.update(kw)
    return TrainConfig(**base)


def test_sampling_makes_T_network_calls():
    for T in (1, 2, 4):
        m = _toy_model(T=T)
        calls: list[int] = []
        m.G.register_forward_hook(lambda mod, args, out, c=calls: c.append(args[0].shape[0]))
        res = m.sample(10, "ddgan", nfe=T, generator=torch.Generator().manual_seed(0),
                       trajectory=True)
        assert res.nfe == T and calls == [10] * T
        assert res.samples.shape == (10, 2) and len(res.trajectory) == T + 1
        assert torch.isfinite(res.samples).all()
    # reproducible from the generator
    m = _toy_model()
    a = m.sample(5, generator=torch.Generator().manual_seed(1)).samples
    b = m.sample(5, generator=torch.Generator().manual_seed(1)).samples
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="NFE = 4"):
        m.sample(5, "ddgan", nfe=3)
    with pytest.raises(ValueError, match="own chain"):
        m.sample(5, "em", nfe=4)
    with pytest.raises(ValueError, match="unknown option"):
        m.sample(5, "ddgan", 4, eta=1.0)


def test_ablation_switches():
    gen = torch.Generator().manual_seed(0)
    m = _toy_model(T=1, use_z=False)
    assert m.sample(4, generator=gen).nfe == 1
    # no latent, x0-prediction, T = 1: the sample is the deterministic G(x_T)
    x_t = torch.randn(4, 2, generator=torch.Generator().manual_seed(7))
    step = torch.ones(4, dtype=torch.long)
    out, pred = m.generate_step(x_t, step)
    assert torch.equal(out, pred) and torch.equal(out, m.generate_step(x_t, step)[0])
    m = _toy_model(T=3, prediction="xprev")
    out, pred = m.generate_step(x_t, torch.full((4,), 3), torch.Generator().manual_seed(1))
    assert torch.equal(out, pred)  # G outputs x_{t-1} directly: no posterior noise
    with pytest.raises(ValueError, match="z_dim = 0"):
        DDGAN(MLPGenerator(2, 2, z_dim=3), MLPDiscriminator(2), (2,), use_z=False)
    with pytest.raises(ValueError, match="prediction"):
        _toy_model(prediction="eps")
    with pytest.raises(ValueError, match="phase"):
        _toy_model().loss(torch.zeros(4, 2), phase=None)


def test_tiny_training_moves_both_networks_one_phase_at_a_time(tmp_path):
    torch.manual_seed(0)
    m = _toy_model(T=4, r1_gamma=0.1, lazy_reg=2)
    g0 = [p.detach().clone() for p in m.G.parameters()]
    d0 = [p.detach().clone() for p in m.D.parameters()]
    tr = Trainer(m, _grid_data(), _cfg(), tmp_path, progress=False)
    out = tr.fit()
    assert out["step"] == 6 and set(out["phase_losses"]) == {"d", "g"}
    assert all(math.isfinite(v) for v in out["phase_losses"].values())
    assert any((a - p).abs().max() > 1e-4 for a, p in zip(g0, m.G.parameters(), strict=True))
    assert any((a - p).abs().max() > 1e-4 for a, p in zip(d0, m.D.parameters(), strict=True))
    # every parameter took exactly one Adam step per optimizer step: the D phase never
    # stepped G and the G phase never stepped D (gradients that reached D were dropped)
    groups = {g["name"]: g for g in tr.optimizer.param_groups}
    assert groups["g"]["lr"] == pytest.approx(1e-3) and groups["d"]["lr"] == pytest.approx(2e-3)
    for p in m.parameters():
        assert int(tr.optimizer.state[p]["step"]) == 6
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [int(r["step"]) for r in rows] == [2, 4, 6]
    for r in rows:
        assert float(r["loss"]) == pytest.approx(float(r["loss_d"]) + float(r["loss_g"]),
                                                 rel=1e-6)
        assert float(r["grad_norm_d"]) > 0 and float(r["grad_norm_g"]) > 0


def test_diagnose_flags_a_discriminator_stuck_at_chance():
    m = _toy_model(T=2)
    chance = 2 * math.log(2)
    stuck = [(s, {"d": chance + 0.002, "g": 0.69}) for s in range(100, 1601, 100)]
    assert m.diagnose(stuck[:9]) is None  # before step 1000: D starts at chance
    msg = m.diagnose(stuck)
    assert msg and "train.group_lr.d" in msg and "at chance" in msg
    # a discriminator that learns (loss_d below log 4) or left chance recently is fine
    assert m.diagnose([(s, {"d": 1.2, "g": 1.0}) for s in range(100, 1601, 100)]) is None
    assert m.diagnose(stuck[:-1] + [(1600, {"d": 1.30, "g": 0.8})]) is None
    assert m.diagnose([]) is None


def test_trainer_logs_the_diagnosis_once(tmp_path, caplog):
    class Stuck(nn.Module):
        """A one-loss model whose diagnosis fires from the second log step on."""

        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))
            self.seen: list = []

        def loss(self, batch, generator=None):
            return (self.w - batch).pow(2)

        def diagnose(self, history):
            self.seen = list(history)
            return "stuck" if len(history) >= 2 else None

    m = Stuck()
    c = TrainConfig(steps=8, batch_size=4, lr=1e-2, log_every=2, ckpt_every=0, ema_decay=0.9)
    with caplog.at_level("WARNING", logger="trilemma.train"):
        Trainer(m, torch.ones(16), c, tmp_path, progress=False).fit()
    assert [s for s, _ in m.seen] == [2, 4, 6, 8] and set(m.seen[0][1]) == {"loss"}
    assert [r.getMessage() for r in caplog.records] == ["step 4: stuck"]


def test_gan_resume_is_bit_identical(tmp_path):
    """2N straight steps == N steps + a fresh Trainer resuming (both optimizer groups, the
    EMA, the noise stream and the lazy-R1 schedule come back exactly)."""
    cfg = _cfg(steps=8, grad_accum=2, ckpt_every=4, schedule="cosine", warmup_steps=2,
               min_lr=1e-4, grad_clip=1.0)
    data = _grid_data()
    torch.manual_seed(0)
    straight = Trainer(_toy_model(r1_gamma=0.2, lazy_reg=3), data, cfg, tmp_path / "a",
                       progress=False)
    straight.fit()
    torch.manual_seed(0)
    Trainer(_toy_model(r1_gamma=0.2, lazy_reg=3), data, cfg, tmp_path / "b",
            progress=False).fit(until=4)
    torch.manual_seed(99)  # another init: everything must come from the checkpoint
    resumed = Trainer(_toy_model(r1_gamma=0.2, lazy_reg=3), data, cfg, tmp_path / "b",
                      progress=False)
    out = resumed.fit(resume=True)
    assert out["resumed_from"].endswith("step_000004") and out["step"] == 8
    for a, b in ((straight.model.state_dict(), resumed.model.state_dict()),
                 (straight.ema.state_dict(), resumed.ema.state_dict())):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = straight.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert [g["lr"] for g in sa["param_groups"]] == [g["lr"] for g in sb["param_groups"]]
    for i in sa["state"]:
        assert all(torch.equal(sa["state"][i][k], sb["state"][i][k]) for k in sa["state"][i])
    assert torch.equal(straight.noise.get_state(), resumed.noise.get_state())
    la = list(csv.reader(open(tmp_path / "a" / "log.csv")))
    lb = list(csv.reader(open(tmp_path / "b" / "log.csv")))
    assert [r[:2] + r[6:8] for r in la] == [r[:2] + r[6:8] for r in lb]


def test_nan_guard_skips_the_bad_phase(tmp_path):
    m = _toy_model(T=2)
    calls = {"n": 0}
    orig = m.loss

    def flaky(batch, generator=None, phase=None, step=0):
        per = orig(batch, generator=generator, phase=phase, step=step)
        if phase == "g" and step == 1:
            calls["n"] += 1
            return per * float("nan")
        return per

    m.loss = flaky
    tr = Trainer(m, _grid_data(), _cfg(steps=3, log_every=1), tmp_path, progress=False)
    out = tr.fit()
    assert calls["n"] == 1 and out["skipped_steps"] == 1
    states = [int(tr.optimizer.state[p]["step"]) for p in m.G.parameters()]
    assert states == [2] * len(states)  # the G phase of step 2 was not applied ...
    assert all(int(tr.optimizer.state[p]["step"]) == 3 for p in m.D.parameters())  # ... D's was
    assert tr.ema.num_updates == 2


def test_trainer_checks_the_phase_protocol(tmp_path):
    with pytest.raises(ValueError, match="group_lr names unknown group"):
        Trainer(_toy_model(), _grid_data(), _cfg(group_lr={"gen": 1e-3}), tmp_path,
                progress=False)

    class Single(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(2))

        def loss(self, batch, generator=None):
            return (batch - self.w).pow(2).sum(1)

    with pytest.raises(ValueError, match="single parameter group"):
        Trainer(Single(), _grid_data(), _cfg(), tmp_path, progress=False)

    class Overlap(DDGAN):
        def param_groups(self):
            return {"d": list(self.D.parameters()), "g": list(self.parameters())}

    m = _toy_model()
    bad = Overlap(m.G, m.D, (2,))
    with pytest.raises(ValueError, match="groups of both phase"):
        Trainer(bad, _grid_data(), _cfg(), tmp_path, progress=False)
    with pytest.raises(ValueError, match="TrainConfig.group_lr"):
        _cfg(group_lr={"g": -1.0})
    assert _cfg(group_lr={"g": "1e-4"}).group_lr == {"g": 1e-4}  # YAML 1.1 strings


def test_image_networks_and_loss():
    torch.manual_seed(0)
    gen = ZUNet(1, 1, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                attn_resolutions=(), image_size=8, z_dim=6)
    disc = ConvDiscriminator(1, base_channels=8, channel_mults=(1, 2))
    m = DDGAN(gen, disc, (1, 8, 8), num_steps=2, r1_gamma=0.1)
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    g = torch.Generator().manual_seed(0)
    for phase in ("d", "g"):
        loss = m.loss(x, g, phase=phase)
        assert loss.shape == (4,) and torch.isfinite(loss).all()
        loss.mean().backward()
    assert disc.out.weight.grad is not None and gen.conv_in.weight.grad is not None
    # z changes the output (after the zero-initialised convs move off zero)
    with torch.no_grad():
        for p in gen.parameters():
            p.add_(0.05 * torch.randn_like(p))
    t = torch.full((4,), 0.5)
    a = gen(x, t, torch.randn(4, 6))
    assert not torch.allclose(a, gen(x, t, torch.randn(4, 6)))
    assert m.sample(3, generator=g).samples.shape == (3, 1, 8, 8)
    with pytest.raises(ValueError, match="z must have shape"):
        gen(x, t, torch.randn(4, 5))


# --------------------------------------------------------------------------- configs + CLI
def _raw(path: str) -> dict:
    return yaml.safe_load(open(os.path.join(ROOT, "configs", path)))


@pytest.mark.parametrize("name", ["toy_ddgan.yaml", "digits_ddgan.yaml"])
def test_shipped_configs_validate_and_build(name):
    from trilemma.build import build_dataset, build_model, data_shape_of

    cfg = load_config(os.path.join(ROOT, "configs", name))
    assert cfg.model["method"] == "ddgan" and cfg.sample["sampler"] == "ddgan"
    assert cfg.sample["nfe"] == cfg.model["num_steps"]
    shape = data_shape_of(build_dataset(cfg))
    model = build_model(cfg, shape)
    assert isinstance(model, DDGAN) and model.num_steps == cfg.model["num_steps"]
    assert "method=ddgan" in cfg.summary()


def test_config_errors_name_the_key():
    raw = _raw("toy_ddgan.yaml")
    bad = {**raw, "process": {"name": "ve"}}
    with pytest.raises(ConfigError, match="process.name: DDGAN discretises the VP SDE"):
        validate(bad)
    bad = {**raw, "sample": {"sampler": "ddgan", "nfe": 7}}
    with pytest.raises(ConfigError, match="sample.nfe: a DDGAN with num_steps = 4"):
        validate(bad)
    bad = {**raw, "model": {**raw["model"], "num_stepz": 3}}
    with pytest.raises(ConfigError, match="model.num_stepz"):
        validate(bad)
    bad = {**raw, "model": {**raw["model"], "disc": {"name": "conv"}}}
    with pytest.raises(ConfigError, match="model.disc.name: 'conv' does not fit data 'toy'"):
        validate(bad)
    bad = {**raw, "model": {**raw["model"], "net": {**raw["model"]["net"], "in_dim": 3}}}
    with pytest.raises(ConfigError, match="model.net.in_dim: is derived"):
        validate(bad)
    bad = {**raw, "model": {**raw["model"], "prediction": "eps"}}
    with pytest.raises(ConfigError, match="model.prediction"):
        validate(bad)
    ok = validate({**raw, "model": {**raw["model"], "use_z": False}})
    assert ok["model"]["use_z"] is False


def test_cli_train_sample_info_on_a_ddgan_run(tmp_path, capsys):
    import numpy as np

    from trilemma.cli import main

    run = tmp_path / "run"
    sets = ["train.steps=4", "train.batch_size=64", "train.log_every=2", "train.ckpt_every=2",
            "train.sample_every=0", "data.n=512", "model.net.hidden=16", "model.disc.hidden=16"]
    argv = ["train", os.path.join(ROOT, "configs", "toy_ddgan.yaml"), "--out", str(run),
            "--quiet", "--device", "cpu"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    assert latest_checkpoint(run).name == "step_000004"
    header = next(csv.reader(open(run / "log.csv")))
    assert header[-4:] == ["loss_d", "loss_g", "grad_norm_d", "grad_norm_g"]
    _, meta = load_weights(run / "model.safetensors")
    assert meta["step"] == 4
    assert main(argv[:-len(sets) * 2] + ["--resume"] + sum([["--set", s] for s in sets[1:]],
                                                             ["--set", "train.steps=6"])) == 0
    assert latest_checkpoint(run).name == "step_000006"
    out = tmp_path / "s.npz"
    assert main(["sample", str(run), "--n", "50", "--out", str(out), "--device", "cpu"]) == 0
    z = np.load(out)
    assert z["samples"].shape == (50, 2) and int(z["nfe"]) == 4
    capsys.readouterr()
    assert main(["sample", str(run), "--nfe", "10", "--out", str(out)]) == 2
    assert "--nfe: this DDGAN has T = 4 steps" in capsys.readouterr().err
    assert main(["sample", str(run), "--sampler", "dpm2m", "--out", str(out)]) == 2
    assert main(["info", str(run)]) == 0
    assert "method=ddgan" in capsys.readouterr().out


# --------------------------------------------------------------------------- DDP
DDP_SCRIPT = textwrap.dedent(
    '''
    import sys
    from pathlib import Path

    import torch

    from trilemma.methods.ddgan import DDGAN
    from trilemma.nets.discriminator import MLPDiscriminator, MLPGenerator
    from trilemma.train import TrainConfig, Trainer, cleanup_distributed, init_distributed
    from trilemma.train import save_weights


    def model(seed):
        torch.manual_seed(seed)
        gen = MLPGenerator(2, 2, hidden=16, depth=2, z_dim=4, map_dim=8).double()
        disc = MLPDiscriminator(2, hidden=16, depth=2).double()
        return DDGAN(gen, disc, (2,), num_steps=3, r1_gamma=0.5, lazy_reg=2)


    def data():
        g = torch.Generator().manual_seed(0)
        return torch.randn(96, 2, generator=g, dtype=torch.float64)


    def config():
        return TrainConfig(steps=4, batch_size=16, lr=2e-3, betas=(0.5, 0.9), grad_clip=None,
                           ema_decay=0.9, ckpt_every=0, log_every=2, seed=3,
                           group_lr={"g": 1e-3})


    if __name__ == "__main__":
        torch.set_num_threads(1)
        out = Path(sys.argv[1])
        info = init_distributed()
        tr = Trainer(model(100 + info.rank), data(), config(), out / "run", progress=False)
        tr.fit()
        save_weights(out / f"model{info.rank}.safetensors", tr.model, {"rank": info.rank})
        cleanup_distributed()
    '''
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed gloo"
)
def test_ddp_two_processes_train_the_gan_in_lock_step(tmp_path):
    """2 ranks (gloo): DDP with unused parameters per phase and R1's double backward; the ranks
    stay identical and follow a 1-process run up to the per-rank noise streams."""
    script = tmp_path / "ddgan_worker.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(script),
           str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    m0, _ = load_weights(tmp_path / "model0.safetensors")
    m1, _ = load_weights(tmp_path / "model1.safetensors")
    spec = importlib.util.spec_from_file_location("ddgan_worker", script)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    init = worker.model(100).state_dict()
    for k in m0:  # DDP keeps the ranks bit-identical, and both networks moved
        assert torch.equal(m0[k], m1[k]), k
    assert (m0["G.out.weight"] - init["G.out.weight"]).abs().max() > 1e-4
    assert (m0["D.out.weight"] - init["D.out.weight"]).abs().max() > 1e-4
