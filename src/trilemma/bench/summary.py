"""The benchmark's headline: best trilemma vs best diffusers sampler, averaged over seeds."""

from __future__ import annotations

import statistics
from typing import Any


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
        out.append({"kind": kind, "sampler": sname, "sw2": statistics.fmean(sw2s),
                    "sw2_seeds": sw2s, "seeds": [r.get("seed") for r in rs],
                    "sw2_std": statistics.stdev(sw2s) if len(rs) > 1 else 0.0,
                    "nfe": rs[0]["nfe"], "spread_ratio": mean("spread_ratio"),
                    "spread_ratio_median": mean("spread_ratio_median"),
                    "within_mode_sw2": mean("within_mode_sw2"),
                    "modes_covered": mean("modes_covered"), "quality": mean("quality"),
                    "kl_weights": mean("kl_weights"), "n_seeds": len(rs)})
    return out


def _best_per_kind(means: list[dict], over: dict[tuple[str, str], float]) -> dict:
    """The lowest-SW2 trilemma and diffusers sampler, each with its per-step overhead."""
    best = {}
    for kind in ("trilemma", "diffusers"):
        cands = [r for r in means if r["kind"] == kind]
        if cands:
            b = min(cands, key=lambda r: r["sw2"])
            best[kind] = {**b, "us_per_step": over.get((kind, b["sampler"]))}
    return best


def _comparison(tb: dict, db: dict, means: list[dict]) -> dict[str, Any]:
    """The checks of best trilemma ``tb`` against best diffusers ``db``."""
    sr = tb["spread_ratio"]
    entry: dict[str, Any] = {"trilemma_beats_diffusers_sw2": tb["sw2"] < db["sw2"]}
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
             nfes: tuple[int, ...] | None = None) -> dict:
    """The target check: best trilemma vs best diffusers SW2 at ``nfes`` on ``mixture``/``process``
    (means over the prior-noise seeds run there), the winner's spread ratio, and the per-step
    overheads of those two."""
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
        best = _best_per_kind(means, over)
        entry: dict[str, Any] = {"best": best}
        if "trilemma" in best and "diffusers" in best:
            entry.update(_comparison(best["trilemma"], best["diffusers"], means))
        entry["all"] = sorted(means, key=lambda r: r["sw2"])
        out[f"nfe{nfe}"] = entry
    floor = results.get("headline_floor") or results["floors"].get(mixture)
    if floor:
        out["noise_floor_sw2"] = floor["sw2_mean"]
        out["noise_floor_sw2_std"] = floor["sw2_std"]
        out["n"] = floor["n"]
        out["n_reference"] = floor["n_reference"]
    return out
