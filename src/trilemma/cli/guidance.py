"""Classifier guidance on the command line: ``trilemma sample RUN --classifier CLS_RUN
--classifier-scale S --label C`` and ``trilemma evaluate RUN --classifier CLS_RUN
--classifier-scale 0/1/2/4`` (one row per scale, class-balanced samples)."""

from __future__ import annotations

import argparse
import math
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError
from ..methods.noise_classifier import NoiseClassifier
from ..methods.score_model import ScoreModel
from ..setup import load_run


class GuidanceError(ConfigError):
    """A bad guidance flag (printed as ``trilemma: error: ...``)."""

    def __init__(self, message: str) -> None:
        super().__init__([message])


def add_classifier_arguments(p: argparse.ArgumentParser, evaluate: bool = False) -> None:
    """``--classifier`` and ``--classifier-scale`` (``sample`` takes the class from its
    ``--label C``)."""
    p.add_argument("--classifier", metavar="CLASSIFIER_RUN",
                   help="classifier guidance: a run trained with model.method: "
                   "noise_classifier on the same process and data (docs/GUIDE.md)")
    if evaluate:
        p.add_argument("--classifier-scale", metavar="S1/S2/...",
                       help="guidance scales, one row each (default 1; 0 is unguided), e.g. "
                       "0/1/2/4; the samples are class-balanced")
        return
    p.add_argument("--classifier-scale", type=float, metavar="S",
                   help="guidance scale (default 1; 0: unguided; larger: fewer off-class "
                   "samples, less diversity)")


def sample_guidance(args: argparse.Namespace, model: Any, n: int, device: str
                    ) -> tuple[dict[str, Any], Tensor | None]:
    """The sampling keywords and labels ``trilemma sample``'s guidance flags ask for
    (nothing without ``--classifier``)."""
    scale = getattr(args, "classifier_scale", None)
    if args.classifier is None:
        if scale is not None:
            raise GuidanceError("--classifier-scale: give the classifier too "
                                "(--classifier CLASSIFIER_RUN)")
        return {}, None
    if scale is not None and not (math.isfinite(scale) and scale >= 0):
        raise GuidanceError(f"--classifier-scale: expected a finite number >= 0, got {scale}")
    if not isinstance(model, ScoreModel):
        raise GuidanceError(f"--classifier: classifier guidance needs a score model run "
                            f"(model.method: score), got {model.name!r}")
    try:
        clf, _, _ = load_run(args.classifier, device)
    except (FileNotFoundError, NotADirectoryError) as err:
        raise GuidanceError(f"--classifier: {err}") from None
    if not isinstance(clf, NoiseClassifier):
        raise GuidanceError(f"--classifier: {args.classifier} is a {clf.name!r} run, not a "
                            "noise classifier (train one with model.method: noise_classifier)")
    if getattr(args, "label", None) is None:
        raise GuidanceError(f"--label: classifier guidance needs the class to draw, e.g. "
                            f"--label 3 (0..{clf.num_classes - 1})")
    labels = torch.full((n,), int(args.label), dtype=torch.long)
    try:
        clf.check_guides(model.process, model.data_shape, model.num_classes)
        clf.check_labels(labels)
    except ValueError as err:
        flag, _, msg = str(err).partition(": ")
        raise GuidanceError(f"--{flag if flag == 'classifier' else 'label'}: {msg}") from None
    return {"classifier": clf, "classifier_scale": scale}, labels
