"""Scoring samples against a fixed reference, one interface for every kind of data.

A :class:`Scorer` is built once per run by :func:`make_scorer` (which sets up its reference:
classifier features of the held-out split for images, exact oracle samples for toys) and then
scores each sampler's samples (:meth:`Scorer.score`) and real data (:meth:`Scorer.baseline`,
what a perfect model would score at that n). Image scoring lives in :mod:`.images`, toy scoring
in :mod:`.toys`; :class:`NoScorer` is what ``--no-metrics`` gets.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from ..metrics.reference import SampleSizeWarning, min_samples_warning
from .common import MIN_SAMPLES, finite
from .dataspec import DataSpec


def quiet_warning(metric: str, n: int, dim: int | None = None) -> str | None:
    """The too-few-samples warning text for ``metric`` at ``n``, without warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SampleSizeWarning)
        return min_samples_warning(metric, n, dim)


class Scorer:
    """Scores samples of one run's data against a fixed reference.

    Attributes (JSON-safe, for the run record): ``extractor`` (the feature network, or None),
    ``reference`` (the reference's provenance, or None), ``warnings`` (set-up warnings every
    number of this run carries).
    """

    def __init__(self, spec: DataSpec) -> None:
        self.spec = spec
        self.extractor: dict[str, Any] | None = None
        self.reference: dict[str, Any] | None = None
        self.warnings: list[str] = []

    def metrics(self, x: Tensor) -> tuple[dict[str, Any], list[str]]:
        """Metrics of finite samples ``x`` (at least :data:`MIN_SAMPLES`) and warnings."""
        raise NotImplementedError

    def score(self, samples: Tensor) -> tuple[dict[str, Any], list[str], int]:
        """``(metrics, warnings, number of non-finite samples)``: the metrics use the finite
        samples only; NaN/inf values become None (JSON-safe)."""
        ok = torch.isfinite(samples.reshape(len(samples), -1)).all(dim=1)
        bad = int((~ok).sum())
        x = samples[ok]
        if len(x) < MIN_SAMPLES:
            return {}, [f"only {len(x)} finite samples: no metrics"], bad
        m, w = self.metrics(x)
        return {k: finite(v) for k, v in m.items()}, w, bad

    def baseline(self, n: int, seed: int) -> dict[str, Any] | None:
        """Real data scored the same way (``label``, ``n``, ``metrics``, ``warnings``)."""
        raise NotImplementedError

    def picture_reference(self, n: int) -> Tensor | None:
        """Reference points to draw under low-dimensional samples (None: none)."""
        return None


class NoScorer(Scorer):
    """Metrics off: samples are only counted for non-finite values."""

    def score(self, samples: Tensor) -> tuple[dict[str, Any], list[str], int]:
        """``({}, [], number of non-finite samples)``."""
        ok = torch.isfinite(samples.reshape(len(samples), -1)).all(dim=1)
        return {}, [], int((~ok).sum())

    def baseline(self, n: int, seed: int) -> None:
        """No baseline without metrics."""
        return None
