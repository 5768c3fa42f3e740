"""Demo: the oracle sampler benchmark at small size (about a minute or two on one core).

    python -m trilemma.demo --out out/demo

Every sampler runs on the exact score of Gaussian mixtures (no training), so the table shows
each sampler's own error against NFE; writes the table (printed, JSON, markdown) and a plot.
"""

from __future__ import annotations

import argparse

import torch

from . import bench


def main(argv: list[str] | None = None) -> dict:
    """Run the small benchmark and write ``oracle_samplers.{json,md,png}`` under ``--out``."""
    p = argparse.ArgumentParser(description="trilemma demo: samplers on exact mixture scores")
    p.add_argument("--out", default="out/demo", help="output directory (default out/demo)")
    p.add_argument("--seed", type=int, default=0, help="prior-noise seed")
    p.add_argument("--no-diffusers", action="store_true", help="skip the diffusers peer")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = bench.BenchConfig.quick()
    cfg.seed = args.seed
    if args.no_diffusers:
        cfg.diffusers = False
    results = bench.run_benchmark(cfg, progress=True)
    paths = bench.write_outputs(results, args.out)
    print(bench.report_markdown(results))
    print("wrote " + ", ".join(str(path) for path in paths.values()))
    return results


if __name__ == "__main__":
    main()
