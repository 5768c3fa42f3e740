"""Does bf16 autocast train as well as fp32? The MNIST U-Net trained by the trilemma Trainer.

For every seed, the same model (the ``28x28x1`` U-Net of ``benchmarks/train_throughput.py``:
``UNet(base_channels=30, channel_mults=(1, 2, 2), num_res_blocks=2, attn_resolutions=(7,),
dropout=0)``, 1.43 M parameters, VP, eps prediction, DSM with the quality weighting) is trained
twice from the same initial weights, data order and noise: with ``train.precision: fp32`` and
with ``train.precision: bf16`` (the product's code path, :class:`trilemma.train.Trainer`; batch
64, AdamW 2e-4 with 20 warm-up steps, gradient clipping at 1). The two runs of a seed alternate
so that machine load hits both alike.

After the same number of steps each run reports the Trainer's steps/s and its training loss
(mean of the last ``log_every`` steps), and a held-out loss: the DSM loss of the raw weights on
1024 MNIST test images with fixed diffusion times and noise, computed in float32 for both (so
it measures the weights, not the arithmetic of the evaluation). bf16 "trains as well" when its
held-out loss differs from fp32's by no more than the spread between seeds.

Data: the four gzipped MNIST IDX files in ``--mnist-root`` (default: the first
``shared/data/mnist`` folder found in a parent of this repository). ``OMP_WAIT_POLICY``
defaults to ``PASSIVE`` (see train_throughput.py).

Usage::

    python benchmarks/bf16_loss.py --steps 150 --seeds 0,1 --threads 2   # ~10 min on 2 cores
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

from common import find_mnist  # noqa: E402
from trilemma.data import load_mnist  # noqa: E402
from trilemma.methods import ScoreModel  # noqa: E402
from trilemma.nets import UNet  # noqa: E402
from trilemma.processes import VP  # noqa: E402
from trilemma.train import TrainConfig, Trainer  # noqa: E402

UNET = {"base_channels": 30, "channel_mults": (1, 2, 2), "num_res_blocks": 2,
        "attn_resolutions": (7,), "dropout": 0.0}
EVAL_N = 1024
EVAL_SEED = 12345


def make_model(seed: int) -> ScoreModel:
    """The U-Net score model with the weights of ``seed``."""
    torch.manual_seed(seed)
    net = UNet(1, 1, image_size=28, **UNET)
    return ScoreModel(VP(), net, (1, 28, 28), prediction="eps", objective="dsm",
                      weighting="quality")


@torch.no_grad()
def held_out_loss(model: ScoreModel, x: torch.Tensor) -> float:
    """Mean float32 DSM loss on ``x`` with fixed times and noise (the same for every run)."""
    model.eval()
    gen = torch.Generator().manual_seed(EVAL_SEED)
    losses = [model.loss(x[s:s + 256], gen) for s in range(0, len(x), 256)]
    model.train()
    return float(torch.cat(losses).mean())


def train_once(seed: int, precision: str, data: torch.Tensor, x_eval: torch.Tensor,
               steps: int, batch: int) -> dict[str, Any]:
    """Train one model with the Trainer; its speed and losses."""
    model = make_model(seed)
    cfg = TrainConfig(steps=steps, batch_size=batch, lr=2e-4, warmup_steps=min(20, steps - 1),
                      grad_clip=1.0, ema_decay=0.999, log_every=min(50, steps), ckpt_every=0,
                      keep_last=1, seed=seed, precision=precision)
    with tempfile.TemporaryDirectory() as tmp:
        summary = Trainer(model, data, cfg, tmp, progress=False).fit()
    dtypes = sorted({str(p.dtype) for p in model.parameters()})
    return {"seed": seed, "precision": precision, "steps": steps,
            "steps_per_s": summary["steps_per_s"], "seconds": summary["seconds"],
            "train_loss": summary["loss"], "held_out_loss": held_out_loss(model, x_eval),
            "weight_dtypes": dtypes}


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per run, then the paired bf16 - fp32 differences per seed."""
    lines = ["| seed | precision | steps | steps/s | train loss (last log interval) | "
             "held-out loss |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['seed']} | {r['precision']} | {r['steps']} | {r['steps_per_s']:.3f} | "
              f"{r['train_loss']:.4f} | {r['held_out_loss']:.4f} |" for r in rows]
    return "\n".join(lines)


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Speed-up and held-out loss difference bf16 - fp32 per seed, and the spread of the fp32
    held-out loss between seeds (the noise the difference is read against)."""
    by = {(r["seed"], r["precision"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    speed = [by[s, "bf16"]["steps_per_s"] / by[s, "fp32"]["steps_per_s"] for s in seeds]
    diff = [by[s, "bf16"]["held_out_loss"] - by[s, "fp32"]["held_out_loss"] for s in seeds]
    fp32 = [by[s, "fp32"]["held_out_loss"] for s in seeds]
    return {"speedup_per_seed": speed, "held_out_diff_per_seed": diff,
            "fp32_held_out_seed_std": statistics.stdev(fp32) if len(fp32) > 1 else None}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command line entry point; returns the JSON record."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150, help="training steps per run")
    ap.add_argument("--seeds", default="0,1", help="comma-separated seeds (default 0,1)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    ap.add_argument("--mnist-root", help="folder of the MNIST IDX files")
    ap.add_argument("--out", default="out/bench", help="output directory (default out/bench)")
    args = ap.parse_args(argv)
    if args.steps < 2:
        raise SystemExit("--steps must be >= 2")
    torch.set_num_threads(args.threads)
    root = find_mnist(args.mnist_root)
    data, _ = load_mnist(root, "train")
    x_test, _ = load_mnist(root, "test")
    x_eval = x_test[torch.randperm(len(x_test), generator=torch.Generator().manual_seed(0))
                    [:EVAL_N]]
    t0 = time.perf_counter()
    rows = []
    seeds = [int(s) for s in args.seeds.split(",")]
    for i, seed in enumerate(seeds):
        order = ("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32")
        for prec in order:
            r = train_once(seed, prec, data, x_eval, args.steps, args.batch)
            rows.append(r)
            print(f"seed {seed} {prec}: {r['steps_per_s']:.3f} steps/s, train loss "
                  f"{r['train_loss']:.4f}, held-out {r['held_out_loss']:.4f}", flush=True)
    rows.sort(key=lambda r: (r["seed"], r["precision"] != "fp32"))
    record = {"benchmark": "bf16_loss",
              "command": " ".join(["python", "benchmarks/bf16_loss.py",
                                   *(sys.argv[1:] if argv is None else argv)]),
              "unet": UNET, "batch": args.batch, "threads": args.threads,
              "torch": torch.__version__, "python": platform.python_version(),
              "cpu_count": os.cpu_count(), "loadavg_end": os.getloadavg(),
              "rows": rows, "summary": summary(rows), "wall_s": time.perf_counter() - t0}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bf16_loss.json").write_text(json.dumps(record, indent=2))
    print()
    print(table(rows))
    print(json.dumps(record["summary"], indent=1))
    print(f"wall {record['wall_s']:.0f} s; wrote {out / 'bf16_loss.json'}")
    return record


if __name__ == "__main__":
    main()
