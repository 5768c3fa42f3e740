"""Reports of an evaluation: JSON, CSV, trilemma plots and a self-contained HTML page.

:func:`write_report` takes the dict of :func:`trilemma.evaluate.evaluate_run` (or of
:func:`~trilemma.evaluate.merge_results` for several runs) and writes into ``out_dir``:

- ``results.json``: everything, as returned (settings, environment, provenance, rows);
- ``results.csv``: one row per run/sampler/budget (plus one ``baseline`` row per run: real
  data scored the same way), every number in its own column;
- ``quality_vs_nfe.png``: the quality metric against NFE (log x), one line per run/sampler;
- ``quality_vs_time.png``: quality against wall-clock seconds per sample (log x), one point
  per sampler/budget, methods in colour, every point labelled;
- ``diversity_vs_nfe.png``: recall (modes covered for oracle mixtures) against NFE;
- ``report.html``: one page with every image embedded as a base64 data URI: provenance
  header (run, config, extractor and its SHA-256, reference statistics, n, seed), warnings,
  the table, the plots and the sample grids.

:func:`write_bench_report` renders the oracle sampler benchmark (:mod:`trilemma.bench`) the
same way (``bench.html``). Plots use matplotlib's Agg backend.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PathLike = str | os.PathLike

#: columns of the CSV before the metrics (in this order)
BASE_COLUMNS = (
    "kind", "run", "method", "sampler", "label", "options", "nfe_budget", "adaptive", "nfe",
    "nfe_min", "nfe_max", "steps", "n", "seed", "batch_size", "seconds_per_sample",
    "samples_per_second",
    "timed_samples", "timed_seconds", "warmup_seconds", "warmup_batch", "peak_memory_mb",
    "memory_method", "n_nonfinite",
)
TAIL_COLUMNS = ("extractor_sha256", "grid", "samples_file", "error")
#: metric columns in display order (prefix match for the named ones such as FD-digits)
METRIC_ORDER = (
    "FD-", "FID", "precision", "recall", "density", "coverage", "IS-", "sw2", "sw2_floor",
    "sw2_floor_std", "quality", "modes_covered", "n_modes", "mode_coverage", "kl_weights",
    "spread_ratio", "spread_ratio_median", "mode_offset", "within_mode_sw2",
)
#: metrics left out of the HTML table (kept in JSON/CSV)
HIDDEN_IN_TABLE = ("mode_counts", "n_reference", "n_reference_prdc", "is_splits",
                   "quality_radius", "n")
#: column titles of the HTML table (the JSON/CSV keep the keys)
DISPLAY_NAMES = {
    "sw2": "SW2", "sw2_floor": "SW2 floor", "sw2_floor_std": "SW2 floor std",
    "quality": "share within 3σ", "modes_covered": "modes covered", "n_modes": "modes",
    "mode_coverage": "share of modes covered", "kl_weights": "mode-weight KL",
    "spread_ratio": "spread ratio", "spread_ratio_median": "spread ratio (median)",
    "mode_offset": "mode offset", "within_mode_sw2": "within-mode SW2",
}
HIGHER_IS_BETTER = ("precision", "recall", "density", "coverage", "quality", "modes_covered",
                    "mode_coverage")


# ----------------------------------------------------------------------------- helpers
def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if not math.isfinite(x):
            return "–"
        if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
            return f"{x:.{digits - 1}e}"
        return f"{x:.{digits}g}"
    return str(x)


def _metric_rank(key: str) -> tuple[int, str]:
    for i, prefix in enumerate(METRIC_ORDER):
        if key == prefix or (prefix.endswith("-") and key.startswith(prefix)):
            return (i * 2 + (1 if key.endswith(("_std", "_sd")) else 0), key)
    return (len(METRIC_ORDER) * 2, key)


def metric_keys(results: dict[str, Any], include_hidden: bool = True) -> list[str]:
    """All metric names in the rows and baselines, in display order."""
    keys: list[str] = []
    for run in results["runs"]:
        recs = [r.get("metrics") or {} for r in run["rows"]]
        if run.get("baseline"):
            recs.append(run["baseline"].get("metrics") or {})
        for m in recs:
            for k in m:
                if k not in keys and (include_hidden or k not in HIDDEN_IN_TABLE):
                    keys.append(k)
    return sorted(keys, key=_metric_rank)


def quality_metric(run: dict[str, Any]) -> tuple[str, str] | None:
    """``(key, axis label)`` of a run's headline quality metric (lower is better)."""
    ext = run.get("extractor")
    if ext:
        key = ext["metric_name"]
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
    """``results.csv``: one row per run/sampler/budget plus the baselines."""
    rows = table_rows(results)
    cols = list(BASE_COLUMNS) + metric_keys(results) + list(TAIL_COLUMNS)
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


# ----------------------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "p", "*")


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
    plt = _plt()
    cmap = plt.get_cmap("tab10")
    colors = {run["label"]: cmap(i % 10) for i, run in enumerate(results["runs"])}
    labels = list(dict.fromkeys(r["label"] for run in results["runs"] for r in run["rows"]))
    markers = {lab: MARKERS[i % len(MARKERS)] for i, lab in enumerate(labels)}
    return colors, markers


def _baseline_lines(ax: Any, run: dict[str, Any], key: str, color: Any) -> None:
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


def _finish(fig: Any, axes: Sequence[Any], path: PathLike) -> Path:
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            ax.legend(fontsize=6.5, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def _no_data(path: PathLike, text: str) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 2))
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, wrap=True)
    ax.axis("off")
    return _finish(fig, [], path)


def _positive_log(ax: Any, values: list[float], axis: str = "y") -> None:
    vals = [v for v in values if v is not None]
    if vals and min(vals) > 0 and max(vals) / min(vals) > 10:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")


def _subtitle(results: dict[str, Any]) -> str:
    s = results.get("settings", {})
    return f"n = {s.get('n')}, seed {s.get('seed')}, batch {s.get('batch_size')}, " \
           f"{s.get('device')}"


def plot_metric_vs_nfe(results: dict[str, Any], path: PathLike, which: str = "quality") -> Path:
    """Quality (``which='quality'``) or diversity metric vs NFE, log x; one panel per metric."""
    plt = _plt()
    groups = _groups(results, which)
    if not groups:
        return _no_data(path, f"no {which} metric was computed (metrics off?)")
    colors, markers = _styles(results)
    fig, axes = plt.subplots(1, len(groups), figsize=(6.4 * len(groups), 4.6), squeeze=False)
    pick = quality_metric if which == "quality" else diversity_metric
    for ax, (key, runs) in zip(axes[0], groups.items(), strict=True):
        values = []
        for run in runs:
            color = colors[run["label"]]
            rows = _ok_rows(run, key)
            for lab in dict.fromkeys(r["label"] for r in rows):
                mine = sorted((r for r in rows if r["label"] == lab), key=lambda r: r["nfe"])
                xs = [r["nfe"] for r in mine]
                ys = [r["metrics"][key] for r in mine]
                values += ys
                adaptive = all(r.get("adaptive") or r.get("nfe_budget") is None for r in mine)
                ax.plot(xs, ys, ls="" if adaptive else "-", marker=markers[lab],
                        ms=9 if adaptive else 6, color=color, label=f"{run['label']}: {lab}"
                        + (" (adaptive)" if adaptive else ""))
                ax.annotate(lab, (xs[-1], ys[-1]), textcoords="offset points", xytext=(4, 2),
                            fontsize=6.5, color=color)
            _baseline_lines(ax, run, key, color)
        ax.set_xscale("log")
        if which == "quality":
            _positive_log(ax, values)
        ax.set_xlabel("NFE (score-network evaluations per sample)")
        ax.set_ylabel(pick(runs[0])[1])
        ax.set_title(f"{key} vs NFE ({_subtitle(results)})", fontsize=9)
    return _finish(fig, axes[0], path)


def plot_quality_vs_time(results: dict[str, Any], path: PathLike) -> Path:
    """Sample quality vs wall-clock seconds per sample: one labelled point per sampler/budget,
    methods in colour (the 'sample quality vs sampling time' chart)."""
    plt = _plt()
    groups = _groups(results, "quality")
    if not groups:
        return _no_data(path, "no quality metric was computed (metrics off?)")
    colors, markers = _styles(results)
    fig, axes = plt.subplots(1, len(groups), figsize=(6.8 * len(groups), 4.8), squeeze=False)
    for ax, (key, runs) in zip(axes[0], groups.items(), strict=True):
        values = []
        for run in runs:
            color = colors[run["label"]]
            rows = [r for r in _ok_rows(run, key) if r.get("seconds_per_sample")]
            first = True
            for r in rows:
                x, y = r["seconds_per_sample"], r["metrics"][key]
                values.append(y)
                ax.scatter([x], [y], color=color, marker=markers[r["label"]], s=30,
                           label=f"{run['label']} ({run['method']})" if first else None)
                first = False
                ax.annotate(f"{r['label']} {_fmt(r['nfe'], 3)}", (x, y),
                            textcoords="offset points", xytext=(4, 3), fontsize=6.5,
                            color=color)
            _baseline_lines(ax, run, key, color)
        ax.set_xscale("log")
        _positive_log(ax, values)
        ax.set_xlabel("wall-clock seconds per sample (warm, log scale)")
        ax.set_ylabel(quality_metric(runs[0])[1])
        ax.set_title(f"sample quality vs sampling time ({_subtitle(results)})", fontsize=9)
    return _finish(fig, axes[0], path)


# ----------------------------------------------------------------------------- HTML
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;
max-width:1400px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:12.5px;margin:8px 0}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;vertical-align:top}
th{background:#f0f0f0;position:sticky;top:0}
td.l,th.l{text-align:left}tr.baseline td{background:#f6f6e8;font-style:italic}
tr.error td{background:#fde8e8}td.best{font-weight:bold}
.warn{background:#fff6d6;border:1px solid #e5c100;padding:8px 12px;margin:10px 0}
.warn li{margin:3px 0}pre{background:#f7f7f7;padding:8px;font-size:12px;overflow-x:auto}
.grids{display:flex;flex-wrap:wrap;gap:14px}.grids figure{margin:0;text-align:center}
.grids img{image-rendering:pixelated;max-width:300px;border:1px solid #ddd}
figcaption{font-size:12px}img.plot{max-width:100%;border:1px solid #eee}
dl.kv{display:grid;grid-template-columns:max-content auto;gap:2px 12px;font-size:13px}
dl.kv dt{font-weight:bold}dl.kv dd{margin:0;word-break:break-all}
"""


def data_uri(path: PathLike) -> str:
    """A file as a ``data:`` URI (PNG/JPEG/SVG), for a self-contained page."""
    p = Path(path)
    mime = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
            ".svg": "image/svg+xml"}.get(p.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(p.read_bytes()).decode("ascii")


def _e(x: Any) -> str:
    return html.escape(str(x))


def _kv(items: Sequence[tuple[str, Any]]) -> str:
    cells = [f"<dt>{_e(k)}</dt><dd>{_e(v if isinstance(v, str) else _fmt(v))}</dd>"
             for k, v in items if v is not None]
    return "<dl class='kv'>" + "".join(cells) + "</dl>"


def _best(rows: list[dict[str, Any]], key: str) -> Any:
    vals = [r.get(key) for r in rows if r.get("kind") == "sample"
            and isinstance(r.get(key), (int, float)) and r.get("error") is None]
    if not vals or key.endswith(("_std", "_sd")) or key in ("n_modes", "sw2_floor"):
        return None
    return max(vals) if key in HIGHER_IS_BETTER or key.startswith("IS-") else min(vals)


def results_table_html(results: dict[str, Any]) -> str:
    """The main table: one row per run/sampler/budget (baselines shaded; best in bold)."""
    rows = table_rows(results)
    keys = metric_keys(results, include_hidden=False)
    head = ["method", "sampler", "NFE budget", "NFE used", "ms / sample", "samples / s",
            "peak MB"] + [DISPLAY_NAMES.get(k, k) for k in keys]
    out = ["<table><thead><tr>" + "".join(
        f"<th class='{'l' if i < 2 else ''}'>{_e(h)}</th>" for i, h in enumerate(head))
        + "</tr></thead><tbody>"]
    best = {k: _best([r for r in rows], k) for k in keys}
    for r in rows:
        cls = "baseline" if r["kind"] == "baseline" else ("error" if r.get("error") else "")
        spp = r.get("seconds_per_sample")
        budget = _fmt(r.get("nfe_budget"))
        if r.get("adaptive"):
            budget = "adaptive" + ("" if r.get("nfe_budget") is None else f", cap {budget}")
        cells = [f"<td class='l'>{_e(r['run'])} ({_e(r['method'])})</td>",
                 f"<td class='l'>{_e(r['label'])}"
                 + (f"<br><small>{_e(r['error'])}</small>" if r.get("error") else "") + "</td>",
                 f"<td>{_e(budget)}</td>",
                 f"<td>{_e(_fmt(r.get('nfe')))}</td>",
                 f"<td>{_e(_fmt(None if spp is None else 1e3 * spp))}</td>",
                 f"<td>{_e(_fmt(r.get('samples_per_second')))}</td>",
                 f"<td>{_e(_fmt(r.get('peak_memory_mb')))}</td>"]
        if r["kind"] == "baseline":
            cells[2:7] = [f"<td class='l' colspan='5'>n = {_e(r.get('n'))}</td>"]
        for k in keys:
            v = r.get(k)
            b = " class='best'" if best.get(k) is not None and v == best[k] \
                and r["kind"] == "sample" else ""
            cells.append(f"<td{b}>{_e(_fmt(v))}</td>")
        out.append(f"<tr class='{cls}'>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _run_header(run: dict[str, Any], settings: dict[str, Any]) -> str:
    parts = [f"<h2>Run {_e(run['label'])} — {_e(run['method'])}</h2>"]
    parts.append(_kv([
        ("run", run["run"]), ("weights", f"{run['weights']} ({run['weights_kind']}, step "
                                         f"{run['step']})"),
        ("process", run["process"]), ("data", json.dumps(run["data"])),
        ("samples per sampler (n)", settings.get("n")), ("seed", settings.get("seed")),
        ("batch size", settings.get("batch_size")), ("device", settings.get("device")),
    ]))
    parts.append("<details><summary>config</summary><pre>" + _e(run["config_summary"])
                 + "</pre></details>")
    ext = run.get("extractor")
    if ext:
        parts.append("<h3>Feature extractor</h3>" + _kv([
            ("name", ext["name"]), ("metric", ext["metric_name"] + " (not FID)"),
            ("SHA-256", ext["sha256"]), ("file", ext["path"]), ("source", ext["source"]),
            ("test accuracy", ext.get("test_accuracy")), ("test n", ext.get("test_n")),
            ("training steps", ext.get("steps")), ("seed", ext.get("seed")),
            ("Inception (FID)", (ext.get("inception") or {}).get("sha256")),
        ]))
    ref = run.get("reference")
    if ref:
        keys = ("dataset", "split", "n", "n_available", "image_size", "data_sha256",
                "extractor", "extractor_sha256", "feature_dim", "n_features_kept", "cache",
                "path", "kind", "source", "toy", "n_reference", "n_prdc_real", "prdc_real",
                "reference_seed", "directions_seed", "n_projections")
        items = [(k, ref.get(k)) for k in keys if ref.get(k) is not None]
        floor = ref.get("sw2_floor")
        if floor:
            items.append(("SW2 noise floor (perfect sampler)",
                          f"{floor['mean']:.4g} ± {floor['std']:.2g} (n = {floor['n']}, "
                          f"reference {floor['m']})"))
        parts.append("<h3>Reference statistics (provenance)</h3>" + _kv(items))
    nll = run.get("nll")
    if nll:
        parts.append("<h3>Likelihood</h3>" + _kv([
            ("bits/dim", f"{nll['bits_per_dim']:.4f}"
             + (f" ± {nll['bits_per_dim_sem']:.4f} (s.e.m.)" if nll.get("bits_per_dim_sem")
                else "")),
            ("meaning", nll["meaning"]), ("points", f"{nll['n']} from {nll['source']}"),
            ("dequantisation", nll["dequantization"]), ("divergence", nll["divergence"]),
            ("NFE (mean per batch)", nll["nfe_mean"]), ("tolerances", f"rtol {nll['rtol']}, "
                                                                      f"atol {nll['atol']}"),
            ("true bits/dim (oracle, t = 0)", nll.get("true_bits_per_dim")),
        ]))
    if run.get("notes"):
        parts.append("<p>" + "<br>".join(_e(n) for n in run["notes"]) + "</p>")
    return "\n".join(parts)


def _grids_html(results: dict[str, Any], out_dir: Path) -> str:
    parts = []
    for run in results["runs"]:
        figs = []
        for r in run["rows"]:
            g = r.get("grid")
            if g and (out_dir / g).is_file():
                cap = f"{r['label']} · NFE {_fmt(r.get('nfe'))}"
                qm = quality_metric(run)
                if qm and (r.get("metrics") or {}).get(qm[0]) is not None:
                    cap += f" · {qm[0]} {_fmt(r['metrics'][qm[0]])}"
                figs.append(f"<figure><img src='{data_uri(out_dir / g)}' alt='{_e(cap)}'>"
                            f"<figcaption>{_e(cap)}</figcaption></figure>")
        if figs:
            parts.append(f"<h3>{_e(run['label'])} ({_e(run['method'])})</h3>"
                         f"<div class='grids'>{''.join(figs)}</div>")
    return "\n".join(parts) or "<p>no sample grids were written</p>"


GLOSSARY = (
    ("FD-<dataset>", "Fréchet distance between Gaussian fits of the samples' and the reference's "
     "features from a classifier trained on the data set (lower is better). Not FID: another "
     "network, and biased upward at small n (compare only at equal n, same classifier)."),
    ("FD-<dataset>_sd", "standard deviation of FD-<dataset> over 20 bootstrap resamples of "
     "the samples (reference fixed): differences between samplers smaller than about twice "
     "this are noise."),
    ("FID", "the same on Inception-v3 pool features; standard protocol: 50k samples."),
    ("precision / recall", "k = 3 nearest-neighbour balls (Kynkäänniemi et al. 2019): share of "
     "samples inside the real data's manifold (fidelity) / share of real data inside the "
     "samples' manifold (diversity)."),
    ("density / coverage", "k = 5 (Naeem et al. 2020): outlier-robust fidelity (about 1 for "
     "samples that follow the data) / share of real points with a sample nearby."),
    ("IS-<dataset>", "Inception-score formula on the classifier's predictions: high when "
     "samples are confidently classified and the classes are balanced (max = #classes)."),
    ("SW2", "sliced Wasserstein-2 distance to exact samples of the toy mixture; SW2 floor: what "
     "a perfect sampler scores at this n (the noise of the estimate)."),
    ("share within 3σ", "share of samples within the 3-sigma region of their most likely mode; "
     "exact samples score 0.9973."),
    ("modes covered / mode-weight KL", "modes with at least one sample within 3σ; KL between "
     "the true and the found mode weights (0 = balanced as the data)."),
    ("spread ratio", "per-mode sample spread over the true spread (1 = right width)."),
    ("ms / sample", "warm wall-clock milliseconds per sample at the batch size of the run "
     "(first batch untimed), on the device and threads in the header."),
)


def _glossary_html() -> str:
    return ("<details><summary>What the columns mean</summary><dl class='kv'>" + "".join(
        f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in GLOSSARY) + "</dl></details>")


def html_report(results: dict[str, Any], out_dir: PathLike, plots: dict[str, Path]) -> str:
    """The self-contained HTML page (images embedded)."""
    out = Path(out_dir)
    s = results.get("settings", {})
    env = results.get("environment", {})
    warns = [(run["label"], w) for run in results["runs"] for w in run.get("warnings", [])]
    metric_names = sorted({quality_metric(run)[0] for run in results["runs"]
                           if quality_metric(run)})
    title = "trilemma evaluation: " + ", ".join(run["label"] for run in results["runs"])
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
             f"<style>{CSS}</style></head><body>", f"<h1>{_e(title)}</h1>"]
    parts.append("<p>Quality, mode coverage / diversity and sampling speed of every sampler "
                 "side by side. " + (
                     "Quality metrics here: " + ", ".join(_e(m) for m in metric_names) + ". "
                     if metric_names else "")
                 + "A Fréchet distance on classifier features is named FD-&lt;dataset&gt;; it "
                 "is <b>not</b> FID and is comparable only with numbers from the same "
                 "classifier (same SHA-256) at the same n.</p>")
    parts.append(_kv([
        ("created", results.get("created")), ("command", results.get("command")),
        ("samples per sampler n", s.get("n")), ("seed", s.get("seed")),
        ("batch size", s.get("batch_size")), ("device", s.get("device")),
        ("reference split", s.get("reference_split")), ("timing", s.get("timing")),
        ("environment", ", ".join(f"{k} {v}" for k, v in env.items())),
    ]))
    if warns:
        parts.append("<div class='warn'><b>Warnings</b><ul>" + "".join(
            f"<li><b>{_e(lab)}</b>: {_e(w)}</li>" for lab, w in warns) + "</ul></div>")
    parts.append("<h2>Results</h2>")
    parts.append(_glossary_html())
    parts.append(results_table_html(results))
    parts.append("<p><small>Baseline rows (shaded): real data scored the same way at the "
                 "given n — what a perfect model would score. Bold: best sampler per column. "
                 "ms / sample: warm wall-clock time at the batch size above. Peak MB: see "
                 "memory_method in results.csv.</small></p>")
    parts.append("<h2>Plots</h2>")
    for key in ("quality_vs_time", "quality_vs_nfe", "diversity_vs_nfe"):
        if key in plots and Path(plots[key]).is_file():
            parts.append(f"<p><img class='plot' src='{data_uri(plots[key])}' alt='{key}'></p>")
    for run in results["runs"]:
        parts.append(_run_header(run, s))
    parts.append("<h2>Samples</h2>")
    parts.append(_grids_html(results, out))
    parts.append("</body></html>")
    return "\n".join(parts)


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if hasattr(x, "item") and callable(x.item) and not isinstance(x, (str, bytes)):
        try:
            return _json_safe(x.item())
        except (TypeError, ValueError):
            return str(x)
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


def write_report(results: dict[str, Any], out_dir: PathLike) -> dict[str, Path]:
    """Write results.json/.csv, the three plots and report.html into ``out_dir``; their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = _json_safe(results)
    paths: dict[str, Path] = {"json": out / "results.json", "csv": out / "results.csv"}
    paths["json"].write_text(json.dumps(results, indent=1) + "\n")
    write_csv(results, paths["csv"])
    paths["quality_vs_nfe"] = plot_metric_vs_nfe(results, out / "quality_vs_nfe.png", "quality")
    paths["quality_vs_time"] = plot_quality_vs_time(results, out / "quality_vs_time.png")
    paths["diversity_vs_nfe"] = plot_metric_vs_nfe(results, out / "diversity_vs_nfe.png",
                                                   "diversity")
    paths["html"] = out / "report.html"
    paths["html"].write_text(html_report(results, out, paths))
    return paths


def markdown_table(results: dict[str, Any], keys: Sequence[str] | None = None) -> str:
    """The results table as markdown (what docs/RESULTS.md quotes)."""
    rows = table_rows(results)
    keys = list(keys) if keys is not None else metric_keys(results, include_hidden=False)
    head = ["run", "sampler", "NFE", "ms/sample", "peak MB"] + keys
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        spp = r.get("seconds_per_sample")
        if r["kind"] == "baseline":
            cells = [r["run"], f"*{r['label']}* (n = {r['n']})", "", "", ""]
        else:
            cells = [r["run"], r["label"] + (" (failed)" if r.get("error") else ""),
                     _fmt(r.get("nfe")), _fmt(None if spp is None else 1e3 * spp),
                     _fmt(r.get("peak_memory_mb"))]
        cells += [_fmt(r.get(k)) for k in keys]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the benchmark
def _md_inline(text: str) -> str:
    t = _e(text)
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)


def markdown_to_html(md: str) -> str:
    """The small markdown subset of :func:`trilemma.bench.report_markdown` as HTML: headings,
    pipe tables, bullet lists (with indented continuation lines) and paragraphs."""
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in block]
            body = [c for c in cells[1:] if not all(set(x) <= set("-: ") for x in c)]
            out.append("<table><thead><tr>" + "".join(
                f"<th>{_md_inline(c)}</th>" for c in cells[0]) + "</tr></thead><tbody>"
                + "".join("<tr>" + "".join(f"<td>{_md_inline(c)}</td>" for c in row) + "</tr>"
                          for row in body) + "</tbody></table>")
            continue
        if line.startswith("## "):
            out.append(f"<h2>{_md_inline(line[3:])}</h2>")
        elif line.startswith("- "):
            items = [_md_inline(line[2:])]
            i += 1
            while i < len(lines) and (lines[i].startswith("  ") or lines[i].startswith("- ")):
                if lines[i].startswith("- "):
                    items.append(_md_inline(lines[i][2:]))
                else:
                    items[-1] += "<br>" + _md_inline(lines[i].strip())
                i += 1
            out.append("<ul>" + "".join(f"<li>{it}</li>" for it in items) + "</ul>")
            continue
        elif line.strip():
            out.append(f"<p>{_md_inline(line)}</p>")
        i += 1
    return "\n".join(out)


def plot_bench_quality_vs_time(results: dict[str, Any], path: PathLike) -> Path:
    """The benchmark's SW2 vs wall-clock seconds per sample, one panel per mixture, processes
    in colour (exact score: the time is the sampler's own arithmetic plus the oracle)."""
    plt = _plt()
    runs = [r for r in results["runs"] if r.get("set", "main") == "main" and "error" not in r
            and r.get("sw2") is not None and r.get("seconds")]
    if not runs:
        return _no_data(path, "no successful benchmark runs")
    mixtures = list(dict.fromkeys(r["mixture"] for r in runs))
    procs = list(dict.fromkeys(f"{r['kind']}:{r['process']}" for r in runs))
    samplers = list(dict.fromkeys(r["sampler"] for r in runs))
    cmap = plt.get_cmap("tab10")
    colors = {p: cmap(i % 10) for i, p in enumerate(procs)}
    markers = {s: MARKERS[i % len(MARKERS)] for i, s in enumerate(samplers)}
    fig, axes = plt.subplots(1, len(mixtures), figsize=(6.2 * len(mixtures), 4.8),
                             squeeze=False)
    for ax, mname in zip(axes[0], mixtures, strict=True):
        mine = [r for r in runs if r["mixture"] == mname]
        seen = set()
        for r in mine:
            p = f"{r['kind']}:{r['process']}"
            x, y = r["seconds"] / r["n"], r["sw2"]
            ax.scatter([x], [y], color=colors[p], marker=markers[r["sampler"]], s=18,
                       label=p if p not in seen else None)
            seen.add(p)
            if len(mine) <= 40:
                ax.annotate(f"{r['sampler']} {r['nfe']}", (x, y), textcoords="offset points",
                            xytext=(3, 2), fontsize=6)
        floor = results["floors"].get(mname)
        if floor:
            ax.axhline(floor["sw2_mean"], color="k", ls=":", lw=1, label="noise floor")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("wall-clock seconds per sample (exact oracle score)")
        ax.set_ylabel("SW2 (lower is better)")
        ax.set_title(f"{mname}: sample quality vs sampling time", fontsize=9)
    return _finish(fig, axes[0], path)


def write_bench_report(results: dict[str, Any], out_dir: PathLike,
                       paths: dict[str, Path] | None = None) -> dict[str, Path]:
    """``bench.html`` (self-contained) for an oracle benchmark run, with its plots embedded.

    ``paths``: what :func:`trilemma.bench.write_outputs` wrote (plots are reused from it).
    """
    from .bench import report_markdown

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = dict(paths or {})
    paths["quality_vs_time"] = plot_bench_quality_vs_time(results,
                                                          out / "bench_quality_vs_time.png")
    cfg = results.get("config", {})
    env = results.get("environment", {})
    floors = results.get("floors", {})
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>trilemma oracle "
             f"sampler benchmark</title><style>{CSS}</style></head><body>",
             "<h1>trilemma oracle sampler benchmark</h1>",
             "<p>Every sampler driven by the <b>exact</b> score of a Gaussian mixture "
             "(trilemma.oracle), so every difference is discretisation error. SW2: sliced "
             "Wasserstein-2 to a fixed set of exact samples (a perfect sampler scores the noise "
             "floor); quality: share of samples within 3 sigma of their mode; all runs of a "
             "(mixture, process) share the prior noise.</p>",
             _kv([("config", json.dumps(cfg)), ("environment", json.dumps(env)),
                  ("total seconds", results.get("seconds_total"))])]
    if floors:
        parts.append("<h2>Noise floors</h2><table><tr><th>mixture</th><th>n</th><th>reference"
                     "</th><th>SW2 floor</th></tr>" + "".join(
                         f"<tr><td class='l'>{_e(m)}</td><td>{f['n']}</td>"
                         f"<td>{f['n_reference']}</td><td>{f['sw2_mean']:.4g} ± "
                         f"{f['sw2_std']:.2g}</td></tr>" for m, f in floors.items())
                     + "</table>")
    parts.append("<h2>Plots</h2>")
    for key in ("quality_vs_time", "plot", "plot_modes"):
        if key in paths and Path(paths[key]).is_file():
            parts.append(f"<p><img class='plot' src='{data_uri(paths[key])}' alt='{key}'></p>")
    parts.append(markdown_to_html(report_markdown(results)))
    parts.append("</body></html>")
    paths["html"] = out / "bench.html"
    paths["html"].write_text("\n".join(parts))
    return paths
