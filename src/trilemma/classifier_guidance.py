"""Classifier guidance (Dhariwal and Nichol 2021; REFERENCE.md §9.2): a score function plus the
scaled gradient of a noise-conditional classifier's log-probability of the asked class,

    s~(u, t | c) = s(u, t) + scale * [grad_u log p_phi(c | u, t)]_noise.

``scale = 1`` is Bayes' rule: ``grad log p_t(u) + grad log p_t(c | u) = grad log p_t(u | c)``,
the exact conditional score when both parts are exact; ``scale > 1`` sharpens the class
posterior (``p(c | u)^scale``), trading diversity for class fidelity; ``scale = 0`` is the plain
score (the classifier is not called).

Only the noise-driven block of the gradient enters (``[.]_noise``): a score function here is
the score of the coordinates the noise drives (:mod:`trilemma.processes.base`), and the
reverse SDE and the probability-flow ODE read the score only through ``G G^T``, which is zero
outside that block. For VP, sub-VP and VE that is the whole state; for CLD it is the velocity:
the guided velocity score is ``grad_v log p_t(x, v) + scale * grad_v log p_phi(c | x, v, t)``.
So a CLD classifier must see ``(x_t, v_t)``: one that saw ``x_t`` alone would have a zero
velocity gradient and could not guide at all.

Cost: one score-network call plus one classifier forward and backward per score evaluation;
samplers count the score-network calls as NFE, :attr:`GuidedScore.classifier_calls` counts the
classifier's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .processes.base import LinearProcess, ScoreFn

#: a noise-conditional classifier ``classifier(u, t) -> (B, num_classes)`` logits
Classifier = Callable[[Tensor, Tensor], Tensor]


def class_log_prob_grad(classifier: Classifier, u: Tensor, t: Tensor, labels: Tensor
                        ) -> Tensor:
    """``grad_u log p_phi(labels | u, t)`` for every sample (the whole state), by autograd
    through one forward and backward of ``classifier``; works inside ``torch.no_grad()`` and
    leaves the classifier's parameter gradients untouched."""
    with torch.enable_grad():
        ui = u.detach().requires_grad_(True)
        logits = classifier(ui, t)
        if logits.dim() != 2 or logits.shape[0] != u.shape[0]:
            raise ValueError(f"classifier must return (batch, num_classes) logits, got shape "
                             f"{tuple(logits.shape)}")
        logp = torch.log_softmax(logits if logits.dtype == torch.float64 else logits.float(),
                                 dim=1)
        picked = logp.gather(1, labels.to(logits.device, torch.long)[:, None]).sum()
        (grad,) = torch.autograd.grad(picked, ui)
    return grad


class GuidedScore:
    """The guided score function (module docstring) with its classifier-call count.

    Args:
        score_fn: the unconditional score ``score_fn(u, t)`` (noise-block convention).
        classifier: ``classifier(u, t) -> logits`` on the process's whole state.
        process: the forward process (says which block the noise drives).
        labels: ``(B,)`` integer classes asked for, one per sample of the batches it is called
            on.
        scale: the guidance scale (>= 0).
    """

    def __init__(self, score_fn: ScoreFn, classifier: Classifier, process: LinearProcess,
                 labels: Tensor, scale: float) -> None:
        scale = float(scale)
        if not scale >= 0 or scale == float("inf"):
            raise ValueError(f"classifier_scale must be a finite number >= 0, got {scale}")
        if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"labels must be a 1-D integer tensor, got shape "
                             f"{tuple(labels.shape)} and dtype {labels.dtype}")
        self.score_fn, self.classifier, self.process = score_fn, classifier, process
        self.labels, self.scale = labels, scale
        self.classifier_calls = 0

    def __call__(self, u: Tensor, t: Tensor) -> Tensor:
        score = self.score_fn(u, t)
        if self.scale == 0:
            return score
        if u.shape[0] != self.labels.shape[0]:
            raise ValueError(f"labels: {self.labels.shape[0]} labels for a batch of "
                             f"{u.shape[0]} samples; give one label per sample")
        grad = class_log_prob_grad(self.classifier, u, t, self.labels)
        self.classifier_calls += 1
        return score + self.scale * self.process.noise_part(grad).to(score.dtype)


def classifier_guided_score(score_fn: ScoreFn, classifier: Classifier, process: LinearProcess,
                            labels: Tensor, scale: float = 1.0) -> GuidedScore:
    """``s(u, t) + scale * [grad_u log p_phi(labels | u, t)]_noise`` as a score function for
    any sampler (see :class:`GuidedScore`)."""
    return GuidedScore(score_fn, classifier, process, labels, scale)


def process_signature(process: LinearProcess) -> tuple[str, dict]:
    """What must agree between a classifier's process and a score model's: the name and the
    constructor arguments, less ``eps`` (where samplers stop, which leaves the marginals as
    they are)."""
    return process.name, {k: v for k, v in process.config().items() if k != "eps"}
