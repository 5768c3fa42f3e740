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
