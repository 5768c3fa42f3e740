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
- ``guidance.png`` (rows of ``trilemma evaluate --guidance``): FD, recall and the asked-class
  share against the classifier-free guidance weight ``w``;
- ``report.html``: one page with every image embedded as a base64 data URI: provenance
  header (run, config, extractor and its SHA-256, reference statistics, n, seed), warnings,
  the table, the plots and the sample grids.

The package is also the rendering toolkit of the oracle sampler benchmark
(:mod:`trilemma.bench`, which writes ``bench.html`` with it):

- :mod:`.format`: number formatting, which metrics are higher-is-better, markdown/HTML tables;
- :mod:`.tables`: an evaluation's rows, CSV columns and markdown table;
- :mod:`.plots`: the figures and the plotting helpers;
- :mod:`.html`: the page frame and the evaluation page.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .format import HIGHER_IS_BETTER, fmt, markdown_to_html
from .html import CSS, GLOSSARY, data_uri, html_report, results_table_html
from .plots import MARKERS, has_guidance, plot_guidance, plot_metric_vs_nfe, plot_quality_vs_time
from .tables import (
    BASE_COLUMNS,
    DISPLAY_NAMES,
    HIDDEN_IN_TABLE,
    METRIC_ORDER,
    TAIL_COLUMNS,
    PathLike,
    diversity_metric,
    json_safe,
    markdown_table,
    metric_keys,
    quality_metric,
    table_rows,
    write_csv,
)

#: the former private name of :func:`trilemma.report.format.fmt` (tests import it)
_fmt = fmt
#: names of the benchmark page that used to live here; now in :mod:`trilemma.bench`

__all__ = [
    "BASE_COLUMNS", "CSS", "DISPLAY_NAMES", "GLOSSARY", "HIDDEN_IN_TABLE", "HIGHER_IS_BETTER",
    "MARKERS", "METRIC_ORDER", "TAIL_COLUMNS", "PathLike", "data_uri", "diversity_metric",
    "fmt", "html_report", "json_safe", "markdown_table", "markdown_to_html", "metric_keys",
    "plot_metric_vs_nfe", "plot_quality_vs_time",
    "quality_metric", "results_table_html", "table_rows", "write_csv",
    "write_report",
]


def write_report(results: dict[str, Any], out_dir: PathLike) -> dict[str, Path]:
    """Write results.json/.csv, the three plots and report.html into ``out_dir``; their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = json_safe(results)
    paths: dict[str, Path] = {"json": out / "results.json", "csv": out / "results.csv"}
    paths["json"].write_text(json.dumps(results, indent=1) + "\n")
    write_csv(results, paths["csv"])
    paths["quality_vs_nfe"] = plot_metric_vs_nfe(results, out / "quality_vs_nfe.png", "quality")
    paths["quality_vs_time"] = plot_quality_vs_time(results, out / "quality_vs_time.png")
    paths["diversity_vs_nfe"] = plot_metric_vs_nfe(results, out / "diversity_vs_nfe.png",
                                                   "diversity")
    if has_guidance(results):
        paths["guidance"] = plot_guidance(results, out / "guidance.png")
    paths["html"] = out / "report.html"
    paths["html"].write_text(html_report(results, out, paths))
    return paths
