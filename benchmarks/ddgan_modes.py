"""DDGAN mode coverage on the 25-Gaussian grid: T in {1, 2, 4, 8}, with and without the latent z.

The claim under test (REFERENCE §8, Xiao et al. 2022): a few large denoising steps, each a
conditional GAN, cover all 25 modes where a one-step GAN (T = 1) collapses onto a few.
(docs/RESULTS.md, "DDGAN on the 25-Gaussian grid": with this config it did not collapse.)

Every run trains ``configs/toy_ddgan.yaml`` (FiLM MLP generator, MLP discriminator) with the
library's Trainer for a fixed **CPU-time** budget per run (``time.process_time``, robust to the
other jobs on a shared machine): a short calibration run measures the CPU seconds per step, the
run then gets ``budget / (seconds per step)`` steps (its cosine schedule spans them). Each run is
scored on 5000 samples of its EMA generator (and of the raw one, in the JSON) against the exact
mixture (:func:`trilemma.metrics.mixture.mode_metrics`): modes covered (>= 1 sample within the
3-sigma-mass radius), the share of samples within it, the KL of the found mode weights to the
true ones, and NFE (= T).

    python benchmarks/ddgan_modes.py --quick    # ~5 min: T = 1, 4 (+ T = 4 no z), 1 seed
    python benchmarks/ddgan_modes.py            # ~25 min: 8 variants x 2 seeds, 60 CPU s each
    python benchmarks/ddgan_modes.py --budget-s 120 --seeds 0 1 2 --steps-t 1 4

Writes ``ddgan_modes.json``, ``ddgan_modes.md`` and ``ddgan_modes.png`` (sample scatter plots,
first seed of each variant) under ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from trilemma.build import build_dataset, build_model, build_train_config, data_shape_of
from trilemma.config import load_config
from trilemma.metrics.mixture import mode_metrics
from trilemma.oracle import grid25
from trilemma.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "toy_ddgan.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="T = 1 and 4 with z, T = 4 without z, one seed, 80 s CPU each")
    p.add_argument("--budget-s", type=float, help="CPU seconds of training per run "
                   "(default 60; 80 with --quick)")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds (default 0 1; 0 with --quick)")
    p.add_argument("--steps-t", type=int, nargs="+", metavar="T",
                   help="numbers of denoising steps (default 1 2 4 8)")
    p.add_argument("--no-z", choices=("both", "only", "never"), default=None,
                   help="variants without the latent: both (default), only, never")
    p.add_argument("--n", type=int, default=5000, help="samples scored per run (default 5000)")
    p.add_argument("--config", default=str(CONFIG), help="the toy DDGAN config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every run, e.g. --set train.lr=5e-4")
    p.add_argument("--out", default="out/ddgan_modes", help="output directory")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    return p.parse_args(argv)


def variants(args: argparse.Namespace) -> list[tuple[int, bool]]:
    """(T, use_z) pairs to run."""
    if args.quick and not args.steps_t and args.no_z is None:
        return [(1, True), (4, True), (4, False)]
    steps = args.steps_t or [1, 2, 4, 8]
    mode = args.no_z or "both"
    zs = {"both": [True, False], "only": [False], "never": [True]}[mode]
    return [(t, z) for z in zs for t in steps]


def run_config(args: argparse.Namespace, T: int, use_z: bool, seed: int, steps: int | None):
    """The resolved config of one run."""
    sets = [*args.overrides, f"model.num_steps={T}", f"sample.nfe={T}",
            f"model.use_z={str(use_z).lower()}", f"seed={seed}", "train.sample_every=0",
            "train.ckpt_every=0", "train.keep_last=1"]
    if steps is not None:
        sets += [f"train.steps={steps}", f"train.log_every={max(1, steps // 10)}"]
    return load_config(args.config, sets)


def train(config: Any, out_dir: Path) -> tuple[Any, Trainer, dict, float]:
    """Train one run; returns (model, trainer, summary, CPU seconds)."""
    torch.manual_seed(config.seed)
    ds = build_dataset(config)
    model = build_model(config, data_shape_of(ds))
    data = ds.data if hasattr(ds, "data") else ds
    trainer = Trainer(model, data, build_train_config(config), out_dir, progress=False)
    c0 = time.process_time()
    summary = trainer.fit()
    return model, trainer, summary, time.process_time() - c0


def calibrate(args: argparse.Namespace, T: int, use_z: bool, workdir: Path) -> float:
    """CPU seconds per training step (400 steps, the first 50 not counted; the end-of-run
    checkpoint inside the timing makes it err on the side of fewer steps)."""
    cfg = run_config(args, T, use_z, 0, 400)
    torch.manual_seed(0)
    ds = build_dataset(cfg)
    model = build_model(cfg, data_shape_of(ds))
    out = workdir / f"calib_T{T}_z{int(use_z)}"
    tr = Trainer(model, ds.data if hasattr(ds, "data") else ds, build_train_config(cfg), out,
                 progress=False)
    tr.fit(until=50)
    c0 = time.process_time()
    tr.fit()
    return (time.process_time() - c0) / 350


def score(model: Any, n: int, seed: int) -> tuple[dict, torch.Tensor]:
    """Mode metrics of ``n`` samples (fixed sampling seed) and the samples."""
    res = model.sample(n, "ddgan", model.num_steps, generator=torch.Generator().manual_seed(seed))
    mm = mode_metrics(grid25(), res.samples)
    keep = ("modes_covered", "quality", "kl_weights", "spread_ratio_median", "mode_offset")
    return {**{k: mm[k] for k in keep}, "nfe": res.nfe}, res.samples


def label(T: int, use_z: bool) -> str:
    return f"T={T}" + ("" if use_z else " no z")


def summarise(runs: list[dict]) -> list[dict]:
    """Per variant: mean (and min/max) over seeds of the EMA metrics."""
    rows = []
    for key in dict.fromkeys((r["T"], r["use_z"]) for r in runs):
        rs = [r for r in runs if (r["T"], r["use_z"]) == key]
        ema = [r["ema"] for r in rs]
        row = {"variant": label(*key), "T": key[0], "use_z": key[1], "seeds": len(rs),
               "nfe": key[0], "steps": statistics.mean(r["steps"] for r in rs),
               "cpu_s": statistics.mean(r["cpu_s"] for r in rs)}
        for k in ("modes_covered", "quality", "kl_weights"):
            vals = [e[k] for e in ema]
            row[k] = statistics.mean(vals)
            row[k + "_min"], row[k + "_max"] = min(vals), max(vals)
        row["modes_per_seed"] = [e["modes_covered"] for e in ema]
        row["raw_modes_per_seed"] = [r["raw"]["modes_covered"] for r in rs]
        rows.append(row)
    return rows


def markdown(rows: list[dict], meta: dict) -> str:
    head = ("| variant | NFE | seeds | steps | CPU s | modes covered (per seed) | "
            "within 3σ | mode KL |\n|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        per = ", ".join(str(m) for m in r["modes_per_seed"])
        lines.append(
            f"| {r['variant']} | {r['nfe']} | {r['seeds']} | {r['steps']:.0f} | "
            f"{r['cpu_s']:.0f} | {r['modes_covered']:.1f} / 25 ({per}) | "
            f"{100 * r['quality']:.1f}% | {r['kl_weights']:.3f} |")
    note = (f"\nBudget {meta['budget_s']:.0f} CPU s per run, {meta['n']} EMA samples per run; "
            "'within 3σ': share of samples within the 3-sigma-mass radius of their mode "
            "(exact samples: 99.7%); mode KL: KL(true || found mode weights).")
    return "\n".join(lines) + note


def plot(runs: list[dict], samples: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(samples)
    steps = sorted({k[0] for k in keys})
    zs = [z for z in (True, False) if any(k[1] == z for k in keys)]
    fig, axes = plt.subplots(len(zs), len(steps), figsize=(3.2 * len(steps), 3.2 * len(zs)),
                             squeeze=False)
    centres = grid25().means
    for i, z in enumerate(zs):
        for j, t in enumerate(steps):
            ax = axes[i][j]
            ax.set_xlim(-2.8, 2.8)
            ax.set_ylim(-2.8, 2.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if (t, z) not in samples:
                ax.axis("off")
                continue
            x = samples[(t, z)][:2000]
            ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4)
            ax.scatter(centres[:, 0], centres[:, 1], s=12, marker="x", c="red", linewidths=0.8)
            r = next(r for r in runs if (r["T"], r["use_z"]) == (t, z))
            ax.set_title(f"{label(t, z)}: {r['ema']['modes_covered']}/25, "
                         f"{100 * r['ema']['quality']:.0f}% in 3σ", fontsize=9)
    fig.suptitle("DDGAN on grid25 (first seed, EMA generator)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    budget = args.budget_s or (80.0 if args.quick else 60.0)
    seeds = args.seeds or ([0] if args.quick else [0, 1])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="ddgan_modes_"))
    runs, samples = [], {}
    t_start = time.perf_counter()
    try:
        for T, use_z in variants(args):
            per_step = calibrate(args, T, use_z, workdir)
            steps = max(100, int(budget / per_step))
            for seed in seeds:
                cfg = run_config(args, T, use_z, seed, steps)
                model, trainer, summary, cpu = train(cfg, workdir / f"T{T}_z{int(use_z)}_s{seed}")
                raw, _ = score(model, args.n, 1000 + seed)
                with trainer.ema.swap_in(model):
                    ema, x = score(model, args.n, 1000 + seed)
                if (T, use_z) not in samples:
                    samples[(T, use_z)] = x
                run = {"T": T, "use_z": use_z, "seed": seed, "steps": steps, "cpu_s": cpu,
                       "cpu_s_per_step": per_step, "phase_losses": summary.get("phase_losses"),
                       "ema": ema, "raw": raw}
                runs.append(run)
                print(f"{label(T, use_z):>9} seed {seed}: {steps} steps, {cpu:.0f} CPU s; EMA "
                      f"{ema['modes_covered']}/25 modes, {100 * ema['quality']:.1f}% in 3σ, KL "
                      f"{ema['kl_weights']:.3f} (raw {raw['modes_covered']}/25, "
                      f"{100 * raw['quality']:.1f}%)", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows = summarise(runs)
    cfg0 = run_config(args, 4, True, 0, None)
    meta = {"budget_s": budget, "seeds": seeds, "n": args.n, "config": str(args.config),
            "overrides": args.overrides, "resolved_config": cfg0.to_dict(),
            "wall_s": time.perf_counter() - t_start, "torch": torch.__version__,
            "threads": args.threads}
    result = {"meta": meta, "summary": rows, "runs": runs}
    (out / "ddgan_modes.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    table = markdown(rows, meta)
    (out / "ddgan_modes.md").write_text(table + "\n")
    plot(runs, samples, out / "ddgan_modes.png")
    print(table)
    print(f"wrote {out / 'ddgan_modes.json'}, {out / 'ddgan_modes.md'}, "
          f"{out / 'ddgan_modes.png'} ({meta['wall_s'] / 60:.1f} min)")
    return result


if __name__ == "__main__":
    main()
