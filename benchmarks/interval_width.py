"""How wide are the 95% intervals of the image metrics at a given n, and which differences can
a paired comparison decide? Real MNIST images and two controlled degradations of them.

The classifier ``trilemma evaluate`` would use for MNIST (``trilemma features train mnist``:
1500 steps, seed 0, cached) scores, against the MNIST test split (10 000 images, the
reference):

- ``real``: n images of the train split (the real-data row of a report);
- ``noise A`` / ``noise B``: the same n images plus Gaussian pixel noise of standard deviation
  ``--noise`` (two values), clamped to [-1, 1]. Both use the *same* noise draw scaled
  differently: like two samplers started from the same prior noise, their errors are
  correlated, which is what a paired comparison exploits.

For every n: each row's value and 95% interval (half-width) for FD-mnist, precision, recall,
density, coverage and IS-mnist, and the paired difference A - B with its interval
(:mod:`trilemma.metrics.bootstrap`, B = ``--repeats`` resamples, reference fixed). A metric's
half-width at n says which differences between rows of one report a reader can trust at that n
(unpaired), the paired half-width what ``report.html``'s significant-differences table can
decide. ``OMP_WAIT_POLICY`` defaults to ``PASSIVE``.

Usage::

    python benchmarks/interval_width.py --ns 500,1000,2000,5000 --threads 1   # ~10 min
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

from common import find_mnist  # noqa: E402
from trilemma.data import load_mnist  # noqa: E402
from trilemma.evaluate.images import measure_images  # noqa: E402
from trilemma.metrics.bootstrap import (  # noqa: E402
    bootstrap_counts,
    paired_difference,
    with_intervals,
)
from trilemma.metrics.features import load_classifier, train_classifier  # noqa: E402
from trilemma.metrics.frechet import FrechetReference  # noqa: E402
from trilemma.metrics.reference import reference_stats  # noqa: E402

KEYS = ("FD-mnist", "precision", "recall", "density", "coverage", "IS-mnist")


def classifier(root: Path, cache: Path, steps: int) -> Any:
    """The MNIST feature classifier, trained once and cached (as trilemma evaluate names it)."""
    path = cache / f"classifier_mnist_28px_steps{steps}_seed0.safetensors"
    if path.is_file():
        return load_classifier(path)
    cache.mkdir(parents=True, exist_ok=True)
    return train_classifier("mnist", steps=steps, seed=0, out_path=path, data_root=root)


def rows_at(n: int, train: torch.Tensor, noise: tuple[float, float]) -> dict[str, torch.Tensor]:
    """The real row and the two degraded rows at ``n`` (first n of a fixed permutation)."""
    x = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:n]]
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    return {"real": x, "noise A": (x + noise[0] * eps).clamp(-1, 1),
            "noise B": (x + noise[1] * eps).clamp(-1, 1)}


def measure(n: int, rows: dict[str, torch.Tensor], clf: Any, ref: dict[str, Any],
            fd_ref: FrechetReference, repeats: int) -> dict[str, Any]:
    """Values, intervals and the paired A - B differences at one n."""
    counts = bootstrap_counts(n, repeats)
    out: dict[str, Any] = {"n": n, "rows": {}, "paired": {}}
    reps = {}
    for name, x in rows.items():
        t0 = time.perf_counter()
        m, _, r = measure_images(x, clf, ref, counts=counts, fd_refs=(fd_ref, None))
        reps[name] = (m, r)
        m = with_intervals(m, r)
        out["rows"][name] = {k: {"value": m[k], "ci": m[f"{k}_ci"]} for k in KEYS}
        out["rows"][name]["seconds"] = time.perf_counter() - t0
    (ma, ra), (mb, rb) = reps["noise A"], reps["noise B"]
    out["paired"] = {k: paired_difference(ma[k], mb[k], ra[k], rb[k]) for k in KEYS}
    return out


def table(results: list[dict[str, Any]]) -> str:
    """Markdown: per n and row, each metric as ``value ± half-width``; then A - B paired."""
    head = "| n | row | " + " | ".join(KEYS) + " |"
    lines = [head, "|" + " --- |" * (len(KEYS) + 2)]
    for res in results:
        for name, m in res["rows"].items():
            cells = [f"{m[k]['value']:.4g} ± {(m[k]['ci'][1] - m[k]['ci'][0]) / 2:.2g}"
                     for k in KEYS]
            lines.append(f"| {res['n']} | {name} | " + " | ".join(cells) + " |")
        cells = []
        for k in KEYS:
            d = res["paired"][k]
            star = " *" if d["significant"] else ""
            cells.append(f"{d['diff']:+.3g} [{d['ci'][0]:+.2g}, {d['ci'][1]:+.2g}]{star}")
        lines.append(f"| {res['n']} | A − B (paired) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command line entry point; returns the JSON record."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ns", default="500,1000,2000,5000", help="comma-separated sample sizes")
    ap.add_argument("--noise", default="0.1,0.12", help="the two noise levels A,B")
    ap.add_argument("--repeats", type=int, default=200, help="bootstrap resamples (200)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--classifier-steps", type=int, default=1500)
    ap.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/trilemma"))
    ap.add_argument("--mnist-root", help="folder of the MNIST IDX files")
    ap.add_argument("--out", default="out/bench", help="output directory (default out/bench)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    root, cache = find_mnist(args.mnist_root), Path(args.cache_dir)
    noise = tuple(float(s) for s in args.noise.split(","))
    t0 = time.perf_counter()
    clf = classifier(root, cache, args.classifier_steps).eval()
    ref = reference_stats(clf, "mnist", "test", None, cache, data_root=root)
    fd_ref = FrechetReference(ref["mu"], ref["cov"])
    train, _ = load_mnist(root, "train")
    results = []
    for n in (int(s) for s in args.ns.split(",")):
        results.append(measure(n, rows_at(n, train, noise), clf, ref, fd_ref, args.repeats))
        print(f"n = {n} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    record = {"benchmark": "interval_width",
              "command": " ".join(["python", "benchmarks/interval_width.py",
                                   *(sys.argv[1:] if argv is None else argv)]),
              "noise": noise, "repeats": args.repeats, "threads": args.threads,
              "classifier_sha256": clf.fingerprint, "reference_n": ref["provenance"]["n"],
              "torch": torch.__version__, "results": results,
              "wall_s": time.perf_counter() - t0}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "interval_width.json").write_text(json.dumps(record, indent=1))
    print(table(results))
    print(f"wall {record['wall_s']:.0f} s; wrote {out / 'interval_width.json'}")
    return record


if __name__ == "__main__":
    main()
