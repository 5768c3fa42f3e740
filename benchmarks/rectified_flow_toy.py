"""1-rectified flow against 2-rectified flow (reflow) on the 25-mode grid, at 1-8 Euler steps.

    python benchmarks/rectified_flow_toy.py train --seeds 0,1 --runs runs/rf_bench
    python benchmarks/rectified_flow_toy.py eval --seeds 0,1 --runs runs/rf_bench --out out/rf
    python benchmarks/rectified_flow_toy.py exact --out out/rf     # exact samples: the floor

``train`` runs ``trilemma train configs/toy_rf.yaml`` (1-RF) and then
``trilemma train configs/toy_reflow.yaml`` with that run as the teacher (2-RF: 20 000 pairs
drawn by Heun at 100 NFE, 50 steps; pair seed = the seed) for each seed, one thread, skipping
runs that exist; then the one-step distillation of that 2-RF on 20 000 fresh pairs of it
(``configs/toy_reflow_distill.yaml``, pair seed 100 + the seed, started from the 2-RF weights).
``eval`` loads each run's EMA weights and samples 5000 points from the same prior noise per seed
with Euler at 1, 2, 4 and 8 steps (a flow's default: uniform in t from ``T = 0.999`` to
``eps = 0.001``, no denoising call, N steps = N NFE) and with the adaptive probability-flow
ODE (dopri5, rtol = atol = 1e-5); every row is scored by the exact oracle (SW2 against 20 000 fixed
exact samples, modes covered, share within 3 sigma of a mode) as in ``benchmarks/toy_precond.py``.
The straightness ``S`` (REFERENCE §10.2, :mod:`trilemma.metrics.straightness`) is measured on 2000
trajectories by RK4 with 100 steps. Writes ``<out>/rectified_flow_toy.json`` and ``.md`` and prints
the table (mean over seeds and each seed's value).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

import trilemma
from trilemma.methods.reflow import flow_velocity
from trilemma.metrics.mixture import SlicedReference, oracle_report, random_directions
from trilemma.metrics.straightness import straightness
from trilemma.oracle import grid25

ROOT = Path(__file__).resolve().parents[1]
EULER_STEPS = (1, 2, 4, 8)
FLOWS = (("1-RF", "toy_rf"), ("2-RF", "toy_reflow"), ("2-RF distilled", "toy_reflow_distill"))
METRICS = ("sw2", "modes_covered", "quality")
N_REFERENCE, REFERENCE_SEED, DIRECTIONS_SEED = 20_000, 10_007, 10_009


def _train(config: str, out: Path, sets: list[str]) -> float:
    """One ``trilemma train`` run at one thread; returns its CPU seconds (children's)."""
    if (out / "model.safetensors").exists():
        print(f"{out} exists: skipped", flush=True)
        return float("nan")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "trilemma.cli", "train", str(ROOT / "configs" / config),
           "--out", str(out), "--threads", "1", "--quiet"]
    for s in sets:
        cmd += ["--set", s]
    before = os.times()
    subprocess.run(cmd, check=True, env=env)
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system
                                                           - before.children_system)
    print(f"{out}: {cpu:.0f} CPU-s", flush=True)
    return cpu


def train(seeds: list[int], runs: Path) -> None:
    """1-RF, 2-RF (teacher: that 1-RF), then its one-step distillation, per seed."""
    for seed in seeds:
        rf = runs / f"toy_rf_s{seed}"
        _train("toy_rf.yaml", rf, [f"seed={seed}"])
        reflow = runs / f"toy_reflow_s{seed}"
        _train("toy_reflow.yaml", reflow,
               [f"seed={seed}", f"model.teacher={rf}", f"model.pair_seed={seed}"])
        _train("toy_reflow_distill.yaml", runs / f"toy_reflow_distill_s{seed}",
               [f"seed={seed}", f"model.teacher={reflow}", f"model.init_from={reflow}",
                f"model.pair_seed={100 + seed}"])


def _reference() -> SlicedReference:
    ref, _ = grid25().sample(N_REFERENCE, torch.Generator().manual_seed(REFERENCE_SEED),
                             dtype=torch.float64)
    dirs = random_directions(2, 256, torch.Generator().manual_seed(DIRECTIONS_SEED))
    return SlicedReference(ref, directions=dirs)


def score_run(run: Path, seed: int, n: int, sliced: SlicedReference) -> dict:
    """Euler at 1-8 steps, the adaptive ODE, and the straightness of one trained flow."""
    model = trilemma.load(run)
    proc = model.process
    rows = []
    for steps in (*EULER_STEPS, None):
        gen = torch.Generator().manual_seed(1000 + seed)
        t0 = time.perf_counter()
        if steps is None:
            res = model.sample(n, "ode", 2000, generator=gen)
        else:
            res = model.sample(n, "euler", steps, generator=gen)
        rep = oracle_report(grid25(), res.samples, reference_samples=sliced)
        rows.append({"sampler": "ode" if steps is None else "euler", "steps": steps,
                     "nfe": res.nfe, "seconds": time.perf_counter() - t0,
                     **{k: rep[k] for k in METRICS}})
    z1 = torch.randn(2000, 2, generator=torch.Generator().manual_seed(2000 + seed))
    st = straightness(flow_velocity(model), z1, t_max=proc.T, t_min=proc.eps, n_steps=100)
    return {"run": run.name, "seed": seed, "rows": rows, "S": st["S"], "S_se": st["S_se"]}


def exact_floor(n: int) -> dict:
    """Exact samples scored the same way (3 draws): the floor of every metric at this n."""
    sliced = _reference()
    vals = []
    for k in range(3):
        x, _ = grid25().sample(n, torch.Generator().manual_seed(20_000 + k), dtype=torch.float64)
        rep = oracle_report(grid25(), x, reference_samples=sliced)
        vals.append({m: rep[m] for m in METRICS})
    line = ("| exact samples | – | – | – | " + _fmt([v["sw2"] for v in vals], 4) + " | "
            + _fmt([v["modes_covered"] for v in vals], 0) + " | "
            + _fmt([v["quality"] for v in vals], 3) + " |")
    print(line)
    return {"n": n, "draws": vals, "row": line}


def _fmt(vals: list[float], digits: int) -> str:
    mean = sum(vals) / len(vals)
    each = "/".join(f"{v:.{digits}f}" for v in vals)
    return f"{mean:.{digits}f} ({each})" if len(vals) > 1 else f"{mean:.{digits}f}"


def evaluate(seeds: list[int], runs: Path, out: Path, n: int) -> dict:
    """Score every run; write and print the table."""
    torch.set_num_threads(1)
    sliced = _reference()
    res: dict[str, list[dict]] = {label: [] for label, _ in FLOWS}
    for seed in seeds:
        for label, name in FLOWS:
            r = score_run(runs / f"{name}_s{seed}", seed, n, sliced)
            res[label].append(r)
            print(f"{label} seed {seed}: S = {r['S']:.4f} ± {r['S_se']:.4f}; " + "; ".join(
                f"{row['sampler']} {row['nfe']}: sw2 {row['sw2']:.4f} modes "
                f"{row['modes_covered']} q {row['quality']:.3f}" for row in r["rows"]),
                flush=True)
    lines = [f"{n} samples per row; each cell: mean over seeds {','.join(map(str, seeds))} "
             "(the seeds' values).", "",
             "| flow | straightness S | sampler | NFE | SW2 | modes covered | within 3σ |",
             "|---|---|---|---|---|---|---|"]
    for label, rs in res.items():
        s_cell = _fmt([r["S"] for r in rs], 4)
        for i, row in enumerate(rs[0]["rows"]):
            nfe = "/".join(sorted({str(r["rows"][i]["nfe"]) for r in rs}))
            name = "adaptive ODE (dopri5)" if row["sampler"] == "ode" else "Euler"
            cells = [_fmt([r["rows"][i]["sw2"] for r in rs], 4),
                     _fmt([r["rows"][i]["modes_covered"] for r in rs], 0),
                     _fmt([r["rows"][i]["quality"] for r in rs], 3)]
            lines.append(f"| {label} | {s_cell} | {name} | {nfe} | " + " | ".join(cells) + " |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "rectified_flow_toy.json").write_text(json.dumps(res, indent=1))
    (out / "rectified_flow_toy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return res


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("command", choices=["train", "eval", "exact"])
    p.add_argument("--seeds", default="0,1", help="comma-separated")
    p.add_argument("--runs", default="runs/rf_bench", help="folder of the run folders")
    p.add_argument("--n", type=int, default=5000, help="samples per row")
    p.add_argument("--out", default="out/rf")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.command == "train":
        train(seeds, Path(args.runs))
    elif args.command == "exact":
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "exact_floor.json").write_text(json.dumps(exact_floor(args.n), indent=1))
    else:
        evaluate(seeds, Path(args.runs), Path(args.out), args.n)


if __name__ == "__main__":
    main()
