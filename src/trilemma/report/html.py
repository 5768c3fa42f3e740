"""Self-contained HTML pages: the shared page frame and the evaluation's ``report.html``.

:func:`page`, :func:`kv`, :func:`data_uri` and :func:`plot_images` build every page (the
oracle benchmark's ``bench.html`` too, see :mod:`trilemma.bench.render`); images are embedded
as base64 data URIs so one file can be mailed or archived. :func:`html_report` is the
evaluation page: provenance header, warnings, the results table, plots and sample grids.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .format import escape, fmt, higher_is_better, html_cell, html_table
from .tables import (
    DISPLAY_NAMES,
    PathLike,
    interval_text,
    metric_keys,
    metric_rank,
    quality_metric,
    table_rows,
)

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;
max-width:1400px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:12.5px;margin:8px 0}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;vertical-align:top}
th{background:#f0f0f0;position:sticky;top:0}
td.l,th.l{text-align:left}tr.baseline td{background:#f6f6e8;font-style:italic}
tr.error td{background:#fde8e8}td.best{font-weight:bold}td.sig{background:#dff0d8}
small.ci,td.ns small{color:#666}
.warn{background:#fff6d6;border:1px solid #e5c100;padding:8px 12px;margin:10px 0}
.warn li{margin:3px 0}pre{background:#f7f7f7;padding:8px;font-size:12px;overflow-x:auto}
.grids{display:flex;flex-wrap:wrap;gap:14px}.grids figure{margin:0;text-align:center}
.grids img{image-rendering:pixelated;max-width:300px;border:1px solid #ddd}
figcaption{font-size:12px}img.plot{max-width:100%;border:1px solid #eee}
dl.kv{display:grid;grid-template-columns:max-content auto;gap:2px 12px;font-size:13px}
dl.kv dt{font-weight:bold}dl.kv dd{margin:0;word-break:break-all}
"""


# ----------------------------------------------------------------------------- page frame
def data_uri(path: PathLike) -> str:
    """A file as a ``data:`` URI (PNG/JPEG/SVG), for a self-contained page."""
    p = Path(path)
    mime = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
            ".svg": "image/svg+xml"}.get(p.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(p.read_bytes()).decode("ascii")


def kv(items: Sequence[tuple[str, Any]]) -> str:
    """A definition list of ``(name, value)`` pairs (None values left out, numbers formatted)."""
    cells = [f"<dt>{escape(k)}</dt><dd>{escape(v if isinstance(v, str) else fmt(v))}</dd>"
             for k, v in items if v is not None]
    return "<dl class='kv'>" + "".join(cells) + "</dl>"


def plot_images(paths: Mapping[str, PathLike], keys: Sequence[str]) -> list[str]:
    """An embedded ``<img>`` paragraph for each of ``keys`` whose file exists, in that order."""
    return [f"<p><img class='plot' src='{data_uri(paths[key])}' alt='{key}'></p>"
            for key in keys if key in paths and Path(paths[key]).is_file()]


def page(title: str, body: Sequence[str]) -> str:
    """A whole HTML document: ``title`` as title and heading, the report CSS, ``body`` parts."""
    return "\n".join([f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>"
                      f"{escape(title)}</title><style>{CSS}</style></head><body>",
                      f"<h1>{escape(title)}</h1>", *body, "</body></html>"])


# ----------------------------------------------------------------------------- results table
def _best(rows: list[dict[str, Any]], key: str) -> Any:
    """The value to print in bold in column ``key``: the best sampler (not the baselines)."""
    if key.endswith(("_std", "_sd")) or key in ("n_modes", "sw2_floor"):
        return None
    vals = [r.get(key) for r in rows if r.get("kind") == "sample"
            and isinstance(r.get(key), (int, float)) and r.get("error") is None]
    if not vals:
        return None
    return max(vals) if higher_is_better(key) else min(vals)


def _result_cells(r: dict[str, Any]) -> list[str]:
    """The method, sampler, NFE, speed and memory cells of one table row."""
    if r["kind"] == "baseline":
        return [html_cell(f"{escape(r['run'])} ({escape(r['method'])})", cls="l"),
                html_cell(escape(r["label"]), cls="l"),
                html_cell(f"n = {escape(r.get('n'))}", cls="l", colspan=5)]
    spp = r.get("seconds_per_sample")
    budget = fmt(r.get("nfe_budget"))
    if r.get("adaptive"):
        budget = "adaptive" + ("" if r.get("nfe_budget") is None else f", cap {budget}")
    error = f"<br><small>{escape(r['error'])}</small>" if r.get("error") else ""
    return [html_cell(f"{escape(r['run'])} ({escape(r['method'])})", cls="l"),
            html_cell(escape(r["label"]) + error, cls="l")] + [
        html_cell(escape(v)) for v in (budget, fmt(r.get("nfe")),
                                       fmt(None if spp is None else 1e3 * spp),
                                       fmt(r.get("samples_per_second")),
                                       fmt(r.get("peak_memory_mb")))]


def results_table_html(results: dict[str, Any]) -> str:
    """The main table: one row per run/sampler/budget (baselines shaded; best in bold)."""
    rows = table_rows(results)
    keys = metric_keys(results, include_hidden=False)
    head = ["method", "sampler", "NFE budget", "NFE used", "ms / sample", "samples / s",
            "peak MB"] + [DISPLAY_NAMES.get(k, k) for k in keys]
    best = {k: _best(rows, k) for k in keys}
    body = []
    for r in rows:
        cells = _result_cells(r)
        for k in keys:
            v = r.get(k)
            bold = best[k] is not None and v == best[k] and r["kind"] == "sample"
            ci = interval_text(r.get(f"{k}_ci"))
            text = escape(fmt(v)) + (f"<br><small class='ci'>{escape(ci)}</small>" if ci else "")
            cells.append(html_cell(text, cls="best" if bold else None))
        body.append(cells)
    classes = ["baseline" if r["kind"] == "baseline" else ("error" if r.get("error") else "")
               for r in rows]
    return html_table([html_cell(escape(h), "th", "l" if i < 2 else "")
                       for i, h in enumerate(head)], body, classes)


# ----------------------------------------------------------------------------- run sections
def _extractor_html(ext: dict[str, Any]) -> str:
    return "<h3>Feature extractor</h3>" + kv([
        ("name", ext["name"]),
        ("metric", ext["metric_name"] + ("" if ext["metric_name"] == "FID" else " (not FID)")),
        ("SHA-256", ext["sha256"]), ("file", ext["path"]), ("source", ext["source"]),
        ("test accuracy", ext.get("test_accuracy")), ("test n", ext.get("test_n")),
        ("training steps", ext.get("steps")), ("seed", ext.get("seed")),
        ("Inception (FID)", (ext.get("inception") or {}).get("sha256")),
    ])


REFERENCE_KEYS = ("dataset", "split", "n", "n_available", "image_size", "data_sha256",
                  "extractor", "extractor_sha256", "feature_dim", "n_features_kept", "cache",
                  "path", "kind", "source", "toy", "n_reference", "n_prdc_real", "prdc_real",
                  "reference_seed", "directions_seed", "n_projections")


def _reference_html(ref: dict[str, Any]) -> str:
    items = [(k, ref.get(k)) for k in REFERENCE_KEYS if ref.get(k) is not None]
    floor = ref.get("sw2_floor")
    if floor:
        items.append(("SW2 noise floor (perfect sampler)",
                      f"{floor['mean']:.4g} ± {floor['std']:.2g} (n = {floor['n']}, "
                      f"reference {floor['m']})"))
    return "<h3>Reference statistics (provenance)</h3>" + kv(items)


def _likelihood_html(nll: dict[str, Any]) -> str:
    sem = nll.get("bits_per_dim_sem")
    return "<h3>Likelihood</h3>" + kv([
        ("bits/dim", f"{nll['bits_per_dim']:.4f}"
         + (f" ± {sem:.4f} (s.e.m.)" if sem else "")),
        ("meaning", nll["meaning"]), ("points", f"{nll['n']} from {nll['source']}"),
        ("dequantisation", nll["dequantization"]), ("divergence", nll["divergence"]),
        ("NFE (mean per batch)", nll["nfe_mean"]),
        ("tolerances", f"rtol {nll['rtol']}, atol {nll['atol']}"),
        ("true bits/dim (oracle, t = 0)", nll.get("true_bits_per_dim")),
    ])


def _run_header(run: dict[str, Any], settings: dict[str, Any]) -> str:
    """A run's section: where it came from, extractor, reference statistics, likelihood."""
    parts = [f"<h2>Run {escape(run['label'])} — {escape(run['method'])}</h2>", kv([
        ("run", run["run"]),
        ("weights", f"{run['weights']} ({run['weights_kind']}, step {run['step']})"),
        ("process", run["process"]), ("data", json.dumps(run["data"])),
        ("samples per sampler (n)", settings.get("n")), ("seed", settings.get("seed")),
        ("batch size", settings.get("batch_size")), ("device", settings.get("device")),
    ]), "<details><summary>config</summary><pre>" + escape(run["config_summary"])
        + "</pre></details>"]
    if run.get("extractor"):
        parts.append(_extractor_html(run["extractor"]))
    if run.get("reference"):
        parts.append(_reference_html(run["reference"]))
    if run.get("nll"):
        parts.append(_likelihood_html(run["nll"]))
    if run.get("notes"):
        parts.append("<p>" + "<br>".join(escape(n) for n in run["notes"]) + "</p>")
    return "\n".join(parts)


def _inside(folder: Path, rel: str) -> bool:
    """Whether ``rel`` is relative and resolves (links followed) inside ``folder``: the page
    embeds no file from elsewhere, whatever a results dict names."""
    return not Path(rel).is_absolute() and (folder / rel).resolve().is_relative_to(
        folder.resolve())


def _grids_html(results: dict[str, Any], out_dir: Path) -> str:
    """Every run's sample grids that exist under ``out_dir``, captioned with NFE and quality."""
    parts = []
    for run in results["runs"]:
        figs = []
        qm = quality_metric(run)
        for r in run["rows"]:
            g = r.get("grid")
            if isinstance(g, str) and g and _inside(out_dir, g) and (out_dir / g).is_file():
                cap = f"{r['label']} · NFE {fmt(r.get('nfe'))}"
                if qm and (r.get("metrics") or {}).get(qm[0]) is not None:
                    cap += f" · {qm[0]} {fmt(r['metrics'][qm[0]])}"
                figs.append(f"<figure><img src='{data_uri(out_dir / g)}' alt='{escape(cap)}'>"
                            f"<figcaption>{escape(cap)}</figcaption></figure>")
        if figs:
            parts.append(f"<h3>{escape(run['label'])} ({escape(run['method'])})</h3>"
                         f"<div class='grids'>{''.join(figs)}</div>")
    return "\n".join(parts) or "<p>no sample grids were written</p>"


# ----------------------------------------------------------------------------- the page
GLOSSARY = (
    ("FD-<dataset>", "Fréchet distance between Gaussian fits of the samples' and the reference's "
     "features from a classifier trained on the data set (lower is better). Not FID: another "
     "network, and biased upward at small n (compare only at equal n, same classifier)."),
    ("[lo, hi]", "under a value: its 95% bootstrap interval — the samples resampled with "
     "replacement (B in the header), the reference fixed; the percentile interval shifted by "
     "the bootstrap's bias so that it is centred on the value. It says how much the value "
     "moves with the draw of n samples; rows of one run are compared in the table of "
     "significant differences (paired), not by overlapping intervals."),
    ("FD-<dataset>_sd", "standard deviation of FD-<dataset> over the same bootstrap resamples "
     "(20 when intervals are off)."),
    ("FID", "the same on Inception-v3 pool features; standard protocol: 50k samples."),
    ("precision / recall", "k = 3 nearest-neighbour balls (Kynkäänniemi et al. 2019): share of "
     "samples inside the real data's manifold (fidelity) / share of real data inside the "
     "samples' manifold (diversity)."),
    ("density / coverage", "k = 5 (Naeem et al. 2020): outlier-robust fidelity (about 1 for "
     "samples that follow the data) / share of real points with a sample nearby."),
    ("IS-<dataset>", "Inception-score formula on the classifier's predictions: high when "
     "samples are confidently classified and the classes are balanced (max = #classes)."),
    ("class KL / min class share", "mode coverage of labelled images: the data's classifier "
     "assigns each sample a class; KL(samples' class shares || the reference split's true "
     "shares), natural log (0 = as balanced as the data; log 10 = one class of ten), and the "
     "smallest class share (0 = a class dropped; 1/#classes at best for balanced data)."),
    ("asked-class share", "rows with a guidance weight w (class-conditional, class-balanced "
     "labels): share of samples the data's classifier (the oracle's most likely mode for "
     "toys) assigns to the class that was asked for."),
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
        f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in GLOSSARY) + "</dl></details>")


def _intro_html(results: dict[str, Any]) -> str:
    names = sorted({qm[0] for run in results["runs"] if (qm := quality_metric(run))})
    return ("<p>Quality, mode coverage / diversity and sampling speed of every sampler "
            "side by side. "
            + ("Quality metrics here: " + ", ".join(escape(m) for m in names) + ". "
               if names else "")
            + "A Fréchet distance on classifier features is named FD-&lt;dataset&gt;; it "
            "is <b>not</b> FID and is comparable only with numbers from the same "
            "classifier (same SHA-256) at the same n.</p>")


def _settings_html(results: dict[str, Any]) -> str:
    s = results.get("settings", {})
    env = results.get("environment", {})
    return kv([
        ("created", results.get("created")), ("command", results.get("command")),
        ("samples per sampler n", s.get("n")), ("seed", s.get("seed")),
        ("batch size", s.get("batch_size")), ("device", s.get("device")),
        ("reference split", s.get("reference_split")), ("timing", s.get("timing")),
        ("sampling precision", s.get("sampling_precision")),
        ("intervals", _bootstrap_text(s.get("bootstrap"))),
        ("environment", ", ".join(f"{k} {v}" for k, v in env.items())),
    ])


def _bootstrap_text(boot: dict[str, Any] | None) -> str | None:
    """The header line on the intervals (None when the report has none)."""
    if not boot or not boot.get("repeats"):
        return None
    return (f"95% bootstrap, B = {boot['repeats']} resamples of the samples (FID: "
            f"{boot.get('fid_repeats')}), reference {boot.get('reference', 'fixed')}, seed "
            f"{boot.get('seed')}: {boot.get('method')}")


#: at most this many pairs per run are listed in full; beyond, only significant ones
MAX_PAIRS = 40


def _pair_cells(pair: dict[str, Any], keys: list[str]) -> list[str]:
    """One comparison row: the two rows, then each metric's difference and interval."""
    cells = [html_cell(escape(pair["a_label"]), cls="l"),
             html_cell(escape(pair["b_label"]), cls="l")]
    for k in keys:
        d = pair["metrics"].get(k)
        if d is None:
            cells.append(html_cell(escape(fmt(None))))
            continue
        text = f"{escape(fmt(d['diff'], 3))}<br><small>{escape(interval_text(d['ci']))}</small>"
        cells.append(html_cell(text, cls="sig" if d["significant"] else "ns"))
    return cells


def comparisons_html(results: dict[str, Any]) -> str:
    """Per run, the paired differences ``a - b`` of every metric with an interval (row a minus
    row b, both from the same prior noise): significant ones (the 95% interval excludes 0)
    shaded."""
    parts = []
    for run in results["runs"]:
        comp = run.get("comparisons") or {}
        pairs = comp.get("pairs") or []
        if not pairs:
            continue
        keys = sorted({k for p in pairs for k in p["metrics"]}, key=metric_rank)
        shown = pairs if len(pairs) <= MAX_PAIRS else [
            p for p in pairs if any(d["significant"] for d in p["metrics"].values())]
        n_sig = sum(d["significant"] for p in pairs for d in p["metrics"].values())
        head = [html_cell("a", "th", "l"), html_cell("b", "th", "l")] + [
            html_cell(escape(f"{DISPLAY_NAMES.get(k, k)}: a − b"), "th") for k in keys]
        note = (f"{len(pairs)} pairs, {n_sig} significant differences"
                + (f"; only the {len(shown)} pairs with one are listed"
                   if len(shown) < len(pairs) else "")
                + (f"; left out (failed or non-finite samples): {', '.join(comp['excluded'])}"
                   if comp.get("excluded") else ""))
        parts.append(f"<h3>{escape(run['label'])} ({escape(run['method'])})</h3>"
                     f"<p><small>{escape(note)}</small></p>"
                     + html_table(head, [_pair_cells(p, keys) for p in shown]))
    if not parts:
        return "<p>no paired comparisons (intervals off, or fewer than two scored rows)</p>"
    return ("<p>Rows of one run share their prior noise (same seed), so each pair is compared "
            "by a paired bootstrap of the difference a − b (the same resampled indices in "
            "both rows). Shaded: significant, the 95% interval excludes 0 (lower is better "
            "for FD and SW2, higher for the others).</p>" + "\n".join(parts))


def html_report(results: dict[str, Any], out_dir: PathLike, plots: dict[str, Path]) -> str:
    """The self-contained HTML page (images embedded)."""
    warns = [(run["label"], w) for run in results["runs"] for w in run.get("warnings", [])]
    parts = [_intro_html(results), _settings_html(results)]
    if warns:
        parts.append("<div class='warn'><b>Warnings</b><ul>" + "".join(
            f"<li><b>{escape(lab)}</b>: {escape(w)}</li>" for lab, w in warns) + "</ul></div>")
    parts += ["<h2>Results</h2>", _glossary_html(), results_table_html(results),
              "<p><small>Baseline rows (shaded): real data scored the same way at the "
              "given n — what a perfect model would score. Bold: best sampler per column. "
              "ms / sample: warm wall-clock time at the batch size above. Peak MB: see "
              "memory_method in results.csv.</small></p>",
              "<h2>Significant differences</h2>", comparisons_html(results), "<h2>Plots</h2>"]
    parts += plot_images(plots, ("guidance", "quality_vs_time", "quality_vs_nfe",
                                  "diversity_vs_nfe"))
    parts += [_run_header(run, results.get("settings", {})) for run in results["runs"]]
    parts += ["<h2>Samples</h2>", _grids_html(results, Path(out_dir))]
    title = "trilemma evaluation: " + ", ".join(run["label"] for run in results["runs"])
    return page(title, parts)
