"""The ``trilemma`` command end to end on tiny configs: train, resume, sample, info, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from trilemma.build import build_model, load_run
from trilemma.cli import main
from trilemma.config import Config
from trilemma.nets import count_parameters
from trilemma.samplers import GaussianMoments
from trilemma.setup import build_dataset
from trilemma.train import latest_checkpoint

TOY = {
    "seed": 3,
    "device": "cpu",
    "process": {"name": "vp"},
    "model": {"net": {"name": "mlp", "hidden": 16, "depth": 1}},
    "data": {"name": "toy", "toy": "grid25", "n": 256},
    "train": {"steps": 4, "batch_size": 32, "lr": 1e-3, "ckpt_every": 2, "sample_every": 4,
              "log_every": 2},
    "sample": {"sampler": "em", "nfe": 6, "n": 50},
}


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A 4-step toy VP run, resumed to 6 steps (shared by the tests below)."""
    root = tmp_path_factory.mktemp("cli")
    cfg = _write(root / "tiny.yaml", TOY)
    run = root / "run"
    code = main(["train", str(cfg), "--out", str(run), "--quiet"])
    assert code == 0
    first = {
        "checkpoint": latest_checkpoint(run),
        "ema": (run / "model.safetensors").read_bytes(),
        "log": (run / "log.csv").read_text(),
    }
    code = main(["train", str(cfg), "--out", str(run), "--resume", "--quiet",
                 "--set", "train.steps=6"])
    assert code == 0
    return root, cfg, run, first


def test_train_writes_run_folder(toy_run):
    root, cfg, run, first = toy_run
    assert first["checkpoint"].name == "step_000004"
    for name in ("config.yaml", "config.json", "run.json", "model.safetensors", "model.json",
                 "log.csv", "samples/step_000004.png"):
        assert (run / name).is_file(), name
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved == json.loads((run / "config.json").read_text())
    assert saved["train"]["steps"] == 6 and saved["seed"] == 3
    assert Config.from_dict(saved).to_dict() == saved
    assert json.loads((run / "run.json").read_text())["data_shape"] == [2]
    with Image.open(run / "samples" / "step_000004.png") as img:
        assert img.size[0] > 100 and img.size[1] > 100


def test_resume_continues_the_step_count(toy_run):
    _, _, run, first = toy_run
    assert latest_checkpoint(run).name == "step_000006"
    state = json.loads((latest_checkpoint(run) / "state.json").read_text())
    assert state["step"] == 6
    steps = [int(line.split(",")[0]) for line in (run / "log.csv").read_text().splitlines()[1:]]
    assert steps == [2, 4, 6]  # the log continues, not restarts
    meta = json.loads((run / "model.json").read_text())
    assert meta["step"] == 6 and meta["weights"] == "ema"
    assert (run / "model.safetensors").read_bytes() != first["ema"]


def test_train_refuses_to_overwrite_or_change_a_run(toy_run, capsys):
    root, cfg, run, _ = toy_run
    code, _, err = _run(capsys, "train", cfg, "--out", run, "--quiet")
    assert code == 2 and err.startswith("trilemma: error: ") and "--resume" in err
    code, _, err = _run(capsys, "train", cfg, "--out", run, "--quiet", "--resume",
                        "--set", "model.net.hidden=8")
    assert code == 2 and "model.net.hidden: 16 -> 8" in err
    assert latest_checkpoint(run).name == "step_000006"


def test_sample_png_and_npz(toy_run, capsys, tmp_path):
    _, _, run, _ = toy_run
    code, out, _ = _run(capsys, "sample", run, "--sampler", "dpm2m", "--nfe", "7", "--n", "40",
                        "--seed", "1", "--out", tmp_path / "s.png")
    assert code == 0 and "NFE 7" in out and "ms per sample" in out
    with Image.open(tmp_path / "s.png") as img:
        assert img.format == "PNG"
    code, out, _ = _run(capsys, "sample", run, "--sampler", "em", "--nfe", "9", "--n", "40",
                        "--seed", "1", "--out", tmp_path / "a.npz")
    assert code == 0
    a = np.load(tmp_path / "a.npz")
    assert a["samples"].shape == (40, 2) and a["samples"].dtype == np.float32
    assert int(a["nfe"]) == 9 and float(a["seconds"]) > 0 and int(a["step"]) == 6
    assert np.isfinite(a["samples"]).all()
    # same seed -> same samples (from the step folder, the same weights); another seed differs
    _run(capsys, "sample", latest_checkpoint(run), "--sampler", "em", "--nfe", "9", "--n", "40",
         "--seed", "1", "--out", tmp_path / "b.npz")
    np.testing.assert_array_equal(np.load(tmp_path / "b.npz")["samples"], a["samples"])
    _run(capsys, "sample", run / "model.safetensors", "--sampler", "em", "--nfe", "9", "--n",
         "40", "--seed", "2", "--out", tmp_path / "c.npz")
    assert not np.array_equal(np.load(tmp_path / "c.npz")["samples"], a["samples"])


def test_sample_matches_the_library(toy_run, capsys, tmp_path):
    """The CLI's samples equal ScoreModel.sample with the run's EMA weights and the same seed."""
    _, _, run, _ = toy_run
    _run(capsys, "sample", run, "--sampler", "heun", "--nfe", "9", "--n", "16", "--seed", "5",
         "--out", tmp_path / "h.npz")
    model, config, saved = load_run(run)
    assert saved.weights.name == "ema.safetensors" and saved.step == 6
    res = model.sample(16, "heun", 9, generator=torch.Generator().manual_seed(5))
    np.testing.assert_allclose(np.load(tmp_path / "h.npz")["samples"], res.samples.numpy())


def test_info(toy_run, capsys):
    _, _, run, _ = toy_run
    code, out, _ = _run(capsys, "info", run)
    assert code == 0
    config = Config.from_dict(json.loads((run / "config.json").read_text()))
    n_params = count_parameters(build_model(config, (2,)))
    assert "step       6" in out
    assert "process    vp" in out
    assert "net        mlp" in out and "in_dim=2" in out
    assert f"parameters {n_params:,}" in out
    assert "checkpoints 2, 4, 6" in out
    code, out, _ = _run(capsys, "info", run / "model.safetensors")
    assert code == 0 and "step       6" in out


def test_user_errors_exit_2_with_a_message(toy_run, capsys, tmp_path):
    root, cfg, run, _ = toy_run
    cases = [
        (["sample", tmp_path / "nowhere", "--out", tmp_path / "x.png"],
         "no such run directory or checkpoint"),
        (["sample", tmp_path, "--out", tmp_path / "x.png"], "holds no checkpoint"),
        (["sample", run, "--sampler", "sscs", "--out", tmp_path / "x.png"],
         "--sampler: 'sscs' does not fit process 'vp'; use one of: em, pc"),
        (["sample", run, "--sampler", "dpm9", "--out", tmp_path / "x.png"],
         "--sampler: unknown sampler 'dpm9'"),
        (["sample", run, "--sampler", "heun", "--nfe", "2", "--out", tmp_path / "x.png"],
         "--nfe: sampler 'heun' needs at least 3 NFE"),
        (["sample", run, "--opt", "eta=1", "--sampler", "em", "--out", tmp_path / "x.png"],
         "--opt: unknown option(s) ['eta']"),
        (["sample", run, "--out", tmp_path / "x.jpg"], "--out must end in .png or .npz"),
        (["sample", run, "--n", "0", "--out", tmp_path / "x.png"], "--n must be a positive"),
        (["train", tmp_path / "missing.yaml"], "config file not found"),
        (["train", cfg, "--out", tmp_path / "r", "--set", "train.lr=-1"],
         "train.lr: expected a positive number, got -1"),
        (["train", cfg, "--out", tmp_path / "r", "--set", "train.batch_size=512", "--quiet"],
         "fewer than one global batch (batch_size = 512); lower train.batch_size"),
        (["info", tmp_path / "nowhere"], "no such run directory or checkpoint"),
    ]
    for argv, expected in cases:
        code, _, err = _run(capsys, *argv)
        assert code == 2, (argv, err)
        assert err.startswith("trilemma: error: ") and expected in err, (argv, err)
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "r").exists()
    assert _run(capsys, "frobnicate")[0] == 2  # argparse usage error
    assert _run(capsys, "--help")[0] == 0


def test_cld_run_and_sampler_check(tmp_path, capsys):
    cfg = _write(tmp_path / "cld.yaml", {
        **TOY, "process": {"name": "cld"},
        "train": {"steps": 2, "batch_size": 32, "lr": 1e-3, "log_every": 1},
        "sample": {"sampler": "sscs", "nfe": 6, "n": 10},
    })
    assert _run(capsys, "train", cfg, "--out", tmp_path / "run", "--quiet")[0] == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["prediction"] \
        == "mixed"
    code, _, err = _run(capsys, "sample", tmp_path / "run", "--sampler", "ddim",
                        "--out", tmp_path / "x.png")
    assert code == 2 and "'ddim' does not fit process 'cld'; use one of:" in err and "sscs" in err
    code, _, _ = _run(capsys, "sample", tmp_path / "run", "--nfe", "8", "--n", "12",
                      "--out", tmp_path / "c.npz")
    assert code == 0
    d = np.load(tmp_path / "c.npz")
    assert d["samples"].shape == (12, 2) and int(d["nfe"]) == 8 and str(d["sampler"]) == "sscs"


def test_image_run_writes_grids(tmp_path, capsys):
    cfg = _write(tmp_path / "digits.yaml", {
        "device": "cpu",
        "process": {"name": "vp"},
        "model": {"net": {"name": "unet", "base_channels": 8, "channel_mults": [1],
                          "num_res_blocks": 1, "dropout": 0.0}},
        "data": {"name": "digits", "limit": 64},
        "train": {"steps": 2, "batch_size": 16, "log_every": 1, "sample_every": 2},
        "sample": {"sampler": "ddim", "nfe": 3, "n": 6},
    })
    assert _run(capsys, "train", cfg, "--out", tmp_path / "run", "--quiet")[0] == 0
    with Image.open(tmp_path / "run" / "samples" / "step_000002.png") as img:
        assert img.size == (3 * 33 + 1, 2 * 33 + 1)  # 3 x 2 tiles of 32 px with 1 px gaps
    code, out, _ = _run(capsys, "sample", tmp_path / "run", "--n", "5", "--out",
                        tmp_path / "d.npz")
    assert code == 0 and "NFE 3" in out
    assert np.load(tmp_path / "d.npz")["samples"].shape == (5, 1, 8, 8)


def test_console_entry_point_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "trilemma.cli", "info", str(tmp_path / "nowhere")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("trilemma: error: ") and "Traceback" not in proc.stderr


def test_checkpoint_folder_copied_out_of_its_run_still_samples(toy_run, capsys, tmp_path):
    """Each checkpoint's state.json carries the full config and data shape."""
    import shutil

    _, _, run, _ = toy_run
    lone = tmp_path / "lone"
    shutil.copytree(latest_checkpoint(run), lone)
    code, _, err = _run(capsys, "sample", lone, "--sampler", "em", "--nfe", "9", "--n", "40",
                        "--seed", "1", "--out", tmp_path / "lone.npz")
    assert code == 0, err
    ref = tmp_path / "ref.npz"
    _run(capsys, "sample", latest_checkpoint(run), "--sampler", "em", "--nfe", "9", "--n", "40",
         "--seed", "1", "--out", ref)
    np.testing.assert_array_equal(np.load(tmp_path / "lone.npz")["samples"],
                                  np.load(ref)["samples"])


def test_train_under_torchrun_uses_ddp_and_rank_zero_writes(tmp_path):
    """`torchrun --nproc_per_node=2 -m trilemma.cli train` trains with 2 gloo ranks."""
    import os
    import socket

    cfg = _write(tmp_path / "tiny.yaml", TOY)
    run = tmp_path / "ddp"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         f"--master_port={port}", "-m", "trilemma.cli", "train", str(cfg), "--out", str(run),
         "--quiet"],
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    state = json.loads((latest_checkpoint(run) / "state.json").read_text())
    assert state["world_size"] == 2
    assert (run / "model.safetensors").is_file() and (run / "config.json").is_file()


def test_sample_with_the_tuned_grid(toy_run, capsys, tmp_path):
    """``--opt grid=tuned`` reaches the sampler (5 calls, the stored 5-step grid); a budget
    without a stored grid is refused up front, naming the stored ones."""
    _, _, run, _ = toy_run
    code, out, _ = _run(capsys, "sample", run, "--sampler", "unipc", "--nfe", "5", "--n", "20",
                        "--opt", "grid=tuned", "--out", tmp_path / "t.npz")
    assert code == 0 and int(np.load(tmp_path / "t.npz")["nfe"]) == 5
    code, _, err = _run(capsys, "sample", run, "--sampler", "dpm2m", "--nfe", "7", "--opt",
                        "grid=tuned", "--out", tmp_path / "u.npz")
    assert code == 2 and "--opt: no tuned grid for sampler 'dpm2m' on process 'vp' at NFE 7" in err
    assert "stored for this pair: NFE 5, NFE 10" in err


def test_sample_with_teleport_from_the_training_data(toy_run, capsys, tmp_path):
    """``--opt teleport=data`` takes the moments of the run's training data and matches the
    library with those moments; a time grid can be given as a list."""
    _, _, run, _ = toy_run
    code, _, _ = _run(capsys, "sample", run, "--sampler", "dpm2m", "--nfe", "5", "--n", "16",
                      "--seed", "2", "--opt", "teleport=data", "--opt", "teleport_sigma=2",
                      "--out", tmp_path / "t.npz")
    assert code == 0 and int(np.load(tmp_path / "t.npz")["nfe"]) == 5
    model, config, _ = load_run(run)
    moments = GaussianMoments.from_samples(build_dataset(config).data)
    res = model.sample(16, "dpm2m", 5, generator=torch.Generator().manual_seed(2),
                       teleport=moments, teleport_sigma=2.0)
    np.testing.assert_allclose(np.load(tmp_path / "t.npz")["samples"], res.samples.numpy(),
                               rtol=1e-5, atol=1e-6)
    code, _, _ = _run(capsys, "sample", run, "--sampler", "dpm2m", "--nfe", "3", "--n", "8",
                      "--opt", "teleport=data", "--opt", "grid=[0.5,0.2,0.05,0.001]",
                      "--out", tmp_path / "g.npz")
    assert code == 0
    code, _, err = _run(capsys, "sample", run, "--sampler", "dpm2m", "--nfe", "5",
                        "--opt", "teleport=moments", "--out", tmp_path / "x.npz")
    assert code == 2 and "--opt: teleport must be 'data'" in err
    code, _, err = _run(capsys, "sample", run, "--sampler", "ode", "--nfe", "50",
                        "--opt", "teleport=data", "--out", tmp_path / "y.npz")
    assert code == 2 and "unknown option(s) ['teleport']" in err
