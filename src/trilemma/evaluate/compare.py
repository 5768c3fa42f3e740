"""Paired comparisons between the rows of one run (REFERENCE.md §11).

Every row of a run is sampled from the same seed, so sample i of two rows starts from the same
prior noise; every row's bootstrap replicates use the same resampling counts
(:func:`trilemma.metrics.bootstrap.bootstrap_counts`, fixed seed). The difference of two rows'
replicates is then a paired bootstrap of their difference, much tighter than the two separate
intervals suggest when the rows' errors are correlated. A difference is significant when its
95% interval excludes 0.

Rows whose sampler failed or produced non-finite samples (dropped before scoring, so their
resamples no longer line up) are left out and named in ``excluded``.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any

from ..metrics.bootstrap import BOOTSTRAP_SEED, LEVEL, METHOD, paired_difference
from .scoring import Scored


def row_tag(row: dict[str, Any]) -> str:
    """How a comparison names a row: its label and the NFE it used (``dpm2m NFE 10``)."""
    nfe = row.get("nfe", row.get("nfe_budget"))
    return f"{row['label']} NFE {nfe:g}" if isinstance(nfe, (int, float)) else row["label"]


def paired_comparisons(rows: Sequence[dict[str, Any]],
                       scored: Sequence[Scored | None]) -> dict[str, Any]:
    """Every pair of comparable rows of one run: for each metric both have replicates of, the
    difference ``a - b`` with its paired 95% interval and whether it is significant.

    Returns ``{"method", "level", "seed", "repeats", "pairs": [{"a", "b" (row indices),
    "a_label", "b_label", "metrics": {key: {"diff", "ci", "significant"}}}], "excluded"}``.
    """
    ok = [i for i, s in enumerate(scored) if s is not None and s.pairable]
    excluded = [row_tag(rows[i]) for i in range(len(rows)) if i not in ok]
    pairs = []
    repeats = None
    for a, b in combinations(ok, 2):
        sa, sb = scored[a], scored[b]
        assert sa is not None and sb is not None
        diffs = {}
        for key, reps in sa.replicates.items():
            other = sb.replicates.get(key)
            va, vb = sa.metrics.get(key), sb.metrics.get(key)
            if other is None or va is None or vb is None or len(other) != len(reps):
                continue
            diffs[key] = paired_difference(va, vb, reps, other)
            repeats = max(repeats or 0, len(reps))
        pairs.append({"a": a, "b": b, "a_label": row_tag(rows[a]),
                      "b_label": row_tag(rows[b]), "metrics": diffs})
    return {"method": METHOD, "level": LEVEL, "seed": BOOTSTRAP_SEED, "repeats": repeats,
            "pairs": pairs, "excluded": excluded}


def significant_pairs(comparisons: dict[str, Any] | None) -> list[tuple[str, str, str, dict]]:
    """``(a_label, b_label, metric, difference)`` of every significant difference."""
    if not comparisons:
        return []
    return [(p["a_label"], p["b_label"], key, d) for p in comparisons.get("pairs", [])
            for key, d in p["metrics"].items() if d.get("significant")]
