"""``loss.png``: the training curves of ``log.csv`` drawn next to it (rank 0, at every
checkpoint and at the end of a run).

Top panel: ``loss`` against the step (and ``loss_<phase>`` for multi-phase models such as
DDGAN's ``loss_d``/``loss_g``), on a log scale when every value is positive; bottom panel: the
learning rate. matplotlib is imported when the plot is drawn (Agg backend, no display).
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

LOSS_PLOT = "loss.png"


def read_log(path: Path) -> dict[str, list[float]]:
    """The numeric columns of a ``log.csv`` (rows that do not parse are skipped)."""
    columns: dict[str, list[float]] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        names = list(reader.fieldnames or [])
        columns = {n: [] for n in names}
        for row in reader:
            try:
                values = {n: float(row[n]) for n in names}
            except (TypeError, ValueError):
                continue
            for n, v in values.items():
                columns[n].append(v)
    return columns


def save_loss_plot(log_csv: str | os.PathLike, out: str | os.PathLike | None = None
                   ) -> Path | None:
    """Draw ``log.csv``'s loss and learning rate to ``out`` (default: ``loss.png`` beside it);
    None when the log has no rows yet."""
    log_csv = Path(log_csv)
    cols = read_log(log_csv)
    steps = cols.get("step", [])
    if not steps:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    curves = {n: v for n, v in cols.items() if n == "loss" or n.startswith("loss_")}
    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(6, 4.5), dpi=100, sharex=True,
                                    gridspec_kw={"height_ratios": [3, 1]})
    try:
        finite = [v for vals in curves.values() for v in vals if math.isfinite(v)]
        for name, vals in curves.items():
            ax.plot(steps, vals, label=name, lw=1.2)
        if finite and min(finite) > 0:
            ax.set_yscale("log")
        ax.set_ylabel("loss (mean per log interval)")
        ax.grid(alpha=0.3)
        if len(curves) > 1:
            ax.legend(fontsize=8)
        ax.set_title(f"{log_csv.parent.name}: step {int(steps[-1])}", fontsize=9)
        ax_lr.plot(steps, cols.get("lr", [math.nan] * len(steps)), color="0.4", lw=1)
        ax_lr.set_ylabel("lr")
        ax_lr.set_xlabel("step")
        ax_lr.grid(alpha=0.3)
        fig.tight_layout()
        path = Path(out) if out is not None else log_csv.with_name(LOSS_PLOT)
        tmp = path.with_name(f".{path.name}.tmp.png")
        fig.savefig(tmp)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
    return path
