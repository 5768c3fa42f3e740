"""An evaluation's results as rows: CSV columns, metric order, ``results.csv`` and markdown.

Works on the dict of :func:`trilemma.evaluate.evaluate_run` (or of
:func:`~trilemma.evaluate.merge_results`): ``runs``, each with ``rows`` (one per
sampler/budget) and an optional ``baseline`` (real data scored the same way).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .format import fmt, md_table

PathLike = str | os.PathLike

#: columns of the CSV before the metrics (in this order)
BASE_COLUMNS = (
    "kind", "run", "method", "sampler", "label", "guidance", "options", "nfe_budget",
    "adaptive", "nfe",
    "nfe_min", "nfe_max", "steps", "n", "seed", "batch_size", "seconds_per_sample",
    "samples_per_second",
    "timed_samples", "timed_seconds", "warmup_seconds", "warmup_batch", "peak_memory_mb",
    "memory_method", "sampling_precision", "n_nonfinite",
)
TAIL_COLUMNS = ("extractor_sha256", "grid", "samples_file", "error")
#: metric columns in display order (prefix match for the named ones such as FD-digits)
METRIC_ORDER = (
    "class_share", "FD-", "FID", "precision", "recall", "density", "coverage", "IS-",
    "class_kl", "min_class_share", "sw2",
    "sw2_floor",
    "sw2_floor_std", "quality", "modes_covered", "n_modes", "mode_coverage", "kl_weights",
    "spread_ratio", "spread_ratio_median", "mode_offset", "within_mode_sw2", "far_outliers",
)
#: metrics left out of the HTML table (kept in JSON/CSV)
HIDDEN_IN_TABLE = ("mode_counts", "n_reference", "n_reference_prdc", "is_splits",
                   "quality_radius", "n")
#: column titles of the HTML table (the JSON/CSV keep the keys)
DISPLAY_NAMES = {
    "class_share": "asked-class share", "class_kl": "class KL",
    "min_class_share": "min class share", "sw2": "SW2", "sw2_floor": "SW2 floor",
    "sw2_floor_std": "SW2 floor std",
    "quality": "share within 3σ", "modes_covered": "modes covered", "n_modes": "modes",
    "mode_coverage": "share of modes covered", "kl_weights": "mode-weight KL",
    "spread_ratio": "spread ratio", "spread_ratio_median": "spread ratio (median)",
    "mode_offset": "mode offset", "within_mode_sw2": "within-mode SW2",
    "far_outliers": "far outliers (>6σ)",
}


#: what follows a metric's name in the columns derived from it, in column order
SUFFIXES = ("_ci_lo", "_ci_hi", "_ci", "_std", "_sd")


def metric_rank(key: str) -> tuple[int, str]:
    """Sort key of a metric column: its place in METRIC_ORDER; its interval bounds, then its
    spread right after the metric itself."""
    suffix = next((i + 1 for i, s in enumerate(SUFFIXES) if key.endswith(s)), 0)
    base = key[: -len(SUFFIXES[suffix - 1])] if suffix else key
    for i, prefix in enumerate(METRIC_ORDER):
        if base == prefix or (prefix.endswith("-") and base.startswith(prefix)):
            return (i * (len(SUFFIXES) + 1) + suffix, key)
    return (len(METRIC_ORDER) * (len(SUFFIXES) + 1), key)


def is_interval_key(key: str) -> bool:
    """Whether ``key`` holds a metric's 95% interval ``[lo, hi]`` (``<metric>_ci``)."""
    return key.endswith("_ci")


def metric_keys(results: dict[str, Any], include_hidden: bool = True) -> list[str]:
    """All metric names in the rows and baselines, in display order. Without hidden keys,
    the intervals ``<metric>_ci`` are left out too (tables print them with their metric)."""
    keys: list[str] = []
    for run in results["runs"]:
        recs = [r.get("metrics") or {} for r in run["rows"]]
        if run.get("baseline"):
            recs.append(run["baseline"].get("metrics") or {})
        for m in recs:
            for k in m:
                if k not in keys and (include_hidden or not (
                        k in HIDDEN_IN_TABLE or is_interval_key(k))):
                    keys.append(k)
    return sorted(keys, key=metric_rank)


def _flat_metrics(m: dict[str, Any]) -> dict[str, Any]:
    """A row's metrics as CSV cells: each interval ``<key>_ci`` as ``<key>_ci_lo`` and
    ``<key>_ci_hi``."""
    out: dict[str, Any] = {}
    for k, v in m.items():
        if is_interval_key(k):
            lo, hi = v if isinstance(v, (list, tuple)) and len(v) == 2 else (None, None)
            out[f"{k}_lo"], out[f"{k}_hi"] = lo, hi
        else:
            out[k] = v
    return out


def csv_metric_keys(results: dict[str, Any]) -> list[str]:
    """The metric columns of results.csv: :func:`metric_keys` with each interval split into
    its two bounds."""
    keys = []
    for k in metric_keys(results):
        keys += [f"{k}_lo", f"{k}_hi"] if is_interval_key(k) else [k]
    return sorted(keys, key=metric_rank)


def value_text(row: dict[str, Any], key: str) -> str:
    """A metric's cell: its value, then its interval ``[lo, hi]`` when it has one."""
    ci = interval_text(row.get(f"{key}_ci"))
    return f"{fmt(row.get(key))} {ci}" if ci else fmt(row.get(key))


def interval_text(ci: Any, digits: int = 3) -> str:
    """``[lo, hi]`` of an interval for a table cell (empty when there is none)."""
    if not isinstance(ci, (list, tuple)) or len(ci) != 2 or None in ci:
        return ""
    return f"[{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]"


def quality_metric(run: dict[str, Any]) -> tuple[str, str] | None:
    """``(key, axis label)`` of a run's headline quality metric (lower is better)."""
    ext = run.get("extractor")
    if ext:
        key = ext["metric_name"]
        if key == "FID":  # an image folder scored with Inception features alone
            return key, "FID (Inception-v3 features; lower is better)"
        return key, f"{key} (classifier features, not FID; lower is better)"
    if run.get("data", {}).get("kind") == "toy" and run.get("reference"):
        return "sw2", "SW2 to the reference samples (lower is better)"
    return None


def diversity_metric(run: dict[str, Any]) -> tuple[str, str] | None:
    """``(key, axis label)`` of a run's coverage metric: modes covered or recall."""
    if run.get("data", {}).get("oracle_mixture") and run.get("reference"):
        return "modes_covered", "modes covered (higher is better)"
    if run.get("reference"):
        return "recall", "recall (k = 3; higher is better)"
    return None


def table_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat rows (baseline first per run) with metrics as columns."""
    out = []
    for run in results["runs"]:
        sha = (run.get("extractor") or {}).get("sha256")
        base = run.get("baseline")
        if base:
            out.append({"kind": "baseline", "run": run["label"], "method": run["method"],
                        "sampler": "(baseline)", "label": base["label"], "n": base["n"],
                        "seed": base.get("seed", results["settings"].get("seed")),
                        "extractor_sha256": sha, **(base.get("metrics") or {})})
        for r in run["rows"]:
            flat = {k: v for k, v in r.items() if k not in ("metrics", "warnings")}
            flat["kind"] = "sample"
            flat["extractor_sha256"] = sha
            flat.update(r.get("metrics") or {})
            out.append(flat)
    return out


def write_csv(results: dict[str, Any], path: PathLike) -> Path:
    """``results.csv``: one row per run/sampler/budget plus the baselines; each interval
    ``<metric>_ci`` in two columns ``<metric>_ci_lo`` and ``<metric>_ci_hi``."""
    rows = [_flat_metrics(r) for r in table_rows(results)]
    cols = list(BASE_COLUMNS) + csv_metric_keys(results) + list(TAIL_COLUMNS)
    extra = sorted({k for r in rows for k in r} - set(cols))
    cols += extra
    path = Path(path)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: (json.dumps(v) if isinstance(v, (dict, list)) else
                            "" if v is None else v) for k, v in r.items()})
    return path


def markdown_table(results: dict[str, Any], keys: Sequence[str] | None = None) -> str:
    """The results table as markdown (what docs/RESULTS.md quotes); a metric with a 95%
    interval reads ``value [lo, hi]``."""
    keys = list(keys) if keys is not None else metric_keys(results, include_hidden=False)
    rows = []
    for r in table_rows(results):
        spp = r.get("seconds_per_sample")
        if r["kind"] == "baseline":
            cells = [r["run"], f"*{r['label']}* (n = {r['n']})", "", "", ""]
        else:
            cells = [r["run"], r["label"] + (" (failed)" if r.get("error") else ""),
                     fmt(r.get("nfe")), fmt(None if spp is None else 1e3 * spp),
                     fmt(r.get("peak_memory_mb"))]
        rows.append(cells + [value_text(r, k) for k in keys])
    return md_table(["run", "sampler", "NFE", "ms/sample", "peak MB"] + keys, rows)


def json_safe(x: Any) -> Any:
    """``x`` with tensors/numpy scalars as numbers, tuples as lists and NaN/inf as None, so
    results.json is strict JSON and equals what the report was drawn from."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if hasattr(x, "item") and callable(x.item) and not isinstance(x, (str, bytes)):
        try:
            return json_safe(x.item())
        except (TypeError, ValueError):
            return str(x)
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)
