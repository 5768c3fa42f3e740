"""A noise-conditional classifier ``p_phi(c | u_t, t)`` (method ``noise_classifier``): trained
on labelled data noised by a forward process, it guides the samples of a score model of the
same process and data (:mod:`trilemma.classifier_guidance`; REFERENCE.md §9.2). It draws no
samples itself.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..classifier_guidance import GuidedScore, process_signature
from ..nets import count_parameters
from ..objectives.classification import noise_classifier_loss
from ..processes.base import LinearProcess, ScoreFn
from ..samplers.base import SampleResult
from .base import Method
from .labels import check_conditioning, check_range


class NoiseClassifier(Method):
    """A classifier of noisy states (method ``noise_classifier``).

    Args:
        process: the forward SDE whose marginals it is trained on.
        net: ``net(u, t) -> (B, num_classes)`` logits on the whole state (for CLD ``(x, v)``,
            twice the data's channels), e.g. :class:`~trilemma.nets.classifier.ConvClassifier`.
        data_shape: shape of one data sample (without batch).
        num_classes: number of classes; labels lie in ``[0, num_classes)``.
    """

    name = "noise_classifier"

    def __init__(self, process: LinearProcess, net: nn.Module, data_shape: tuple[int, ...],
                 num_classes: int) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        self.process = process
        self.net = net
        self.data_shape = tuple(int(s) for s in data_shape)
        self.num_classes = num_classes

    def forward(self, u: Tensor, t: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` of the classes of states ``u`` at times ``t``."""
        return self.net(u, t)

    def loss(self, batch: Tensor | tuple | list, generator: torch.Generator | None = None,
             **kwargs: Any) -> Tensor:
        """Per-sample cross-entropy on a labelled batch ``(x, labels)`` noised to a random
        time (:func:`~trilemma.objectives.classification.noise_classifier_loss`)."""
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError("a noise classifier trains on labelled batches (x, labels); the "
                             "data has no labels (toy data: set data.labels: true)")
        x0, labels = batch[0], batch[1]
        if tuple(x0.shape[1:]) != self.data_shape:
            raise ValueError(f"batch has sample shape {tuple(x0.shape[1:])}, the classifier "
                             f"expects {self.data_shape}")
        return noise_classifier_loss(self.net, self.process, x0, labels, self.num_classes,
                                     generator)

    def samplers(self) -> list[str]:
        """None: a classifier guides another model's sampler."""
        return []

    def check_sampler(self, sampler: str, nfe: int | None = None,
                      options: Any = None) -> None:
        """Always refuses: a classifier draws no samples."""
        raise ValueError("sampler: a noise classifier (model.method: noise_classifier) draws "
                         "no samples; pass it to a score model of the same process and "
                         "data (trilemma sample SCORE_RUN --classifier THIS_RUN)")

    def sample(self, n: int, sampler: str, nfe: int | None,
               generator: torch.Generator | None = None, **opts: Any) -> SampleResult:
        """Refuses (see :meth:`check_sampler`)."""
        self.check_sampler(sampler, nfe)
        raise AssertionError("unreachable")  # pragma: no cover

    def check_guides(self, process: LinearProcess, data_shape: tuple[int, ...],
                     num_classes: int | None = None) -> None:
        """Raise ``ValueError('classifier: ...')`` unless this classifier was trained on the
        same process (name and coefficients) and data shape as a score model's (and on as
        many classes as a class-conditional one knows)."""
        if num_classes is not None and num_classes != self.num_classes:
            raise ValueError(f"classifier: trained on {self.num_classes} classes, the score "
                             f"model knows {num_classes}; train the classifier on the score "
                             "run's labels")
        if tuple(data_shape) != self.data_shape:
            raise ValueError(f"classifier: trained on data of shape {self.data_shape}, the "
                             f"score model's data has shape {tuple(data_shape)}; train the "
                             "classifier on the score run's data")
        mine, theirs = process_signature(self.process), process_signature(process)
        if mine != theirs:
            raise ValueError(f"classifier: trained on process {mine[0]} {mine[1]}, the score "
                             f"model's is {theirs[0]} {theirs[1]}; train the classifier on "
                             "the score run's process")

    def check_labels(self, labels: Tensor) -> None:
        """Raise ``ValueError('labels: ...')`` for labels outside ``[0, num_classes)``."""
        check_range(labels, self.num_classes)

    def parameter_counts(self) -> dict[str, int]:
        """Total and classifier-network parameter counts."""
        return {"total": count_parameters(self), "net": count_parameters(self.net)}


def guide_with_classifier(score_fn: ScoreFn, classifier: Any, scale: float | None,
                          labels: Tensor | None, n: int, process: LinearProcess,
                          data_shape: tuple[int, ...], device: torch.device,
                          num_classes: int | None = None) -> GuidedScore:
    """The classifier-guided score a score model samples with (checked: a
    :class:`NoiseClassifier` of the same process and data shape, ``n`` labels in its range, a
    scale >= 0; default scale 1). Raises ``ValueError`` naming the argument to fix."""
    if not isinstance(classifier, NoiseClassifier):
        raise ValueError(f"classifier: expected a noise classifier (trilemma.load of a run "
                         f"trained with model.method: noise_classifier), got "
                         f"{type(classifier).__name__}")
    classifier.check_guides(process, data_shape, num_classes)
    if labels is None:
        raise ValueError("labels: classifier guidance needs the class of every sample: "
                         f"labels=<{n} integers> (CLI: --label C)")
    # shape, dtype and range checked as for class-conditional sampling (methods/labels.py)
    labels = check_conditioning(labels, 0.0, n, classifier.num_classes, who="the classifier")
    clf_device = next(classifier.parameters()).device
    if clf_device != device:
        raise ValueError(f"classifier: on {clf_device}, the score model on {device}; load both "
                         "on the same device")
    return GuidedScore(score_fn, classifier, process, labels.to(device),
                       1.0 if scale is None else scale)
