"""Progressive distillation on the 25-mode grid from the exact oracle: students at DDIM 4, 2 and
1 steps next to the oracle's own DDIM at the same NFE and at the first teacher's 64 steps.

    python benchmarks/progressive_toy.py --seeds 0,1 --out out/progressive_toy \\
        [--steps-per-round 1200] [--n 5000] [--set KEY=VALUE ...]

For each seed it trains ``configs/toy_pd.yaml`` (teacher ``oracle:grid25``, 64 teacher steps in
the first round) with ``final_steps = 1`` (6 rounds: students of 32, 16, 8, 4, 2, 1 steps),
``steps_per_round`` and a constant learning rate, one torch thread, keeping a checkpoint at every
round's end, timed in CPU seconds (a run folder holding ``model.safetensors`` is reused). The
checkpoint ending the round of ``N`` steps is that student (its EMA weights; with a constant
learning rate it is exactly what a run with ``final_steps = N`` would end with); each draws
``--n`` samples with ``ddim`` at NFE ``N`` (no Tweedie call), and the oracle's DDIM at the same
NFE and at 64 steps draws from the same noise seed (``1000 + seed``). All are scored by
:func:`trilemma.metrics.mixture.oracle_report` against the fixed exact reference of
``benchmarks/consistency_toy.py`` (20 000 exact samples): modes covered, share within 3 sigma,
mode-weight KL, SW2. Writes ``<out>/progressive_toy.json`` and prints a table (mean over seeds,
then each seed's value).

``--vp-student RUN --vp-teacher RUN`` adds rows for a student of a trained VP run (e.g.
``configs/toy_pd_vp.yaml`` trained from ``configs/toy_vp.yaml``'s run): the student's ``ddim`` at
its final N and the teacher run's own ``ddim`` (no Tweedie call) at N and 64 steps, on each
seed's noise.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import trilemma
from consistency_toy import METRICS, reference, score
from trilemma.metrics.mixture import SlicedReference
from trilemma.oracle import grid25
from trilemma.processes import get_process
from trilemma.samplers import sample as run_sampler
from trilemma.train.checkpoint import checkpoint_dir

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "toy_pd.yaml"
START, STUDENT_NFE = 64, (4, 2, 1)


def train_student(seed: int, per_round: int, out: Path, extra: list[str]) -> dict:
    """Train (or reuse) one distillation down to 1 step; returns its run folder and CPU time."""
    run = out / "runs" / f"seed{seed}"
    rounds = START.bit_length() - 1
    if (run / "model.safetensors").exists():
        return {"run": str(run), **json.loads((run / "bench_train.json").read_text())}
    sets = [f"seed={seed}", "device=cpu", f"model.start_steps={START}", "model.final_steps=1",
            f"model.steps_per_round={per_round}", f"train.steps={rounds * per_round}",
            "train.schedule=constant", f"train.ckpt_every={per_round}", "train.keep_last=0",
            "train.sample_every=0", *extra]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    trilemma.train(CONFIG, run, overrides=sets, progress=False)
    info = {"train_cpu_s": time.process_time() - cpu0,
            "train_wall_s": time.perf_counter() - wall0, "steps": rounds * per_round}
    (run / "bench_train.json").write_text(json.dumps(info))
    return {"run": str(run), **info}


def rows_of(seed: int, info: dict, per_round: int, n: int, ref: SlicedReference) -> list:
    """The students' and the oracle's rows of one seed."""
    rows = []
    proc = get_process("vp")
    for nfe in STUDENT_NFE:
        done = (START.bit_length() - 1 - (nfe.bit_length() - 1)) * per_round
        model = trilemma.load(checkpoint_dir(info["run"], done))
        res = model.sample(n, "ddim", nfe, generator=torch.Generator().manual_seed(1000 + seed))
        assert res.nfe == nfe, (res.nfe, nfe)
        rows.append({"model": "PD student", "nfe": nfe, "seed": seed, "steps": done,
                     **score(res.samples, ref)})
    for nfe in (*STUDENT_NFE, START):
        res = run_sampler("ddim", grid25().score_fn(proc), proc, (n, 2), nfe, denoise=False,
                          generator=torch.Generator().manual_seed(1000 + seed),
                          dtype=torch.float64)
        rows.append({"model": "oracle DDIM", "nfe": nfe, "seed": seed, **score(res.samples, ref)})
    return rows


def vp_rows(seed: int, student: str, teacher: str, n: int, ref: SlicedReference) -> list:
    """A trained run teacher's student at its final N and the teacher's DDIM at N and 64."""
    model, rows = trilemma.load(student), []
    nfe = model.student_steps
    for name, m, k in (("PD student of the VP run", model, nfe),
                       ("VP run DDIM", trilemma.load(teacher), nfe),
                       ("VP run DDIM", trilemma.load(teacher), START)):
        res = m.sample(n, "ddim", k, generator=torch.Generator().manual_seed(1000 + seed),
                       denoise=False)
        assert res.nfe == k, (res.nfe, k)
        rows.append({"model": name, "nfe": k, "seed": seed, **score(res.samples, ref)})
    return rows


def table(rows: list) -> str:
    """Markdown: one line per (model, NFE), mean over seeds then each seed's value."""
    keys = sorted({(r["model"], r["nfe"]) for r in rows}, key=lambda k: (k[0], k[1]))
    lines = ["| model | NFE | modes (of 25) | within 3 sigma | mode KL | SW2 |",
             "|---|---|---|---|---|---|"]
    for key in keys:
        sel = [r for r in rows if (r["model"], r["nfe"]) == key]
        cells = []
        for m, fmt in zip(METRICS, ("{:.1f}", "{:.3f}", "{:.4f}", "{:.4f}"), strict=True):
            vals = [r[m] for r in sel]
            cells.append(f"{fmt.format(sum(vals) / len(vals))} "
                         f"({'/'.join(fmt.format(v) for v in vals)})")
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--steps-per-round", type=int, default=1200)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--out", default="out/progressive_toy")
    ap.add_argument("--vp-student", default=None, help="a trained toy_pd_vp run to score too")
    ap.add_argument("--vp-teacher", default=None, help="its teacher run (toy_vp)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override a key of the student's config (repeatable)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    ref = reference()
    rows, train = [], {}
    for seed in (int(s) for s in args.seeds.split(",")):
        info = train_student(seed, args.steps_per_round, out, args.sets)
        train[seed] = info
        print(f"seed {seed}: {info['steps']} steps in {info['train_cpu_s']:.0f} CPU-s",
              flush=True)
        rows += rows_of(seed, info, args.steps_per_round, args.n, ref)
        if args.vp_student and args.vp_teacher:
            rows += vp_rows(seed, args.vp_student, args.vp_teacher, args.n, ref)
    out.mkdir(parents=True, exist_ok=True)
    (out / "progressive_toy.json").write_text(json.dumps({"rows": rows, "train": train,
                                                          "args": vars(args)}, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
