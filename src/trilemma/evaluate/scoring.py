"""Scoring samples against a fixed reference, one interface for every kind of data.

A :class:`Scorer` is built once per run by :func:`make_scorer` (which sets up its reference:
classifier features of the held-out split for images, exact oracle samples for toys) and then
scores each sampler's samples (:meth:`Scorer.score`) and real data (:meth:`Scorer.baseline`,
what a perfect model would score at that n), each value with a 95% bootstrap interval
(:mod:`trilemma.metrics.bootstrap`: the samples resampled, the reference fixed). Image scoring
lives in :mod:`.images`, toy scoring in :mod:`.toys`; :class:`NoScorer` is what
``--no-metrics`` gets.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..metrics.bootstrap import DEFAULT_REPEATS, bootstrap_counts, with_intervals
from ..metrics.reference import SampleSizeWarning, min_samples_warning
from .common import MIN_SAMPLES, finite
from .dataspec import DataSpec


def quiet_warning(metric: str, n: int, dim: int | None = None) -> str | None:
    """The too-few-samples warning text for ``metric`` at ``n``, without warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SampleSizeWarning)
        return min_samples_warning(metric, n, dim)


Replicates = dict[str, np.ndarray]


@dataclass
class Scored:
    """What :meth:`Scorer.scored` returns: the metrics (with ``<key>_ci`` intervals), warnings,
    the number of non-finite samples, and the bootstrap replicates of each metric with an
    interval (for paired comparisons: every sample finite means the rows' resamples line up)."""

    metrics: dict[str, Any]
    warnings: list[str]
    bad: int
    replicates: Replicates = field(default_factory=dict)

    @property
    def pairable(self) -> bool:
        """Whether the replicates may be paired with another row's (no sample dropped)."""
        return self.bad == 0 and bool(self.replicates)


class Scorer:
    """Scores samples of one run's data against a fixed reference.

    Attributes (JSON-safe, for the run record): ``extractor`` (the feature network, or None),
    ``reference`` (the reference's provenance, or None), ``warnings`` (set-up warnings every
    number of this run carries). ``repeats``: bootstrap resamples behind each interval
    (:mod:`trilemma.metrics.bootstrap`; 0: no intervals).
    """

    def __init__(self, spec: DataSpec, repeats: int = DEFAULT_REPEATS) -> None:
        self.spec = spec
        self.extractor: dict[str, Any] | None = None
        self.reference: dict[str, Any] | None = None
        self.warnings: list[str] = []
        self.repeats = repeats

    def measure(self, x: Tensor, counts: np.ndarray | None
                ) -> tuple[dict[str, Any], list[str], Replicates]:
        """Metrics of finite samples ``x`` (at least :data:`MIN_SAMPLES`), warnings, and the
        bootstrap replicates of the metrics that get intervals (one per row of ``counts``,
        :func:`~trilemma.metrics.bootstrap.bootstrap_counts`; none when ``counts`` is None)."""
        raise NotImplementedError

    def metrics(self, x: Tensor) -> tuple[dict[str, Any], list[str]]:
        """Metrics of finite samples ``x`` and warnings (no intervals)."""
        m, w, _ = self.measure(x, None)
        return m, w

    def class_hits(self, x: Tensor, labels: Tensor) -> Tensor | None:
        """Per sample, 1.0 where finite sample ``x`` lands in its asked class ``labels`` (the
        data's classifier for images, the oracle's most likely component for mixtures); None
        where the data has no way to tell."""
        return None

    def scored(self, samples: Tensor, labels: Tensor | None = None) -> Scored:
        """Metrics of the finite samples with 95% bootstrap intervals ``<key>_ci`` (NaN/inf
        values become None, JSON-safe), warnings, the non-finite count and the replicates.
        With the asked ``labels`` of class-conditional samples, also ``class_share``: the
        share that lands in its asked class (:meth:`class_hits`), resampled alike."""
        ok = torch.isfinite(samples.reshape(len(samples), -1)).all(dim=1)
        bad = int((~ok).sum())
        x = samples[ok]
        if len(x) < MIN_SAMPLES:
            return Scored({}, [f"only {len(x)} finite samples: no metrics"], bad)
        counts = bootstrap_counts(len(x), self.repeats) if self.repeats else None
        m, w, reps = self.measure(x, counts)
        hits = self.class_hits(x, labels[ok]) if labels is not None else None
        if hits is not None:
            hits_np = hits.double().cpu().numpy()
            m["class_share"] = float(hits_np.mean())
            if counts is not None:
                reps["class_share"] = counts @ hits_np / len(x)
        m = with_intervals({k: finite(v) for k, v in m.items()}, reps)
        return Scored(m, w, bad, reps)

    def score(self, samples: Tensor) -> tuple[dict[str, Any], list[str], int]:
        """``(metrics, warnings, number of non-finite samples)`` of :meth:`scored`."""
        s = self.scored(samples)
        return s.metrics, s.warnings, s.bad

    def baseline(self, n: int, seed: int) -> dict[str, Any] | None:
        """Real data scored the same way (``label``, ``n``, ``metrics``, ``warnings``)."""
        raise NotImplementedError

    def picture_reference(self, n: int) -> Tensor | None:
        """Reference points to draw under low-dimensional samples (None: none)."""
        return None

class NoScorer(Scorer):
    """Metrics off: samples are only counted for non-finite values."""

    def scored(self, samples: Tensor, labels: Tensor | None = None) -> Scored:
        """No metrics; the number of non-finite samples."""
        ok = torch.isfinite(samples.reshape(len(samples), -1)).all(dim=1)
        return Scored({}, [], int((~ok).sum()))

    def baseline(self, n: int, seed: int) -> None:
        """No baseline without metrics."""
        return None
