"""Tuned time grids at five (and ten) calls: tune on one oracle mixture, score on all.

    python benchmarks/tune_grid.py --print-table                     # tune, ~5 CPU-min
    python benchmarks/tune_grid.py --evaluate --out out/five_calls   # score, 3 seeds
    python benchmarks/tune_grid.py --report out/five_calls/five_calls.json  # re-render

``--print-table`` tunes dpm2m and dpm3m on vp, ve and subvp at NFE 5 and 10 with the exact
score of ``--mixture`` (imbalanced2d; :func:`trilemma.samplers.tune_grid`, sliced W2 to the
fine solve of 1024 draws of seed 0) and prints the entries of
``src/trilemma/samplers/tuned_table.py``. ``--evaluate`` runs, for every mixture and process of
the oracle benchmark and each prior-noise seed, every fixed-step sampler on its default grid,
dpm2m/dpm3m on the stored ``'tuned'`` grid, and dpm3m at 200 calls (the converged
probability-flow map), all against the oracle benchmark's own reference sets (so seed 0 pairs
with the tables of docs/BENCHMARKS.md), and writes five_calls.json and five_calls.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from trilemma import bench
from trilemma.oracle import get_mixture
from trilemma.processes import get_process
from trilemma.samplers import SAMPLERS, tune_grid

TUNED_SAMPLERS = ("dpm2m", "dpm3m", "unipc")
SCALAR = ("vp", "ve", "subvp")
#: best diffusers scheduler at NFE 20 on grid25 / VP, seed 0, n = 6000 (docs/BENCHMARKS.md, "SW2
#: vs NFE", UniPC 0.07509), and the converged probability-flow SW2 of the same draw (dpm3m at
#: NFE 200, 0.07046): the peer ran on grid25 / VP only, so elsewhere the target is this ratio
#: times the converged SW2 of the cell
DIFFUSERS_NFE20 = {("grid25", "vp"): 0.07509}
TARGET_RATIO = 0.07509 / 0.07046
CONVERGED_NFE = 200


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--print-table", action="store_true", help="tune and print the table")
    p.add_argument("--evaluate", action="store_true", help="score the stored tuned grids")
    p.add_argument("--mixture", default="imbalanced2d", choices=bench.MIXTURES,
                   help="tuning mixture (default imbalanced2d)")
    p.add_argument("--objective", default="sw2", choices=("sw2", "rms"),
                   help="distance to the fine solve (default sw2)")
    p.add_argument("--processes", nargs="+", default=list(SCALAR), choices=SCALAR)
    p.add_argument("--samplers", nargs="+", default=list(TUNED_SAMPLERS), choices=TUNED_SAMPLERS)
    p.add_argument("--nfes", nargs="+", type=int, default=[5, 10], help="NFE budgets (5 10)")
    p.add_argument("--n-samples", type=int, default=1024, help="tuning trajectories (1024)")
    p.add_argument("--max-evals", type=int, default=400, help="coarse solves per grid (400)")
    p.add_argument("--tune-seed", type=int, default=0, help="seed of the tuning draws (0)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                   help="prior-noise seeds of --evaluate (0 1 2)")
    p.add_argument("--eval-mixtures", nargs="+", default=list(bench.MIXTURES),
                   choices=bench.MIXTURES)
    p.add_argument("--eval-processes", nargs="+", default=list(bench.PROCESSES),
                   choices=bench.PROCESSES)
    p.add_argument("--out", default="out/five_calls", help="output folder of --evaluate")
    p.add_argument("--report", metavar="JSON", help="re-render five_calls.json (no sampling)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    return p.parse_args(argv)


def tune_all(args: argparse.Namespace) -> dict[tuple[str, str, int], tuple[float, ...]]:
    """Tune every (sampler, process, NFE) on the tuning mixture, then once more starting from
    every sampler's result (dpm3m from dpm2m's grid and the other way round); keep the best."""
    mix = get_mixture(args.mixture)
    table: dict[tuple[str, str, int], tuple[float, ...]] = {}
    for pname in args.processes:
        proc = get_process(pname)
        for nfe in args.nfes:
            best: dict[str, object] = {}
            for rnd in (0, 1):
                found = [torch.tensor(r.fractions) for r in best.values()]
                for sname in args.samplers:
                    t0 = time.perf_counter()
                    res = tune_grid(mix.score_fn(proc), proc, nfe, sname, data_shape=(mix.dim,),
                                    n_samples=args.n_samples, seed=args.tune_seed,
                                    max_evals=args.max_evals, init=found if rnd else None,
                                    objective=args.objective)
                    print(f"{pname} {sname} NFE {nfe} round {rnd} ({res.n_steps} steps): "
                          f"{res.objective} {res.initial_error:.4g} (log_snr) -> "
                          f"{res.error:.4g} in "
                          f"{res.evaluations} solves, {time.perf_counter() - t0:.1f} s",
                          flush=True)
                    if sname not in best or res.error < best[sname].error:
                        best[sname] = res
            for sname, res in best.items():
                table[(sname, pname, res.n_steps)] = res.fractions
    return table


def print_table(table: dict[tuple[str, str, int], tuple[float, ...]]) -> None:
    print("TUNED_FRACTIONS: dict[tuple[str, str, int], tuple[float, ...]] = {")
    for key in sorted(table):
        vals = ", ".join(f"{v:.6f}" for v in table[key])
        print(f"    {key!r}: ({vals}),")
    print("}")


# ---------------------------------------------------------------------- evaluation
def _candidates(pname: str, nfe: int) -> list[tuple[str, str, dict]]:
    """(label, sampler, options) of every run of one cell: the previous samplers on their
    default grids, the tuned ones."""
    proc = get_process(pname)
    out = [(name, name, {}) for name, spec in SAMPLERS.items()
           if spec.supports(proc) and not spec.adaptive]
    if pname in SCALAR:
        out += [(f"{s}+tuned", s, {"grid": "tuned"}) for s in TUNED_SAMPLERS]
    return out


def evaluate(args: argparse.Namespace) -> list[dict]:
    """Every candidate run of every mixture / process / NFE / seed, scored."""
    cfg = bench.BenchConfig()
    records = []
    for mname in args.eval_mixtures:
        mix = get_mixture(mname)
        reference, floor = bench.main_reference(cfg, mname)
        n = cfg.n_samples[mname]
        for pname in args.eval_processes:
            proc = get_process(pname)
            runs = [(nfe, c) for nfe in args.nfes for c in _candidates(pname, nfe)]
            if pname in SCALAR:
                runs.append((CONVERGED_NFE, ("converged", "dpm3m", {})))
            for seed in args.seeds:
                for nfe, (label, sname, opts) in runs:
                    rec = {"mixture": mname, "process": pname, "nfe_budget": nfe,
                           "label": label, "seed": seed, "n": n,
                           "floor_mean": floor["sw2_mean"], "floor_std": floor["sw2_std"]}
                    try:
                        samples, info = bench.run_trilemma(mix, proc, sname, nfe, n, seed,
                                                           **opts)
                        rec.update(info)
                        rec.update(bench.score_samples(mix, samples, reference))
                    except (FloatingPointError, ValueError) as err:
                        rec["error"] = f"{type(err).__name__}: {err}"
                    records.append(rec)
            print(f"{mname}/{pname} done", flush=True)
    return records


def _stats(records: list[dict], **match: object) -> dict[str, dict]:
    """label -> mean/std of SW2 and mean spread over seeds for the matching records."""
    by: dict[str, list[dict]] = {}
    for r in records:
        if all(r.get(k) == v for k, v in match.items()):
            by.setdefault(r["label"], []).append(r)
    out = {}
    for label, rs in by.items():
        sw = [r.get("sw2") for r in rs]
        if any(v is None for v in sw) or any("error" in r for r in rs):
            continue
        spreads = [r.get("spread_ratio") for r in rs if r.get("spread_ratio") is not None]
        out[label] = {"mean": statistics.fmean(sw),
                      "std": statistics.stdev(sw) if len(sw) > 1 else 0.0,
                      "seed0": next((r["sw2"] for r in rs if r["seed"] == 0), None),
                      "spread": statistics.fmean(spreads) if spreads else None,
                      "nfe": rs[0].get("nfe")}
    return out


def _fmt(s: dict | None) -> str:
    return "–" if s is None else f"{s['mean']:.4f} ± {s['std']:.4f}"


def _per_seed_ratio(records: list[dict], cell: dict, label: str) -> list[float]:
    """SW2 of ``label`` over the per-seed target (TARGET_RATIO x that seed's converged SW2)."""
    conv = {r["seed"]: r["sw2"] for r in records if r["label"] == "converged"
            and all(r[k] == cell[k] for k in ("mixture", "process")) and "sw2" in r}
    return [r["sw2"] / (TARGET_RATIO * conv[r["seed"]]) for r in records
            if r["label"] == label and r["seed"] in conv and r.get("sw2") is not None
            and all(r[k] == v for k, v in cell.items())]


#: samplers added with the tuned grids: not "previous"
NEW_SOLVERS = ("unipc",)


def _is_new(label: str) -> bool:
    return "+tuned" in label or label in NEW_SOLVERS


def _row(records: list[dict], mname: str, pname: str, nfe: int) -> str:
    """One markdown row of the summary table."""
    cell = {"mixture": mname, "process": pname, "nfe_budget": nfe}
    st = _stats(records, **cell)
    conv = _stats(records, mixture=mname, process=pname, nfe_budget=CONVERGED_NFE)
    prev = {k: v for k, v in st.items() if not _is_new(k)}
    new = {k: v for k, v in st.items() if _is_new(k)}
    bp = min(prev, key=lambda k: prev[k]["mean"])
    floor = next(r for r in records if r["mixture"] == mname)
    tail = f"{floor['floor_mean']:.4f} ± {floor['floor_std']:.4f} |"
    head = f"| {mname} | {pname} | {nfe} | {bp}: {_fmt(prev[bp])} | "
    if not new:
        return head + "– | " * 8 + tail
    bn = min(new, key=lambda k: new[k]["mean"])
    ratios = _per_seed_ratio(records, cell, bn)
    spread = new[bn]["spread"]
    met = sum(r <= 1.0 for r in ratios)
    ok = spread is not None and 0.8 <= spread <= 1.25
    verdict = f"{met}/{len(ratios)} seeds" + ("" if ok else ", spread out")
    cols = [_fmt(new.get(k)) for k in ("unipc", "dpm2m+tuned", "dpm3m+tuned", "unipc+tuned")]
    return (head + " | ".join(cols) + f" | {_fmt(conv.get('converged'))} | {bn}: "
            f"{' '.join(f'{r:.2f}' for r in ratios)} | {spread:.2f} | {verdict} | " + tail)


def summary_markdown(records: list[dict], seeds: list[int], nfes: list[int]) -> str:
    head = ("| mixture | process | NFE | best previous: SW2 | unipc (log-SNR grid) | "
            "dpm2m + tuned | dpm3m + tuned | unipc + tuned | "
            f"converged (dpm3m, NFE {CONVERGED_NFE}) | best new: SW2 / target, per seed | "
            "spread (best new) | target met | noise floor |\n" + "| --- " * 13 + "|")
    cells = sorted({(r["mixture"], r["process"]) for r in records},
                   key=lambda mp: (bench.MIXTURES.index(mp[0]), bench.PROCESSES.index(mp[1])))
    rows = [_row(records, m, p, nfe) for nfe in nfes for m, p in cells]
    return (f"SW2 mean ± std over prior-noise seeds {', '.join(map(str, seeds))}; target per "
            f"seed = {TARGET_RATIO:.4f} x the converged SW2 of that seed (on grid25 / vp seed 0 "
            "exactly diffusers' best at NFE 20, 0.07509)\n\n" + head + "\n" + "\n".join(rows)
            + "\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.report:
        records = json.loads(Path(args.report).read_text())
        print(summary_markdown(records, sorted({r["seed"] for r in records}), args.nfes))
        return
    if not (args.print_table or args.evaluate):
        raise SystemExit("tune_grid.py: error: give --print-table, --evaluate or --report")
    if args.print_table:
        print_table(tune_all(args))
    if args.evaluate:
        t0 = time.process_time()
        records = evaluate(args)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "five_calls.json").write_text(json.dumps(records, indent=1))
        md = summary_markdown(records, args.seeds, args.nfes)
        (out / "five_calls.md").write_text(md)
        print(md)
        print(f"CPU time {time.process_time() - t0:.0f} s; wrote {out / 'five_calls.json'}, "
              f"{out / 'five_calls.md'}")


if __name__ == "__main__":
    main()
