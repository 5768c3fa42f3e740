"""Pieces the benchmark scripts share (imported as a sibling module: run the scripts as
``python benchmarks/NAME.py``, which puts this folder on ``sys.path``)."""

from __future__ import annotations

from pathlib import Path


def find_mnist(given: str | None) -> Path:
    """``--mnist-root``, else the first ``shared/data/mnist`` in a parent of this repository."""
    if given:
        return Path(given)
    for parent in Path(__file__).resolve().parents:
        cand = parent / "shared" / "data" / "mnist"
        if cand.is_dir():
            return cand
    raise SystemExit("no MNIST folder found; pass --mnist-root (four IDX files, .gz allowed)")
