"""Where the far outliers of a trained model's 20-call DPM-Solver++(2M) come from on the 25-mode
grid: swap the trained score for the exact one on part of the noise range.

    python benchmarks/precond_outliers.py --variant edm_smooth --seed 0 --budget-cpu-s 150 \\
        --out out/precond_outliers

Trains one variant of ``benchmarks/toy_precond.py`` (same MLP, data, optimiser and CPU budget),
then samples dpm2m-20 (and the adaptive ODE) from the same 20 000 prior draws with the model's
score, the exact score, and two hybrids split at the noise level ``sigma = sigma_t / alpha_t``
given by ``--split`` (default 0.1, 0.3 and 1.0): ``model above, exact below`` (the exact score
finishes what the model started) and ``exact above, model below``. If the model's outliers
vanish when the exact score takes over below a level, the draws were left between the modes at
that level and the model's denoiser does not pull them back. ``--solvers`` adds rows of the
model alone with other 20-call deterministic solvers and grids (``NAME:NFE[:grid=G]``, e.g.
``ddim:20,dpm2m:20:grid=edm``). Writes ``<out>/precond_outliers_<variant>_seed<k>.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from toy_precond import train_variant
from trilemma.metrics.mixture import far_outlier_share
from trilemma.oracle import grid25
from trilemma.samplers import sample as run_sampler


def hybrid(above, below, process, split: float):  # noqa: ANN001, ANN201
    """The score ``above`` where sigma_t / alpha_t > ``split``, ``below`` elsewhere."""

    def fn(u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        high = (process.sigma(t) / process.alpha(t) > split).reshape(-1, *([1] * (u.dim() - 1)))
        return torch.where(high, above(u, t), below(u, t))

    return fn


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="edm_smooth")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget-cpu-s", type=float, default=150.0)
    p.add_argument("--split", default="0.1,0.3,1.0")
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--solvers", default="", help="extra model-only rows, NAME:NFE[:grid=G],...")
    p.add_argument("--out", default="out/precond_outliers")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as work:
        model, info = train_variant(args.variant, args.seed, args.budget_cpu_s, Path(work))
    mix, proc = grid25(), model.process
    exact, learnt = mix.score_fn(proc), model.score_fn()
    fns = {"model": learnt, "exact": exact}
    for s in (float(v) for v in args.split.split(",")):
        fns[f"model above {s:g}, exact below"] = hybrid(learnt, exact, proc, s)
        fns[f"exact above {s:g}, model below"] = hybrid(exact, learnt, proc, s)
    plan = [(name, fn, sampler, nfe, {}) for name, fn in fns.items()
            for sampler, nfe in (("dpm2m", 20), ("ode", 2000))]
    for spec in filter(None, args.solvers.split(",")):
        sampler, nfe, *opts = spec.split(":")
        kw = dict(o.split("=", 1) for o in opts)
        plan.append((f"model ({spec})", learnt, sampler, int(nfe), kw))
    rows = []
    for name, fn, sampler, nfe, kw in plan:
        gen = torch.Generator().manual_seed(1000 + args.seed)
        res = run_sampler(sampler, fn, proc, (args.n, 2), nfe, generator=gen,
                          dtype=torch.float64, **kw)
        far = far_outlier_share(mix, res.samples)
        rows.append({"score": name, "sampler": sampler, "nfe": res.nfe, "far_outliers": far})
        print(f"{name:32s} {sampler:5s} nfe={res.nfe:4d} far outliers {100 * far:.3f} %",
              flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"args": vars(args), "train": info, "rows": rows}
    (out / f"precond_outliers_{args.variant}_seed{args.seed}.json").write_text(
        json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
