"""Classifier guidance in ``trilemma evaluate``: every sampler/budget once per guidance scale
(one row each), sampled as a class-balanced set (sample ``i`` asks for class ``i mod C``), and
the share of samples the evaluation's own classifier assigns to the class asked for, with a
95% Wilson interval, next to the usual quality and diversity metrics.

The noise classifier that guides (a ``noise_classifier`` run) is not the classifier that
judges (the data set's ``trilemma features`` classifier for images, the exact mixture's most
likely component for toys): the judge never saw noisy data and was not trained with the guide.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..methods.noise_classifier import NoiseClassifier
from ..methods.score_model import ScoreModel
from ..setup import load_run
from .common import EvaluationError
from .requests import SamplerRequest

#: z of a two-sided 95% interval


@dataclass
class Guidance:
    """The classifier that guides, where it came from, and the scales to evaluate."""

    classifier: NoiseClassifier
    path: str
    scales: list[float]

    def labels(self, n: int) -> Tensor:
        """A class-balanced set of ``n`` asked-for classes: ``i mod num_classes``."""
        return torch.arange(n) % self.classifier.num_classes

    def requests(self, reqs: Sequence[SamplerRequest]) -> list[SamplerRequest]:
        """Each request once per scale (the scale in its label, e.g. ``em cg=2``)."""
        return [dataclasses.replace(r, classifier_scale=s) for r in reqs for s in self.scales]

    def sample_options(self, req: SamplerRequest) -> dict[str, Any]:
        """What ``ScoreModel.sample`` gets besides the sampler's own options."""
        return {"classifier": self.classifier, "classifier_scale": req.classifier_scale}

    def record(self) -> dict[str, Any]:
        """The run record's ``classifier_guidance`` entry."""
        return {"classifier": self.path, "scales": self.scales,
                "num_classes": self.classifier.num_classes,
                "labels": "class-balanced: sample i asks for class i mod num_classes",
                "class_share": "share of samples the evaluation's classifier assigns to the "
                               "asked class (bootstrap interval class_share_ci)"}


def parse_scales(text: str | Sequence[float]) -> list[float]:
    """``'0/1/2/4'`` (or numbers) -> ``[0.0, 1.0, 2.0, 4.0]``; each finite and >= 0."""
    items = text.split("/") if isinstance(text, str) else list(text)
    try:
        scales = [float(s) for s in items]
    except (TypeError, ValueError):
        raise EvaluationError(f"--classifier-scale: expected numbers joined by '/', e.g. "
                              f"0/1/2/4, got {text!r}") from None
    if not scales or any(not math.isfinite(s) or s < 0 for s in scales):
        raise EvaluationError(f"--classifier-scale: scales must be finite numbers >= 0, got "
                              f"{text!r}")
    return scales


def load_guidance(path: str | os.PathLike | None, scales: str | Sequence[float], model: Any,
                  device: str, requests: Sequence[SamplerRequest]
                  ) -> tuple[Guidance | None, list[SamplerRequest]]:
    """The classifier run at ``path`` checked against the score model it guides, and the
    requests once per scale (None and the requests as they are without a path)."""
    if path is None:
        return None, list(requests)
    if not isinstance(model, ScoreModel):
        raise EvaluationError(f"--classifier: classifier guidance needs a score model run "
                              f"(model.method: score), got {model.name!r}")
    try:
        clf, _, _ = load_run(path, device)
    except (FileNotFoundError, NotADirectoryError) as err:
        raise EvaluationError(f"--classifier: {err}") from None
    if not isinstance(clf, NoiseClassifier):
        raise EvaluationError(f"--classifier: {path} is a {clf.name!r} run, not a noise "
                              "classifier (train one with model.method: noise_classifier)")
    try:
        clf.check_guides(model.process, model.data_shape, model.num_classes)
    except ValueError as err:
        raise EvaluationError(f"--{err}") from None
    guidance = Guidance(clf, str(path), parse_scales(scales))
    return guidance, guidance.requests(requests)

