"""Pieces the benchmark scripts share (imported as a sibling module: run the scripts as
``python benchmarks/NAME.py``, which puts this folder on ``sys.path``)."""

from __future__ import annotations

import time
from pathlib import Path

import torch


def find_mnist(given: str | None) -> Path:
    """``--mnist-root``, else the first ``shared/data/mnist`` in a parent of this repository."""
    if given:
        return Path(given)
    for parent in Path(__file__).resolve().parents:
        cand = parent / "shared" / "data" / "mnist"
        if cand.is_dir():
            return cand
    raise SystemExit("no MNIST folder found; pass --mnist-root (four IDX files, .gz allowed)")


def cpu_seconds_per_step(model: torch.nn.Module, data: torch.Tensor, batch_size: int, seed: int,
                         n: int = 30) -> float:
    """CPU seconds of one AdamW training step of ``model.loss`` on random batches of ``data``
    (after 5 warm-up steps): what the fixed-CPU-budget benchmarks divide their budget by."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    for i in range(n + 5):
        if i == 5:
            start = time.process_time()
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=gen)
        opt.zero_grad()
        model.loss(data[idx], gen).mean().backward()
        opt.step()
    return (time.process_time() - start) / n
