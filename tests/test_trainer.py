"""Trainer: config checks, LR schedule, EMA, accumulation, non-finite steps, logs, exact resume."""

from __future__ import annotations

import csv
import itertools
import math
import warnings
from dataclasses import fields

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from trilemma.train import (
    EMA,
    TrainConfig,
    Trainer,
    TrainingDivergedError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    lr_factor,
)
from trilemma.train.batches import StepBatches


class LinReg(nn.Module):
    """Squared error of a linear model; batches are ``(x, y)``; no noise."""

    def __init__(self, d: int = 3, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.lin = nn.Linear(d, 1, dtype=dtype)

    def loss(self, batch, generator=None):
        x, y = batch
        return (self.lin(x).squeeze(-1) - y) ** 2


class NoisyMLP(nn.Module):
    """Denoising regression with dropout: uses the generator (noise) and the global RNG."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Dropout(0.2), nn.Linear(16, 2))

    def loss(self, x, generator=None):
        noise = torch.randn(x.shape, generator=generator)
        t = torch.rand(x.shape[0], 1, generator=generator)
        pred = self.net(torch.cat([x + t * noise, t], dim=1))
        return ((pred - noise) ** 2).sum(dim=1)


class Flaky(LinReg):
    """LinReg whose loss is NaN (or whose gradient is NaN) on chosen calls."""

    def __init__(self, nan_loss_calls=(), nan_grad_calls=(), nan_from=None) -> None:
        super().__init__()
        self.calls = 0
        self.nan_loss_calls, self.nan_grad_calls, self.nan_from = (
            set(nan_loss_calls),
            set(nan_grad_calls),
            nan_from,
        )

    def loss(self, batch, generator=None):
        self.calls += 1
        per = super().loss(batch)
        if self.calls in self.nan_loss_calls or (
            self.nan_from is not None and self.calls >= self.nan_from
        ):
            return per * float("nan")
        if self.calls in self.nan_grad_calls:
            w = self.lin.weight.sum()
            return per + torch.sqrt(w - w)  # value 0, gradient inf - inf = nan
        return per


def regression_data(n: int = 64, d: int = 3, dtype=torch.float32, seed: int = 0):
    """Exactly linear targets: the least-squares optimum is known."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    w = torch.tensor([1.5, -2.0, 0.5], dtype=dtype)[:d]
    return x, x @ w + 0.3, w


def cfg(**kw) -> TrainConfig:
    base = dict(
        steps=20, batch_size=16, lr=1e-2, log_every=5, ckpt_every=0, keep_last=2, ema_decay=0.9
    )
    base.update(kw)
    return TrainConfig(**base)


def state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("steps", 0),
        ("steps", 2.5),
        ("batch_size", 0),
        ("lr", 0.0),
        ("lr", float("nan")),
        ("weight_decay", -1.0),
        ("betas", (0.9, 1.0)),
        ("betas", (0.9,)),
        ("warmup_steps", -1),
        ("warmup_steps", 20),
        ("schedule", "linear"),
        ("min_lr", 1.0),
        ("grad_clip", 0.0),
        ("ema_decay", 1.0),
        ("ema_warmup", 1),
        ("grad_accum", 0),
        ("bf16", "yes"),
        ("precision", "fp16"),
        ("precision", True),
        ("log_every", 0),
        ("ckpt_every", -1),
        ("keep_last", -1),
        ("sample_every", -2),
        ("max_bad_steps", 0),
        ("seed", -1),
        ("num_workers", True),
    ],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"TrainConfig.{field}"):
        cfg(**{field: value})


def test_config_dict_round_trip_and_unknown_key():
    c = cfg(betas=[0.8, 0.95])
    assert c.betas == (0.8, 0.95)
    assert TrainConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown TrainConfig field.*'stepz'"):
        TrainConfig.from_dict({"stepz": 3})


def test_config_problems_for_the_config_layer():
    """TrainConfig.CHECKS / problems(): the one source of the train.* ranges and types."""
    assert {f.name for f in fields(TrainConfig)} == set(TrainConfig.CHECKS)
    assert TrainConfig.CHECKS["batch_size"](0) == "a positive integer"
    assert TrainConfig.CHECKS["ema_decay"](1.5) == "a number in [0, 1)"
    assert TrainConfig.CHECKS["grad_clip"](None) is None
    assert TrainConfig.CHECKS["betas"]([0.9, 0.99]) is None  # YAML gives lists
    assert TrainConfig.CHECKS["group_lr"]({"g": "1e-4"}) is None  # YAML 1.1 strings
    assert TrainConfig.CHECKS["seed"](True) == "an integer >= 0"
    assert TrainConfig.problems({}) == []
    assert TrainConfig.problems({"steps": 0, "lr": -1, "betas": (0.9,), "stepz": 1}) == [
        "stepz: unknown field",
        "steps: expected a positive integer, got 0",
        "lr: expected a positive number, got -1",
        "betas: expected two numbers in [0, 1), got (0.9,)",
    ]
    # couplings between fields, checked once both fields are valid
    assert TrainConfig.problems({"steps": 10, "warmup_steps": 10, "lr": 1e-3, "min_lr": 1e-2}) == [
        "warmup_steps: expected < steps = 10, got 10",
        "min_lr: expected <= lr = 0.001, got 0.01",
    ]
    assert TrainConfig.problems({"steps": 0, "warmup_steps": 5}) == [
        "steps: expected a positive integer, got 0"
    ]
    with pytest.raises(ValueError, match=r"integer, got 0; TrainConfig\.lr must be"):
        TrainConfig(steps=0, lr=0.0)


def test_lr_schedule_values_and_scheduler(tmp_path):
    c = cfg(steps=12, warmup_steps=3, schedule="cosine", lr=0.1, min_lr=0.01)
    f = [lr_factor(s, c) for s in range(12)]
    assert f[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert f[3] == pytest.approx(1.0) and f[-1] == pytest.approx(0.1)
    # halfway through the decay the cosine is at the mean of the two ends
    assert f[3 + 4] == pytest.approx(0.1 + 0.9 * 0.5)
    assert all(a >= b for a, b in zip(f[3:-1], f[4:], strict=True))
    const = cfg(steps=11, warmup_steps=2)
    assert [lr_factor(s, const) for s in range(5)] == pytest.approx([0.5, 1, 1, 1, 1])
    # the trainer's optimizer follows it: lr after k steps is lr * f[k]
    x, y, _ = regression_data()
    tr = Trainer(LinReg(), (x, y), c, tmp_path, progress=False)
    tr.fit(until=5)
    assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * f[5])


# --- EMA ---------------------------------------------------------------------------------------


def test_ema_matches_closed_form_and_swaps():
    torch.manual_seed(0)
    m = nn.Linear(2, 2)
    m.register_buffer("count", torch.zeros(()))
    ema = EMA(m, decay=0.95, warmup=True)
    expect = m.weight.detach().clone()
    for n in range(30):
        with torch.no_grad():
            m.weight.add_(torch.randn(2, 2))
            m.count += 1
        d = min(0.95, (1 + n) / (10 + n))
        assert ema.current_decay() == pytest.approx(d)
        ema.update(m)
        expect = d * expect + (1 - d) * m.weight.detach()
    torch.testing.assert_close(ema.shadow["weight"], expect, rtol=1e-6, atol=1e-6)
    assert ema.shadow["count"] == 30  # buffers are copied, not averaged
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with ema.swap_in(m):
        torch.testing.assert_close(m.weight, expect, rtol=1e-6, atol=1e-6)
    assert state_equal(before, m.state_dict())
    fresh = nn.Linear(2, 2)
    fresh.register_buffer("count", torch.zeros(()))
    fresh.load_state_dict(ema.state_dict())  # the shadow is a plain state dict
    ema.copy_to(m)
    assert torch.equal(m.weight, fresh.weight)
    assert EMA(m, 0.5, warmup=False).current_decay() == 0.5
    with pytest.raises(ValueError, match="decay"):
        EMA(m, 1.0)


# --- optimisation ------------------------------------------------------------------------------


def test_fits_least_squares(tmp_path):
    x, y, w = regression_data(n=128)
    c = cfg(steps=300, batch_size=32, lr=0.05, schedule="cosine", warmup_steps=10, ema_decay=0.9)
    tr = Trainer(LinReg(), (x, y), c, tmp_path, progress=False)
    out = tr.fit()
    # the data are exactly linear: the optimum has zero loss and is unique
    torch.testing.assert_close(tr.model.lin.weight.detach().squeeze(0), w, atol=2e-3, rtol=0)
    assert abs(tr.model.lin.bias.item() - 0.3) < 2e-3
    torch.testing.assert_close(tr.ema.shadow["lin.weight"].squeeze(0), w, atol=2e-2, rtol=0)
    assert out["step"] == 300 and out["skipped_steps"] == 0 and out["loss"] < 1e-4
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert list(rows[0]) == ["step", "loss", "lr", "grad_norm", "steps_per_s", "skipped"]
    assert [int(r["step"]) for r in rows] == list(range(5, 301, 5))
    assert float(rows[-1]["loss"]) < 1e-3 * float(rows[0]["loss"])
    assert all(float(r["steps_per_s"]) > 0 for r in rows)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000300"]


def test_grad_accum_equals_large_batch(tmp_path):
    x, y, _ = regression_data(n=64, dtype=torch.float64)
    results = []
    for i, (b, acc) in enumerate([(32, 1), (16, 2), (8, 4)]):
        torch.manual_seed(5)
        tr = Trainer(
            LinReg(dtype=torch.float64),
            (x, y),
            cfg(steps=12, batch_size=b, grad_accum=acc, lr=0.05, grad_clip=0.5),
            tmp_path / str(i),
            progress=False,
        )
        tr.fit()
        results.append(tr.model.state_dict())
    for r in results[1:]:
        for k in r:
            torch.testing.assert_close(r[k], results[0][k], rtol=0, atol=1e-12)


def test_nonfinite_steps_are_skipped(tmp_path):
    x, y, _ = regression_data()
    torch.manual_seed(0)
    ref = Flaky()
    torch.manual_seed(0)
    flaky = Flaky(nan_loss_calls={4}, nan_grad_calls={7, 8})
    c = cfg(steps=10, log_every=1, max_bad_steps=3)
    Trainer(ref, (x, y), c, tmp_path / "ref", progress=False).fit()
    tr = Trainer(flaky, (x, y), c, tmp_path / "flaky", progress=False)
    out = tr.fit()
    assert out["skipped_steps"] == 3
    assert all(torch.isfinite(p).all() for p in flaky.parameters())
    assert all(torch.isfinite(v).all() for v in tr.ema.shadow.values())
    assert tr.ema.num_updates == 7  # the EMA skips the bad steps too
    rows = list(csv.DictReader(open(tmp_path / "flaky" / "log.csv")))
    assert [int(r["skipped"]) for r in rows] == [0, 0, 0, 1, 1, 1, 2, 3, 3, 3]
    assert math.isnan(float(rows[3]["loss"])) and math.isnan(float(rows[7]["grad_norm"]))
    # a skipped step leaves the weights alone, so the run differs from the clean one
    assert not torch.equal(ref.lin.weight, flaky.lin.weight)


def test_stops_after_max_bad_steps_and_keeps_last_good_checkpoint(tmp_path):
    x, y, _ = regression_data()
    model = Flaky(nan_from=6)
    tr = Trainer(
        model, (x, y), cfg(steps=20, ckpt_every=2, max_bad_steps=3), tmp_path, progress=False
    )
    with pytest.raises(TrainingDivergedError, match=r"3 non-finite steps in a row.*steps 6\.\.8"):
        tr.fit()
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt.name == "step_000006"  # step 6 was skipped: its weights are those of step 5
    fresh = LinReg()
    info = load_checkpoint(ckpt, fresh)
    assert info["bad_steps"] == 1
    assert all(torch.isfinite(p).all() for p in fresh.parameters())
    assert torch.equal(fresh.lin.weight, model.lin.weight)


def test_loss_must_be_per_sample(tmp_path):
    class Scalar(LinReg):
        def loss(self, batch, generator=None):
            return super().loss(batch).mean()

    x, y, _ = regression_data()
    with pytest.raises(ValueError, match=r"per-sample losses of shape \(B,\) = \(16,\)"):
        Trainer(Scalar(), (x, y), cfg(), tmp_path, progress=False).fit()
    with pytest.raises(TypeError, match="loss"):
        Trainer(nn.Linear(2, 2), x, cfg(), tmp_path, progress=False)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        Trainer(LinReg(), (x[:8], y[:8]), cfg(), tmp_path, progress=False)


# --- data inputs -------------------------------------------------------------------------------


class RowDataset(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def test_dataset_and_tensor_inputs_see_the_same_batches(tmp_path):
    x, y, _ = regression_data(n=40)
    outs = []
    for i, data in enumerate([(x, y), RowDataset(x, y)]):
        torch.manual_seed(1)
        tr = Trainer(LinReg(), data, cfg(steps=8), tmp_path / str(i), progress=False)
        tr.fit()
        outs.append(tr.model.state_dict())
    assert state_equal(*outs)


def test_dataloader_input_resumes_by_replay(tmp_path):
    x, y, _ = regression_data(n=48)

    def loader():
        return DataLoader(
            RowDataset(x, y),
            batch_size=16,
            shuffle=True,
            generator=torch.Generator().manual_seed(3),
        )

    c = cfg(steps=10, ckpt_every=4)
    torch.manual_seed(2)
    straight = Trainer(LinReg(), loader(), c, tmp_path / "a", progress=False)
    straight.fit()
    torch.manual_seed(2)
    Trainer(LinReg(), loader(), c, tmp_path / "b", progress=False).fit(until=4)
    resumed = Trainer(LinReg(), loader(), c, tmp_path / "b", progress=False)
    resumed.fit(resume=True)
    assert state_equal(straight.model.state_dict(), resumed.model.state_dict())


# --- sampling hook, resume ---------------------------------------------------------------------


def test_sample_fn_sees_ema_weights_and_changes_nothing(tmp_path):
    x = torch.randn(40, 2, generator=torch.Generator().manual_seed(0))
    seen = []

    def sample_fn(model, step, out_dir):
        assert not model.training and not torch.is_grad_enabled()
        assert state_equal(model.state_dict(), trainer.ema.state_dict())
        torch.randn(1000)  # global RNG use inside sampling must not leak into training
        seen.append((step, out_dir))

    c = cfg(steps=12, batch_size=8, sample_every=5)
    torch.manual_seed(0)
    trainer = Trainer(NoisyMLP(), x, c, tmp_path / "a", sample_fn=sample_fn, progress=False)
    trainer.fit()
    assert seen == [(5, tmp_path / "a"), (10, tmp_path / "a")]
    assert trainer.model.training
    torch.manual_seed(0)
    plain = Trainer(NoisyMLP(), x, c, tmp_path / "b", progress=False)
    plain.fit()
    assert state_equal(trainer.model.state_dict(), plain.model.state_dict())
    assert not state_equal(trainer.model.state_dict(), trainer.ema.state_dict())


class Crash(Exception):
    pass


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_is_bit_identical(tmp_path, precision):
    """2N straight steps == N steps, a crash, then a fresh Trainer resuming to 2N (under bf16
    autocast on the CPU too)."""
    x = torch.randn(40, 2, generator=torch.Generator().manual_seed(0))
    c = cfg(
        steps=24,
        batch_size=8,
        grad_accum=2,
        lr=3e-3,
        warmup_steps=4,
        schedule="cosine",
        min_lr=1e-4,
        grad_clip=0.5,
        ema_decay=0.8,
        ckpt_every=6,
        log_every=3,
        sample_every=5,
        keep_last=2,
        seed=11,
        precision=precision,
    )

    def sampler(crash_at=None):
        def fn(model, step, out_dir):
            torch.rand(7)
            if step == crash_at:
                raise Crash

        return fn

    torch.manual_seed(0)
    straight = Trainer(NoisyMLP(), x, c, tmp_path / "a", sample_fn=sampler(), progress=False)
    straight.fit()

    torch.manual_seed(0)
    first = Trainer(NoisyMLP(), x, c, tmp_path / "b", sample_fn=sampler(15), progress=False)
    with pytest.raises(Crash):
        first.fit()
    assert latest_checkpoint(tmp_path / "b").name == "step_000012"
    torch.manual_seed(123)  # the 'new process': other init, other global RNG state
    resumed = Trainer(NoisyMLP(), x, c, tmp_path / "b", sample_fn=sampler(), progress=False)
    out = resumed.fit(resume=True)
    assert out["resumed_from"].endswith("step_000012") and out["step"] == 24

    assert state_equal(straight.model.state_dict(), resumed.model.state_dict())
    assert state_equal(straight.ema.state_dict(), resumed.ema.state_dict())
    assert straight.ema.num_updates == resumed.ema.num_updates == 24
    sa, sb = straight.optimizer.state_dict(), resumed.optimizer.state_dict()
    for i in sa["state"]:
        assert state_equal(sa["state"][i], sb["state"][i])
    assert torch.equal(straight.noise.get_state(), resumed.noise.get_state())
    # the resumed log dropped the crashed run's rows past step 12 and matches the straight one
    la = [r[:4] for r in csv.reader(open(tmp_path / "a" / "log.csv"))]
    lb = [r[:4] for r in csv.reader(open(tmp_path / "b" / "log.csv"))]
    assert la == lb and len(la) == 1 + 8
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["step_000018", "step_000024"]


def test_refuses_to_overwrite_and_resume_without_checkpoint(tmp_path):
    x, y, _ = regression_data()
    Trainer(LinReg(), (x, y), cfg(steps=3), tmp_path / "run", progress=False).fit()
    with pytest.raises(FileExistsError, match="resume=True"):
        Trainer(LinReg(), (x, y), cfg(steps=3), tmp_path / "run", progress=False).fit()
    with pytest.warns(UserWarning, match="no checkpoint"):
        out = Trainer(LinReg(), (x, y), cfg(steps=3), tmp_path / "new", progress=False).fit(
            resume=True
        )
    assert out["step"] == 3
    # resuming a finished run does nothing; resuming with more steps continues
    out = Trainer(LinReg(), (x, y), cfg(steps=3), tmp_path / "run", progress=False).fit(resume=True)
    assert out["step"] == 3
    with pytest.warns(UserWarning, match="changed config.*lr"):
        tr = Trainer(LinReg(), (x, y), cfg(steps=5, lr=0.5), tmp_path / "run", progress=False)
        assert tr.fit(resume=True)["step"] == 5
    with pytest.raises(ValueError, match="until"):
        tr.fit(until=9)


def test_bf16_on_cpu_stays_float32(tmp_path):
    import trilemma.train.trainer as trainer_mod

    trainer_mod._BF16_CPU_WARNED = False
    x, y, _ = regression_data()
    with pytest.warns(UserWarning, match="CUDA only"):
        tr = Trainer(LinReg(), (x, y), cfg(steps=2, bf16=True), tmp_path / "a", progress=False)
        tr.fit()
    assert tr.model.lin.weight.dtype == torch.float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once only
        Trainer(LinReg(), (x, y), cfg(steps=2, bf16=True), tmp_path / "b", progress=False).fit()


class AutocastProbe(NoisyMLP):
    """NoisyMLP that records, at every loss call, whether bf16 CPU autocast is on and the dtype
    its network computes in."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bool, torch.dtype]] = []

    def loss(self, x, generator=None):
        out = self.net[0](torch.cat([x, x[:, :1]], dim=1))  # x is (B, 2); the net takes 3
        self.seen.append((torch.is_autocast_enabled("cpu"), out.dtype))
        return super().loss(x, generator)


def test_precision_bf16_autocasts_on_cpu_and_keeps_float32_weights(tmp_path):
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    runs = {}
    for prec in ("fp32", "bf16"):
        torch.manual_seed(0)
        tr = Trainer(AutocastProbe(), x, cfg(steps=6, precision=prec, sample_every=3),
                     tmp_path / prec, progress=False,
                     sample_fn=lambda m, step, out: m.seen.append(
                         (torch.is_autocast_enabled("cpu"), None)))
        out = tr.fit()
        runs[prec] = tr
        assert math.isfinite(out["loss"]) and out["skipped_steps"] == 0
        assert {p.dtype for p in tr.model.parameters()} == {torch.float32}
        assert {v.dtype for v in tr.ema.state_dict().values() if v.is_floating_point()} == {
            torch.float32}
    train_seen = [s for s in runs["bf16"].model.seen if s[1] is not None]
    assert train_seen and all(s == (True, torch.bfloat16) for s in train_seen)
    assert all(s == (False, torch.float32) for s in runs["fp32"].model.seen if s[1] is not None)
    # the periodic samples are drawn under the run's precision too
    assert [s[0] for s in runs["bf16"].model.seen if s[1] is None] == [True, True]
    # bf16 arithmetic really changed the result (same seed, data and noise otherwise)
    assert not state_equal(runs["fp32"].model.state_dict(), runs["bf16"].model.state_dict())


def test_precision_default_keeps_old_configs_and_legacy_bf16(tmp_path):
    assert TrainConfig().precision == "fp32"
    old = cfg().to_dict()
    old.pop("precision")  # a config written before the key existed
    assert TrainConfig.from_dict(old).precision == "fp32"
    assert TrainConfig.from_dict(old) == cfg()
    from trilemma.train.config import autocast_device

    assert autocast_device(cfg(bf16=True), "cuda") and not autocast_device(cfg(bf16=True), "cpu")
    assert autocast_device(cfg(precision="bf16"), "cpu")
    assert not autocast_device(cfg(), "cpu") and not autocast_device(cfg(), "cuda")


def test_a_one_loss_model_is_a_single_phase(tmp_path):
    x, y, _ = regression_data()
    tr = Trainer(LinReg(), (x, y), cfg(), tmp_path, progress=False)
    assert [p.name for p in tr.phases] == ["loss"]
    assert tr.phases[0].params == list(tr.model.parameters()) and tr.phases[0].others == []
    assert len(tr.optimizer.param_groups) == 1 and "name" not in tr.optimizer.param_groups[0]


def test_step_batches_read_order():
    """One pass reads each micro-batch when it asks for it; several passes read them first."""
    reads = []

    def source():
        for i in itertools.count():
            reads.append(i)
            yield i

    src = source()
    one = StepBatches(src, 3)
    assert [(b, len(reads)) for b in one] == [(0, 1), (1, 2), (2, 3)]
    assert list(one) == [0, 1, 2] and len(reads) == 3  # kept, not read again
    two = StepBatches(src, 2, passes=2)
    assert len(reads) == 5 and list(two) == [3, 4] and list(two) == [3, 4]
