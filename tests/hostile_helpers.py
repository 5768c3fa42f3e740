"""Shared pieces of the hostile-input tests (``test_hostile.py``, ``test_hostile_runs.py``)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import yaml

from trilemma.cli import main

TOY = {
    "seed": 3,
    "device": "cpu",
    "process": {"name": "vp"},
    "model": {"net": {"name": "mlp", "hidden": 16, "depth": 1}},
    "data": {"name": "toy", "toy": "grid25", "n": 256},
    "train": {"steps": 4, "batch_size": 32, "lr": 1e-3, "ckpt_every": 2, "log_every": 1,
              "keep_last": 0},
    "sample": {"sampler": "em", "nfe": 6, "n": 20},
}


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """``trilemma ARGV`` in this process: exit status, stdout, stderr."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str, *needles: str) -> None:
    """Exit status 2 and a last ``trilemma: error:`` line holding every needle, no traceback."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert lines and lines[-1].startswith("trilemma: error: "), err
    assert "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def train_toy(root: Path) -> tuple[Path, Path]:
    """The 4-step constant-lr toy run (checkpoints at steps 2 and 4): (config, run folder)."""
    cfg = write_config(root / "tiny.yaml", TOY)
    assert main(["train", str(cfg), "--out", str(root / "run"), "--quiet"]) == 0
    return cfg, root / "run"


def copy_run(run: Path, tmp_path: Path) -> Path:
    """A copy of ``run`` to spoil."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def log_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "log.csv", newline="") as f:
        return list(csv.DictReader(f))
