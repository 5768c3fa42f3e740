"""Figures of a report: quality and diversity vs NFE, quality vs seconds per sample, each value
with its 95% bootstrap interval as an error bar when the results have one (``<key>_ci``).

The helpers (:func:`pyplot`, :data:`MARKERS`, :func:`finish`, :func:`no_data`,
:func:`log_if_wide`) are shared with the oracle benchmark's figures in
:mod:`trilemma.bench.render`; the plot functions draw an evaluation's results (see
:mod:`trilemma.report.tables`). Everything uses matplotlib's Agg backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .format import fmt
from .tables import PathLike, diversity_metric, quality_metric

#: marker per sampler label, in order of first appearance
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "p", "*")


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (imported late: matplotlib is slow to load)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def finish(fig: Any, axes: Sequence[Any], path: PathLike, fontsize: float = 6.5,
           ncol: int = 1) -> Path:
    """Grid and legend on every panel, then save ``fig`` as a PNG at ``path`` and close it."""
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        handles, _ = ax.get_legend_handles_labels()
        if handles:
            ax.legend(fontsize=fontsize, loc="best", ncol=ncol)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def no_data(path: PathLike, text: str) -> Path:
    """A small PNG that says why there is no plot (so the report still has the file)."""
    fig, ax = pyplot().subplots(figsize=(5, 2))
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, wrap=True)
    ax.axis("off")
    return finish(fig, [], path)


def log_if_wide(ax: Any, values: list[float | None], axis: str = "y") -> None:
    """Log scale on ``axis`` when the values are positive and span more than a factor 10."""
    vals = [v for v in values if v is not None]
    if vals and min(vals) > 0 and max(vals) / min(vals) > 10:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")


# ----------------------------------------------------------------------------- evaluation
def _ok_rows(run: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return [r for r in run["rows"] if "error" not in r
            and (r.get("metrics") or {}).get(key) is not None]


def _groups(results: dict[str, Any], which: str) -> dict[str, list[dict[str, Any]]]:
    """Runs grouped by their quality (or diversity) metric key."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in results["runs"]:
        qm = quality_metric(run) if which == "quality" else diversity_metric(run)
        if qm is not None:
            groups.setdefault(qm[0], []).append(run)
    return groups


def _styles(results: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """A colour per run and a marker per sampler label."""
    cmap = pyplot().get_cmap("tab10")
    colors = {run["label"]: cmap(i % 10) for i, run in enumerate(results["runs"])}
    labels = list(dict.fromkeys(r["label"] for run in results["runs"] for r in run["rows"]))
    markers = {lab: MARKERS[i % len(MARKERS)] for i, lab in enumerate(labels)}
    return colors, markers


def _baseline_lines(ax: Any, run: dict[str, Any], key: str, color: Any) -> None:
    """The run's real-data baseline, its SW2 noise floor band and the number of modes."""
    base = run.get("baseline") or {}
    val = (base.get("metrics") or {}).get(key)
    drawn = ax.__dict__.setdefault("_trilemma_baselines", set())
    if val is not None and (base["label"], val) not in drawn:  # one line per distinct baseline
        drawn.add((base["label"], val))
        ax.axhline(val, color=color, ls=":", lw=1.2,
                   label=f"{base['label']} (n={base['n']})")
    if key == "sw2":
        floor = ((run.get("reference") or {}).get("sw2_floor") or {})
        if floor.get("mean") is not None:
            ax.axhspan(max(floor["mean"] - floor["std"], 1e-12), floor["mean"] + floor["std"],
                       color=color, alpha=0.08)
    if key == "modes_covered":
        rows = _ok_rows(run, "n_modes")
        if rows:
            ax.axhline(rows[0]["metrics"]["n_modes"], color="k", ls="--", lw=0.8,
                       label="all modes")


def _yerr(rows: list[dict[str, Any]], key: str) -> list[list[float]] | None:
    """Matplotlib ``yerr`` (distances below and above each value) of the rows' 95% intervals
    ``<key>_ci``; None when no row has one (zero-length bars for rows without)."""
    lo, hi, any_ci = [], [], False
    for r in rows:
        m = r["metrics"]
        ci = m.get(f"{key}_ci")
        ok = isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci
        any_ci = any_ci or ok
        lo.append(max(m[key] - ci[0], 0.0) if ok else 0.0)
        hi.append(max(ci[1] - m[key], 0.0) if ok else 0.0)
    return [lo, hi] if any_ci else None


def _subtitle(results: dict[str, Any]) -> str:
    s = results.get("settings", {})
    return f"n = {s.get('n')}, seed {s.get('seed')}, batch {s.get('batch_size')}, " \
           f"{s.get('device')}"


def _nfe_lines(ax: Any, run: dict[str, Any], key: str, color: Any,
               markers: dict[str, str]) -> list[float]:
    """One line per sampler label of ``run`` (markers only for adaptive ones); the y values."""
    values = []
    rows = _ok_rows(run, key)
    for lab in dict.fromkeys(r["label"] for r in rows):
        mine = sorted((r for r in rows if r["label"] == lab), key=lambda r: r["nfe"])
        xs = [r["nfe"] for r in mine]
        ys = [r["metrics"][key] for r in mine]
        values += ys
        adaptive = all(r.get("adaptive") or r.get("nfe_budget") is None for r in mine)
        ax.errorbar(xs, ys, yerr=_yerr(mine, key), ls="" if adaptive else "-",
                    marker=markers[lab], ms=9 if adaptive else 6, color=color, capsize=2.5,
                    elinewidth=0.9, label=f"{run['label']}: {lab}"
                    + (" (adaptive)" if adaptive else ""))
        ax.annotate(lab, (xs[-1], ys[-1]), textcoords="offset points", xytext=(4, 2),
                    fontsize=6.5, color=color)
    return values


def plot_metric_vs_nfe(results: dict[str, Any], path: PathLike, which: str = "quality") -> Path:
    """Quality (``which='quality'``) or diversity metric vs NFE, log x; one panel per metric."""
    groups = _groups(results, which)
    if not groups:
        return no_data(path, f"no {which} metric was computed (metrics off?)")
    colors, markers = _styles(results)
    fig, axes = pyplot().subplots(1, len(groups), figsize=(6.4 * len(groups), 4.6),
                                  squeeze=False)
    pick = quality_metric if which == "quality" else diversity_metric
    for ax, (key, runs) in zip(axes[0], groups.items(), strict=True):
        values = []
        for run in runs:
            values += _nfe_lines(ax, run, key, colors[run["label"]], markers)
            _baseline_lines(ax, run, key, colors[run["label"]])
        ax.set_xscale("log")
        if which == "quality":
            log_if_wide(ax, values)
        ax.set_xlabel("NFE (score-network evaluations per sample)")
        ax.set_ylabel(pick(runs[0])[1])
        ax.set_title(f"{key} vs NFE ({_subtitle(results)})", fontsize=9)
    return finish(fig, axes[0], path)


def _time_points(ax: Any, run: dict[str, Any], key: str, color: Any,
                 markers: dict[str, str]) -> list[float]:
    """One labelled point per sampler/budget of ``run``; the y values."""
    values = []
    rows = [r for r in _ok_rows(run, key) if r.get("seconds_per_sample")]
    for i, r in enumerate(rows):
        x, y = r["seconds_per_sample"], r["metrics"][key]
        values.append(y)
        ax.errorbar([x], [y], yerr=_yerr([r], key), color=color, marker=markers[r["label"]],
                    ms=5.5, ls="", capsize=2.5, elinewidth=0.9,
                    label=f"{run['label']} ({run['method']})" if i == 0 else None)
        ax.annotate(f"{r['label']} {fmt(r['nfe'], 3)}", (x, y), textcoords="offset points",
                    xytext=(4, 3), fontsize=6.5, color=color)
    return values


def plot_quality_vs_time(results: dict[str, Any], path: PathLike) -> Path:
    """Sample quality vs wall-clock seconds per sample: one labelled point per sampler/budget,
    methods in colour (the 'sample quality vs sampling time' chart)."""
    groups = _groups(results, "quality")
    if not groups:
        return no_data(path, "no quality metric was computed (metrics off?)")
    colors, markers = _styles(results)
    fig, axes = pyplot().subplots(1, len(groups), figsize=(6.8 * len(groups), 4.8),
                                  squeeze=False)
    for ax, (key, runs) in zip(axes[0], groups.items(), strict=True):
        values = []
        for run in runs:
            values += _time_points(ax, run, key, colors[run["label"]], markers)
            _baseline_lines(ax, run, key, colors[run["label"]])
        ax.set_xscale("log")
        log_if_wide(ax, values)
        ax.set_xlabel("wall-clock seconds per sample (warm, log scale)")
        ax.set_ylabel(quality_metric(runs[0])[1])
        ax.set_title(f"sample quality vs sampling time ({_subtitle(results)})", fontsize=9)
    return finish(fig, axes[0], path)


def has_guidance(results: dict[str, Any]) -> bool:
    """Whether any row is a classifier-free-guided one (``trilemma evaluate --guidance``)."""
    return any(r.get("guidance") is not None for run in results["runs"] for r in run["rows"])


def plot_guidance(results: dict[str, Any], path: PathLike) -> Path:
    """Quality (FD), diversity (recall) and the asked-class share against the guidance weight
    ``w``, one line per run and sampler/budget, with the rows' 95% intervals."""
    runs = [run for run in results["runs"] if quality_metric(run) is not None]
    if not runs or not has_guidance(results):
        return no_data(path, "no guided rows with metrics (--guidance and metrics on)")
    colors, _ = _styles(results)
    panels = [quality_metric(runs[0]), diversity_metric(runs[0]),
              ("class_share", "share of samples in the asked class (higher is better)")]
    fig, axes = pyplot().subplots(1, 3, figsize=(16.5, 4.6), squeeze=False)
    for ax, (key, axis_label) in zip(axes[0], panels, strict=True):
        for run in runs:
            rows = [r for r in _ok_rows(run, key) if r.get("guidance") is not None]
            for sampler in dict.fromkeys((r["sampler"], r["nfe_budget"]) for r in rows):
                mine = sorted((r for r in rows if (r["sampler"], r["nfe_budget"]) == sampler),
                              key=lambda r: r["guidance"])
                ax.errorbar([r["guidance"] for r in mine], [r["metrics"][key] for r in mine],
                            yerr=_yerr(mine, key), marker="o", ms=5, capsize=2.5,
                            elinewidth=0.9, color=colors[run["label"]],
                            label=f"{run['label']}: {sampler[0]} NFE budget {sampler[1]}")
            if key != "class_share":
                _baseline_lines(ax, run, key, colors[run["label"]])
        ax.set_xlabel("classifier-free guidance weight w")
        ax.set_ylabel(axis_label)
        ax.set_title(f"{key} vs guidance ({_subtitle(results)})", fontsize=9)
    return finish(fig, axes[0], path)
