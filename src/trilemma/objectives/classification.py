"""The noise-conditional classifier's objective (Dhariwal and Nichol 2021; REFERENCE.md §9.2).

A classifier ``p_phi(c | u_t, t)`` for classifier guidance is trained on the forward process
itself: draw ``t ~ U[train_eps, T]`` (the range the score model is trained and sampled on),
``u_t ~ p(u_t | x0)`` (for CLD the whole state ``(x_t, v_t)`` with the initial velocity
marginalised, the kernel HSM uses), and minimise the cross-entropy ``-log p_phi(c | u_t, t)``
of the sample's label. Its minimiser is the exact class posterior of the diffused data at every
``t``, whose gradient turns the unconditional score into the conditional one (Bayes' rule).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..processes.base import LinearProcess
from .tsampling import uniform_times

#: a classifier network ``net(u, t) -> (B, num_classes)`` logits
ClassifierNet = Callable[[Tensor, Tensor], Tensor]


def noise_classifier_loss(classifier: ClassifierNet, process: LinearProcess, x0: Tensor,
                          labels: Tensor, num_classes: int,
                          generator: torch.Generator | None = None) -> Tensor:
    """Per-sample cross-entropy ``-log p_phi(c | u_t, t)`` of noised data (module docstring).

    ``labels`` are integers in ``[0, num_classes)``, one per sample of ``x0``.
    """
    if labels.shape != (x0.shape[0],):
        raise ValueError(f"labels must have shape ({x0.shape[0]},), got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}) (model.num_classes = "
                         f"{num_classes}), got range [{int(labels.min())}, {int(labels.max())}]")
    t = uniform_times(x0.shape[0], process.train_eps, process.T, generator, device=x0.device)
    u_t, _ = process.perturb(x0, t, generator)
    logits = classifier(u_t, t.to(x0.dtype))
    return F.cross_entropy(logits.float(), labels.to(logits.device, torch.long),
                           reduction="none")
