"""Oracle sampler benchmark: every sampler on the exact Gaussian-mixture score (+ diffusers peer).

    python benchmarks/oracle_samplers.py --out out/bench          # full run (~20 min, 1 core)
    python benchmarks/oracle_samplers.py --quick --out out/bench  # small run (~2 min)
    python benchmarks/oracle_samplers.py --report out/bench/oracle_samplers.json  # re-render

Writes oracle_samplers.json, oracle_samplers.md (tables) and oracle_samplers.png (SW2 vs NFE)
under --out and prints the tables. The work is done by :mod:`trilemma.bench`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from trilemma import bench


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small run (fewer NFEs and samples)")
    p.add_argument("--out", default="out/bench", help="output directory (default out/bench)")
    p.add_argument("--mixtures", nargs="+", choices=bench.MIXTURES, help="subset of mixtures")
    p.add_argument("--processes", nargs="+", choices=bench.PROCESSES, help="subset of processes")
    p.add_argument("--samplers", nargs="+", help="subset of registered samplers")
    p.add_argument("--nfes", nargs="+", type=int, help="NFE budgets (default 5 10 20 50 100 200)")
    p.add_argument("--seed", type=int, default=0, help="prior-noise seed of the main runs")
    p.add_argument("--no-diffusers", action="store_true", help="skip the diffusers peer")
    p.add_argument("--no-overhead", action="store_true", help="skip the per-step timing")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--report", metavar="JSON",
                   help="re-render the tables and plots of an earlier run's JSON (no sampling)")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> bench.BenchConfig:
    """The BenchConfig the flags describe."""
    cfg = bench.BenchConfig.quick() if args.quick else bench.BenchConfig()
    changes: dict = {"seed": args.seed}
    if args.mixtures:
        changes["mixtures"] = tuple(args.mixtures)
    if args.processes:
        changes["processes"] = tuple(args.processes)
    if args.samplers:
        changes["samplers"] = tuple(args.samplers)
    if args.nfes:
        changes["nfes"] = tuple(args.nfes)
    if args.no_diffusers:
        changes["diffusers"] = False
    if args.no_overhead:
        changes["overhead"] = False
    return dataclasses.replace(cfg, **changes)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.report:
        with open(args.report) as fh:
            results = json.load(fh)
        results["headline"] = bench.headline(results)
        paths = bench.write_outputs(results, args.out)
        print(bench.report_markdown(results))
        print("wrote " + ", ".join(str(p) for p in paths.values()))
        return results
    torch.set_num_threads(args.threads)
    cfg = config_from_args(args)
    if cfg.diffusers and bench.diffusers_version() is None:
        print("diffusers is not installed (pip install diffusers; make bench installs it): "
              "skipping the peer")
    results = bench.run_benchmark(cfg, progress=True)
    paths = bench.write_outputs(results, args.out)
    print(bench.report_markdown(results))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return results


if __name__ == "__main__":
    main()
