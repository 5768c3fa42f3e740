"""Consistency distillation: the boundary condition, the teacher's ODE against Gaussian closed
forms, one distillation run moving a student toward the exact consistency map, the EMA target,
exact NFE, config errors, and train + sample through the CLI."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from counting_net import CountingNet
from trilemma.config import ConfigError, validate
from trilemma.methods.consistency import ConsistencyModel, consistency_coefs, default_taus
from trilemma.methods.consistency_teacher import Teacher
from trilemma.nets import MLP
from trilemma.oracle import GaussianMixture
from trilemma.processes import get_process
from trilemma.train import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MU, STD = 0.3, 0.5  # the single-Gaussian data of the closed-form tests


def gaussian_teacher(process: str = "vp", dim: int = 1) -> Teacher:
    """The exact score of data N(MU, STD^2 I) in ``dim`` dimensions under ``process``."""
    g = GaussianMixture(torch.full((1, dim), MU, dtype=torch.float64), None, STD)
    p = get_process(process)
    return Teacher(g.score_fn(p), p, "gaussian")


def exact_map(x: Tensor, sigma: Tensor, sigma_min: float) -> Tensor:
    """The exact consistency map of the PF-ODE for Gaussian data: the ODE
    dx/dsigma = sigma (x - MU) / (STD^2 + sigma^2) keeps (x - MU) / sqrt(STD^2 + sigma^2)."""
    r = math.sqrt(STD**2 + sigma_min**2) / torch.sqrt(STD**2 + sigma.to(x.dtype) ** 2)
    return MU + (x - MU) * r.reshape(-1, 1)


class TableNet(nn.Module):
    """A linear student F = a_n inp + b_n with one (a, b) per training noise level (found by its
    c_noise): it can represent the exact Gaussian map at every grid point."""

    def __init__(self, c_noise: Tensor) -> None:
        super().__init__()
        self.register_buffer("c_noise", c_noise.float())
        self.a = nn.Parameter(torch.zeros(len(c_noise)))
        self.b = nn.Parameter(torch.zeros(len(c_noise)))

    def forward(self, inp: Tensor, t: Tensor) -> Tensor:
        idx = (t[:, None].float() - self.c_noise[None]).abs().argmin(1)
        return self.a[idx, None] * inp + self.b[idx, None]


def _student(net: nn.Module, teacher: Teacher, **kw) -> ConsistencyModel:
    return ConsistencyModel(net, teacher, (1,), **kw)


# --------------------------------------------------------------------------- parametrisation
@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_boundary_condition_holds_exactly_for_any_net(scale):
    torch.manual_seed(0)
    net = MLP(2, 2, hidden=32, depth=2)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale)
    model = ConsistencyModel(net, gaussian_teacher(dim=2), (2,))
    x = torch.randn(64, 2) * 3
    out = model(x, torch.tensor(model.sigma_min))
    assert torch.equal(out, x)
    # above sigma_min the network matters (the test net depends on its input)
    assert not torch.allclose(model(x, torch.tensor(model.sigma_min * 2)), x)
    smin = torch.tensor([model.sigma_min], dtype=torch.float64)
    c_skip, c_out, _, _ = consistency_coefs(smin, model.sigma_min, 0.5)
    assert float(c_skip) == 1.0 and float(c_out) == 0.0


def test_training_grid_spans_the_teachers_sigma_range():
    model = _student(TableNet(torch.zeros(3)), gaussian_teacher(), num_scales=6)
    p = model.process
    lo = math.exp(-float(p.log_snr(torch.tensor(p.eps, dtype=torch.float64))))
    assert model.sigmas.shape == (6,) and float(model.sigmas[0]) == pytest.approx(lo)
    assert float(model.sigmas[-1]) == pytest.approx(math.exp(-float(p.log_snr(p.T))))
    assert bool((model.sigmas.diff() > 0).all())


# --------------------------------------------------------------------------- the teacher's ODE
@pytest.mark.parametrize("process", ["vp", "ve", "subvp"])
def test_teacher_denoiser_and_heun_step_match_gaussian_closed_forms(process):
    teacher = gaussian_teacher(process)
    x = torch.linspace(-2, 2, 9, dtype=torch.float64)[:, None]
    sig = torch.full((9,), 0.8, dtype=torch.float64)
    d_exact = MU + STD**2 / (STD**2 + 0.8**2) * (x - MU)
    assert torch.allclose(teacher.denoise(x, sig), d_exact, atol=1e-8)
    lo = torch.full((9,), 0.6, dtype=torch.float64)
    exact = MU + (x - MU) * math.sqrt(STD**2 + 0.36) / math.sqrt(STD**2 + 0.64)
    # the linear ODE dx/dsigma = k(sigma) (x - MU), k = sigma / (STD^2 + sigma^2), stepped by hand
    h, k0, k1 = -0.2, 0.8 / (STD**2 + 0.64), 0.6 / (STD**2 + 0.36)
    euler_x = x + h * k0 * (x - MU)
    heun_x = x + 0.5 * h * (k0 * (x - MU) + k1 * (euler_x - MU))
    heun = teacher.step(x, sig, lo, "heun")
    euler = teacher.step(x, sig, lo, "euler")
    assert torch.allclose(euler, euler_x, atol=1e-8) and torch.allclose(heun, heun_x, atol=1e-8)
    assert (heun - exact).abs().max() < 0.25 * (euler - exact).abs().max()


# --------------------------------------------------------------------------- distillation
def _map_error(model: ConsistencyModel, gen: torch.Generator) -> float:
    """Mean squared distance of f(x, sigma_n) to the exact map, x ~ p_sigma_n, n = 2..N."""
    errs = []
    with torch.no_grad():
        for s in model.sigmas[1:]:
            x = MU + torch.randn(512, 1, generator=gen) * math.sqrt(STD**2 + float(s) ** 2)
            sig = s.expand(512)
            errs.append(float((model(x, sig) - exact_map(x, sig, model.sigma_min)).pow(2).mean()))
    return sum(errs) / len(errs)


def test_distillation_moves_a_linear_student_toward_the_exact_map():
    teacher = gaussian_teacher()
    probe = _student(TableNet(torch.zeros(1)), teacher, num_scales=10)
    c_noise = consistency_coefs(probe.sigmas, probe.sigma_min, 0.5)[3]
    model = _student(TableNet(c_noise), teacher, num_scales=10, ema_target=0.5)
    opt = torch.optim.SGD(model.net.parameters(), lr=0.5)
    gen = torch.Generator().manual_seed(0)
    before = _map_error(model, torch.Generator().manual_seed(1))
    for step in range(400):
        x0 = MU + STD * torch.randn(256, 1, generator=gen)
        opt.zero_grad()
        model.loss(x0, gen).mean().backward()
        opt.step()
        model.after_optimizer_step(step)
    after = _map_error(model, torch.Generator().manual_seed(1))
    assert after < 0.1 * before, (before, after)


def test_the_loss_targets_the_ema_network_and_the_hook_moves_it():
    torch.manual_seed(0)
    model = ConsistencyModel(MLP(2, 2, hidden=16, depth=2), gaussian_teacher("ve", 2), (2,),
                             ema_target=0.9)
    with torch.no_grad():
        for p in model.target.parameters():
            p.add_(0.3)
    x0 = torch.randn(32, 2)
    got = model.loss(x0, torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)  # replay the loss's draws
    n = torch.randint(0, model.num_scales - 1, (32,), generator=gen)
    s_lo, s_hi = model.sigmas[n], model.sigmas[n + 1]
    x_hi = x0 + s_hi[:, None].float() * torch.randn(32, 2, generator=gen)
    x_lo = model.teacher.step(x_hi, s_hi, s_lo, "heun")
    want = (model(x_hi, s_hi) - model.consistency(x_lo, s_lo, target=True)).pow(2).mean(1)
    assert torch.allclose(got, want, atol=1e-6)
    wrong = (model(x_hi, s_hi) - model(x_lo, s_lo)).pow(2).mean(1)
    assert not torch.allclose(got, wrong, atol=1e-4)
    old = [p.clone() for p in model.target.parameters()]
    model.after_optimizer_step(0)
    for q, o, p in zip(model.target.parameters(), old, model.net.parameters(), strict=True):
        assert torch.allclose(q, 0.9 * o + 0.1 * p, atol=1e-6)
    assert all(not p.requires_grad for p in model.target.parameters())
    counts = model.parameter_counts()
    assert counts["total"] == counts["net"] == counts["target"] > 0
    assert not any(k.startswith("teacher") for k in model.state_dict())


def test_inverse_gap_weighting_divides_by_the_grid_gap():
    torch.manual_seed(0)
    kw = {"num_scales": 6}
    plain = ConsistencyModel(MLP(2, 2, hidden=16, depth=2), gaussian_teacher("ve", 2), (2,), **kw)
    weighted = ConsistencyModel(plain.net, plain.teacher, (2,), weighting="inverse_gap", **kw)
    x0 = torch.randn(16, 2)
    a = plain.loss(x0, torch.Generator().manual_seed(3))
    b = weighted.loss(x0, torch.Generator().manual_seed(3))
    n = torch.randint(0, 5, (16,), generator=torch.Generator().manual_seed(3))
    gap = (plain.sigmas[n + 1] - plain.sigmas[n]).float()
    assert torch.allclose(b, a / gap, rtol=1e-5)


def test_trainer_calls_the_after_step_hook_once_per_step(tmp_path):
    torch.manual_seed(0)
    model = ConsistencyModel(MLP(2, 2, hidden=16, depth=2), gaussian_teacher("ve", 2), (2,),
                             ema_target=0.0)  # mu = 0: the target is the online net
    data = torch.randn(256, 2)
    Trainer(model, data, {"steps": 3, "batch_size": 32, "log_every": 1, "ckpt_every": 10**6,
                          "warmup_steps": 0}, tmp_path, progress=False).fit()
    for q, p in zip(model.target.parameters(), model.net.parameters(), strict=True):
        assert torch.equal(q, p)


# --------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("nfe", [1, 2, 4])
def test_sampling_counts_network_calls_exactly(nfe):
    net = CountingNet()
    model = ConsistencyModel(net, gaussian_teacher("ve", 2), (2,))
    res = model.sample(10, "consistency", nfe, generator=torch.Generator().manual_seed(0))
    assert res.nfe == nfe == net.calls
    assert res.samples.shape == (10, 2) and len(res.info["taus"]) == nfe
    assert res.info["taus"][0] == pytest.approx(model.sigma_max)


def test_sampling_options_and_errors():
    model = ConsistencyModel(CountingNet(), gaussian_teacher(dim=2), (2,))
    grid = [float(s) for s in model.sigmas]
    for nfe in (2, 4, 8, 17):
        taus = default_taus(nfe, model.sigmas, 0.5)
        assert len(taus) == nfe and taus[0] == model.sigma_max and set(taus) <= set(grid)
        assert all(a > b > model.sigma_min for a, b in zip(taus, taus[1:], strict=False))
    assert default_taus(2, model.sigmas, 0.5)[1] == min(grid, key=lambda s: abs(math.log(s / 0.5)))
    res = model.sample(5, "consistency", 2, taus=[model.sigma_max, 1.0], trajectory=True)
    assert res.info["taus"] == [model.sigma_max, 1.0] and len(res.trajectory) == 2
    with pytest.raises(ValueError, match="sampler: "):
        model.check_sampler("dpm2m", 2)
    with pytest.raises(ValueError, match="nfe: "):
        model.check_sampler("consistency", 0)
    with pytest.raises(ValueError, match="options: taus"):
        model.check_sampler("consistency", 2, {"taus": [1.0, 2.0]})
    with pytest.raises(ValueError, match="options: unknown"):
        model.check_sampler("consistency", 2, {"eta": 1})
    # sigma_max printed to four digits rounds above it: read as sigma_max, further is an error
    printed = float(f"{model.sigma_max:.4g}")
    assert printed > model.sigma_max
    assert model.taus(2, [printed, 1.0]) == [model.sigma_max, 1.0]
    with pytest.raises(ValueError, match="options: taus must decrease strictly within"):
        model.taus(2, [model.sigma_max * 1.01, 1.0])


# --------------------------------------------------------------------------- configs
def _raw(**model) -> dict:
    return {"process": {"name": "vp"},
            "model": {"method": "consistency", "teacher": "oracle:grid25",
                      "net": {"name": "mlp", "hidden": 16, "depth": 2}, **model},
            "data": {"name": "toy", "toy": "grid25", "n": 512},
            "sample": {"sampler": "consistency", "nfe": 2}}


@pytest.mark.parametrize("model, sample, needle", [
    ({"teacher": None}, None, "model.teacher"),
    ({"teacher": "oracle:nope"}, None, "model.teacher: expected oracle:NAME"),
    ({"num_scales": 1}, None, "model.num_scales: expected an integer >= 2"),
    ({"ema_target": 1.0}, None, "model.ema_target"),
    ({"distance": "lpips"}, None, "model.distance"),
    ({"solver": "rk4"}, None, "model.solver"),
    ({"weighting": "snr"}, None, "model.weighting"),
    ({"sigma_data": -1}, None, "model.sigma_data"),
    ({"net": {"name": "unet"}}, None, "model.net.name"),
    ({}, {"sampler": "dpm2m", "nfe": 2}, "sample.sampler: a consistency model"),
    ({}, {"sampler": "consistency", "nfe": 2, "options": {"taus": [1.0]}}, "sample.options.taus"),
    ({}, {"sampler": "consistency", "nfe": 1, "options": {"eta": 1}}, "sample.options"),
])
def test_config_errors_name_the_field(model, sample, needle):
    raw = _raw(**model)
    if model.get("teacher", "x") is None:
        del raw["model"]["teacher"]
    if sample is not None:
        raw["sample"] = sample
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        validate(raw)


def test_config_rejects_cld_and_a_missing_or_mismatched_teacher_run(tmp_path):
    from trilemma.setup import Config, build_model

    with pytest.raises(ConfigError, match="process.name: consistency distillation needs"):
        validate({**_raw(), "process": {"name": "cld"}})
    cfg = Config.from_dict(_raw(teacher=str(tmp_path / "missing")))
    deferred = build_model(cfg, (2,))  # a run teacher is loaded for training only
    assert not deferred.teacher.loaded
    with pytest.raises(ConfigError, match="model.teacher: the teacher run .* was not found"):
        deferred.prepare_training(run_dir=tmp_path, config={})
    ok = build_model(Config.from_dict(_raw()), (2,))
    assert ok.teacher.ref == "oracle:grid25" and ok.samplers() == ["consistency"]
    with pytest.raises(ConfigError, match="model.teacher: 'oracle:grid25' is a 2-D mixture"):
        build_model(Config.from_dict(_raw()), (3,))


# --------------------------------------------------------------------------- CLI
def test_cli_trains_and_samples_a_toy_student_without_its_teacher_run(tmp_path, capsys):
    from trilemma.cli import main

    teacher = tmp_path / "teacher"
    small = ["--set", "train.batch_size=64", "--set", "train.log_every=2", "--set",
             "train.ckpt_every=4", "--set", "train.sample_every=0", "--set", "data.n=512",
             "--set", "model.net.hidden=16", "--set", "train.warmup_steps=0"]
    argv = ["train", os.path.join(ROOT, "configs", "toy_vp.yaml"), "--out", str(teacher),
            "--quiet", "--device", "cpu", "--set", "train.steps=2", *small]
    assert main(argv) == 0
    student = tmp_path / "student"
    argv = ["train", os.path.join(ROOT, "configs", "toy_cd_vp.yaml"), "--out", str(student),
            "--quiet", "--device", "cpu", "--set", "train.steps=4", "--set",
            f"model.teacher={teacher}", "--set", "model.num_scales=4", *small]
    assert main(argv) == 0
    for nfe in (1, 2, 4):
        out = tmp_path / f"s{nfe}.npz"
        assert main(["sample", str(student), "--nfe", str(nfe), "--n", "20", "--out",
                     str(out)]) == 0
        z = np.load(out)
        assert z["samples"].shape == (20, 2) and int(z["nfe"]) == nfe
    capsys.readouterr()
    assert main(["sample", str(student), "--sampler", "em", "--out", str(out)]) == 2
    assert "--sampler: a consistency model" in capsys.readouterr().err
    for path in teacher.rglob("*.safetensors"):
        path.unlink()
    # the student samples without its teacher; training on needs it, and says so
    assert main(["sample", str(student), "--nfe", "2", "--n", "8", "--out", str(out)]) == 0
    capsys.readouterr()
    argv[argv.index("train.steps=4")] = "train.steps=6"
    assert main([*argv, "--resume"]) == 2
    assert "model.teacher: cannot load the teacher run" in capsys.readouterr().err
