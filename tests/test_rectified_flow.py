"""The rectified flow (REFERENCE §10.2): the process's closed forms against its SDE and the exact
mixture oracle, the velocity prediction, Euler = the RF paper's sampler, reflow's seeded pairs,
NFE counts, config errors, straightness, and a tiny train + reflow + sample through the CLI."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from trilemma.cli import main
from trilemma.config import Config
from trilemma.errors import ConfigError
from trilemma.methods import Reflow, ScoreModel
from trilemma.methods.reflow import flow_velocity, load_pairs, pairs_meta, reflow_pairs
from trilemma.metrics.mixture import mode_metrics
from trilemma.metrics.straightness import straightness
from trilemma.nets import MLP
from trilemma.objectives import dsm_loss
from trilemma.oracle import GaussianMixture, grid25
from trilemma.processes import RectifiedFlow, get_process
from trilemma.processes.base import LinearProcess
from trilemma.samplers import SAMPLERS, sample, sample_from, samplers_for

F64 = torch.float64


@pytest.fixture(scope="module")
def proc() -> RectifiedFlow:
    return get_process("rectified_flow")


def _net(seed: int = 0) -> MLP:
    """A small MLP whose output depends on its input and time (the output layer starts at
    zero in trilemma's nets, so every weight is redrawn)."""
    torch.manual_seed(seed)
    net = MLP(2, 2, hidden=16, depth=1, time_embed="fourier")
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.5)
    return net


def _flow(seed: int = 0) -> ScoreModel:
    return ScoreModel(get_process("rectified_flow"), _net(seed), (2,))


# ------------------------------------------------------------------ the process
def test_marginal_moments_match_a_simulation_of_its_sde(proc):
    """Euler-Maruyama on dx = f x dt + g dw from a fixed x0 reaches N((1 - t) x0, t^2)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.full((40_000,), 1.5, dtype=F64)
    ts = torch.linspace(0.0, 0.8, 1601, dtype=F64)
    for t, s in zip(ts[:-1], ts[1:], strict=True):
        dt = float(s - t)
        x = x + proc.f(t) * x * dt + torch.sqrt(proc.diffusion_sq(t) * dt) * torch.randn(
            x.shape, generator=gen, dtype=F64)
    t = torch.tensor(0.8, dtype=F64)
    assert float(x.mean()) == pytest.approx(float(proc.alpha(t)) * 1.5, abs=0.01)
    assert float(x.var()) == pytest.approx(float(proc.sigma(t)) ** 2, rel=0.02)
    assert float(proc.alpha(t)) == pytest.approx(0.2) and float(proc.sigma(t)) == 0.8


def test_transition_log_snr_and_pf_drift_are_consistent(proc):
    t = torch.tensor([0.01, 0.3, 0.7, 0.99], dtype=F64)
    s = torch.tensor([0.001, 0.1, 0.5, 0.9], dtype=F64)
    ratio = proc.alpha(t) / proc.alpha(s)
    assert torch.allclose(proc.sigma(t) ** 2,
                          ratio**2 * proc.sigma(s) ** 2 + proc.transition_var(t, s), rtol=1e-12)
    assert torch.allclose(proc.t_from_log_snr(proc.log_snr(t)), t, rtol=1e-12)
    # d sigma^2/dt = 2 f sigma^2 + g^2 (the marginal's variance ODE)
    h = 1e-6
    dvar = (proc.sigma(t + h) ** 2 - proc.sigma(t - h) ** 2) / (2 * h)
    assert torch.allclose(dvar, 2 * proc.f(t) * proc.sigma(t) ** 2 + proc.diffusion_sq(t),
                          rtol=1e-6)
    # the PF-ODE drift (the velocity) equals the generic F u - g^2 s / 2
    u = torch.randn(4, 2, dtype=F64)
    score = torch.randn(4, 2, dtype=F64)
    generic = LinearProcess.reverse_drift(proc, u, t, score, probability_flow=True)
    assert torch.allclose(proc.reverse_drift(u, t, score, probability_flow=True), generic,
                          rtol=1e-9, atol=1e-9)


def test_oracle_score_matches_finite_differences_and_gives_the_velocity(proc):
    """The exact mixture score through this process is the gradient of the exact log density,
    and the velocity it implies is E[eps - x0 | x_t] (from the exact posterior x0_hat)."""
    mix = GaussianMixture(torch.tensor([[1.0, -0.5], [-1.0, 0.8]]), stds=0.3)
    u = torch.randn(6, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    t = torch.full((6,), 0.4, dtype=F64)
    score = mix.marginal_score(proc, u, t)
    h = 1e-5
    fd = torch.stack([(mix.marginal_log_prob(proc, u + h * e, t)
                       - mix.marginal_log_prob(proc, u - h * e, t)) / (2 * h)
                      for e in torch.eye(2, dtype=F64)], dim=1)
    assert torch.allclose(score, fd, atol=1e-6)
    v = proc.velocity(u, t, score)
    x0_hat = proc.score_to_x0(u, t, score)
    eps_hat = (u - (1 - 0.4) * x0_hat) / 0.4
    assert torch.allclose(v, eps_hat - x0_hat, atol=1e-10)
    assert torch.allclose(proc.prediction_to_score("velocity", v, u, t), score, atol=1e-10)


def test_velocity_prediction_round_trip_and_the_other_kinds(proc):
    u = torch.randn(5, 3, dtype=F64)
    t = torch.tensor([0.002, 0.2, 0.5, 0.8, 0.998], dtype=F64)
    v = torch.randn(5, 3, dtype=F64)
    s = proc.prediction_to_score("velocity", v, u, t)
    assert torch.allclose(s, -(u + (1 - t)[:, None] * v) / t[:, None])
    assert torch.allclose(proc.score_to_prediction("velocity", s, u, t), v, atol=1e-9)
    assert torch.allclose(proc.score_to_x0(u, t, s), u - t[:, None] * v, atol=1e-9)
    for kind in ("eps", "x0", "v", "score"):
        out = proc.score_to_prediction(kind, s, u, t)
        assert torch.allclose(proc.prediction_to_score(kind, out, u, t), s, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="velocity"):
        get_process("vp").check_prediction("velocity")


def test_time_range_errors():
    with pytest.raises(ValueError, match="T must lie in"):
        RectifiedFlow(T=1.0)
    with pytest.raises(ValueError, match="eps must lie in"):
        RectifiedFlow(eps=0.0)
    assert get_process("rectified_flow", T=0.99, eps=0.01).config() == {"T": 0.99, "eps": 0.01}


# ------------------------------------------------------------------ samplers
def test_euler_is_the_rf_papers_sampler_step_by_step(proc):
    """Euler on the PF-ODE on a uniform grid is x <- x - dt v(x, t) exactly (N steps = N NFE),
    and the denoising call is one more Euler step, to t = 0."""
    model = _flow().double()
    vel = flow_velocity(model)
    x = torch.randn(7, 2, dtype=F64, generator=torch.Generator().manual_seed(3))
    grid = torch.linspace(proc.T, proc.eps, 5, dtype=F64)
    res = sample_from("euler", model.score_fn(), proc, x, None, grid=grid, denoise=True)
    ref = x
    for t, s in zip(grid[:-1], grid[1:], strict=True):
        ref = ref - float(t - s) * vel(ref, torch.full((7,), float(t), dtype=F64))
    assert torch.allclose(res.state, ref, rtol=1e-10, atol=1e-10)
    last = ref - proc.eps * vel(ref, torch.full((7,), proc.eps, dtype=F64))
    assert torch.allclose(res.samples, last, rtol=1e-10, atol=1e-10)
    assert res.nfe == 5
    plain = sample_from("euler", model.score_fn(), proc, x, 4, grid=grid, denoise=False)
    assert plain.nfe == 4 and torch.equal(plain.samples, res.state)
    # the default on a flow: N uniform steps in t from T to eps, no denoising call: N NFE
    score = GaussianMixture(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]), stds=0.2).score_fn(proc)
    for n in (1, 2, 4):
        gen = torch.Generator().manual_seed(n)
        res = sample("euler", score, proc, (7, 2), n, generator=gen, dtype=F64)
        ref = torch.randn(7, 2, generator=torch.Generator().manual_seed(n), dtype=F64)
        dt = (proc.T - proc.eps) / n
        for i in range(n):
            t = torch.full((7,), proc.T - i * dt, dtype=F64)
            ref = ref - dt * proc.velocity(ref, t, score(ref, t))
        assert res.nfe == n and torch.allclose(res.samples, ref, rtol=1e-9, atol=1e-9)


def test_every_scalar_sampler_runs_on_the_flow_with_exact_nfe(proc):
    """Exact Gaussian-data score: each scalar sampler lands near N(mu, 0.5^2) within budget."""
    assert set(samplers_for("rectified_flow")) == {
        n for n, spec in SAMPLERS.items() if spec.processes in ("any", "scalar")}
    mix = GaussianMixture(torch.tensor([[2.0, -1.0]]), stds=0.5)
    score = mix.score_fn(proc)
    for name in samplers_for("rectified_flow"):
        gen = torch.Generator().manual_seed(0)
        res = sample(name, score, proc, (3000, 2), 60, generator=gen)
        spec = SAMPLERS[name]
        assert res.nfe <= 60, name
        if not spec.adaptive:  # exactly the calls its steps cost, and the most that fit
            assert res.nfe == spec.nfe_for(res.info["steps"], res.info["denoise"]), name
            assert spec.nfe_for(res.info["steps"] + 1, res.info["denoise"]) > 60, name
        tol = 0.2 if name == "pc" else 0.1  # PC's corrector biases VP as much at 60 NFE
        assert torch.allclose(res.samples.mean(0), torch.tensor([2.0, -1.0]), atol=tol), name
        assert torch.allclose(res.samples.std(0), torch.tensor([0.5, 0.5]), atol=tol), name


def test_velocity_weighting_is_the_flow_matching_loss(proc):
    model = _flow()
    x0 = torch.randn(64, 2)
    t = torch.rand(64) * 0.99 + 0.002
    noise = torch.randn(64, 2)
    loss = dsm_loss(model.model, proc, x0, weighting="velocity", t=t, noise=noise)
    xt = (1 - t)[:, None] * x0 + t[:, None] * noise
    v = model.model.net(model.model.c_in(xt, t) * xt, t)
    direct = (v - (noise - x0)).pow(2).mean(1)
    assert torch.allclose(loss, direct, rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="rectified flow"):
        dsm_loss(model.model, get_process("vp"), x0, weighting="velocity")


# ------------------------------------------------------------------ straightness
def test_straightness_zero_for_a_shift_and_closed_form_for_the_gaussian_flow(proc):
    z1 = torch.randn(4000, 2, dtype=F64, generator=torch.Generator().manual_seed(5))
    shift = torch.tensor([3.0, -1.0], dtype=F64)
    st = straightness(lambda x, t: -shift.expand_as(x), z1, n_steps=10)
    assert st["S"] < 1e-20 and st["nfe"] == 41
    assert torch.allclose(st["z0"], z1 + shift)
    # 1-RF between N(0, I) and N(mu, I): Z_t = (1 - t) mu + r(t) z, r = sqrt((1-t)^2 + t^2),
    # so S = E||z||^2 int_0^1 r'(t)^2 dt, r' = (2t - 1)/r; from the exact score via the process
    unit = RectifiedFlow(T=1 - 1e-6, eps=1e-6)
    mix = GaussianMixture(torch.tensor([[3.0, -1.0]]), stds=1.0)
    score = mix.score_fn(unit)
    st = straightness(lambda x, t: unit.velocity(x, t, score(x, t)), z1, t_max=unit.T,
                      t_min=unit.eps, n_steps=200)
    exact = 2 - math.pi / 2  # int_0^1 (2t - 1)^2 / ((1 - t)^2 + t^2) dt, per coordinate
    assert st["S"] == pytest.approx(exact * float(z1.pow(2).sum(1).mean()), rel=1e-3)


# ------------------------------------------------------------------ reflow
def test_reflow_pairs_are_reproducible_from_the_seed():
    teacher = _flow(1)
    a_noise, a_x, nfe = reflow_pairs(teacher, 50, sampler="heun", nfe=9, seed=7, batch_size=20)
    b_noise, b_x, _ = reflow_pairs(teacher, 50, sampler="heun", nfe=9, seed=7, batch_size=50)
    assert nfe == 8  # 4 Heun steps, no denoising call on a flow
    assert torch.equal(a_noise, b_noise) and torch.allclose(a_x, b_x, atol=1e-6)
    assert torch.equal(a_noise, torch.randn(50, 2, generator=torch.Generator().manual_seed(7)))
    direct = sample_from("heun", teacher.score_fn(), teacher.process, a_noise, 9)
    assert torch.allclose(direct.samples, a_x, atol=1e-6)
    c_noise, _, _ = reflow_pairs(teacher, 50, sampler="heun", nfe=9, seed=8)
    assert not torch.equal(a_noise, c_noise)
    with pytest.raises(ValueError, match="not deterministic"):
        reflow_pairs(teacher, 5, sampler="em", nfe=9)
    vp = ScoreModel(get_process("ve"), MLP(2, 2, hidden=8, depth=1), (2,))
    with pytest.raises(ValueError, match="N\\(0, I\\) prior"):
        reflow_pairs(vp, 5)


def test_reflow_loss_uses_the_paired_noise():
    model = Reflow(get_process("rectified_flow"), _net(), (2,))
    with pytest.raises(RuntimeError, match="no pairs"):
        model.loss(torch.zeros(4, 2))
    noise, x0 = torch.randn(1, 2), torch.randn(1, 2)
    model.set_pairs(noise, x0)
    gen = torch.Generator().manual_seed(0)
    loss = model.loss(torch.zeros(8, 2), generator=gen)
    gen = torch.Generator().manual_seed(0)
    torch.randint(1, (8,), generator=gen)
    t = torch.rand(8, generator=gen, dtype=F64)
    t = (model.process.train_eps + (model.process.T - model.process.train_eps) * t).float()
    want = dsm_loss(model.model, model.process, x0.expand(8, 2), weighting="velocity", t=t,
                    noise=noise.expand(8, 2))
    assert torch.allclose(loss, want)
    with pytest.raises(ValueError, match="shape"):
        model.set_pairs(torch.zeros(3, 2), torch.zeros(4, 2))


def test_one_step_distillation_loss_is_the_error_of_one_euler_step():
    model = Reflow(get_process("rectified_flow"), _net(), (2,), distill=True).double()
    noise, x0 = torch.randn(6, 2).double(), torch.randn(6, 2).double()  # float32 values
    model.set_pairs(noise, x0)
    loss = model.loss(torch.zeros(6, 2, dtype=F64), generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(6, (6,), generator=gen)
    one = sample_from("euler", model.score_fn(), model.process, noise[idx], 1)
    assert one.nfe == 1
    assert torch.allclose(loss, (one.samples - x0[idx]).pow(2).mean(1), rtol=1e-9, atol=1e-12)


TOY_RF = {
    "seed": 0, "device": "cpu", "process": {"name": "rectified_flow"},
    "model": {"net": {"name": "mlp", "hidden": 16, "depth": 1}},
    "data": {"name": "toy", "toy": "grid25", "n": 256},
    "train": {"steps": 4, "batch_size": 32, "lr": 1e-3, "warmup_steps": 0, "ckpt_every": 4,
              "sample_every": 4, "log_every": 2},
    "sample": {"sampler": "euler", "nfe": 3, "n": 20},
}


def test_config_errors():
    def problems(cfg: dict) -> str:
        with pytest.raises(ConfigError) as err:
            Config.from_dict(cfg, check_paths=False)
        return str(err.value)

    cfg = {**TOY_RF, "process": {"name": "vp"}, "model": {**TOY_RF["model"],
                                                           "weighting": "velocity"}}
    assert "model.weighting" in problems(cfg)
    cfg = {**TOY_RF, "process": {"name": "vp"}, "model": {**TOY_RF["model"],
                                                           "prediction": "velocity"}}
    assert "model.prediction" in problems(cfg)
    cfg = {**TOY_RF, "process": {"name": "rectified_flow", "T": 1.0}}
    assert "T must lie in" in problems(cfg)
    reflow = {**TOY_RF, "model": {"method": "reflow", "teacher": "x", **TOY_RF["model"]}}
    assert "process.name: rectified_flow" in problems({**reflow, "process": {"name": "vp"}})
    bad = {**reflow, "model": {**reflow["model"], "pair_sampler": "em"}}
    assert "model.pair_sampler" in problems(bad)
    no_teacher = {**reflow, "model": {k: v for k, v in reflow["model"].items()
                                      if k != "teacher"}}
    assert "teacher" in problems(no_teacher)
    ok = Config.from_dict(TOY_RF, check_paths=False)
    assert ok.model["prediction"] == "velocity" and ok.model["weighting"] == "velocity"


def test_tiny_train_reflow_and_sample_through_the_cli(tmp_path, capsys):
    cfg = tmp_path / "rf.yaml"
    cfg.write_text(yaml.safe_dump(TOY_RF))
    assert main(["train", str(cfg), "--out", str(tmp_path / "rf"), "--quiet"]) == 0
    reflow = {**TOY_RF, "model": {"method": "reflow", "teacher": str(tmp_path / "rf"),
                                  "pair_sampler": "heun", "pair_nfe": 5, "pairs": 40,
                                  "pair_seed": 3, **TOY_RF["model"]}}
    cfg2 = tmp_path / "reflow.yaml"
    cfg2.write_text(yaml.safe_dump(reflow))
    run2 = tmp_path / "reflow"
    assert main(["train", str(cfg2), "--out", str(run2), "--quiet"]) == 0
    noise, x = load_pairs(run2 / "reflow_pairs.safetensors")
    assert noise.shape == x.shape == (40, 2)
    assert pairs_meta(run2 / "reflow_pairs.safetensors")["nfe_per_sample"] == "4"
    assert torch.equal(noise, torch.randn(40, 2, generator=torch.Generator().manual_seed(3)))
    out = tmp_path / "s.npz"
    capsys.readouterr()
    assert main(["sample", str(run2), "--sampler", "euler", "--nfe", "2", "--n", "10",
                 "--out", str(out)]) == 0
    assert "NFE 2" in capsys.readouterr().out and out.exists()
    distill = {**reflow, "model": {**reflow["model"], "teacher": str(run2),
                                   "init_from": str(run2), "distill": True}}
    cfg4 = tmp_path / "distill.yaml"
    cfg4.write_text(yaml.safe_dump(distill))
    assert main(["train", str(cfg4), "--out", str(tmp_path / "distill"), "--quiet"]) == 0
    bad = {**reflow, "model": {**reflow["model"], "teacher": str(tmp_path / "nope")}}
    cfg3 = tmp_path / "bad.yaml"
    cfg3.write_text(yaml.safe_dump(bad))
    assert main(["train", str(cfg3), "--out", str(tmp_path / "bad"), "--quiet"]) != 0
    assert "model.teacher" in capsys.readouterr().err


def test_grid25_oracle_euler_with_many_steps_is_accurate(proc):
    """Sanity of the whole path on the benchmark's mixture: exact score, 200 Euler steps."""
    mix = grid25()
    res = sample("euler", mix.score_fn(proc), proc, (2000, 2), 201,
                 generator=torch.Generator().manual_seed(0))
    assert math.isfinite(float(res.samples.abs().max()))
    rep = mode_metrics(mix, res.samples.double())
    assert rep["modes_covered"] == 25 and rep["quality"] > 0.9
