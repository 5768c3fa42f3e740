"""Inpainting on held-out digits: classifier accuracy, FD-digits and known-pixel MSE.

    python benchmarks/inpaint_digits.py --vp runs/digits_vp --cld runs/digits_cld \\
        --features out/cache/classifier_digits_8px_steps1500_seed0.safetensors \\
        --n 300 --nfe 100 --out out/inpaint_digits

Takes the first ``--n`` digits of the test split (the split ``trilemma evaluate`` compares
with), hides the right half or the centre square, completes them with VP + EM, VP + DDIM
(eta = 0, the heuristic deterministic case) and CLD + SSCS, each with replacement alone and with
RePaint resampling at the same total NFE (``--resample``/``--jump``), and reports per row:

- ``acc``: the digits classifier's accuracy on the completions against the original labels
  (95% bootstrap interval), with the originals and the masked inputs (hidden pixels mid-grey) as
  the ceiling and the floor;
- ``FD``: FD-digits of the completions against the train split (bootstrap interval; the
  originals' own FD to the train split is the floor at this n);
- ``MSE known``: mean squared error on the known pixels (0: they are kept exactly);
  ``MSE hidden``: on the hidden ones (how far the completion is from the original digit).

Writes ``inpaint_digits.json``, ``inpaint_digits.png`` (per mask: the masked inputs, one row
per sampler, the originals) and each row's completions (``*.npz``) in ``--out``. Rows against
replacement alone carry paired-bootstrap differences (same digits, same resampling counts).
The rows can be split over processes with ``--setups`` and merged afterwards::

    python benchmarks/inpaint_digits.py ... --setups vp:em --out out/inpaint_digits_em
    python benchmarks/inpaint_digits.py --merge out/inpaint_digits_em out/inpaint_digits_ddim \
        --out out/inpaint_digits
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import trilemma
from trilemma.masks import make_mask, masked_view
from trilemma.metrics.bootstrap import (
    bootstrap_counts,
    fd_replicates,
    interval,
    paired_difference,
)
from trilemma.metrics.features import dataset_images, extract_features, load_classifier
from trilemma.metrics.frechet import FrechetReference, gaussian_stats
from trilemma.plots import save_image_grid

MASKS = ("right", "center")


def score(clf, ref: FrechetReference, x: torch.Tensor, labels: torch.Tensor,
          counts: np.ndarray) -> dict:
    """Accuracy and FD-digits of images ``x``, each with its bootstrap interval."""
    x = x.clamp(-1, 1).float()
    with torch.no_grad():
        correct = (clf(x).argmax(1) == labels).double().numpy()
    feats = extract_features(clf, x)
    mu, cov = gaussian_stats(feats)
    fd = ref.distance(mu, cov)
    acc_reps = counts @ correct / counts.sum(1)
    acc = float(correct.mean())
    fd_reps = fd_replicates(ref, feats, counts)
    return {"acc": acc, "acc_ci": interval(acc, acc_reps, bounds=(0.0, 1.0)),
            "fd": fd, "fd_ci": interval(fd, fd_reps), "_reps": {"acc": acc_reps, "fd": fd_reps}}


def paired(row: dict, base: dict) -> dict:
    """``row - base`` for accuracy and FD with paired-bootstrap intervals (same test digits,
    same resampling counts)."""
    return {k: paired_difference(row[k], base[k], row["_reps"][k], base["_reps"][k])
            for k in ("acc", "fd")}


def run_rows(args: argparse.Namespace, images, labels, clf, ref, counts) -> tuple[list, dict]:
    """Every (model, sampler, mask, resample) row, and the completions for the grid."""
    setups = [("vp", args.vp, "em", {}), ("vp", args.vp, "ddim", {"eta": 0.0}),
              ("cld", args.cld, "sscs", {})]
    rows, grids = [], {}
    for proc, run, sampler, opts in setups:
        if run is None or f"{proc}:{sampler}" not in args.setups.split(","):
            continue
        model = trilemma.load(run)
        for preset in MASKS:
            mask = make_mask(preset, tuple(images.shape[1:]))
            for resample in sorted({0, args.resample}):
                jump = args.jump if resample else 1
                gen = torch.Generator().manual_seed(args.seed)
                t0 = time.perf_counter()
                res = trilemma.inpaint(model, images, mask, sampler=sampler, nfe=args.nfe,
                                       resample=resample, jump=jump, generator=gen, **opts)
                seconds = time.perf_counter() - t0
                out = res.samples.detach().clamp(-1, 1)  # as the metrics see images
                known = mask.expand_as(images).bool()
                row = {"process": proc, "sampler": sampler, "opts": opts, "mask": preset,
                       "resample": resample, "jump": jump, "nfe": res.nfe,
                       "steps": res.info["steps"], "seconds": round(seconds, 1),
                       "mse_known": float(((out - images)[known] ** 2).mean()),
                       "mse_hidden": float(((out - images)[~known] ** 2).mean()),
                       **score(clf, ref, out, labels, counts)}
                if resample:
                    row["minus_replacement"] = paired(row, rows[-1])
                rows.append(row)
                print(_line(row), flush=True)
                name = f"{proc}_{sampler}_{preset}_r{resample}"
                np.savez_compressed(Path(args.out) / f"{name}.npz", samples=out.numpy())
                if resample == 0:
                    grids[(preset, f"{proc} {sampler}")] = out[: args.grid]
    for r in rows:
        r.pop("_reps")
    return rows, grids


def _ci(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


def _line(r: dict) -> str:
    name = f"{r['process']} {r['sampler']}" + (" eta=0" if r["sampler"] == "ddim" else "")
    rep = f"r={r['resample']} j={r['jump']}" if r["resample"] else "replacement"
    if "minus_replacement" in r:
        d = r["minus_replacement"]
        rep += (f" (vs replacement: acc {d['acc']['diff']:+.3f} {_ci(d['acc']['ci'])}, FD "
                f"{d['fd']['diff']:+.1f} {_ci(d['fd']['ci'])})")
    return (f"| {r['mask']} | {name} | {rep} | {r['nfe']} | {r['acc']:.3f} {_ci(r['acc_ci'])} "
            f"| {r['fd']:.2f} {_ci(r['fd_ci'])} | {r['mse_known']:.1e} | {r['mse_hidden']:.3f} "
            f"| {r['seconds']} |")


def merge(folders: list[str], out: Path, n_grid: int) -> dict:
    """One JSON and one grid from several outputs of this script (rows split by --setups)."""
    parts = [json.loads((Path(f) / "inpaint_digits.json").read_text()) for f in folders]
    rows = [r for p in parts for r in p["rows"]]
    images = dataset_images("digits", "test", 8)[0][:n_grid]
    tiles, names = [], []
    for preset in MASKS:
        tiles.append(masked_view(images, make_mask(preset, tuple(images.shape[1:]))))
        for r in rows:
            if r["mask"] == preset and r["resample"] == 0:
                name = f"{r['process']}_{r['sampler']}_{preset}_r0"
                folder = next(f for f in folders if (Path(f) / f"{name}.npz").is_file())
                with np.load(Path(folder) / f"{name}.npz") as d:
                    tiles.append(torch.from_numpy(d["samples"][:n_grid]))
                if preset == MASKS[0]:
                    names.append(f"{r['process']} {r['sampler']}")
        tiles.append(images)
    out.mkdir(parents=True, exist_ok=True)
    save_image_grid(torch.cat(tiles).clamp(-1, 1), out / "inpaint_digits.png", nrow=n_grid)
    result = {"parts": folders, "args": parts[0]["args"], "baselines": parts[0]["baselines"],
              "rows": rows, "grid_rows": "per mask (right, center): masked inputs, "
              + ", ".join(names) + ", originals"}
    (out / "inpaint_digits.json").write_text(json.dumps(result, indent=1))
    print(f"merged {len(rows)} rows -> {out / 'inpaint_digits.json'}, "
          f"{out / 'inpaint_digits.png'}")
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vp", help="a VP digits run (configs/digits_vp.yaml)")
    p.add_argument("--cld", help="a CLD digits run (configs/digits_cld.yaml)")
    p.add_argument("--features", help="digits classifier (.safetensors; not for --merge)")
    p.add_argument("--n", type=int, default=300, help="test digits (default 300)")
    p.add_argument("--nfe", type=int, default=100, help="total NFE per completion (default 100)")
    p.add_argument("--resample", type=int, default=2, help="RePaint resampling (default 2)")
    p.add_argument("--jump", type=int, default=5, help="RePaint jump length (default 5)")
    p.add_argument("--setups", default="vp:em,vp:ddim,cld:sscs",
                   help="which of vp:em, vp:ddim, cld:sscs to run (default all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bootstrap", type=int, default=200)
    p.add_argument("--grid", type=int, default=12, help="digits per grid row (default 12)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="out/inpaint_digits")
    p.add_argument("--merge", nargs="+", metavar="DIR",
                   help="only merge earlier outputs (run with --setups) into --out")
    args = p.parse_args(argv)
    if args.merge:
        return merge(args.merge, Path(args.out), args.grid)
    if not args.features:
        p.error("--features: give the digits classifier (trilemma features train digits)")
    torch.set_num_threads(args.threads)
    test_x, test_y = dataset_images("digits", "test", 8)
    images, labels = test_x[: args.n], test_y[: args.n]
    clf = load_classifier(args.features, device="cpu")
    train_x, _ = dataset_images("digits", "train", 8)
    ref = FrechetReference(*gaussian_stats(extract_features(clf, train_x)))
    counts = bootstrap_counts(len(images), args.bootstrap)
    base = []
    for preset in MASKS:  # the floor: classifier and FD of the masked inputs
        masked = masked_view(images, make_mask(preset, tuple(images.shape[1:])))
        base.append({"mask": preset, "what": "masked input", **score(clf, ref, masked, labels,
                                                                     counts)})
    base.append({"mask": "-", "what": "originals", **score(clf, ref, images, labels, counts)})
    for b in base:
        b.pop("_reps")
    print("| mask | inputs | acc [95% CI] | FD-digits [95% CI] |\n| --- | --- | --- | --- |")
    for b in base:
        print(f"| {b['mask']} | {b['what']} | {b['acc']:.3f} {_ci(b['acc_ci'])} | "
              f"{b['fd']:.2f} {_ci(b['fd_ci'])} |")
    print("\n| mask | model, sampler | resampling | NFE | acc [95% CI] | FD-digits [95% CI] | "
          "MSE known | MSE hidden | s |\n" + "| --- " * 9 + "|")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, grids = run_rows(args, images, labels, clf, ref, counts)
    tiles = []
    for preset in MASKS:
        mask = make_mask(preset, tuple(images.shape[1:]))
        tiles.append(masked_view(images[: args.grid], mask))
        tiles += [v for (m, _), v in grids.items() if m == preset]
        tiles.append(images[: args.grid])
    save_image_grid(torch.cat(tiles).clamp(-1, 1), out / "inpaint_digits.png", nrow=args.grid)
    result = {"args": {k: v for k, v in vars(args).items()}, "baselines": base, "rows": rows,
              "grid_rows": [f"{m}: masked, " + ", ".join(k for (mm, k) in grids if mm == m)
                            + ", originals" for m in MASKS]}
    (out / "inpaint_digits.json").write_text(json.dumps(result, indent=1))
    print(f"-> {out / 'inpaint_digits.json'}, {out / 'inpaint_digits.png'}")
    return result


if __name__ == "__main__":
    main()
