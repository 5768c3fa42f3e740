"""Choose the teleport's landing level for a trained image run on its training split, for
evaluation with ``trilemma evaluate`` against the held-out test split.

    python benchmarks/teleport_digits.py runs/digits_vp --features CLASSIFIER \\
        --sampler dpm2m --nfe 5 --sigmas 1,2,3,4,6,8 --tune --out out/teleport_digits

For each landing level ``sigma_t/alpha_t`` in ``--sigmas`` it draws ``--n`` samples with
``teleport=`` the training data's moments (noise seed ``--seed``) and scores them by the
Fréchet distance to the **train** split's features of the classifier ``--features``; the lowest
wins. ``--tune`` also runs ``tune_grid(..., teleport=...)`` on the model's own probability-flow
ODE (no data: the sliced W2 to a fine solve of ``--tune-n`` draws) and scores its grid the same
way. Evaluate with another seed (``trilemma evaluate --seed 0``) so nothing is fit to the draws
it is judged on; the script prints the commands and writes ``<out>/teleport.json``.
"""

from __future__ import annotations

import argparse
import time

import torch

import trilemma
from common import digits_train_fd, write_json
from trilemma.samplers import GaussianMoments, tune_grid


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a trained digits score model's run folder")
    p.add_argument("--features", required=True, help="the classifier file (safetensors)")
    p.add_argument("--sampler", default="dpm2m")
    p.add_argument("--nfe", type=int, default=5)
    p.add_argument("--sigmas", default="1,2,3,4,6,8", help="landing levels sigma_t/alpha_t")
    p.add_argument("--n", type=int, default=1000, help="samples per candidate")
    p.add_argument("--seed", type=int, default=7, help="noise seed of the candidates")
    p.add_argument("--tune", action="store_true", help="also tune the grid (tune_grid)")
    p.add_argument("--tune-n", type=int, default=256, help="draws of tune_grid")
    p.add_argument("--max-evals", type=int, default=150, help="coarse solves of tune_grid")
    p.add_argument("--out", default="out/teleport_digits")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model = trilemma.load(args.run)
    data, _, fd_train = digits_train_fd(args.features)
    moments = GaussianMoments.from_samples(data)

    def fd(**opts: object) -> float:
        res = model.sample(args.n, args.sampler, args.nfe,
                           generator=torch.Generator().manual_seed(args.seed), **opts)
        assert res.nfe == args.nfe
        return fd_train(res.samples)

    rows = [{"candidate": "no teleport", "fd_train": fd()}]
    for sig in (float(s) for s in args.sigmas.split(",")):
        rows.append({"candidate": f"teleport_sigma={sig:g}", "teleport_sigma": sig,
                     "fd_train": fd(teleport=moments, teleport_sigma=sig)})
        print(f"  {rows[-1]['candidate']}: FD(train) {rows[-1]['fd_train']:.1f}", flush=True)
    if args.tune:
        cpu = time.process_time()
        with torch.no_grad():
            tuned = tune_grid(model.score_fn(), model.process, args.nfe, args.sampler,
                              data_shape=tuple(model.data_shape), n_samples=args.tune_n,
                              max_evals=args.max_evals, teleport=moments, dtype=torch.float32)
        grid = [round(float(t), 6) for t in tuned.grid]
        rows.append({"candidate": "tuned grid", "grid": grid,
                     "tune_cpu_s": time.process_time() - cpu,
                     "fd_train": fd(teleport=moments, grid=torch.tensor(grid))})
        print(f"  tuned grid {grid}: FD(train) {rows[-1]['fd_train']:.1f} "
              f"({rows[-1]['tune_cpu_s']:.0f} CPU-s of tuning)", flush=True)
    best = min(rows[1:], key=lambda r: r["fd_train"])
    opt = (f"{args.sampler}.grid=[{','.join(f'{t:g}' for t in best['grid'])}]" if "grid" in best
           else f"{args.sampler}.teleport_sigma={best['teleport_sigma']:g}")
    command = (f"trilemma evaluate {args.run} --samplers {args.sampler}:{args.nfe} "
               f"--opt {args.sampler}.teleport=data --opt {opt} --features {args.features} "
               "--n 1000 --seed 0 --out <REPORT_DIR>")
    print(f"best on the train split: {best['candidate']} (FD {best['fd_train']:.1f}; without "
          f"teleport {rows[0]['fd_train']:.1f})\n{command}")
    result = {"args": vars(args), "rows": rows, "best": best, "command": command}
    write_json(args.out, "teleport.json", result)
    return result


if __name__ == "__main__":
    main()
