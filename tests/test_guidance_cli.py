"""Class-conditional runs from a config and the CLI around them: ``data.labels``, ``sample
--label/--labels/--guidance`` and ``evaluate --guidance`` (rows per weight, class share)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from trilemma.build import load_run
from trilemma.cli import main
from trilemma.config import Config, ConfigError
from trilemma.methods import ScoreModel
from trilemma.training import train_run

COND = {
    "seed": 0, "device": "cpu", "process": {"name": "vp"},
    "model": {"net": {"name": "mlp", "hidden": 16, "depth": 1}},
    "data": {"name": "toy", "toy": "imbalanced2d", "n": 256, "labels": True},
    "train": {"steps": 3, "batch_size": 32, "lr": 1e-3, "log_every": 1},
    "sample": {"sampler": "dpm2m", "nfe": 4, "n": 40},
}


def _train(root: Path, cfg: dict, name: str) -> Path:
    (root / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    run = root / name
    assert main(["train", str(root / f"{name}.yaml"), "--out", str(run), "--quiet"]) == 0
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("guide")
    plain = {**COND, "data": {**COND["data"], "labels": False}}
    return _train(root, COND, "cond"), _train(root, plain, "plain")


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_data_labels_make_the_net_conditional_with_the_data_classes(runs):
    model, config, _ = load_run(runs[0])
    assert config.model["net"]["num_classes"] == 4 and model.num_classes == 4
    plain, _, _ = load_run(runs[1])
    assert plain.num_classes is None


def test_training_from_a_config_feeds_the_labels(tmp_path, monkeypatch):
    seen = []
    loss = ScoreModel.loss

    def spy(self, batch, generator=None, **kw):
        seen.append(isinstance(batch, (tuple, list)) and len(batch) == 2)
        return loss(self, batch, generator, **kw)

    monkeypatch.setattr(ScoreModel, "loss", spy)
    train_run(Config.from_dict({**COND, "sample": {"n": 8, "nfe": 2, "sampler": "ddim"}}),
              tmp_path / "run", progress=False)
    assert len(seen) == 3 and all(seen)


@pytest.mark.parametrize("change,message", [
    ({"model": {"net": {"name": "mlp", "num_classes": 4}}, "data": {**COND["data"],
                                                                  "labels": False}},
     "model.net.num_classes: class-conditional training reads the labels"),
    ({"model": {"net": {"name": "mlp", "num_classes": 3}}},
     "model.net.num_classes: 3 does not match the 4 classes"),
    ({"data": {"name": "toy", "toy": "two_moons", "labels": True}},
     "data.labels: toy 'two_moons' has no classes"),
    ({"data": {"name": "folder", "path": ".", "size": 8, "labels": True}},
     "data.labels: dataset 'folder' has no class labels"),
    ({"data": {"name": "digits", "labels": "yes"}}, "data.labels"),
])
def test_config_refuses_conditioning_that_cannot_work(change, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_dict({**COND, **change}, check_paths=False)


def test_digits_labels_resolve_and_old_configs_resolve_as_before():
    cfg = Config.from_dict({**COND, "data": {"name": "digits", "labels": True},
                            "model": {"net": {"name": "unet", "base_channels": 8}}})
    assert cfg.model["net"]["num_classes"] == 10 and cfg.data["labels"] is True
    old = Config.from_dict({**COND, "data": {"name": "digits"},
                            "model": {"net": {"name": "unet", "base_channels": 8}}})
    assert "labels" not in old.data and old.model["net"].get("num_classes") is None


def test_sample_label_guidance_and_balanced(runs, capsys, tmp_path):
    cond, _ = runs
    code, out, _ = _run(capsys, "sample", cond, "--label", 3, "--guidance", 2, "--n", 8,
                        "--out", tmp_path / "a.npz")
    assert code == 0 and "class 3, w = 2" in out
    a = np.load(tmp_path / "a.npz")
    assert a["labels"].tolist() == [3] * 8 and int(a["nfe"]) == 8  # 4 steps x 2 calls
    code, _, _ = _run(capsys, "sample", cond, "--labels", "balanced", "--n", 8, "--out",
                      tmp_path / "b.npz")
    b = np.load(tmp_path / "b.npz")
    assert b["labels"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and int(b["nfe"]) == 4
    code, _, _ = _run(capsys, "sample", cond, "--labels", "2,0,1", "--out", tmp_path / "c.npz")
    c = np.load(tmp_path / "c.npz")
    assert c["labels"].tolist() == [2, 0, 1] and c["samples"].shape == (3, 2)


@pytest.mark.parametrize("which,args,message", [
    (1, ["--label", "1"], "--label/--labels: this run is unconditional"),
    (1, ["--labels", "balanced"], "--label/--labels: this run is unconditional"),
    (0, ["--label", "4"], "--label/--labels: classes run from 0 to 3, got 4"),
    (0, ["--guidance", "1"], "--guidance: classifier-free guidance needs labels"),
    (0, ["--labels", "0,1", "--n", "5"], "2 labels for --n 5"),
])
def test_sample_misuse_names_the_flag(runs, capsys, tmp_path, which, args, message):
    code, _, err = _run(capsys, "sample", runs[which], *args, "--out", tmp_path / "x.npz")
    assert code != 0 and message in err, err


def test_evaluate_makes_a_row_per_guidance_weight(runs, capsys, tmp_path):
    cond, plain = runs
    out = tmp_path / "eval"
    code, _, err = _run(capsys, "evaluate", cond, "--samplers", "dpm2m:4", "--guidance",
                        "0/1.5", "--n", 40, "--batch", 15, "--bootstrap", 20, "--out", out,
                        "--quiet")
    assert code == 0, err
    rows = json.loads((out / "results.json").read_text())["runs"][0]["rows"]
    assert [(r["label"], r["guidance"], r["nfe"]) for r in rows] == [
        ("dpm2m w=0", 0.0, 4), ("dpm2m w=1.5", 1.5, 8)]
    for r in rows:
        share, ci = r["metrics"]["class_share"], r["metrics"]["class_share_ci"]
        assert 0 <= ci[0] <= share <= ci[1] <= 1
    assert (out / "guidance.png").is_file()
    assert "class_share" in (out / "results.csv").read_text().splitlines()[0]
    # without metrics the guided rows are sampled and timed, nothing scored
    code, _, err = _run(capsys, "evaluate", cond, "--samplers", "dpm2m:4", "--guidance", "2",
                        "--n", 20, "--no-metrics", "--out", tmp_path / "bare", "--quiet")
    assert code == 0, err
    rows = json.loads((tmp_path / "bare" / "results.json").read_text())["runs"][0]["rows"]
    assert [(r["label"], r["nfe"], r["metrics"]) for r in rows] == [("dpm2m w=2", 8, {})]
    code, _, err = _run(capsys, "evaluate", plain, "--samplers", "dpm2m:4", "--guidance",
                        "1", "--n", 40, "--out", tmp_path / "e2", "--quiet")
    assert code != 0 and "--guidance: run plain is unconditional" in err
    code, _, err = _run(capsys, "evaluate", cond, "--guidance", "1/x", "--n", 40, "--out",
                        tmp_path / "e3", "--quiet")
    assert code != 0 and "--guidance: expected weights" in err


@pytest.mark.parametrize("name", ["digits_vp_cond.yaml", "mnist_vp_cond.yaml"])
def test_shipped_conditional_configs_have_ten_classes(name):
    path = Path(__file__).resolve().parents[1] / "configs" / name
    cfg = Config.from_dict(yaml.safe_load(path.read_text()), check_paths=False)
    assert cfg.data["labels"] is True and cfg.model["net"]["num_classes"] == 10
