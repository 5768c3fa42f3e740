"""The public Python API: ``trilemma.train`` / ``trilemma.load`` write and read the same run
folder as the CLI; top-level exports; the training log's loss plot, plain progress lines and
the optional TensorBoard writer."""

from __future__ import annotations

import importlib.util
import io
import json

import pytest
import torch

import trilemma
from trilemma.cli import main
from trilemma.train import Trainer
from trilemma.train.progress import LineProgress, progress_bar, wants_lines

TINY = {
    "seed": 1,
    "device": "cpu",
    "process": {"name": "vp"},
    "model": {"net": {"name": "mlp", "hidden": 16, "depth": 1}},
    "data": {"name": "toy", "toy": "grid25", "n": 256},
    "train": {"steps": 4, "batch_size": 32, "lr": 1e-3, "log_every": 2, "ckpt_every": 2},
    "sample": {"sampler": "dpm2m", "nfe": 6, "n": 20},
}


@pytest.fixture(scope="module")
def py_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "run"
    model = trilemma.train(TINY, out=out, progress=False)
    return out, model


def test_train_writes_the_cli_run_folder(py_run, capsys):
    out, model = py_run
    for name in ("config.yaml", "config.json", "run.json", "model.safetensors", "model.json",
                 "log.csv", "loss.png", "checkpoints/step_000004/state.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "config.json").read_text())["train"]["steps"] == 4
    assert model.train_summary["step"] == 4 and not model.training
    # the CLI reads it like one of its own runs
    assert main(["info", str(out)]) == 0
    assert main(["sample", str(out), "--n", "8", "--out", str(out / "s.npz")]) == 0
    assert "NFE 6" in capsys.readouterr().out


def test_load_returns_a_model_ready_to_sample(py_run):
    out, trained = py_run
    model = trilemma.load(out)
    assert type(model) is type(trained) and model.saved_run.step == 4
    assert model.run_config.sample["sampler"] == "dpm2m"
    res = model.sample(10, "dpm2m", 6, generator=torch.Generator().manual_seed(0))
    again = trained.sample(10, "dpm2m", 6, generator=torch.Generator().manual_seed(0))
    assert res.samples.shape == (10, 2) and res.nfe == 6
    torch.testing.assert_close(res.samples, again.samples)
    assert trilemma.load(out / "model.safetensors").saved_run.kind == "weights"


def test_train_accepts_a_yaml_path_and_overrides(tmp_path):
    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    model = trilemma.train(cfg, tmp_path / "r", overrides=["train.steps=2"], progress=False)
    assert model.train_summary["step"] == 2
    with pytest.raises(trilemma.ConfigError, match="train.lr"):
        trilemma.train(TINY, tmp_path / "bad", overrides=["train.lr=-1"])
    with pytest.raises(ValueError, match="--resume"):  # the CLI's refusal to overwrite
        trilemma.train(TINY, tmp_path / "r", progress=False)


def test_train_is_the_subpackage_and_callable():
    import trilemma.train as train_pkg
    from trilemma import train

    assert train is train_pkg is trilemma.train and callable(train)
    assert train.Trainer is Trainer
    for name in ("load", "train", "get_process", "sample", "grid25", "ScoreModel", "Config",
                 "log_likelihood", "SAMPLERS"):
        assert name in trilemma.__all__ and hasattr(trilemma, name), name


def test_progress_lines_when_not_a_terminal(monkeypatch):
    buf = io.StringIO()  # not a terminal
    assert wants_lines(buf)
    bar = progress_bar(total=5, desc="train", file=buf, mininterval=0)
    assert isinstance(bar, LineProgress)
    for _ in range(5):
        bar.update(1)
    bar.set_postfix(loss="0.5", refresh=False)
    bar.close()
    text = buf.getvalue()
    assert "\r" not in text and text.endswith("\n")
    assert text.splitlines()[-1].startswith("train: 5/5 (100%)") and "loss=0.5" in text
    monkeypatch.setenv("TRILEMMA_PROGRESS", "bar")
    assert not wants_lines(buf)


def test_tensorboard_is_optional(tmp_path, monkeypatch):
    cfg = {**TINY, "train": {**TINY["train"], "steps": 2, "tensorboard": True}}
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(ValueError, match="pip install tensorboard"):
            trilemma.train(cfg, tmp_path / "tb", progress=False)
    else:
        trilemma.train(cfg, tmp_path / "tb", progress=False)
        assert list((tmp_path / "tb" / "tensorboard").glob("events.out.tfevents.*"))


def test_export_torchscript_matches_the_model(py_run, tmp_path, capsys):
    out, model = py_run
    path = tmp_path / "score.pt"
    assert main(["export", str(out), "--torchscript", str(path)]) == 0
    scripted = torch.jit.load(str(path))
    u, t = torch.randn(5, 2), torch.tensor([0.01, 0.2, 0.5, 0.8, 1.0])
    with torch.no_grad():
        torch.testing.assert_close(scripted(u, t), model(u, t), rtol=1e-5, atol=1e-5)
    assert main(["export", str(out)]) == 2 and "--torchscript" in capsys.readouterr().err


def test_config_show_prints_every_default(py_run, tmp_path, capsys):
    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"process": {"name": "vp"},
                                   "data": {"name": "toy", "toy": "grid25"},
                                   "model": {"net": {"name": "mlp"}}}))
    assert main(["config", "show", str(cfg), "--set", "train.lr=1e-3"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["train"]["lr"] == 1e-3 and shown["train"]["ema_decay"] == 0.999
    assert shown["process"]["beta_max"] == 20.0 and shown["sample"]["sampler"] == "em"
    out, _ = py_run
    assert main(["config", "show", str(out)]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["seed"] == 1


def test_every_command_has_examples_and_is_listed():
    from trilemma.cli import COMMANDS, build_parser

    parser = build_parser()
    top = parser.format_help()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in COMMANDS:
        assert f"\n  {name} " in top, name
        assert "examples:\n  trilemma" in sub.choices[name].format_help(), name


def test_weights_have_ordinary_permissions(py_run):
    import os
    import stat

    out, _ = py_run
    mask = os.umask(0)
    os.umask(mask)
    for path in (out / "model.safetensors", out / "checkpoints" / "step_000004",
                 out / "checkpoints" / "step_000004" / "model.safetensors"):
        want = (0o777 if path.is_dir() else 0o666) & ~mask
        assert stat.S_IMODE(path.stat().st_mode) == want, path
