"""Which digits do the samples of a report show? Class counts and confidence of the classifier.

    python benchmarks/digit_classes.py out/eval/digits            # every samples/*.npz
    python benchmarks/digit_classes.py out/eval/digits --json out/eval/digits/classes.json

Reads the ``samples/*.npz`` that ``trilemma evaluate`` saves next to its report, classifies
them with the same cached digits classifier (``--features``, default the one evaluate trains and
caches: ``classifier_digits_8px_steps1500_seed0.safetensors`` in ``$TRILEMMA_CACHE`` or
``~/.cache/trilemma``), and prints per sampler: the mean top-class probability, the share of
samples classified with probability > 0.9 and the class counts 0-9 — a mode-collapse check
(a missing or over-represented digit shows up directly), with the real test and train splits
as the baseline. Samples are clamped to [-1, 1], as evaluate does before feature extraction.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from trilemma.metrics.features import dataset_images, load_classifier


def default_classifier() -> Path:
    """Where ``trilemma evaluate`` caches its default digits classifier."""
    cache = Path(os.environ.get("TRILEMMA_CACHE", Path.home() / ".cache" / "trilemma"))
    return cache / "classifier_digits_8px_steps1500_seed0.safetensors"


@torch.no_grad()
def summarise(model: torch.nn.Module, x: torch.Tensor) -> dict:
    """Mean top-class probability, share above 0.9 and class counts of images ``x``."""
    probs = torch.softmax(model(x.clamp(-1, 1).float()), dim=1)
    top, cls = probs.max(dim=1)
    counts = torch.bincount(cls, minlength=probs.shape[1])
    return {"n": len(x), "mean_top_prob": float(top.mean()),
            "share_above_0.9": float((top > 0.9).float().mean()),
            "class_counts": [int(c) for c in counts]}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("report", help="a trilemma evaluate output folder (with samples/*.npz)")
    p.add_argument("--features", default=None, help="classifier file (default: evaluate's cache)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)

    path = Path(args.features) if args.features else default_classifier()
    if not path.is_file():
        p.error(f"--features: no classifier at {str(path)!r}; run `trilemma features train "
                "digits` (or `trilemma evaluate` once) first, or pass --features PATH")
    files = sorted((Path(args.report) / "samples").glob("*.npz"))
    if not files:
        p.error(f"report: no samples/*.npz under {args.report!r} (is it a trilemma evaluate "
                "output folder?)")
    model = load_classifier(path, device="cpu")
    rows: dict[str, dict] = {}
    for split in ("test", "train"):
        x, _ = dataset_images("digits", split, 8)
        rows[f"real {split} split"] = summarise(model, x[:1000])
    for f in files:
        with np.load(f) as d:
            rows[f.stem] = summarise(model, torch.from_numpy(d["samples"]))

    print("| samples | n | mean top-class prob. | share > 0.9 | class counts 0-9 |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        print(f"| {name} | {r['n']} | {r['mean_top_prob']:.3f} | {r['share_above_0.9']:.3f} | "
              f"{' '.join(map(str, r['class_counts']))} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"classifier": str(path), "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
