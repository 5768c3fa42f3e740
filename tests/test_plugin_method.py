"""A method added by files alone (tests/plugins/noisefree: a model module and a setup module)
is validated, trained, sampled and described through the CLI, with no edit of trilemma."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from trilemma.cli import main
from trilemma.config import ConfigError, load_config
from trilemma.data import toy_dataset
from trilemma.setup import method_names

PLUGINS = Path(__file__).resolve().parent / "plugins"


@pytest.fixture
def plugin_path(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))


def _config(tmp_path: Path, **model) -> Path:
    cfg = {"seed": 0, "device": "cpu", "process": {"name": "vp"},
           "model": {"method": "noisefree.setup", **model},
           "data": {"name": "toy", "toy": "two_moons", "n": 2000},
           "train": {"steps": 300, "batch_size": 256, "lr": 0.05, "ckpt_every": 0,
                     "log_every": 100, "ema_decay": 0.5},
           "sample": {"sampler": "direct", "nfe": 1, "n": 16}}
    path = tmp_path / "noisefree.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_the_plugin_is_validated_by_its_own_setup(plugin_path, tmp_path):
    cfg = load_config(_config(tmp_path))
    assert cfg.model == {"method": "noisefree.setup", "init_log_std": 0.0}
    assert "noisefree.setup" in method_names()
    with pytest.raises(ConfigError, match="unknown key 'model.hidden'"):
        load_config(_config(tmp_path, hidden=3))


def test_an_unknown_method_lists_the_registered_ones(tmp_path):
    with pytest.raises(ConfigError, match="model.method: unknown method 'lsmg' "
                                          r"\(did you mean 'lsgm'\?\); use one of: consistency, "
                                          "ddgan, "):
        load_config(_write(tmp_path, {"method": "lsmg"}))


def _write(tmp_path: Path, model: dict) -> Path:
    path = _config(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    cfg["model"] = model
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_the_plugin_trains_samples_and_describes_through_the_cli(plugin_path, tmp_path,
                                                                 capsys):
    run = tmp_path / "run"
    assert main(["train", str(_config(tmp_path)), "--out", str(run), "--quiet"]) == 0
    assert (run / "model.safetensors").is_file() and (run / "config.json").is_file()
    out = tmp_path / "s.npz"
    assert main(["sample", str(run), "--n", "4000", "--out", str(out)]) == 0
    with np.load(out) as f:
        x, nfe = f["samples"], int(f["nfe"])
    assert nfe == 1
    # the Gaussian fit matches the two-moons data's mean and spread
    data = toy_dataset("two_moons", 4000, torch.Generator().manual_seed(1)).numpy()
    np.testing.assert_allclose(x.mean(0), data.mean(0), atol=0.1)
    np.testing.assert_allclose(x.std(0), data.std(0), rtol=0.15)
    assert main(["sample", str(run), "--sampler", "em", "--out", str(out)]) == 2
    assert "--sampler: use one of: direct" in capsys.readouterr().err
    assert main(["info", str(run)]) == 0
    assert "noisefree.setup" in capsys.readouterr().out
