"""Issue 17's grid target with a time grid tuned to the trained model: does the 20-call
DPM-Solver++(2M) of an EDM-preconditioned VP model on the 25-mode grid lose its far outliers
when its grid is tuned to that model's own probability-flow ODE?

    python benchmarks/precond_tuned_grid.py --seeds 0,1 --budget-cpu-s 150 --out out/precond_tuned
    python benchmarks/precond_tuned_grid.py --variant edm_smooth --objective rms --nfes 20 \
        --tune-n 4096 --out out/precond_tuned_rms

Per seed: trains the ``edm`` variant of ``benchmarks/toy_precond.py`` (same MLP, data, optimiser,
CPU budget), tunes dpm2m's grid at 10 and 20 calls with :func:`trilemma.samplers.tune_grid` on the
model's score (1024 prior draws of a separate seed against a 256-step reference solve, sliced W2),
then draws 5000 samples per row from the same prior noise (EM 200, dpm2m 10/20 on the default
log-SNR grid and on the tuned grid) scored by the oracle metrics against 20 000 exact samples.
``--variant`` picks another variant of that benchmark, ``--objective rms`` tunes on the RMS
distance of each draw to its fine solve (which charges draws that end in another place, e.g.
between the modes) instead of the sliced W2, ``--nfes`` the budgets and ``--tune-n`` the tuning
draws. Writes ``<out>/precond_tuned_grid.json`` and prints a table (far outliers in %).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from toy_precond import DIRECTIONS_SEED, N_REFERENCE, REFERENCE_SEED, train_variant
from trilemma.metrics.mixture import SlicedReference, oracle_report, random_directions
from trilemma.oracle import grid25
from trilemma.samplers import tune_grid

KEYS = ("sw2", "quality", "far_outliers", "spread_ratio")


def score_rows(model, grids: dict[int, torch.Tensor], n: int, seed: int) -> list[dict]:  # noqa: ANN001
    """EM 200 and dpm2m at each budget on the default and the tuned grid, same prior noise."""
    mixture = grid25()
    ref, _ = mixture.sample(N_REFERENCE, torch.Generator().manual_seed(REFERENCE_SEED),
                            dtype=torch.float64)
    sliced = SlicedReference(ref, directions=random_directions(
        2, 256, torch.Generator().manual_seed(DIRECTIONS_SEED)))
    plan = [("em", 200, None)] + [(s, k, g) for k in sorted(grids)
                                  for s, g in (("dpm2m", None), ("dpm2m", "tuned"))]
    rows = []
    for name, nfe, grid in plan:
        opts = {"grid": grids[nfe]} if grid == "tuned" else {}
        res = model.sample(n, name, nfe, generator=torch.Generator().manual_seed(1000 + seed),
                           **opts)
        rep = oracle_report(mixture, res.samples, reference_samples=sliced)
        rows.append({"sampler": name, "nfe": res.nfe, "grid": grid or "default",
                     **{k: rep[k] for k in KEYS}})
        print(f"  {name} {res.nfe:3d} {grid or 'default':7s} sw2={rep['sw2']:.4f} "
              f"q={rep['quality']:.4f} far={100 * rep['far_outliers']:.2f}% "
              f"spread={rep['spread_ratio']:.3f}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--budget-cpu-s", type=float, default=150.0)
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--variant", default="edm", help="a variant of benchmarks/toy_precond.py")
    p.add_argument("--objective", default="sw2", choices=["sw2", "rms"])
    p.add_argument("--nfes", default="10,20", help="comma-separated budgets to tune")
    p.add_argument("--tune-n", type=int, default=1024, help="prior draws the tuner uses")
    p.add_argument("--out", default="out/precond_tuned")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        with tempfile.TemporaryDirectory() as work:
            model, info = train_variant(args.variant, seed, args.budget_cpu_s, Path(work))
        grids, tuning = {}, {}
        for nfe in (int(k) for k in args.nfes.split(",")):
            t0 = time.process_time()
            tg = tune_grid(model.score_fn(), model.process, nfe, "dpm2m", data_shape=(2,),
                           seed=500 + seed, objective=args.objective, n_samples=args.tune_n)
            grids[nfe] = tg.grid
            tuning[nfe] = {"error": tg.error, "initial_error": tg.initial_error,
                           "evaluations": tg.evaluations, "cpu_s": time.process_time() - t0,
                           "grid": tg.grid.tolist()}
            print(f"seed {seed} tuned dpm2m-{nfe}: {args.objective} to the fine solve "
                  f"{tg.initial_error:.4f} -> {tg.error:.4f} "
                  f"({tuning[nfe]['cpu_s']:.0f} CPU-s)", flush=True)
        runs.append({**info, "tuning": tuning, "rows": score_rows(model, grids, args.n, seed)})
    lines = ["| seed | sampler | NFE | grid | SW2 | within 3σ | far outliers % | spread |",
             "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        for row in r["rows"]:
            lines.append(f"| {r['seed']} | {row['sampler']} | {row['nfe']} | {row['grid']} | "
                         f"{row['sw2']:.4f} | {row['quality']:.4f} | "
                         f"{100 * row['far_outliers']:.2f} | {row['spread_ratio']:.3f} |")
    print("\n".join(lines))
    result = {"runs": runs, "n_samples": args.n, "args": vars(args)}
    (out / "precond_tuned_grid.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
