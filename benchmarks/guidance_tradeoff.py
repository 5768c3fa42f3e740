"""The classifier-guidance trade-off of a ``trilemma evaluate --classifier`` report: per
sampler and scale, the share of samples in the asked class, quality and diversity with their
95% intervals, and the time per sample; optionally a plot of them against the scale.

    python benchmarks/guidance_tradeoff.py out/eval/digits_cg --plot out/eval/digits_cg/tradeoff.png

Reads ``results.json`` (rows carry ``classifier_scale``; metrics ``class_share``,
``FD-<data>``, ``precision``, ``recall`` with ``<metric>_ci`` when evaluate ran with
bootstrap intervals).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

KEYS = ("class_share", "precision", "recall", "coverage")


def _cell(m: dict, key: str) -> str:
    v, ci = m.get(key), m.get(f"{key}_ci")
    if v is None:
        return ""
    return f"{v:.3g} [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else f"{v:.3g}"


def _plot(rows: list[dict], fd: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for sampler in sorted({r["sampler"] for r in rows}):
        mine = sorted((r for r in rows if r["sampler"] == sampler),
                      key=lambda r: r["classifier_scale"])
        xs = [r["classifier_scale"] for r in mine]
        for ax, key in zip(axes, ("class_share", fd, "recall"), strict=True):
            ys = [r["metrics"].get(key) for r in mine]
            cis = [r["metrics"].get(f"{key}_ci") or [y, y] for r, y in zip(mine, ys, strict=True)]
            err = [[y - c[0] for y, c in zip(ys, cis, strict=True)],
                   [c[1] - y for y, c in zip(ys, cis, strict=True)]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=f"{sampler}")
            ax.set_xlabel("classifier scale")
            ax.set_title(key)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="an evaluate output folder")
    parser.add_argument("--plot", type=Path, help="also draw the trade-off to this PNG")
    args = parser.parse_args()
    res = json.loads((args.report / "results.json").read_text())
    rows = [r for run in res["runs"] for r in run["rows"] if "classifier_scale" in r]
    if not rows:
        raise SystemExit(f"{args.report}: no classifier-guided rows (evaluate --classifier)")
    fd = next((k for k in rows[0]["metrics"] if k.startswith("FD-") and "_" not in k), "FD")
    keys = ("class_share", fd, *KEYS[1:])
    print("| sampler | NFE | scale | ms/sample | " + " | ".join(keys) + " |")
    print("|" + " --- |" * (4 + len(keys)))
    for r in rows:
        m = r.get("metrics") or {}
        print(f"| {r['sampler']} | {r['nfe']} | {r['classifier_scale']:g} | "
              f"{1e3 * r['seconds_per_sample']:.1f} | "
              + " | ".join(_cell(m, k) for k in keys) + " |")
    if args.plot:
        _plot(rows, fd, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
