"""Issue 13, part 3: every MNIST run of the yardstick, trained and evaluated by one command.

Trains each ``configs/mnist_*.yaml`` of :data:`RUNS` into ``runs/mnist_*`` at one torch thread
(skipping runs that have their final weights, resuming runs that have checkpoints), trains the
MNIST feature classifier (FD-MNIST, class_kl / min_class_share), evaluates every run with the
issue's samplers and budgets (bits/dim on a test subset for the score models), merges the
reports into one ``report.html`` with ``trilemma report``, and records the CPU time of each
step in ``<out>/cpu_time.json`` (steps skipped now keep the time recorded when they ran).

    python benchmarks/mnist_suite.py --dry-run     # print the commands only
    python benchmarks/mnist_suite.py               # ~8 x 45 CPU-minutes of training, then eval
    make mnist
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

from common import find_mnist

ROOT = Path(__file__).resolve().parents[1]

#: run name -> samplers of ``trilemma evaluate`` (issue 13: VP dpm2m 5/10/20, EM 200, adaptive
#: ODE; CLD SSCS 20/50/200, gDDIM 10/20/50; LSGM dpm2m 5/10/20 -- the CLD prior has no dpm2m,
#: so gDDIM at the same NFE; DDGAN at its T) and whether bits/dim are computed (score models)
RUNS: dict[str, tuple[str, bool]] = {
    "mnist_vp": ("dpm2m:5/10/20,em:200,ode", True),
    "mnist_cld": ("sscs:20/50/200,gddim:10/20/50", True),
    "mnist_lsgm_vp": ("dpm2m:5/10/20", True),
    "mnist_lsgm_cld": ("gddim:5/10/20,sscs:20/50", True),
    "mnist_ddgan_t1": ("ddgan:1", False),
    "mnist_ddgan_t2": ("ddgan:2", False),
    "mnist_ddgan_t4": ("ddgan:4", False),
}


def cli(*args: str) -> list[str]:
    """A ``trilemma`` command run with this Python."""
    return [sys.executable, "-m", "trilemma.cli", *args]


def plan(a: argparse.Namespace) -> list[tuple[str, list[str], bool]]:
    """``(step name, command, already done)`` for every step, in order."""
    runs, out, mnist = Path(a.runs_dir), Path(a.out), str(a.mnist_root)
    threads = ["--threads", str(a.threads)]
    steps: list[tuple[str, list[str], bool]] = []
    for name in RUNS:
        run = runs / name
        resume = ["--resume"] if (run / "checkpoints").is_dir() else []
        steps.append((f"train {name}", cli(
            "train", f"configs/{name}.yaml", "--out", str(run), *resume,
            "--set", f"data.root={mnist}", *threads, "--quiet"),
            (run / "model.safetensors").is_file()))
    clf = out / "classifier_mnist.safetensors"
    steps.append(("features mnist", cli(
        "features", "train", "mnist", "--data-root", mnist, "--steps", str(a.classifier_steps),
        "--out", str(clf), *threads, "--quiet"), clf.is_file()))
    for name, (samplers, nll) in RUNS.items():
        dest = out / "eval" / name
        steps.append((f"evaluate {name}", cli(
            "evaluate", str(runs / name), "--samplers", samplers, "--n", str(a.n),
            "--features", str(clf), "--out", str(dest), *(["--nll", str(a.nll)] if nll else []),
            "--device", "cpu", *threads, "--quiet"), (dest / "results.json").is_file()))
    steps.append(("report", cli("report", *(str(out / "eval" / n) for n in RUNS),
                                "--out", str(out / "report")), False))
    return steps


def run_all(steps: list[tuple[str, list[str], bool]], out: Path) -> float:
    """Run the steps not done yet; record each one's CPU seconds; the total of the record."""
    record_path = out / "cpu_time.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    env = {"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    for name, cmd, done in steps:
        if done:
            print(f"[skip] {name} (done; CPU s recorded: {record.get(name, 'none')})")
            continue
        print(f"[run] {name}: {shlex.join(cmd)}", flush=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, **env})
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        record[name] = round(cpu, 1)
        print(f"[done] {name}: {cpu / 60:.1f} CPU-min, {(time.perf_counter() - wall) / 60:.1f} "
              "wall-min", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps(record, indent=1) + "\n")
    return float(sum(record.values()))


def main(argv: list[str] | None = None) -> None:
    """Parse the flags; print the plan (``--dry-run``) or run it and print the CPU time."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs-dir", default="runs", help="where the runs go (default runs)")
    p.add_argument("--out", default="out/mnist", help="evaluations, report, cpu_time.json")
    p.add_argument("--mnist-root", help="folder of the four MNIST IDX files (default: the "
                   "first shared/data/mnist above this repository)")
    p.add_argument("--n", type=int, default=2000, help="samples per sampler/budget")
    p.add_argument("--nll", type=int, default=500, help="test images for bits/dim")
    p.add_argument("--classifier-steps", type=int, default=3000, help="feature classifier steps")
    p.add_argument("--threads", type=int, default=1, help="torch threads of every step")
    p.add_argument("--dry-run", action="store_true", help="print the commands; run nothing")
    a = p.parse_args(argv)
    if a.dry_run and not a.mnist_root:
        a.mnist_root = "data/mnist"  # a dry run needs no data
    a.mnist_root = find_mnist(a.mnist_root)
    steps = plan(a)
    if a.dry_run:
        for name, cmd, done in steps:
            print(f"# {name}{' (done, skipped)' if done else ''}\n{shlex.join(cmd)}")
        return
    total = run_all(steps, Path(a.out))
    print(f"total CPU time: {total / 3600:.2f} CPU-hours ({total:.0f} s), recorded in "
          f"{Path(a.out) / 'cpu_time.json'}; report: {Path(a.out) / 'report' / 'report.html'}")


if __name__ == "__main__":
    main()
