"""Tune a digits consistency student's multistep levels on the training split, for evaluation
with ``trilemma evaluate`` against the held-out test split.

    python benchmarks/consistency_digits_taus.py runs/digits_cd --features CLASSIFIER \\
        --nfes 2,4 --n 1000 --seed 7 --out out/cd_digits_taus

For each NFE it runs :func:`trilemma.methods.tune_taus` over the student's training grid with a
score on the feature classifier's penultimate features (the file ``trilemma evaluate --features``
uses): ``fd`` (default; the Fréchet distance to the **train** split's features, the quantity the
consistency-model paper tuned on) or ``prdc`` ((1 - precision) + (1 - recall), k = 5). The tuning
samples use noise seed ``--seed``; evaluate with another (``trilemma evaluate --seed 0``), so the
levels are not fit to the draws they are judged on. Prints the ``trilemma evaluate`` command per
NFE and writes ``<out>/taus.json``.
"""

from __future__ import annotations

import argparse
import time

import torch

import trilemma
from common import digits_train_fd, write_json
from trilemma.methods import prdc_score, tune_taus


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a trained consistency student's run folder")
    p.add_argument("--features", required=True, help="the classifier file (safetensors)")
    p.add_argument("--nfes", default="2,4")
    p.add_argument("--n", type=int, default=1000, help="samples per candidate")
    p.add_argument("--seed", type=int, default=7, help="noise seed of the tuning samples")
    p.add_argument("--score", choices=["fd", "prdc"], default="fd")
    p.add_argument("--out", default="out/cd_digits_taus")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model = trilemma.load(args.run)
    data, feats, fd = digits_train_fd(args.features)
    score = fd if args.score == "fd" else prdc_score(data, features=feats)
    result = {"args": vars(args), "tuned": []}
    for nfe in (int(k) for k in args.nfes.split(",")):
        cpu0 = time.process_time()
        tuned = tune_taus(model, nfe, score, n=args.n, seed=args.seed)
        cpu = time.process_time() - cpu0
        taus = "[" + ",".join(f"{t:.10g}" for t in tuned.taus) + "]"
        result["tuned"].append({"nfe": nfe, "taus": tuned.taus, "score": tuned.score,
                                "initial_taus": tuned.initial_taus,
                                "initial_score": tuned.initial_score,
                                "evaluations": tuned.evaluations, "cpu_s": cpu})
        print(f"NFE {nfe}: {args.score} {tuned.initial_score:.2f} at "
              f"{[round(t, 4) for t in tuned.initial_taus]} -> {tuned.score:.2f} at "
              f"{[round(t, 4) for t in tuned.taus]} ({tuned.evaluations} evaluations, "
              f"{cpu:.0f} CPU-s)\n  trilemma evaluate {args.run} --samplers consistency:{nfe} "
              f"--opt 'consistency.taus={taus}' ...", flush=True)
    write_json(args.out, "taus.json", result)
    return result


if __name__ == "__main__":
    main()
