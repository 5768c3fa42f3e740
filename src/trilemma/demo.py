"""Demo (``make demo``): samplers on exact mixture scores, then a CLD model trained in minutes.

    python -m trilemma.demo --out out/demo

1. The oracle sampler benchmark at small size: every sampler runs on the exact score of Gaussian
   mixtures (no training), so its table shows each sampler's own error against NFE.
2. A critically-damped Langevin diffusion model (HSM, mixed score, MLP) trained on the 25-mode
   grid from an embedded config (a few CPU minutes), sampled with SSCS and gDDIM at small NFE,
   with scatter plots next to the exact data and the oracle metrics of the samples.
A second run reuses the trained model (``--retrain`` trains again). Writes ``demo.md`` and
``demo.json`` with both tables, plus the plots, under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
import yaml

from . import bench
from .cli import main as cli_main
from .metrics.mixture import oracle_report
from .oracle import grid25
from .plots import save_samples
from .setup import load_run

#: the demo's embedded training config (configs/toy_cld.yaml with a shorter schedule)
TOY_CLD = {
    "seed": 0,
    "device": "cpu",
    "process": {"name": "cld"},
    "model": {
        "net": {"name": "mlp", "hidden": 128, "depth": 3, "time_embed": "fourier"},
        "prediction": "mixed",
        "objective": "hsm",
        "weighting": "reweighted",
    },
    "data": {"name": "toy", "toy": "grid25", "n": 100_000},
    "train": {
        "steps": 6000,
        "batch_size": 1024,
        "lr": 2.0e-3,
        "warmup_steps": 100,
        "schedule": "cosine",
        "min_lr": 1.0e-4,
        "ema_decay": 0.999,
        "log_every": 100,
        "ckpt_every": 1000,
        "sample_every": 0,
    },
    "sample": {"sampler": "sscs", "nfe": 50, "n": 2000},
}

#: (sampler, NFE, options) evaluated on the trained model
DEMO_SAMPLERS = [("sscs", 20, {}), ("sscs", 50, {}), ("gddim", 20, {"order": 2}),
                 ("em", 200, {})]


def train_toy_cld(out: Path, steps: int, retrain: bool) -> Path:
    """Train the embedded CLD config with the ``trilemma train`` command; returns the run dir."""
    run = out / "toy_cld"
    if (run / "model.safetensors").is_file() and not retrain:
        print(f"reusing the trained model in {run} (--retrain to train again)")
        return run
    if retrain and run.exists():
        shutil.rmtree(run)
    out.mkdir(parents=True, exist_ok=True)
    cfg = out / "toy_cld.yaml"
    cfg.write_text(yaml.safe_dump(TOY_CLD, sort_keys=False))
    code = cli_main(["train", str(cfg), "--out", str(run), "--set", f"train.steps={steps}",
                     "--set", f"train.warmup_steps={min(100, steps // 10)}"])
    if code != 0:
        raise SystemExit(f"demo: training failed (exit {code})")
    return run


def sample_toy_cld(run: Path, out: Path, n: int, seed: int) -> list[dict]:
    """Sample the trained model with each demo sampler; scatter plots and oracle metrics."""
    model, _, _ = load_run(run)
    mixture = grid25()
    reference, _ = mixture.sample(n, torch.Generator().manual_seed(seed + 1))
    rows = []
    for name, nfe, opts in DEMO_SAMPLERS:
        res = model.sample(n, name, nfe, generator=torch.Generator().manual_seed(seed), **opts)
        rep = oracle_report(mixture, res.samples, generator=torch.Generator().manual_seed(seed))
        label = f"{name}{opts.get('order', '')}_nfe{res.nfe}"
        png = save_samples(res.samples, out / f"toy_cld_{label}.png", reference=reference,
                           title=f"CLD on grid25: {name} {opts or ''} NFE {res.nfe}")
        rows.append({"sampler": name, "options": opts, "nfe": res.nfe, "png": str(png),
                     **{k: rep[k] for k in ("sw2", "quality", "modes_covered", "kl_weights",
                                            "spread_ratio")}})
    return rows


def _table(rows: list[dict]) -> str:
    head = ("| sampler | NFE | SW2 | within 3σ | modes | mode KL | spread |\n"
            "|---|---|---|---|---|---|---|")
    body = [
        f"| {r['sampler']}{' ' + json.dumps(r['options']) if r['options'] else ''} | {r['nfe']} "
        f"| {r['sw2']:.4f} | {r['quality']:.3f} | {r['modes_covered']}/25 | "
        f"{r['kl_weights']:.4f} | {r['spread_ratio']:.3f} |"
        for r in rows
    ]
    return "\n".join([head, *body])


def main(argv: list[str] | None = None) -> dict:
    """Run both parts of the demo and write their tables and plots under ``--out``."""
    p = argparse.ArgumentParser(description="trilemma demo: exact-score samplers, then CLD")
    p.add_argument("--out", default="out/demo", help="output directory (default out/demo)")
    p.add_argument("--seed", type=int, default=0, help="prior-noise seed")
    p.add_argument("--no-diffusers", action="store_true", help="skip the diffusers peer")
    p.add_argument("--train-steps", type=int, default=TOY_CLD["train"]["steps"],
                   help="training steps of the toy CLD model (default %(default)s)")
    p.add_argument("--retrain", action="store_true", help="train the toy CLD model again")
    p.add_argument("--skip-oracle", action="store_true", help="skip the oracle benchmark")
    p.add_argument("--skip-train", action="store_true", help="skip the trained CLD model")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    results: dict = {}
    md = ["# trilemma demo", ""]
    if not args.skip_oracle:
        cfg = bench.BenchConfig.quick()
        cfg.seed = args.seed
        if args.no_diffusers:
            cfg.diffusers = False
        results["oracle"] = bench.run_benchmark(cfg, progress=True)
        paths = bench.write_outputs(results["oracle"], out)
        md += ["## Samplers on exact mixture scores", "", bench.report_markdown(results["oracle"])]
        print(bench.report_markdown(results["oracle"]))
        print("wrote " + ", ".join(str(path) for path in paths.values()))
    if not args.skip_train:
        run = train_toy_cld(out, args.train_steps, args.retrain)
        rows = sample_toy_cld(run, out, n=2000, seed=args.seed)
        results["toy_cld"] = {"run": str(run), "samplers": rows}
        table = _table(rows)
        md += ["", "## CLD trained on the 25-mode grid (HSM, mixed score, MLP)", "",
               f"Run: `{run}` ({args.train_steps} steps); 2000 samples per sampler; "
               "scatter plots `toy_cld_*.png`.", "", table]
        print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo.md").write_text("\n".join(md) + "\n")
    (out / "demo.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"wrote {out / 'demo.md'} and {out / 'demo.json'}")
    return results


if __name__ == "__main__":
    main()
