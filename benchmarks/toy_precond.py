"""EDM preconditioning against VP eps-prediction on the 25-mode grid at a fixed CPU budget.

    python benchmarks/toy_precond.py run --variants eps,edm --seeds 0,1 [--budget-cpu-s 300]
    python benchmarks/toy_precond.py table --out out/precond      # collect every run's JSON
    python benchmarks/toy_precond.py exact --out out/precond      # the exact score's far outliers

Every variant is the MLP of ``benchmarks/toy_quality.py`` (128 x 3, Fourier time embedding),
batch 1024, AdamW 2e-3 with warm-up and cosine decay, one thread; the step count is the CPU-time
budget divided by the CPU seconds per step measured on a 30-step calibration run, so each schedule
ends at the budget. The variants differ only in what the issue asks to ablate:

- ``eps``: VP eps-prediction, uniform t, ``quality`` weighting, sigma_data 0.5 (today's default);
- ``edm``: EDM's preconditioning (prediction ``edm``), log-normal sigma (P_mean -1.2, P_std 1.2)
  and EDM's weighting, sigma_data = the data's RMS (1.415);
- ``precond``: prediction ``edm`` alone (uniform t, ``quality`` weighting);
- ``lognormal``: eps-prediction with log-normal sigma alone (``quality`` weighting);
- ``weighting``: eps-prediction with EDM's weighting alone (uniform t);
- ``eps_ema``: today's model with EMA 0.9999 instead of 0.999 (EMA length);
- ``edm_scaled``: ``edm`` with P_mean shifted by ln(sigma_data / 0.5) = +1.04 to -0.16 (EDM's
  -1.2 was tuned for sigma_data 0.5; this keeps the same sigma / sigma_data distribution);
- ``precond_lognormal``: ``edm`` without EDM's weighting (``quality`` weighting);
- ``edm_wide``: ``edm`` with a 256 x 4 MLP (fewer steps in the same budget);
- ``edm_smooth`` / ``eps_smooth``: ``edm`` / ``eps`` with the Fourier time embedding's scale 1
  instead of 16 (a network smoother in the noise level, which multistep solvers extrapolate);
- ``edm_smooth_wide``: ``edm_smooth`` with a 256 x 4 MLP (give it about 4x the budget).

The EMA weights are sampled with EM 200, DPM-Solver++(2M) 10 and 20, EDM Heun 20 and 35 and the
adaptive probability-flow ODE (dopri5, rtol = atol = 1e-5), all from the same prior noise per seed,
and scored by the oracle metrics against 20 000 fixed exact samples: SW2, share within 3 sigma,
far-outlier share (beyond the 6-sigma radius of every mode, 6.33 std in 2-D), spread ratio.
``run`` writes ``<out>/runs/<variant>_seed<k>.json``; ``table`` writes ``toy_precond.json`` and
``toy_precond.md`` (mean over seeds and each seed's value) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import torch

from common import cpu_seconds_per_step
from trilemma.methods import ScoreModel
from trilemma.metrics.mixture import (
    SlicedReference,
    far_outlier_share,
    oracle_report,
    random_directions,
)
from trilemma.nets import MLP
from trilemma.oracle import grid25
from trilemma.processes import get_process
from trilemma.samplers import sample as run_sampler
from trilemma.train import Trainer

GRID_RMS = 1.415  # sqrt(2 + 0.05^2): what sigma_data: auto estimates for grid25
EDM = {"prediction": "edm", "t_sampling": "lognormal", "weighting": "edm", "sigma_data": GRID_RMS}
VARIANTS: dict[str, dict] = {
    "eps": {},
    "edm": EDM,
    "precond": {"prediction": "edm", "sigma_data": GRID_RMS},
    "lognormal": {"t_sampling": "lognormal", "sigma_data": GRID_RMS},
    "weighting": {"weighting": "edm", "sigma_data": GRID_RMS},
    "eps_ema": {"ema_decay": 0.9999},
    "edm_scaled": {**EDM, "p_mean": -0.16},
    "precond_lognormal": {"prediction": "edm", "t_sampling": "lognormal",
                          "sigma_data": GRID_RMS},
    "edm_wide": {**EDM, "net": {"hidden": 256, "depth": 4}},
    "edm_smooth": {**EDM, "net": {"embed_scale": 1.0}},
    "eps_smooth": {"net": {"embed_scale": 1.0}},
    "edm_smooth_wide": {**EDM, "net": {"embed_scale": 1.0, "hidden": 256, "depth": 4}},
}
SAMPLERS = [("em", 200), ("dpm2m", 10), ("dpm2m", 20), ("edm", 20), ("edm", 35), ("ode", None)]
TRAIN = {"batch_size": 1024, "lr": 2e-3, "warmup_steps": 100, "schedule": "cosine",
         "min_lr": 1e-4, "ema_decay": 0.999, "log_every": 100, "ckpt_every": 10**9}
METRICS = ("sw2", "quality", "far_outliers", "spread_ratio", "modes_covered", "within_mode_sw2")
N_REFERENCE, REFERENCE_SEED, DIRECTIONS_SEED = 20_000, 10_007, 10_009


def build(variant: str, seed: int) -> ScoreModel:
    """The benchmark's VP model of one variant (EMA decay is the trainer's)."""
    kw = {k: v for k, v in VARIANTS[variant].items() if k not in ("ema_decay", "net")}
    torch.manual_seed(seed)
    size = {"hidden": 128, "depth": 3, **VARIANTS[variant].get("net", {})}
    net = MLP(2, 2, time_embed="fourier", **size)
    return ScoreModel(get_process("vp"), net, (2,), **kw)


def score_samplers(model: ScoreModel, n: int, seed: int) -> list[dict]:
    """Every sampler of SAMPLERS from the same seeded prior noise, scored by the oracle."""
    mixture = grid25()
    ref, _ = mixture.sample(N_REFERENCE, torch.Generator().manual_seed(REFERENCE_SEED),
                            dtype=torch.float64)
    dirs = random_directions(2, 256, torch.Generator().manual_seed(DIRECTIONS_SEED))
    sliced = SlicedReference(ref, directions=dirs)
    rows = []
    for name, nfe in SAMPLERS:
        gen = torch.Generator().manual_seed(1000 + seed)
        t0 = time.perf_counter()
        res = model.sample(n, name, nfe if nfe else 2000, generator=gen)
        secs = time.perf_counter() - t0
        rep = oracle_report(mixture, res.samples, reference_samples=sliced)
        rows.append({"sampler": name, "nfe": res.nfe, "seconds": secs,
                     **{k: rep[k] for k in METRICS}})
        print(f"  {name:6s} nfe={res.nfe:4d}: sw2={rep['sw2']:.4f} q={rep['quality']:.4f} "
              f"far={rep['far_outliers']:.4f} spread={rep['spread_ratio']:.3f}", flush=True)
    return rows


def train_variant(variant: str, seed: int, budget: float, work: Path
                  ) -> tuple[ScoreModel, dict]:
    """Train one variant within ``budget`` CPU seconds; its EMA weights and what it cost."""
    data, _ = grid25().sample(100_000, torch.Generator().manual_seed(seed))
    cost = cpu_seconds_per_step(build(variant, seed), data, TRAIN["batch_size"], seed)
    steps = max(200, int(budget / cost))
    model = build(variant, seed)
    ema = VARIANTS[variant].get("ema_decay", TRAIN["ema_decay"])
    trainer = Trainer(model, data, {**TRAIN, "ema_decay": ema, "steps": steps, "seed": seed},
                      work / f"{variant}_{seed}", progress=False)
    cpu0 = time.process_time()
    summary = trainer.fit()
    cpu = time.process_time() - cpu0
    trainer.ema.copy_to(model)
    model.eval()
    print(f"{variant} seed {seed}: {steps} steps, {cpu:.0f} CPU-s, loss {summary['loss']:.4f}",
          flush=True)
    return model, {"variant": variant, "seed": seed, "config": VARIANTS[variant],
                   "budget_cpu_s": budget, "steps": steps, "cpu_s_per_step": cost,
                   "train_cpu_s": cpu, "final_loss": summary["loss"]}


def run_one(variant: str, seed: int, budget: float, n: int, work: Path) -> dict:
    """Train one variant within ``budget`` CPU seconds and score its samplers."""
    model, info = train_variant(variant, seed, budget, work)
    return {**info, "n_samples": n, "rows": score_samplers(model, n, seed)}


def exact_row(n: int) -> dict:
    """Exact samples scored the same way (the floor of every metric at this n)."""
    mixture = grid25()
    ref, _ = mixture.sample(N_REFERENCE, torch.Generator().manual_seed(REFERENCE_SEED),
                            dtype=torch.float64)
    dirs = random_directions(2, 256, torch.Generator().manual_seed(DIRECTIONS_SEED))
    vals = []
    for k in range(3):
        x, _ = mixture.sample(n, torch.Generator().manual_seed(20_000 + k), dtype=torch.float64)
        rep = oracle_report(mixture, x, reference_samples=SlicedReference(ref, directions=dirs))
        vals.append({m: rep[m] for m in METRICS})
    return {"sampler": "exact", "nfe": 0, "seeds": vals}


def _fmt(vals: list[float], key: str) -> str:
    digits = {"sw2": 4, "quality": 4, "far_outliers": 4, "spread_ratio": 3}[key]
    if key == "far_outliers":
        vals = [100 * v for v in vals]
        digits = 2
    mean = sum(vals) / len(vals)
    each = "/".join(f"{v:.{digits}f}" for v in vals)
    return f"{mean:.{digits}f} ({each})" if len(vals) > 1 else f"{mean:.{digits}f}"


def table(out: Path) -> dict:
    """Collect ``out/runs/*.json`` into one JSON and a markdown table (mean and per-seed)."""
    runs = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    by_variant: dict[str, list[dict]] = {}
    for r in runs:
        by_variant.setdefault(r["variant"], []).append(r)
    n = runs[0]["n_samples"] if runs else 5000
    exact = exact_row(n)
    lines = [f"{n} samples per row; each cell: mean over seeds (seed values, in seed order); "
             "far outliers in %.", "",
             "| variant | seeds | steps | train CPU-s | sampler | NFE | SW2 | within 3σ | "
             "far outliers % | spread |", "|---|---|---|---|---|---|---|---|---|---|"]
    for variant in VARIANTS:
        rs = sorted(by_variant.get(variant, []), key=lambda r: r["seed"])
        if not rs:
            continue
        seeds = ",".join(str(r["seed"]) for r in rs)
        steps = "/".join(str(r["steps"]) for r in rs)
        cpu = "/".join(f"{r['train_cpu_s']:.0f}" for r in rs)
        for i, (name, _) in enumerate(SAMPLERS):
            cells = [[r["rows"][i][k] for r in rs] for k in ("sw2", "quality", "far_outliers",
                                                              "spread_ratio")]
            nfe = "/".join(sorted({str(r["rows"][i]["nfe"]) for r in rs}))
            lines.append(f"| {variant} | {seeds} | {steps} | {cpu} | {name} | {nfe} | "
                         + " | ".join(_fmt(c, k) for c, k in zip(
                             cells, ("sw2", "quality", "far_outliers", "spread_ratio"),
                             strict=True)) + " |")
    ex = exact["seeds"]
    lines.append("| exact samples | 3 draws | – | – | – | – | " + " | ".join(
        _fmt([e[k] for e in ex], k) for k in ("sw2", "quality", "far_outliers",
                                               "spread_ratio")) + " |")
    result = {"runs": runs, "exact": exact}
    (out / "toy_precond.json").write_text(json.dumps(result, indent=1))
    (out / "toy_precond.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


EXACT_SAMPLERS = [("em", 200), ("dpm2m", 10), ("dpm2m", 20), ("dpm2m", 50), ("edm", 35),
                  ("ode", None)]


def exact_score(n: int = 20_000, seed: int = 0) -> list[dict]:
    """The samplers on the oracle's exact score (float64): the far-outlier share that
    discretisation alone leaves, the floor for the trained models' rows."""
    mixture, proc = grid25(), get_process("vp")
    rows = []
    for name, nfe in EXACT_SAMPLERS:
        res = run_sampler(name, mixture.score_fn(proc), proc, (n, 2), nfe,
                          generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        far = far_outlier_share(mixture, res.samples.float())
        rows.append({"sampler": name, "nfe": res.nfe, "far_outliers": far})
        print(f"  exact score, {name} nfe={res.nfe}: far outliers {100 * far:.2f} %", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("command", choices=["run", "table", "exact"])
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    p.add_argument("--seeds", default="0,1", help="comma-separated")
    p.add_argument("--budget-cpu-s", type=float, default=300.0, help="CPU seconds per model")
    p.add_argument("--n", type=int, default=5000, help="samples per sampler")
    p.add_argument("--out", default="out/precond")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.command == "table":
        table(out)
        return
    if args.command == "exact":
        torch.set_num_threads(1)
        out.mkdir(parents=True, exist_ok=True)
        (out / "exact_score.json").write_text(json.dumps(exact_score(), indent=1))
        return
    torch.set_num_threads(1)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    for seed in (int(s) for s in args.seeds.split(",")):
        for variant in args.variants.split(","):
            if variant not in VARIANTS:
                raise SystemExit(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
            with tempfile.TemporaryDirectory() as work:
                res = run_one(variant, seed, args.budget_cpu_s, args.n, Path(work))
            if not all(math.isfinite(r["sw2"]) for r in res["rows"]):
                print(f"warning: non-finite SW2 in {variant} seed {seed}")
            (out / "runs" / f"{variant}_seed{seed}.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
