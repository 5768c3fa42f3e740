"""How far is inpainting from the exact conditional? The mixture oracle with one coordinate known.

    python benchmarks/inpaint_oracle.py --out out/inpaint_oracle.json

Data: the 2-D mixture 0.6 N((-1, -1)) + 0.1 N((1, 1)) + 0.3 N((1, -1)), std 0.1 (the one of
tests/test_inpaint.py). Known: x1 = 1, so the exact conditional of x2 is 0.25 N(1, 0.01) +
0.75 N(-1, 0.01) (oracle: ``GaussianMixture.conditional``). For each process and sampler, the
exact score drives replacement (``resample = 0``) and RePaint (``resample = r``, jump 10) on a
fixed 50-step grid (CLD also with ``velocity=keep``: the sampler's velocity of the known pixels
kept, their positions drawn given it); the table gives W1 between the completions' x2 and the
exact conditional (mean and spread over seeds), the share of completions in the x2 = +1 mode
(exact: 0.25), and the true NFE. W1 of n exact samples is about 0.01 at n = 4000 (the noise floor).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from trilemma.metrics.mixture import wasserstein1_1d as w1_to  # noqa: E402
from trilemma.oracle import GaussianMixture  # noqa: E402
from trilemma.processes import get_process  # noqa: E402
from trilemma.samplers.grids import get_grid  # noqa: E402
from trilemma.samplers.inpaint import sample_inpaint  # noqa: E402

# the problem of tests/test_inpaint.py: x1 = 1 known; the exact conditional of x2 is
# 0.25 N(1, 0.1^2) + 0.75 N(-1, 0.1^2)
MIX = GaussianMixture(torch.tensor([[-1.0, -1.0], [1.0, 1.0], [1.0, -1.0]]),
                      torch.tensor([0.6, 0.1, 0.3]), 0.1)
KNOWN = torch.tensor([True, False])
VALUE = torch.tensor([1.0, 0.0])


def run_oracle(proc_name: str, sampler: str, resample: int = 0, jump: int = 10, n: int = 4000,
               steps: int = 50, seed: int = 0, **opts):
    """Inpaint ``n`` copies of VALUE with the exact scores: ``(process, SampleResult)``."""
    proc = get_process(proc_name)
    gen = torch.Generator().manual_seed(seed)
    x0 = VALUE[None].expand(n, 2).clone()
    u_T = proc.prior_sample((n, 2), generator=gen)
    grid = get_grid("quadratic" if proc_name == "cld" else "log_snr", proc, steps)
    return proc, sample_inpaint(MIX.score_fn(proc), proc, u_T, grid, x0, KNOWN.float(),
                                sampler=sampler, resample=resample, jump=jump, generator=gen,
                                **opts)

SETUPS = [("vp", "em", {}), ("vp", "ddim", {"eta": 1.0}), ("vp", "ddim", {"eta": 0.0}),
          ("vp", "pc", {}), ("subvp", "em", {}), ("ve", "em", {}), ("cld", "sscs", {}),
          ("cld", "em", {}), ("cld", "sscs", {"velocity": "keep"})]


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--resample", type=int, nargs="+", default=[0, 4, 16])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--n", type=int, default=4000)
    p.add_argument("--only", default=None, metavar="TEXT",
                   help="only the rows whose 'process sampler options' contain TEXT")
    p.add_argument("--out", default=None, help="also write the rows as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cond = MIX.conditional(VALUE, KNOWN)
    exact = cond.sample(args.n, torch.Generator().manual_seed(99))[0][:, 0]
    print(f"noise floor: W1 of {args.n} exact samples = {w1_to(cond, exact):.4f}")
    print("| process | sampler | resample | NFE | W1 (mean ± sd over seeds) | share x2 > 0 |\n"
          "| --- | --- | --- | --- | --- | --- |")
    rows = []
    for proc, sampler, opts in SETUPS:
        name = sampler + "".join(f" {k}={v:g}" if isinstance(v, float) else f" {k}={v}"
                                 for k, v in opts.items())
        if args.only and args.only not in f"{proc} {name}":
            continue
        for r in args.resample:
            w1s, shares, nfe = [], [], 0
            for seed in args.seeds:
                res = run_oracle(proc, sampler, resample=r, n=args.n, seed=seed, **opts)[1]
                w1s.append(w1_to(cond, res.samples[:, 1]))
                shares.append(float((res.samples[:, 1] > 0).float().mean()))
                nfe = res.nfe
            row = {"process": proc, "sampler": name, "resample": r, "nfe": nfe,
                   "w1": float(np.mean(w1s)), "w1_sd": float(np.std(w1s, ddof=1)),
                   "share_pos": float(np.mean(shares))}
            rows.append(row)
            print(f"| {proc} | {name} | {r} | {nfe} | {row['w1']:.3f} ± {row['w1_sd']:.3f} | "
                  f"{row['share_pos']:.3f} |", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
