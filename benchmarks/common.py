"""Pieces the benchmark scripts share (imported as a sibling module: run the scripts as
``python benchmarks/NAME.py``, which puts this folder on ``sys.path``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
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


def digits_train_fd(features: str) -> tuple[torch.Tensor, Callable, Callable]:
    """The digits train split, the classifier's feature map (``features``: its safetensors
    file, the one ``trilemma evaluate --features`` uses) and the Fréchet distance of a batch of
    samples to the train split's features: what the tuning scripts score candidates by, so
    that the held-out test split stays for ``trilemma evaluate``."""
    from trilemma.data.images import load_digits
    from trilemma.metrics.classifier import load_classifier
    from trilemma.metrics.features import extract_features
    from trilemma.metrics.frechet import frechet_distance_features

    clf = load_classifier(features)
    data, _ = load_digits("train")

    def feats(x: torch.Tensor) -> torch.Tensor:
        return extract_features(clf, x)

    real = feats(data).double()
    return data, feats, lambda x: frechet_distance_features(real, feats(x).double())


def write_json(folder: str | Path, name: str, obj: object) -> Path:
    """Write ``obj`` as indented JSON to ``folder/name`` (the folder is created)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps(obj, indent=1))
    return out / name
