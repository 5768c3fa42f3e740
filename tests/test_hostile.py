"""Hostile or careless input (issue 12): configs, resumed settings, report paths and CLI options.

Each attempt ends in a one-line ``trilemma: error: ...`` (exit status 2) naming the problem,
or in the behaviour asked for; nothing of an existing run is lost. The run-folder side (locks,
corrupted checkpoints, unwritable folders) is in ``test_hostile_runs.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hostile_helpers import (
    TOY,
    copy_run,
    log_rows,
    one_line_error,
    run_cli,
    train_toy,
    write_config,
)
from trilemma.evaluate.common import FORMAT
from trilemma.train import Trainer, lr_factor
from trilemma.train.config import TrainConfig


# --------------------------------------------------------------------------- 1. YAML aliases
def bomb_text(levels: int = 9, width: int = 9) -> str:
    lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return "\n".join(lines) + f"\nprocess: *a{levels}\n"


BOMB_SCRIPT = """
import resource, sys, time
from trilemma.cli import main
with open('/proc/self/status') as fh:
    vm = next(int(ln.split()[1]) for ln in fh if ln.startswith('VmSize')) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (768 << 20), resource.RLIM_INFINITY))
t0 = time.perf_counter()
code = main(['train', sys.argv[1], '--out', sys.argv[2], '--quiet'])
print('seconds', time.perf_counter() - t0, flush=True)
sys.exit(code)
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs /proc")
def test_alias_bomb_is_refused_fast_under_a_memory_limit(tmp_path):
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(bomb_text())
    assert len(cfg.read_bytes()) < 600
    proc = subprocess.run([sys.executable, "-c", BOMB_SCRIPT, str(cfg), str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("trilemma: error: ") and "Traceback" not in proc.stderr
    assert "alias" in proc.stderr and str(cfg) in proc.stderr
    seconds = float(proc.stdout.split("seconds")[-1])
    assert seconds < 1.0
    assert not (tmp_path / "run").exists()


def test_self_referencing_anchor_is_refused(tmp_path, capsys):
    cfg = tmp_path / "self.yaml"
    cfg.write_text("a: &a [*a, *a]\nprocess: {name: vp}\n")
    t0 = time.perf_counter()
    code, _, err = run_cli(capsys, "train", cfg, "--out", tmp_path / "run")
    assert time.perf_counter() - t0 < 1.0
    one_line_error(code, err, str(cfg), "refers to itself")


def test_alias_bomb_in_a_set_value_is_refused(tmp_path, capsys):
    cfg = write_config(tmp_path / "tiny.yaml", TOY)
    anchors = ["&b0 [x, x, x, x, x, x, x, x, x]"]
    anchors += [f"&b{i} [{', '.join([f'*b{i - 1}'] * 9)}]" for i in range(1, 10)]
    code, _, err = run_cli(capsys, "train", cfg, "--out", tmp_path / "run",
                           "--set", f"sample.options.eta=[{', '.join(anchors)}]")
    one_line_error(code, err, "sample.options.eta", "alias")


def test_aliases_of_reasonable_size_still_work(tmp_path):
    from trilemma.setup import read_yaml

    cfg = tmp_path / "ok.yaml"
    cfg.write_text("net: &net {name: mlp, hidden: 16, depth: 1}\nmodel: {net: *net}\n")
    assert read_yaml(cfg)["model"]["net"] == {"name": "mlp", "hidden": 16, "depth": 1}


# --------------------------------------------------------------------------- 2. resume settings
@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    return train_toy(tmp_path_factory.mktemp("hostile"))


def test_resume_trains_at_the_new_lr_and_logs_it(toy_run, tmp_path, capsys):
    run = copy_run(toy_run[1], tmp_path)
    code, _, err = run_cli(capsys, "train", toy_run[0], "--out", run, "--resume", "--quiet",
                           "--set", "train.lr=2e-4", "--set", "train.steps=6")
    assert code == 0, err
    assert "lr 0.001 -> 0.0002" in err
    rows = log_rows(run)
    assert [r["lr"] for r in rows] == ["0.001"] * 4 + ["0.0002"] * 2


def test_resume_with_a_new_cosine_schedule_decays_from_the_new_lr(toy_run, tmp_path, capsys):
    run = copy_run(toy_run[1], tmp_path)
    sets = {"lr": 2e-4, "steps": 8, "schedule": "cosine", "min_lr": 1e-5}
    code, _, err = run_cli(capsys, "train", toy_run[0], "--out", run, "--resume", "--quiet",
                           *[a for k, v in sets.items() for a in ("--set", f"train.{k}={v}")])
    assert code == 0, err
    new = TrainConfig(**{**TOY["train"], **sets})
    # the row of step k shows the rate of the next step, lr * factor(k)
    expected = [f"{2e-4 * lr_factor(k, new):.8g}" for k in range(5, 9)]
    assert [r["lr"] for r in log_rows(run)[4:]] == expected
    assert float(log_rows(run)[-1]["lr"]) == pytest.approx(1e-5)


def test_resume_applies_weight_decay_and_betas(tmp_path):
    import torch

    x = torch.randn(64, 2)
    model = torch.nn.Linear(2, 2)

    class Reg(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = model

        def loss(self, batch, generator=None):
            return (self.lin(batch) - batch).pow(2).sum(1)

    base = {"steps": 2, "batch_size": 16, "lr": 1e-2, "log_every": 1, "ckpt_every": 1}
    Trainer(Reg(), x, base, tmp_path / "r", progress=False).fit()
    changed = {**base, "steps": 3, "weight_decay": 0.1, "betas": [0.5, 0.6], "lr": 3e-3}
    tr = Trainer(Reg(), x, changed, tmp_path / "r", progress=False)
    with pytest.warns(UserWarning, match="applied from step 3"):
        tr.fit(resume=True)
    group = tr.optimizer.param_groups[0]
    assert group["weight_decay"] == 0.1 and tuple(group["betas"]) == (0.5, 0.6)
    assert group["initial_lr"] == 3e-3 and tr.scheduler.base_lrs == [3e-3]


def test_resume_refuses_a_changed_train_seed(toy_run, tmp_path, capsys):
    run = copy_run(toy_run[1], tmp_path)
    before = (run / "log.csv").read_text()
    code, _, err = run_cli(capsys, "train", toy_run[0], "--out", run, "--resume",
                           "--set", "train.seed=99", "--set", "train.steps=6")
    one_line_error(code, err, "train.seed")
    assert (run / "log.csv").read_text() == before


def test_resume_refuses_steps_below_the_checkpoint(toy_run, tmp_path, capsys):
    run = copy_run(toy_run[1], tmp_path)
    code, _, err = run_cli(capsys, "train", toy_run[0], "--out", run, "--resume",
                           "--set", "train.steps=3")
    one_line_error(code, err, "step 4", "train.steps = 3")


# --------------------------------------------------------------------------- 4. report paths
def fake_report(folder: Path, grid: str) -> Path:
    folder.mkdir(parents=True)
    settings = {"n": 10, "seed": 0, "batch_size": 10, "reference_split": "test",
                "metrics": True, "samplers": []}
    row = {"run": "a", "method": "vp", "label": "em", "sampler": "em", "grid": grid}
    res = {"format": FORMAT, "settings": settings, "environment": {},
           "runs": [{"label": "a", "method": "vp", "rows": [row]}]}
    (folder / "results.json").write_text(json.dumps(res))
    return folder


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_report_refuses_paths_outside_the_report_folder(tmp_path, capsys, kind):
    secret = tmp_path / "elsewhere" / "secret.png"
    secret.parent.mkdir()
    secret.write_bytes(b"not yours")
    rep = tmp_path / "reports" / "rep"
    grid = {"dotdot": "../../elsewhere/secret.png", "absolute": str(secret),
            "symlink": "grids/link.png"}[kind]
    fake_report(rep, grid)
    if kind == "symlink":
        (rep / "grids").mkdir()
        os.symlink(secret, rep / "grids" / "link.png")
    out = tmp_path / "reports" / "out"
    code, _, err = run_cli(capsys, "report", rep, "--out", out)
    one_line_error(code, err, "results.json", "outside")
    assert not out.exists() or not any(out.rglob("*secret*"))
    assert sorted(p.name for p in secret.parent.iterdir()) == ["secret.png"]


def test_report_html_embeds_no_file_outside_its_folder(tmp_path):
    from trilemma.report.html import _grids_html

    (tmp_path / "secret.png").write_bytes(b"\x89PNG not yours")
    results = {"runs": [{"label": "a", "method": "vp", "rows": [
        {"label": "em", "grid": "../secret.png", "nfe": 3}]}]}
    (tmp_path / "rep").mkdir()
    html = _grids_html(results, tmp_path / "rep")
    assert "base64" not in html


# --------------------------------------------------------------------------- CLI options
@pytest.mark.parametrize("args,needles", [
    (("--sampler", "ddim", "--opt", "eta=-3"), ("--opt", "eta")),
    (("--sampler", "dpm2m", "--opt", "order=7"), ("--opt", "order")),
    (("--sampler", "ode", "--nfe", "20", "--opt", "rtol=-1"), ("--opt", "rtol")),
    (("--device", "tpu"), ("device", "tpu")),
])
def test_sample_refuses_bad_options(toy_run, tmp_path, capsys, args, needles):
    code, _, err = run_cli(capsys, "sample", toy_run[1], "--out", tmp_path / "s.png", *args)
    one_line_error(code, err, *needles)
    assert not (tmp_path / "s.png").exists()


@pytest.mark.parametrize("command", ["sample", "evaluate", "report"])
def test_out_under_a_file_is_named(toy_run, tmp_path, capsys, command):
    (tmp_path / "afile").write_text("x")
    target = tmp_path / "afile" / ("s.png" if command == "sample" else "rep")
    given = toy_run[1] if command != "report" else tmp_path / "rep"
    if command == "report":
        fake_report(tmp_path / "rep", "grids/x.png")
    code, _, err = run_cli(capsys, command, given, "--out", target)
    one_line_error(code, err, str(tmp_path / "afile"), "is a file")
    assert "File exists" not in err


def test_train_out_under_a_file_is_named(toy_run, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    code, _, err = run_cli(capsys, "train", toy_run[0], "--out", tmp_path / "afile" / "run")
    one_line_error(code, err, str(tmp_path / "afile"), "is a file")


def test_huge_net_is_refused_before_allocating(toy_run, tmp_path, capsys):
    t0 = time.perf_counter()
    code, _, err = run_cli(capsys, "train", toy_run[0], "--out", tmp_path / "run",
                           "--set", "model.net.hidden=100000000")
    assert time.perf_counter() - t0 < 5.0
    one_line_error(code, err, "parameters", "memory")
    assert not (tmp_path / "run" / "checkpoints").exists()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (the pixel data is missing)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_decompression_bomb_image_is_named(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    (folder / "b.png").write_bytes(png_header(15000, 15000))
    cfg = {**TOY, "data": {"name": "folder", "path": str(folder), "size": 8}}
    cfg["model"] = {"net": {"name": "unet", "base_channels": 8, "channel_mults": [1],
                            "num_res_blocks": 1}}
    code, _, err = run_cli(capsys, "train", write_config(tmp_path / "c.yaml", cfg),
                           "--out", tmp_path / "run")
    one_line_error(code, err, "b.png", "225000000 pixels")
