"""The benchmark's headline: best trilemma vs best diffusers sampler, averaged over seeds.

A best sampler is named only when the noise separates it from the runner-up
(:func:`trilemma.metrics.bootstrap.rank_with_ties`); otherwise the headline says which samplers
are tied. Two samplers' SW2 are compared by their paired difference: over the prior-noise
seeds when both ran the same two or more seeds (a t interval of the per-seed differences: the
seeds' spread), else by a paired bootstrap of the one seed's samples (the same resampled
indices for both; :mod:`trilemma.metrics.bootstrap`). Significant: the 95% interval of the
difference excludes 0.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import stats

from ..metrics.bootstrap import LEVEL, is_significant, paired_difference, rank_with_ties

#: SW2 bootstrap replicates of one run: (kind, sampler, nfe budget, seed) -> replicates or None
Replicates = Callable[[str, str, int | None, int], np.ndarray | None]


def main_runs(results: dict) -> list[dict]:
    """The runs of the main sweep (the headline set only feeds the headline)."""
    return [r for r in results["runs"] if r.get("set", "main") == "main"]


def run_ok(rec: dict) -> bool:
    """Whether a run record has samples that were scored (no error, an SW2)."""
    return "error" not in rec and rec.get("sw2") is not None


def _seed_means(rows: list[dict]) -> list[dict]:
    """Average each (kind, sampler)'s metrics over its seeds; keeps the spread across seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["kind"], r["sampler"]), []).append(r)
    out = []
    for (kind, sname), rs in groups.items():
        if not all(run_ok(r) for r in rs):
            continue  # a sampler that failed on any seed is not a candidate

        def mean(key: str, rs: list[dict] = rs) -> float | None:
            vals = [r[key] for r in rs if r.get(key) is not None]
            return statistics.fmean(vals) if vals else None

        rs = sorted(rs, key=lambda r: r.get("seed", 0))
        sw2s = [r["sw2"] for r in rs]
        out.append({"kind": kind, "sampler": sname, "nfe_budget": rs[0].get("nfe_budget"),
                    "sw2": statistics.fmean(sw2s),
                    "sw2_seeds": sw2s, "seeds": [r.get("seed") for r in rs],
                    "sw2_std": statistics.stdev(sw2s) if len(rs) > 1 else 0.0,
                    "nfe": rs[0]["nfe"], "spread_ratio": mean("spread_ratio"),
                    "spread_ratio_median": mean("spread_ratio_median"),
                    "within_mode_sw2": mean("within_mode_sw2"),
                    "modes_covered": mean("modes_covered"), "quality": mean("quality"),
                    "kl_weights": mean("kl_weights"), "n_seeds": len(rs)})
    return out


def sw2_difference(a: dict, b: dict, reps: Replicates | None = None) -> dict | None:
    """SW2 of seed-mean ``a`` minus ``b`` with its 95% interval and significance (module
    docstring): ``{"diff", "ci", "significant", "by"}``; None when neither the seeds nor
    replicates allow a paired comparison."""
    if a["seeds"] != b["seeds"]:
        return None
    k = len(a["seeds"])
    if k >= 2:
        d = [x - y for x, y in zip(a["sw2_seeds"], b["sw2_seeds"], strict=True)]
        mean = statistics.fmean(d)
        half = stats.t.ppf(0.5 + LEVEL / 2, k - 1) * statistics.stdev(d) / math.sqrt(k)
        ci = [mean - half, mean + half]
        return {"diff": mean, "ci": ci, "significant": is_significant(ci),
                "by": f"paired t over {k} seeds"}
    if reps is None:
        return None
    seed = a["seeds"][0]
    ra = reps(a["kind"], a["sampler"], a["nfe_budget"], seed)
    rb = reps(b["kind"], b["sampler"], b["nfe_budget"], seed)
    if ra is None or rb is None:
        return None
    return {**paired_difference(a["sw2"], b["sw2"], ra, rb),
            "by": f"paired bootstrap, {len(ra)} resamples"}


def ranking(cands: list[dict], reps: Replicates | None = None) -> dict[str, Any]:
    """Winner (or tie) among seed-means ``cands`` by SW2, with the differences it looked at."""
    names = {r["sampler"]: r for r in cands}
    diffs: list[dict] = []

    def differ(a: str, b: str) -> bool | None:
        d = sw2_difference(names[a], names[b], reps)
        diffs.append({"a": a, "b": b, **(d or {"diff": names[a]["sw2"] - names[b]["sw2"],
                                              "ci": None, "significant": None, "by": None})})
        return None if d is None else d["significant"]

    out = rank_with_ties({k: r["sw2"] for k, r in names.items()}, differ)
    return {"winner": out["winner"], "tied": out["tied"], "differences": diffs}


def _best_per_kind(means: list[dict], over: dict[tuple[str, str], float],
                   reps: Replicates | None = None) -> dict:
    """The lowest-SW2 trilemma and diffusers sampler, each with its per-step overhead and its
    ranking (winner, or the samplers tied with it)."""
    best = {}
    for kind in ("trilemma", "diffusers"):
        cands = [r for r in means if r["kind"] == kind]
        if cands:
            b = min(cands, key=lambda r: r["sw2"])
            best[kind] = {**b, "us_per_step": over.get((kind, b["sampler"])),
                          "ranking": ranking(cands, reps)}
    return best


def _comparison(tb: dict, db: dict, means: list[dict],
                reps: Replicates | None = None) -> dict[str, Any]:
    """The checks of best trilemma ``tb`` against best diffusers ``db``."""
    sr = tb["spread_ratio"]
    entry: dict[str, Any] = {"trilemma_beats_diffusers_sw2": tb["sw2"] < db["sw2"]}
    diff = sw2_difference(tb, db, reps)
    if diff is not None:
        entry["sw2_difference"] = diff
        entry["trilemma_vs_diffusers_significant"] = diff["significant"]
    if tb["seeds"] == db["seeds"]:  # same prior noise per seed: a paired comparison
        diffs = [a - b for a, b in zip(tb["sw2_seeds"], db["sw2_seeds"], strict=True)]
        entry["sw2_diff_per_seed"] = diffs
        entry["trilemma_better_on_every_seed"] = all(d < 0 for d in diffs)
    entry["spread_ratio_in_0.8_1.25"] = sr is not None and 0.8 <= sr <= 1.25
    if tb["us_per_step"] is not None and db["us_per_step"] is not None:
        entry["overhead_not_larger"] = tb["us_per_step"] <= db["us_per_step"]
    # the best trilemma sampler that also keeps the spread ratio in range
    in_range = [r for r in means if r["kind"] == "trilemma"
                and r["spread_ratio"] is not None and 0.8 <= r["spread_ratio"] <= 1.25]
    if in_range:
        b = min(in_range, key=lambda r: r["sw2"])
        entry["best_trilemma_in_spread_range"] = {
            "sampler": b["sampler"], "sw2": b["sw2"], "spread_ratio": b["spread_ratio"],
            "beats_best_diffusers_sw2": b["sw2"] < db["sw2"]}
    return entry


def headline(results: dict, mixture: str = "grid25", process: str = "vp",
             nfes: tuple[int, ...] | None = None, reps: Replicates | None = None) -> dict:
    """The target check: best trilemma vs best diffusers SW2 at ``nfes`` on ``mixture``/``process``
    (means over the prior-noise seeds run there), the winner's spread ratio, and the per-step
    overheads of those two. Each kind's ``ranking`` says whether its best is separated from the
    runner-up (module docstring); ``reps`` gives SW2 bootstrap replicates for one-seed runs."""
    out: dict[str, Any] = {}
    if nfes is None:
        nfes = tuple(results["config"].get("headline_nfes", (10, 20)))
    over = {(o["kind"], o["sampler"]): o["us_per_step"] for o in results.get("overhead", [])}
    runs = [r for r in results["runs"] if r.get("set") == "headline"] or main_runs(results)
    for nfe in nfes:
        rows = [r for r in runs if r["mixture"] == mixture and r["process"] == process
                and r["nfe_budget"] == nfe]
        means = _seed_means(rows)
        if not means:
            continue
        best = _best_per_kind(means, over, reps)
        entry: dict[str, Any] = {"best": best}
        if "trilemma" in best and "diffusers" in best:
            entry.update(_comparison(best["trilemma"], best["diffusers"], means, reps))
        entry["all"] = sorted(means, key=lambda r: r["sw2"])
        out[f"nfe{nfe}"] = entry
    floor = results.get("headline_floor") or results["floors"].get(mixture)
    if floor:
        out["noise_floor_sw2"] = floor["sw2_mean"]
        out["noise_floor_sw2_std"] = floor["sw2_std"]
        out["n"] = floor["n"]
        out["n_reference"] = floor["n_reference"]
    return out
