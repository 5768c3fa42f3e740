"""The benchmark's outputs: markdown tables, figures, ``oracle_samplers.*`` and ``bench.html``.

Everything is drawn with :mod:`trilemma.report` (its formatter, table builders, plotting
helpers and page frame), so numbers read the same as in an evaluation report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..report.format import (
    best_value,
    escape,
    fmt,
    html_cell,
    html_table,
    markdown_to_html,
    md_table,
)
from ..report.html import kv, page, plot_images
from ..report.plots import MARKERS, finish, no_data, pyplot
from .summary import main_runs, run_ok

#: table and axis titles of the metrics the benchmark tabulates
METRIC_TITLES = {"sw2": "SW2", "within_mode_sw2": "within-mode SW2 (mode std units)",
                 "quality": "share within 3 sigma", "spread_ratio": "spread ratio"}


def _label(rec: dict) -> str:
    """A run's sampler as the tables name it (``diffusers:<scheduler>`` for the peer)."""
    return rec["sampler"] if rec["kind"] == "trilemma" else f"diffusers:{rec['sampler']}"


def _floor_note(floor: dict, metric: str) -> str:
    """What a perfect sampler scores on ``metric`` (the SW2 noise floor or the exact samples)."""
    if metric == "sw2":
        return (f"noise floor {floor['sw2_mean']:.4f} ± {floor['sw2_std']:.4f}, n = "
                f"{floor['n']}, reference {floor['n_reference']}")
    return f"exact samples score {fmt(floor['exact_report'].get(metric))}, n = {floor['n']}"


def _nfe_cell(rec: dict | None, metric: str, best: float | None, bold: bool) -> str:
    """One NFE column's cell: blank (not run), ``fail``, or the value (bold when best)."""
    if rec is None:
        return ""
    if not run_ok(rec):
        return "fail"
    text = fmt(rec.get(metric))
    return f"**{text}**" if bold and rec.get(metric) == best else text


def _adaptive_cell(runs: list[dict], metric: str) -> str:
    """The adaptive sampler's ``metric @ NFE`` (its one run, at the NFE it chose)."""
    cell = "–"
    for rec in runs:
        if rec.get("adaptive"):
            cell = f"{fmt(rec.get(metric))} @ {rec['nfe']}" if run_ok(rec) else "fail (cap)"
    return cell


def _nfe_table(runs: list[dict], nfes: list[int], metric: str, bold: bool) -> str:
    """Rows samplers, columns NFE budgets plus the adaptive run; best per column in bold."""
    best = {n: best_value((r[metric] for r in runs if r["nfe_budget"] == n and run_ok(r)
                           and r.get(metric) is not None), metric) for n in nfes}
    rows = []
    for label in dict.fromkeys(_label(r) for r in runs):
        mine = [r for r in runs if _label(r) == label]
        cells = [_nfe_cell(next((r for r in mine if r["nfe_budget"] == n), None), metric,
                           best[n], bold) for n in nfes]
        rows.append([label, *cells, _adaptive_cell(mine, metric)])
    return md_table(["sampler", *(f"NFE {n}" for n in nfes), "adaptive"], rows)


def sw2_tables(results: dict, markdown: bool = True, metric: str = "sw2") -> str:
    """One ``metric``-vs-NFE table per (mixture, process): rows samplers, columns NFE budgets;
    the best entry per column (lowest; highest for the share within 3 sigma) in bold."""
    lines = []
    nfes = list(results["config"]["nfes"])
    main = main_runs(results)
    for mname, pname in dict.fromkeys((r["mixture"], r["process"]) for r in main):
        note = _floor_note(results["floors"][mname], metric)
        lines.append(f"\n**{mname} / {pname}** — {METRIC_TITLES.get(metric, metric)} ({note})\n")
        runs = [r for r in main if (r["mixture"], r["process"]) == (mname, pname)]
        lines.append(_nfe_table(runs, nfes, metric, bold=markdown))
    return "\n".join(lines)


def detail_table(results: dict) -> str:
    """All metrics at the headline NFEs on grid25 / VP, averaged over the prior-noise seeds."""
    rows = []
    for key, entry in results.get("headline", {}).items():
        if not key.startswith("nfe"):
            continue
        rows += [[key[3:], _label(r), r["nfe"], f"{r['sw2']:.4f} ± {r['sw2_std']:.4f}",
                  f"{r['quality']:.3f}", f"{r['modes_covered']:.4g}", f"{r['kl_weights']:.3f}",
                  fmt(r["spread_ratio"], 3), fmt(r["spread_ratio_median"], 3),
                  fmt(r["within_mode_sw2"], 3)] for r in entry.get("all", [])]
    return md_table(["NFE", "sampler", "NFE used", "SW2 (mean ± std over seeds)", "quality",
                     "modes", "KL", "spread", "spread (median)", "within-mode SW2"], rows)


def overhead_table(results: dict) -> str:
    """Per-step overhead (us, median) of trilemma's VP samplers and diffusers' schedulers."""
    cfg = results["config"]
    rows = [[o["kind"], o["sampler"], f"{o['us_per_step']:.0f}"]
            for o in sorted(results.get("overhead", []), key=lambda o: o["us_per_step"])]
    return (f"batch {cfg['overhead_batch']} x 2, {cfg['overhead_steps']} steps, median of "
            f"{cfg['overhead_repeats']} interleaved rounds; the score/model is a cached tensor; "
            "time per score call (= per step for one-call-per-step samplers)\n\n"
            + md_table(["kind", "sampler", "µs per step"], rows))


def _difference_text(d: dict) -> str:
    """``a − b = diff [lo, hi] (how)`` of one SW2 comparison."""
    ci = d.get("ci")
    span = f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else " (no interval)"
    return f"{d['a']} − {d['b']} = {d['diff']:+.4f}{span}" + (f", {d['by']}" if d.get("by")
                                                                else "")


def _ranking_text(kind: str, b: dict) -> str:
    """Who is best of one kind: the winner, or the samplers the noise does not separate."""
    rank = b.get("ranking")
    if rank is None:  # results written before rankings existed
        return f"best {kind} = {b['sampler']}"
    diffs = rank["differences"]
    if rank["winner"] is not None:
        why = f" (separated from the runner-up: {_difference_text(diffs[0])})" if diffs else ""
        return f"best {kind} = {b['sampler']}{why}"
    names = ", ".join(rank["tied"])
    shown = "; ".join(_difference_text(d) for d in diffs if d["b"] in rank["tied"])
    return (f"no single best {kind} sampler: {names} are tied within the noise ({shown}); "
            f"lowest mean {b['sampler']}")


def _best_text(kind: str, b: dict) -> str:
    """The best sampler of one kind at one headline NFE, as a sentence."""
    us = b["us_per_step"]
    seeds = (f"± {b['sw2_std']:.4f} over {b['n_seeds']} seeds" if b["n_seeds"] > 1
             else "(one seed)")
    return (f"{_ranking_text(kind, b)}: SW2 {b['sw2']:.4f} {seeds} (spread ratio "
            f"{fmt(b['spread_ratio'], 3)}, median-radius "
            f"ratio {fmt(b['spread_ratio_median'], 3)}, share within 3 sigma "
            f"{b['quality']:.3f}, within-mode SW2 {fmt(b['within_mode_sw2'], 3)}, "
            f"{b['modes_covered']:.4g} modes, {'?' if us is None else f'{us:.0f}'} µs/step);")


def _headline_entry_text(key: str, entry: dict) -> str:
    """One NFE of the headline as a bullet: the best of each kind, then the checks."""
    parts = [f"{key}:"]
    parts += [_best_text(kind, entry["best"][kind]) for kind in ("trilemma", "diffusers")
              if kind in entry["best"]]
    if "sw2_diff_per_seed" in entry:
        parts.append("paired SW2 difference per seed: "
                     + ", ".join(f"{d:+.4f}" for d in entry["sw2_diff_per_seed"]))
    if "sw2_difference" in entry:
        d = entry["sw2_difference"]
        parts.append("best trilemma − best diffusers: "
                     + _difference_text({**d, "a": "SW2", "b": "SW2"}).split(" = ", 1)[1]
                     + ("; significant" if d["significant"] else "; not significant"))
    parts += [f"{flag}={entry[flag]}" for flag in (
        "trilemma_beats_diffusers_sw2", "trilemma_vs_diffusers_significant",
        "trilemma_better_on_every_seed",
        "spread_ratio_in_0.8_1.25", "overhead_not_larger") if flag in entry]
    if "best_trilemma_in_spread_range" in entry:
        b = entry["best_trilemma_in_spread_range"]
        parts.append(f"best trilemma with spread ratio in [0.8, 1.25] = {b['sampler']} "
                     f"(SW2 {b['sw2']:.4f}, spread {b['spread_ratio']:.3f}, beats best "
                     f"diffusers on SW2: {b['beats_best_diffusers_sw2']})")
    return "- " + "\n  ".join(parts)


def headline_text(results: dict) -> str:
    """The target check as readable lines."""
    head = results.get("headline", {})
    lines = [_headline_entry_text(key, entry) for key, entry in head.items()
             if key.startswith("nfe")]
    if "noise_floor_sw2" in head:
        lines.append(f"n = {head['n']} samples per run, reference {head['n_reference']}; "
                     f"noise floor SW2 {head['noise_floor_sw2']:.4f} ± "
                     f"{head['noise_floor_sw2_std']:.4f}")
    return "\n".join(lines)


def report_markdown(results: dict) -> str:
    """All tables of a run as markdown (what docs/BENCHMARKS.md quotes)."""
    has_headline = any(k.startswith("nfe") for k in results.get("headline", {}))
    parts = ["## Headline (grid25, VP)\n", headline_text(results)] if has_headline else []
    parts += ["\n## SW2 vs NFE",
              sw2_tables(results), "\n## Within-mode SW2 vs NFE",
              sw2_tables(results, metric="within_mode_sw2"),
              "\n## Share within 3 sigma vs NFE", sw2_tables(results, metric="quality")]
    if has_headline:
        parts += ["\n## grid25 / VP at the headline NFEs, all metrics (mean over seeds)\n",
                  detail_table(results)]
    if results.get("overhead"):
        parts += ["\n## Per-step overhead\n", overhead_table(results)]
    parts.append(f"\ntotal {results.get('seconds_total', 0):.0f} s; environment "
                 f"{json.dumps(results['environment'])}\n")
    return "\n".join(parts)


# ---------------------------------------------------------------------- figures
def _floor_lines(ax: Any, floor: dict, metric: str) -> None:
    """What a perfect sampler scores: the SW2 noise floor as a band, or the exact samples."""
    if metric == "sw2":
        ax.axhline(floor["sw2_mean"], color="k", lw=1, ls=":", label="noise floor")
        ax.axhspan(max(floor["sw2_mean"] - floor["sw2_std"], 1e-6),
                   floor["sw2_mean"] + floor["sw2_std"], color="k", alpha=0.08)
    elif floor["exact_report"].get(metric) is not None:
        ax.axhline(floor["exact_report"][metric], color="k", lw=1, ls=":",
                   label="exact samples")


def _sampler_lines(ax: Any, runs: list[dict], metric: str, colors: dict) -> None:
    """One line per (kind, sampler) against NFE (diffusers dashed, adaptive as a star)."""
    for lab, color in colors.items():
        mine = [r for r in runs if (r["kind"], r["sampler"]) == lab and run_ok(r)]
        if not mine:
            continue
        xs = [r["nfe"] for r in mine]
        ys = [r.get(metric) or float("nan") for r in mine]
        name = _label(mine[0])
        if len(mine) == 1 and mine[0].get("adaptive"):
            ax.plot(xs, ys, "*", ms=10, color=color, label=f"{name} (adaptive)")
        else:
            ax.plot(xs, ys, "--" if lab[0] == "diffusers" else "-", marker="o", ms=3,
                    color=color, label=name)


def plot_results(results: dict, path: str | Path, metric: str = "sw2") -> Path:
    """``metric`` vs NFE (log-log), one panel per (mixture, process); for SW2 the noise floor as
    a band, otherwise the exact samples' score as a dotted line."""
    plt = pyplot()
    main = main_runs(results)
    combos = list(dict.fromkeys((r["mixture"], r["process"]) for r in main))
    mixtures = list(dict.fromkeys(m for m, _ in combos))
    processes = list(dict.fromkeys(p for _, p in combos))
    fig, axes = plt.subplots(len(mixtures), len(processes), squeeze=False,
                             figsize=(4.2 * len(processes), 3.4 * len(mixtures)))
    cmap = plt.get_cmap("tab20")
    labels = list(dict.fromkeys((r["kind"], r["sampler"]) for r in main))
    colors = {lab: cmap(i % 20) for i, lab in enumerate(labels)}
    for i, mname in enumerate(mixtures):
        for j, pname in enumerate(processes):
            ax = axes[i][j]
            runs = [r for r in main if (r["mixture"], r["process"]) == (mname, pname)]
            _sampler_lines(ax, runs, metric, colors)
            _floor_lines(ax, results["floors"][mname], metric)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{mname} / {pname}", fontsize=10)
            ax.set_xlabel("NFE")
            ax.set_ylabel(METRIC_TITLES.get(metric, metric).split(" (")[0])
    return finish(fig, [ax for row in axes for ax in row], path, fontsize=6, ncol=2)


def plot_bench_quality_vs_time(results: dict, path: str | Path) -> Path:
    """The benchmark's SW2 vs wall-clock seconds per sample, one panel per mixture, processes
    in colour (exact score: the time is the sampler's own arithmetic plus the oracle)."""
    runs = [r for r in main_runs(results) if run_ok(r) and r.get("seconds")]
    if not runs:
        return no_data(path, "no successful benchmark runs")
    plt = pyplot()
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
    return finish(fig, axes[0], path)


# ---------------------------------------------------------------------- files
def write_outputs(results: dict, out_dir: str | Path, stem: str = "oracle_samplers") -> dict:
    """Write ``<stem>.json``, ``<stem>.md`` (tables), ``<stem>.png`` (SW2) and
    ``<stem>_within_mode.png``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{stem}.json", "markdown": out / f"{stem}.md",
             "plot": out / f"{stem}.png", "plot_modes": out / f"{stem}_within_mode.png"}
    paths["json"].write_text(json.dumps(results, indent=1))
    paths["markdown"].write_text(report_markdown(results))
    plot_results(results, paths["plot"])
    plot_results(results, paths["plot_modes"], metric="within_mode_sw2")
    return paths


def _floors_html(floors: dict) -> str:
    """The noise-floor table of the page: SW2 a perfect sampler scores per mixture."""
    rows = [[html_cell(escape(m), cls="l"), html_cell(str(f["n"])),
             html_cell(str(f["n_reference"])),
             html_cell(f"{f['sw2_mean']:.4g} ± {f['sw2_std']:.2g}")] for m, f in floors.items()]
    head = [html_cell(h, "th") for h in ("mixture", "n", "reference", "SW2 floor")]
    return "<h2>Noise floors</h2>" + html_table(head, rows)


def write_bench_report(results: dict, out_dir: str | Path,
                       paths: dict[str, Path] | None = None) -> dict[str, Path]:
    """``bench.html`` (self-contained) for an oracle benchmark run, with its plots embedded.

    ``paths``: what :func:`write_outputs` wrote (its plots are embedded too).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = dict(paths or {})
    paths["quality_vs_time"] = plot_bench_quality_vs_time(results,
                                                          out / "bench_quality_vs_time.png")
    parts = ["<p>Every sampler driven by the <b>exact</b> score of a Gaussian mixture "
             "(trilemma.oracle), so every difference is discretisation error. SW2: sliced "
             "Wasserstein-2 to a fixed set of exact samples (a perfect sampler scores the noise "
             "floor); quality: share of samples within 3 sigma of their mode; all runs of a "
             "(mixture, process) share the prior noise.</p>",
             kv([("config", json.dumps(results.get("config", {}))),
                 ("environment", json.dumps(results.get("environment", {}))),
                 ("total seconds", results.get("seconds_total"))])]
    if results.get("floors"):
        parts.append(_floors_html(results["floors"]))
    parts.append("<h2>Plots</h2>")
    parts += plot_images(paths, ("quality_vs_time", "plot", "plot_modes"))
    parts.append(markdown_to_html(report_markdown(results)))
    paths["html"] = out / "bench.html"
    paths["html"].write_text(page("trilemma oracle sampler benchmark", parts))
    return paths
