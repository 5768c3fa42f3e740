"""benchmarks/mnist_suite.py --dry-run: the plan of the MNIST yardstick (nothing trained)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def dry_run(tmp_path: Path, *extra: str) -> str:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "mnist_suite.py"), "--dry-run",
           "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out"),
           "--mnist-root", str(tmp_path / "mnist"), *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_dry_run_trains_every_config_then_evaluates_and_merges(tmp_path: Path) -> None:
    out = dry_run(tmp_path)
    lines = [ln for ln in out.splitlines() if not ln.startswith("#")]
    configs = sorted(p.stem for p in (ROOT / "configs").glob("mnist_*.yaml")
                     if p.stem not in ("mnist_vp_edm", "mnist_vp_cond"))
    trains = [ln for ln in lines if " train configs/" in ln]
    assert sorted(ln.split("configs/")[1].split(".yaml")[0] for ln in trains) == configs
    assert all("--threads 1" in ln and f"data.root={tmp_path / 'mnist'}" in ln for ln in trains)
    evals = [ln for ln in lines if " evaluate " in ln]
    assert len(evals) == len(configs)
    vp = next(ln for ln in evals if "runs/mnist_vp " in ln)
    assert "dpm2m:5/10/20,em:200,ode" in vp and "--nll 500" in vp
    cld = next(ln for ln in evals if "runs/mnist_cld " in ln)
    assert "sscs:20/50/200,gddim:10/20/50" in cld
    for t in (1, 2, 4):
        ddgan = next(ln for ln in evals if f"runs/mnist_ddgan_t{t} " in ln)
        assert f"ddgan:{t} " in ddgan and "--nll" not in ddgan
        cfg = yaml.safe_load((ROOT / "configs" / f"mnist_ddgan_t{t}.yaml").read_text())
        assert cfg["model"]["num_steps"] == t
    assert " features train mnist " in out and lines[-1].split()[3] == "report"
    assert lines.index(next(ln for ln in lines if "features train" in ln)) < lines.index(vp)


def test_dry_run_marks_finished_runs_as_skipped_and_resumes_partial_ones(tmp_path: Path) -> None:
    (tmp_path / "runs" / "mnist_vp").mkdir(parents=True)
    (tmp_path / "runs" / "mnist_vp" / "model.safetensors").write_bytes(b"")
    (tmp_path / "runs" / "mnist_cld" / "checkpoints").mkdir(parents=True)
    out = dry_run(tmp_path, "--n", "300")
    assert "# train mnist_vp (done, skipped)" in out
    assert "# train mnist_cld\n" in out
    cld = next(ln for ln in out.splitlines() if "configs/mnist_cld.yaml" in ln)
    assert "--resume" in cld
    assert "--n 300" in out
