"""Progressive distillation: the two-step target against Gaussian closed forms, zero loss for a
student that is the exact two-step map, the round schedule (halving, stopping, exact resume),
exact NFE on the shared DDIM grid, config errors, and train + sample without the teacher run."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from torch import Tensor, nn

from counting_net import CountingNet
from trilemma.config import ConfigError, validate
from trilemma.methods.consistency_teacher import Teacher
from trilemma.methods.progressive import ProgressiveModel, two_step_target
from trilemma.nets import MLP
from trilemma.oracle import GaussianMixture
from trilemma.processes import get_process
from trilemma.samplers.ddim import ddim_step
from trilemma.samplers.grids import log_snr_grid
from trilemma.train import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MU, STD = 0.3, 0.5  # the single-Gaussian data of the closed-form tests


def gaussian(process: str, dim: int = 1) -> tuple[GaussianMixture, Teacher]:
    """Data N(MU, STD^2 I) and its exact-score teacher under ``process``."""
    g = GaussianMixture(torch.full((1, dim), MU, dtype=torch.float64), None, STD)
    p = get_process(process)
    return g, Teacher(g.score_fn(p), p, "gaussian")


def tweedie(p, z: Tensor, t: Tensor) -> Tensor:
    """Closed-form E[x0 | z_t] of Gaussian data: MU + a STD^2 (z - a MU) / (a^2 STD^2 + s^2)."""
    a, s = p.alpha(t).reshape(-1, 1), p.sigma(t).reshape(-1, 1)
    return MU + a * STD**2 * (z - a * MU) / (a**2 * STD**2 + s**2)


def gain(p, t: Tensor, s: Tensor) -> Tensor:
    """The exact-score DDIM step's factor on z - alpha MU for Gaussian data:
    (a_s a_t STD^2 + s_s s_t) / (a_t^2 STD^2 + s_t^2)."""
    a_t, s_t, a_s, s_s = p.alpha(t), p.sigma(t), p.alpha(s), p.sigma(s)
    return ((a_s * a_t * STD**2 + s_s * s_t) / (a_t**2 * STD**2 + s_t**2)).reshape(-1, 1)


def closed_target(p, z: Tensor, t: Tensor, t_mid: Tensor, t_end: Tensor) -> Tensor:
    """x~ in closed form: z'' = a'' MU + g(t', t'') g(t, t') (z - a_t MU), then the x0 of one
    DDIM step t -> t'' landing there."""
    a_t, a_e = p.alpha(t).reshape(-1, 1), p.alpha(t_end).reshape(-1, 1)
    z_end = a_e * MU + gain(p, t_mid, t_end) * gain(p, t, t_mid) * (z - a_t * MU)
    r = (p.sigma(t_end) / p.sigma(t)).reshape(-1, 1)
    return (z_end - r * z) / (a_e - r * a_t)


class ClosedFormNet(nn.Module):
    """An x0-predicting network that outputs the closed-form two-step target of the round with
    ``n`` student steps (it recovers ``z`` from its scaled input and ``t``)."""

    def __init__(self, process, n: int) -> None:
        super().__init__()
        self.p, self.n = process, n
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, inp: Tensor, t: Tensor) -> Tensor:
        p, t = self.p, t.to(torch.float64)
        z = inp * torch.sqrt(p.alpha(t) ** 2 * 0.25 + p.sigma(t) ** 2).reshape(-1, 1)
        coarse, fine = log_snr_grid(p, self.n), log_snr_grid(p, 2 * self.n)
        i = (t[:, None] - coarse[None, :-1]).abs().argmin(1)
        return closed_target(p, z, t, fine[2 * i + 1], coarse[i + 1]) + 0 * self.dummy


# --------------------------------------------------------------------------- the target
@pytest.mark.parametrize("process", ["vp", "subvp", "ve"])
def test_one_student_step_with_the_target_reproduces_two_teacher_ddim_steps(process):
    g, teacher = gaussian(process)
    p = teacher.process
    grid = log_snr_grid(p, 8)
    z = torch.linspace(-3, 3, 7, dtype=torch.float64).reshape(-1, 1) * float(p.sigma(grid[2]))
    t, t_mid, t_end = (torch.full((7,), float(grid[k]), dtype=torch.float64) for k in (2, 3, 4))

    def x0(u: Tensor, tt: Tensor) -> Tensor:
        return p.score_to_x0(u, tt, teacher.score_fn(u, tt))

    assert torch.allclose(x0(z, t), tweedie(p, z, t), atol=1e-12)  # the oracle is exact here
    target = two_step_target(p, z, t, t_mid, t_end, x0)
    assert torch.allclose(target, closed_target(p, z, t, t_mid, t_end), atol=1e-10)
    # the sampler's own DDIM: two teacher steps, then one step whose x0_hat is the target
    u1 = ddim_step(p, z, teacher.score_fn(z, t), float(t[0]), float(t_mid[0]), 0.0, None)
    u2 = ddim_step(p, u1, teacher.score_fn(u1, t_mid), float(t_mid[0]), float(t_end[0]), 0.0,
                   None)
    one = ddim_step(p, z, p.x0_to_score(z, t, target), float(t[0]), float(t_end[0]), 0.0, None)
    assert torch.allclose(one, u2, atol=1e-10)
    # and the target is not Tweedie's x0 (one DDIM step of the exact score misses z'')
    assert (target - tweedie(p, z, t)).abs().max() > 1e-4


@pytest.mark.parametrize("n", [1, 4])
def test_a_student_that_is_the_exact_two_step_map_has_zero_loss(n):
    g, teacher = gaussian("vp")
    p = teacher.process
    model = ProgressiveModel(p, ClosedFormNet(p, n), teacher, (1,), start_steps=2 * n,
                             final_steps=n, prediction="x0")
    x0, _ = g.sample(256, torch.Generator().manual_seed(0), dtype=torch.float64)
    loss = model.loss(x0, torch.Generator().manual_seed(1))
    assert loss.shape == (256,) and loss.max() < 1e-12
    # the exact score itself (the teacher) is not the two-step map: positive loss
    exact = ProgressiveModel(p, MLP(1, 1, hidden=8, depth=1).double(), teacher, (1,),
                             start_steps=2 * n, final_steps=n, prediction="x0")
    exact.student_x0 = lambda z, t: tweedie(p, z, t)
    assert exact.loss(x0, torch.Generator().manual_seed(1)).mean() > 1e-6


def test_truncated_snr_weighting_multiplies_the_x0_error():
    g, teacher = gaussian("vp")
    p = teacher.process
    kw = {"start_steps": 4, "final_steps": 2, "prediction": "x0"}
    plain = ProgressiveModel(p, MLP(1, 1, hidden=8, depth=1).double(), teacher, (1,), **kw)
    other = ProgressiveModel(p, plain.model.net, teacher, (1,), weighting="snr_plus_one", **kw)
    x0, _ = g.sample(64, torch.Generator().manual_seed(0), dtype=torch.float64)
    a, b = (m.loss(x0, torch.Generator().manual_seed(3)) for m in (plain, other))
    idx = torch.randint(0, 2, (64,), generator=torch.Generator().manual_seed(3))
    snr = torch.exp(2 * p.log_snr(log_snr_grid(p, 2)[idx]))
    assert torch.allclose(a / snr.clamp_min(1.0), b / (snr + 1.0), rtol=1e-9)


# --------------------------------------------------------------------------- rounds
def test_rounds_halve_n_copy_the_student_into_the_teacher_and_stop_at_final():
    _, teacher = gaussian("ve", 2)
    model = ProgressiveModel(teacher.process, MLP(2, 2, hidden=8, depth=1), teacher, (2,),
                             start_steps=16, final_steps=2, steps_per_round=3)
    assert model.num_rounds == 3 and model.student_steps == 8
    seen = []
    for step in range(14):
        with torch.no_grad():
            next(model.model.parameters()).add_(1.0)  # a stand-in for an optimizer step
        model.after_optimizer_step(step)
        seen.append(model.student_steps)
        if (step + 1) % 3 == 0 and step < 6:  # the two round changes
            for q, w in zip(model.teacher_model.parameters(), model.model.parameters(),
                            strict=True):
                assert torch.equal(q, w)
    assert seen == [8, 8, 4, 4, 4, 2, 2, 2, 2, 2, 2, 2, 2, 2]
    assert next(model.teacher_model.parameters())[0, 0] != next(model.model.parameters())[0, 0]
    late = ProgressiveModel(teacher.process, MLP(2, 2, hidden=8, depth=1), teacher, (2,),
                            start_steps=16, final_steps=2, steps_per_round=3)
    late.after_optimizer_step(3)  # step 2 (the round's last) was skipped as non-finite
    assert late.student_steps == 4


def _toy(seed: int = 0) -> ProgressiveModel:
    torch.manual_seed(seed)
    _, teacher = gaussian("vp", 2)
    return ProgressiveModel(teacher.process, MLP(2, 2, hidden=16, depth=2), teacher, (2,),
                            start_steps=8, final_steps=2, steps_per_round=2)


def test_round_state_survives_a_checkpoint_resume(tmp_path):
    data = torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
    cfg = {"steps": 6, "batch_size": 32, "log_every": 1, "ckpt_every": 3, "warmup_steps": 0,
           "ema_decay": 0.9}
    straight = _toy()
    Trainer(straight, data, cfg, tmp_path / "a", progress=False).fit()
    first = _toy()
    Trainer(first, data, cfg, tmp_path / "b", progress=False).fit(until=3)
    assert first.current_round == 1  # the first round (2 steps) ended at step 2
    resumed = _toy(seed=5)  # other initial weights: everything must come from the checkpoint
    Trainer(resumed, data, cfg, tmp_path / "b", progress=False).fit(resume=True)
    assert straight.current_round == resumed.current_round == 1 and resumed.student_steps == 2
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name


def test_a_teacher_network_given_by_hand_is_copied_into_student_and_teacher_copy(tmp_path):
    from trilemma.methods import ScoreModel
    from trilemma.methods.consistency_teacher import teacher_from_model

    p = get_process("vp")
    torch.manual_seed(0)
    trained = ScoreModel(p, MLP(2, 2, hidden=8, depth=1), (2,), prediction="v")
    model = ProgressiveModel(p, MLP(2, 2, hidden=8, depth=1), teacher_from_model(trained, "t"),
                             (2,), start_steps=4, final_steps=2)
    assert not model.oracle_first
    model.prepare_training(run_dir=tmp_path, config={})
    for part in (model.model, model.teacher_model):
        for (k, v), w in zip(part.state_dict().items(), trained.model.state_dict().values(),
                             strict=True):
            assert torch.equal(v, w), k


# --------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("nfe", [1, 2, 4])
def test_ddim_counts_network_calls_exactly_on_the_training_grid(nfe):
    _, teacher = gaussian("vp", 2)
    net = CountingNet()
    model = ProgressiveModel(teacher.process, net, teacher, (2,), start_steps=2 * nfe,
                             final_steps=nfe)
    res = model.sample(10, generator=torch.Generator().manual_seed(0), trajectory=True)
    assert res.nfe == nfe == net.calls and res.samples.shape == (10, 2)
    assert torch.equal(res.times, log_snr_grid(teacher.process, nfe))
    t, t_mid, t_end = model.round_times(torch.arange(nfe))
    assert torch.equal(torch.cat([t, t_end[-1:]]), res.times)
    assert set(t_mid.tolist()) <= set(log_snr_grid(teacher.process, 2 * nfe).tolist())
    net.calls = 0
    res = model.sample(10, "dpm2m", 5, generator=torch.Generator().manual_seed(0))
    assert res.nfe == 5 == net.calls  # a score model's other samplers stay available
    with pytest.raises(ValueError, match="nfe: "):
        model.check_sampler("ddim", 0)


# --------------------------------------------------------------------------- configs
def _raw(**model) -> dict:
    return {"process": {"name": "vp"},
            "model": {"method": "progressive", "teacher": "oracle:grid25",
                      "net": {"name": "mlp", "hidden": 16, "depth": 2}, **model},
            "data": {"name": "toy", "toy": "grid25", "n": 512}}


def test_config_defaults_sample_ddim_at_final_steps():
    cfg = validate(_raw(final_steps=2))
    assert cfg["sample"]["sampler"] == "ddim" and cfg["sample"]["nfe"] == 2
    assert cfg["model"]["start_steps"] == 64 and cfg["model"]["prediction"] == "v"
    with pytest.raises(ConfigError, match=r"sample\.nfe: sampler 'em' needs at least"):
        validate({**_raw(), "sample": {"sampler": "em", "nfe": 1}})


@pytest.mark.parametrize("model, needle", [
    ({"teacher": None}, "model.teacher"),
    ({"teacher": "oracle:nope"}, "model.teacher: expected oracle:NAME"),
    ({"start_steps": 12}, "model.start_steps: expected a power of two"),
    ({"final_steps": 3}, "model.final_steps: expected a power of two"),
    ({"start_steps": 8, "final_steps": 16}, "model.final_steps: must be below"),
    ({"start_steps": 8, "final_steps": 8}, "model.final_steps: must be below"),
    ({"steps_per_round": 0}, "model.steps_per_round"),
    ({"weighting": "snr"}, "model.weighting"),
    ({"prediction": "mixed"}, "model.prediction"),
])
def test_config_errors_name_the_field(model, needle):
    raw = _raw(**model)
    if model.get("teacher", "x") is None:
        del raw["model"]["teacher"]
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        validate(raw)


def test_config_rejects_cld_a_missing_teacher_run_and_too_few_train_steps(tmp_path):
    from trilemma.setup import Config, build_model

    with pytest.raises(ConfigError, match="process.name: progressive distillation needs"):
        validate({**_raw(), "process": {"name": "cld"}})
    deferred = build_model(Config.from_dict(_raw(teacher=str(tmp_path / "missing"))), (2,))
    with pytest.raises(ConfigError, match="model.teacher: the teacher run .* was not found"):
        deferred.prepare_training(run_dir=tmp_path, config={})
    ok = build_model(Config.from_dict(_raw(start_steps=8, final_steps=2)), (2,))
    with pytest.raises(ValueError, match=r"train\.steps: 2 rounds of 500 .* >= 1000"):
        ok.prepare_training(run_dir=tmp_path, config={"train": {"steps": 999}})


# --------------------------------------------------------------------------- CLI
def test_cli_distils_a_run_and_samples_without_it(tmp_path, capsys):
    import trilemma
    from trilemma.cli import main

    teacher = tmp_path / "teacher"
    small = ["--quiet", "--device", "cpu", "--set", "train.batch_size=64", "--set",
             "train.log_every=2", "--set", "train.ckpt_every=4", "--set", "train.sample_every=0",
             "--set", "data.n=512", "--set", "model.net.hidden=16", "--set",
             "train.warmup_steps=0"]
    assert main(["train", os.path.join(ROOT, "configs", "toy_vp.yaml"), "--out", str(teacher),
                 "--set", "train.steps=2", *small]) == 0
    student = tmp_path / "student"
    argv = ["train", os.path.join(ROOT, "configs", "toy_pd_vp.yaml"), "--out", str(student),
            "--set", "train.steps=4", "--set", f"model.teacher={teacher}", "--set",
            "model.start_steps=8", "--set", "model.final_steps=2", "--set",
            "model.steps_per_round=2", *small]
    bad = argv + ["--set", "model.prediction=v"]
    assert main(bad) == 2 and "model.prediction: the student starts from the teacher's" \
        in capsys.readouterr().err
    shutil.rmtree(student, ignore_errors=True)
    from trilemma.setup import Config, build_model

    cfg = Config.from_dict({**_raw(teacher=str(teacher), start_steps=8, final_steps=2,
                                   prediction="eps"),
                            "model": {**_raw()["model"], "teacher": str(teacher),
                                      "start_steps": 8, "final_steps": 2, "prediction": "eps",
                                      "net": {"name": "mlp", "hidden": 16, "depth": 3,
                                              "time_embed": "fourier"}}})
    fresh = build_model(cfg, (2,))
    fresh.prepare_training(run_dir=tmp_path, config={})  # the student starts as the teacher
    start = trilemma.load(teacher).model.state_dict()
    for part in (fresh.model, fresh.teacher_model):
        assert all(torch.equal(start[k], v) for k, v in part.state_dict().items())
    assert main(argv) == 0
    shutil.rmtree(teacher)
    out = tmp_path / "s.npz"
    assert main(["sample", str(student), "--n", "16", "--out", str(out)]) == 0 and out.exists()
    model = trilemma.load(student)
    assert model.student_steps == 2
    res = model.sample(8, generator=torch.Generator().manual_seed(0))
    assert res.nfe == 2 and torch.isfinite(res.samples).all()
