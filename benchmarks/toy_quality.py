"""Train VP-DSM and CLD-HSM on the 25-mode grid for a fixed CPU budget, score samples vs NFE.

    python benchmarks/toy_quality.py [--budget-cpu-s 300] [--quick] [--out out/bench]

Both models get the same MLP (128 x 3, Fourier time embedding), batch, optimiser and CPU-time
budget: the number of steps is the budget divided by the CPU seconds per step measured on a short
calibration run, so the cosine schedule ends exactly at the budget. Samples from the EMA weights
are scored with the oracle metrics of ``trilemma.metrics.mixture`` (SW2 against exact samples,
share within 3 sigma, modes covered, mode-weight KL, spread ratio) at several NFE. Writes
``toy_quality.json`` and ``toy_quality.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from common import cpu_seconds_per_step
from trilemma.methods import ScoreModel
from trilemma.metrics.mixture import oracle_report
from trilemma.nets import MLP
from trilemma.oracle import grid25
from trilemma.processes import get_process
from trilemma.train import Trainer

MODELS = {
    "vp-dsm": {"process": "vp", "samplers": ["em", "dpm2m", "heun", "ode"]},
    "cld-hsm": {"process": "cld", "samplers": ["em", "sscs", "gddim", "ode"]},
}
TRAIN = {"batch_size": 1024, "lr": 2e-3, "warmup_steps": 100, "schedule": "cosine",
         "min_lr": 1e-4, "ema_decay": 0.999, "log_every": 100, "ckpt_every": 10**9}


def build(process_name: str, seed: int) -> ScoreModel:
    """The benchmark's model: an MLP score network for 2-D data."""
    process = get_process(process_name)
    torch.manual_seed(seed)
    net = MLP(2 * process.k, 2, hidden=128, depth=3, time_embed="fourier")
    return ScoreModel(process, net, (2,))


def run(budget: float, n_samples: int, nfes: list[int], seed: int, work: Path) -> dict:
    """Train both models within ``budget`` CPU seconds each and evaluate every sampler/NFE."""
    mixture = grid25()
    data, _ = mixture.sample(100_000, torch.Generator().manual_seed(seed))
    out: dict = {"budget_cpu_s": budget, "n_samples": n_samples, "seed": seed, "models": {}}
    for label, spec in MODELS.items():
        cost = cpu_seconds_per_step(build(spec["process"], seed), data, TRAIN["batch_size"],
                                    seed)
        steps = max(200, int(budget / cost))
        model = build(spec["process"], seed)
        trainer = Trainer(model, data, {**TRAIN, "steps": steps, "seed": seed},
                          work / label, progress=True)
        cpu0 = time.process_time()
        summary = trainer.fit()
        cpu = time.process_time() - cpu0
        trainer.ema.copy_to(model)
        model.eval()
        rows = []
        for name in spec["samplers"]:
            for nfe in ([None] if name == "ode" else nfes):
                opts = {"order": 2} if name == "gddim" else {}
                gen = torch.Generator().manual_seed(seed + 1)
                t0 = time.perf_counter()
                res = model.sample(n_samples, name, nfe if nfe else 2000, generator=gen, **opts)
                secs = time.perf_counter() - t0
                rep = oracle_report(mixture, res.samples,
                                    generator=torch.Generator().manual_seed(seed + 2))
                rows.append({"sampler": name, "nfe": res.nfe, "seconds": secs,
                             **{k: rep[k] for k in ("sw2", "quality", "modes_covered",
                                                    "kl_weights", "spread_ratio")}})
                print(f"{label} {name} nfe={res.nfe}: sw2={rep['sw2']:.4f} "
                      f"q={rep['quality']:.3f} modes={rep['modes_covered']}")
        out["models"][label] = {"process": spec["process"], "steps": steps,
                                "cpu_s_per_step": cost, "train_cpu_s": cpu,
                                "final_loss": summary["loss"], "rows": rows}
    exact, _ = mixture.sample(n_samples, torch.Generator().manual_seed(seed + 3))
    rep = oracle_report(mixture, exact, generator=torch.Generator().manual_seed(seed + 2))
    out["exact_samples"] = {k: rep[k] for k in ("sw2", "quality", "modes_covered", "kl_weights",
                                                "spread_ratio")}
    return out


def markdown(results: dict) -> str:
    """The results as a markdown table (one row per model/sampler/NFE)."""
    lines = [
        f"Budget {results['budget_cpu_s']:.0f} CPU-s per model, {results['n_samples']} samples, "
        f"seed {results['seed']}.",
        "",
        "| model | steps | train CPU-s | sampler | NFE | SW2 | within 3σ | modes | mode KL | "
        "spread |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, m in results["models"].items():
        for r in m["rows"]:
            lines.append(
                f"| {label} | {m['steps']} | {m['train_cpu_s']:.0f} | {r['sampler']} | {r['nfe']} "
                f"| {r['sw2']:.4f} | {r['quality']:.3f} | {r['modes_covered']}/25 | "
                f"{r['kl_weights']:.4f} | {r['spread_ratio']:.3f} |"
            )
    e = results["exact_samples"]
    lines.append(f"| exact samples | – | – | – | – | {e['sw2']:.4f} | {e['quality']:.3f} | "
                 f"{e['modes_covered']}/25 | {e['kl_weights']:.4f} | {e['spread_ratio']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Parse arguments, run, write JSON and markdown."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget-cpu-s", type=float, default=300.0, help="CPU seconds per model")
    p.add_argument("--n", type=int, default=5000, help="samples per sampler/NFE")
    p.add_argument("--nfe", default="10,20,50,100,200", help="comma-separated NFE budgets")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="40 CPU-s per model, 2000 samples")
    p.add_argument("--out", default="out/bench", help="output directory")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    budget, n = (40.0, 2000) if args.quick else (args.budget_cpu_s, args.n)
    with tempfile.TemporaryDirectory() as work:
        results = run(budget, n, [int(x) for x in args.nfe.split(",")], args.seed, Path(work))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "toy_quality.json").write_text(json.dumps(results, indent=1))
    table = markdown(results)
    (out / "toy_quality.md").write_text(table + "\n")
    print(table)
    return results


if __name__ == "__main__":
    main()
