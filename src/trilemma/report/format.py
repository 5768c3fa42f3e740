"""Numbers, metric directions and tables as text: the one formatter behind every report.

The evaluation report (:mod:`trilemma.report`) and the oracle sampler benchmark
(:mod:`trilemma.bench`) both format through here, so a number, a best-in-column mark or a
table reads the same in results.md, report.html, oracle_samplers.md and bench.html.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

#: what a missing, failed or non-finite number shows as
MISSING = "–"
#: metrics where a larger value is better (every ``IS-<dataset>`` too); all others: smaller
HIGHER_IS_BETTER = ("precision", "recall", "density", "coverage", "quality", "modes_covered",
                    "mode_coverage", "class_share", "min_class_share")


def fmt(x: Any, digits: int = 4) -> str:
    """A table cell for ``x``: ``digits`` significant digits, scientific notation outside
    [1e-3, 1e5), integers and text as they are, ``–`` for None and non-finite numbers."""
    if x is None:
        return MISSING
    if isinstance(x, (bool, int)):
        return str(x)
    if isinstance(x, float):
        if not math.isfinite(x):
            return MISSING
        if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
            return f"{x:.{digits - 1}e}"
        return f"{x:.{digits}g}"
    return str(x)


def higher_is_better(key: str) -> bool:
    """Whether a larger value of metric ``key`` is better (so the best of a column is its max)."""
    return key in HIGHER_IS_BETTER or key.startswith("IS-")


def best_value(values: Iterable[float], key: str) -> float | None:
    """The best of ``values`` for metric ``key`` (max or min, see :func:`higher_is_better`)."""
    vals = list(values)
    if not vals:
        return None
    return max(vals) if higher_is_better(key) else min(vals)


def escape(x: Any) -> str:
    """``str(x)`` escaped for HTML text and attribute values."""
    return html.escape(str(x))


# ----------------------------------------------------------------------------- markdown
def md_table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A pipe table: header, ``---`` separator, one line per row (cells taken as text)."""
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def md_inline(text: str) -> str:
    """One line of markdown as HTML: escaped, ``**bold**`` -> ``<b>``."""
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escape(text))


# ----------------------------------------------------------------------------- HTML
def html_cell(content: str, tag: str = "td", cls: str | None = None,
              colspan: int | None = None) -> str:
    """One ``<td>``/``<th>`` around ``content`` (already HTML); ``cls=''`` writes ``class=''``."""
    attrs = "" if cls is None else f" class='{cls}'"
    attrs += "" if colspan is None else f" colspan='{colspan}'"
    return f"<{tag}{attrs}>{content}</{tag}>"


def html_table(head: Sequence[str], rows: Sequence[Sequence[str]],
               row_classes: Sequence[str] | None = None) -> str:
    """A table of cells from :func:`html_cell`: ``head`` in ``<thead>``, one line per row."""
    lines = ["<table><thead><tr>" + "".join(head) + "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        cls = "" if row_classes is None else f" class='{row_classes[i]}'"
        lines.append(f"<tr{cls}>" + "".join(row) + "</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _md_table_html(block: list[str]) -> str:
    """A block of pipe-table lines as an HTML table (separator rows dropped)."""
    cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in block]
    body = [row for row in cells[1:] if not all(set(c) <= set("-: ") for c in row)]
    return html_table([html_cell(md_inline(c), "th") for c in cells[0]],
                      [[html_cell(md_inline(c)) for c in row] for row in body])


def _md_list_html(lines: list[str]) -> str:
    """A block of ``- `` items (and indented continuation lines) as ``<ul>``."""
    items: list[str] = []
    for line in lines:
        if line.startswith("- "):
            items.append(md_inline(line[2:]))
        else:  # an indented continuation of the item above
            items[-1] += "<br>" + md_inline(line.strip())
    return "<ul>" + "".join(f"<li>{it}</li>" for it in items) + "</ul>"


def _take(lines: list[str], i: int, keep: Callable[[str], bool]) -> int:
    """The index of the first line from ``i + 1`` on that ``keep`` rejects."""
    i += 1
    while i < len(lines) and keep(lines[i]):
        i += 1
    return i


def markdown_to_html(md: str) -> str:
    """The markdown subset of the benchmark tables (:func:`trilemma.bench.report_markdown`) as
    HTML: ``## `` headings, pipe tables, bullet lists with indented continuation lines and
    paragraphs, so one text serves the .md file and the HTML page."""
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            end = _take(lines, i, lambda s: s.startswith("|"))
            out.append(_md_table_html(lines[i:end]))
        elif line.startswith("- "):
            end = _take(lines, i, lambda s: s.startswith(("  ", "- ")))
            out.append(_md_list_html(lines[i:end]))
        else:
            end = i + 1
            if line.startswith("## "):
                out.append(f"<h2>{md_inline(line[3:])}</h2>")
            elif line.strip():
                out.append(f"<p>{md_inline(line)}</p>")
        i = end
    return "\n".join(out)
