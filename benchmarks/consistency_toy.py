"""Consistency distillation on the 25-mode grid: students of the exact oracle and of a trained VP
model at 1, 2 and 4 network calls, next to their teacher's DPM-Solver++(2M) at 5 and 10.

    python benchmarks/consistency_toy.py --seeds 0,1 --teacher-run runs/toy_vp \\
        --out out/consistency_toy [--steps 3000] [--n 5000]

For each seed it trains ``configs/toy_cd.yaml`` (teacher ``oracle:grid25``) and
``configs/toy_cd_vp.yaml`` (teacher ``--teacher-run``, a run of ``configs/toy_vp.yaml``) with
``seed`` and ``train.steps`` set, one torch thread, timing the training in CPU seconds (a run
folder that already holds ``model.safetensors`` is reused, not retrained). Every student draws
``--n`` samples at NFE 1, 2, 4 (default noise levels), the teachers draw with dpm2m at NFE 5 and
10 from the same seeds, and at NFE 5 with the analytic teleport and a grid tuned on the
teacher's own ODE (``tune_grid(..., teleport=...)``, the training-free five calls), and the
teacher's own Heun chain down the student's N training levels (what the student distils;
``2 (N - 1)`` teacher calls) starts from the 1-step sample's noise;
all are scored by :func:`trilemma.metrics.mixture.oracle_report` against
20 000 fixed exact samples (as ``benchmarks/toy_precond.py``): modes covered (of 25), share within
3 sigma of its mode (``quality``), KL of the mode weights, SW2. Writes
``<out>/consistency_toy.json`` and prints a table (mean over seeds, then each seed's value) and
the median distance of each 1-step student's samples to the chain's.

``--tune-taus`` adds rows "CD student, tuned levels" at NFE 2 and 4: the inner levels chosen by
:func:`trilemma.methods.consistency_tuning.tune_taus` with the data-only score
(:func:`~trilemma.methods.consistency_tuning.prdc_score` against 4096 training draws of the
mixture, seed 5), tuned on noise seed ``2000 + seed`` and scored, like every other row, on the
evaluation noise ``1000 + seed``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import trilemma
from trilemma.methods.consistency_tuning import prdc_score, tune_taus
from trilemma.metrics.mixture import SlicedReference, oracle_report, random_directions
from trilemma.oracle import grid25
from trilemma.processes import get_process
from trilemma.samplers import GaussianMoments, tune_grid
from trilemma.samplers import sample as run_sampler

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"oracle": ROOT / "configs" / "toy_cd.yaml", "vp": ROOT / "configs" / "toy_cd_vp.yaml"}
STUDENT_NFE = (1, 2, 4)
TUNED_NFE = (2, 4)
TUNE_DATA_SEED, TUNE_N = 5, 4096
TEACHER_NFE = (5, 10)
METRICS = ("modes_covered", "quality", "kl_weights", "sw2")
N_REFERENCE, REFERENCE_SEED, DIRECTIONS_SEED = 20_000, 10_007, 10_009


def reference() -> SlicedReference:
    """The fixed exact reference of ``benchmarks/toy_precond.py``."""
    ref, _ = grid25().sample(N_REFERENCE, torch.Generator().manual_seed(REFERENCE_SEED),
                             dtype=torch.float64)
    return SlicedReference(ref, directions=random_directions(
        2, 256, torch.Generator().manual_seed(DIRECTIONS_SEED)))


def score(samples: torch.Tensor, ref: SlicedReference) -> dict:
    rep = oracle_report(grid25(), samples.to(torch.float64), reference_samples=ref)
    return {k: rep[k] for k in METRICS}


def train_student(teacher: str, seed: int, steps: int, teacher_run: str, out: Path,
                  extra: list[str] | None = None) -> dict:
    """Train (or reuse) one student (``extra``: more ``KEY=VALUE`` overrides of its config);
    returns its run folder and training CPU seconds."""
    run = out / "runs" / f"{teacher}_seed{seed}"
    if (run / "model.safetensors").exists():
        info = json.loads((run / "bench_train.json").read_text())
        return {"run": str(run), **info}
    sets = [f"seed={seed}", f"train.steps={steps}", "device=cpu", *(extra or [])]
    if teacher == "vp":
        sets.append(f"model.teacher={teacher_run}")
    cpu0, wall0 = time.process_time(), time.perf_counter()
    trilemma.train(CONFIGS[teacher], run, overrides=sets, progress=False)
    info = {"train_cpu_s": time.process_time() - cpu0, "train_wall_s": time.perf_counter() - wall0,
            "steps": steps}
    (run / "bench_train.json").write_text(json.dumps(info))
    return {"run": str(run), **info}


def student_rows(teacher: str, seed: int, info: dict, n: int, ref: SlicedReference) -> list:
    model = trilemma.load(info["run"])
    rows = []
    for nfe in STUDENT_NFE:
        res = model.sample(n, "consistency", nfe, generator=torch.Generator().manual_seed(
            1000 + seed))
        rows.append({"teacher": teacher, "model": "CD student", "sampler": "consistency",
                     "nfe": res.nfe, "seed": seed, "train_cpu_s": info["train_cpu_s"],
                     "taus": res.info["taus"], **score(res.samples, ref)})
    return rows


def tuned_rows(teacher: str, seed: int, info: dict, n: int, ref: SlicedReference) -> list:
    """The student at :data:`TUNED_NFE` with levels tuned on training draws (module doc)."""
    model = trilemma.load(info["run"])
    data, _ = grid25().sample(TUNE_N, torch.Generator().manual_seed(TUNE_DATA_SEED))
    rows = []
    for nfe in TUNED_NFE:
        cpu0 = time.process_time()
        tuned = tune_taus(model, nfe, prdc_score(data), n=TUNE_N, seed=2000 + seed)
        cpu = time.process_time() - cpu0
        res = model.sample(n, "consistency", nfe, taus=tuned.taus,
                           generator=torch.Generator().manual_seed(1000 + seed))
        rows.append({"teacher": teacher, "model": "CD student, tuned levels",
                     "sampler": "consistency", "nfe": res.nfe, "seed": seed,
                     "taus": tuned.taus, "tune_cpu_s": cpu, "tune_evaluations": tuned.evaluations,
                     **score(res.samples, ref)})
        print(f"  tuned NFE {nfe}: taus {[round(t, 4) for t in tuned.taus]} "
              f"({tuned.evaluations} evaluations, {cpu:.0f} CPU-s)", flush=True)
    return rows


def chain_row(teacher: str, seed: int, info: dict, n: int, ref: SlicedReference) -> dict:
    """What the student distils: the teacher's Heun chain down the N training levels from the
    1-step sample's noise, scored, and the median distance of the 1-step sample to it."""
    model = trilemma.load(info["run"])
    z = torch.randn(n, 2, generator=torch.Generator().manual_seed(1000 + seed))
    x = z * model.sigma_max
    with torch.no_grad():
        one = model(x, torch.tensor(model.sigma_max, dtype=torch.float64))
    s = model.sigmas
    for k in range(len(s) - 1, 0, -1):
        x = model.teacher.step(x, s[k].expand(n), s[k - 1].expand(n), model.solver)
    return {"teacher": teacher, "model": "teacher Heun chain", "sampler": "heun",
            "nfe": 2 * (len(s) - 1), "seed": seed, **score(x, ref),
            "student_to_chain_median": float((one - x).norm(dim=1).median())}


def teacher_rows(teacher: str, seed: int, teacher_run: str, n: int,
                 ref: SlicedReference) -> list:
    rows = []
    model = trilemma.load(teacher_run) if teacher == "vp" else None
    for nfe in TEACHER_NFE:
        gen = torch.Generator().manual_seed(1000 + seed)
        if model is None:
            proc = get_process("vp")
            res = run_sampler("dpm2m", grid25().score_fn(proc), proc, (n, 2), nfe, generator=gen)
        else:
            res = model.sample(n, "dpm2m", nfe, generator=gen)
        rows.append({"teacher": teacher, "model": "teacher", "sampler": "dpm2m", "nfe": res.nfe,
                     "seed": seed, **score(res.samples, ref)})
    # training-free five calls: teleport + a grid tuned on the teacher's own ODE (no data but
    # the moments; tuning draws of seed 0, scored on the evaluation noise)
    proc = get_process("vp") if model is None else model.process
    score_fn = grid25().score_fn(proc) if model is None else model.score_fn()
    moments = GaussianMoments.from_mixture(grid25())
    with torch.no_grad():
        tuned = tune_grid(score_fn, proc, 5, "dpm2m", teleport=moments, restarts=3,
                          dtype=torch.float32)
    res = run_sampler("dpm2m", score_fn, proc, (n, 2), 5, grid=tuned.grid, teleport=moments,
                      generator=torch.Generator().manual_seed(1000 + seed))
    rows.append({"teacher": teacher, "model": "teacher, teleport + tuned grid",
                 "sampler": "dpm2m", "nfe": res.nfe, "seed": seed, **score(res.samples, ref)})
    return rows


def table(rows: list) -> str:
    """Markdown: one line per (teacher, model, NFE), mean over seeds then each seed's value."""
    keys = sorted({(r["teacher"], r["model"], r["nfe"]) for r in rows},
                  key=lambda k: (k[0], k[1] != "CD student", k[1], k[2]))
    lines = ["| teacher | model | NFE | modes (of 25) | within 3 sigma | mode KL | SW2 |",
             "|---|---|---|---|---|---|---|"]
    for key in keys:
        sel = [r for r in rows if (r["teacher"], r["model"], r["nfe"]) == key]
        cells = []
        for m, fmt in zip(METRICS, ("{:.1f}", "{:.3f}", "{:.4f}", "{:.4f}"), strict=True):
            vals = [r[m] for r in sel]
            each = "/".join(fmt.format(v) for v in vals)
            cells.append(f"{fmt.format(sum(vals) / len(vals))} ({each})")
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--teacher-run", default="runs/toy_vp")
    ap.add_argument("--teachers", default="oracle,vp")
    ap.add_argument("--out", default="out/consistency_toy")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override a key of the students' configs (repeatable), e.g. "
                         "--set model.net.hidden=256")
    ap.add_argument("--tune-taus", action="store_true",
                    help="add rows with the inner levels tuned on training draws (module doc)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    ref = reference()
    rows = []
    for teacher in args.teachers.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            info = train_student(teacher, seed, args.steps, args.teacher_run, out, args.sets)
            print(f"{teacher} seed {seed}: {info['steps']} steps, "
                  f"{info['train_cpu_s']:.0f} CPU-s of training", flush=True)
            rows += student_rows(teacher, seed, info, args.n, ref)
            if args.tune_taus:
                rows += tuned_rows(teacher, seed, info, args.n, ref)
            rows.append(chain_row(teacher, seed, info, args.n, ref))
            rows += teacher_rows(teacher, seed, args.teacher_run, args.n, ref)
    text = table(rows) + "\n\nmedian distance of the 1-step student to the teacher's chain: " + \
        ", ".join(f"{r['teacher']} seed {r['seed']} {r['student_to_chain_median']:.3f}"
                  for r in rows if "student_to_chain_median" in r)
    out.mkdir(parents=True, exist_ok=True)
    (out / "consistency_toy.json").write_text(json.dumps({"args": vars(args), "rows": rows},
                                                         indent=1))
    print(text)


if __name__ == "__main__":
    main()
