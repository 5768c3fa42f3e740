"""Class labels for conditional sampling: checks, a balanced set, and the CLI's label lists.

Every conditional sampler call goes through :func:`check_conditioning`, so an unconditional
model given labels, a label out of range, a wrong shape or guidance without labels is a one-line
``ValueError`` naming ``labels``/``guidance`` instead of a silent unconditional sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..processes.base import ScoreFn


def balanced_labels(n: int, num_classes: int, interleave: bool = False) -> Tensor:
    """``n`` labels, ``n / num_classes`` of each class in order (``0 0 .. 1 1 .. K-1``), or
    ``interleave``d (``0 1 .. K-1 0 1 ..``: every batch and every IS split of an evaluation
    balanced too); when ``n`` is not a multiple the classes differ by at most one sample."""
    if n < 1 or num_classes < 1:
        raise ValueError(f"balanced labels need n >= 1 and num_classes >= 1, got n={n}, "
                         f"num_classes={num_classes}")
    idx = torch.arange(n, dtype=torch.long)
    return idx % num_classes if interleave else idx * num_classes // n


def parse_labels(text: str, num_classes: int | None) -> Tensor | None:
    """``'balanced'`` (None here: the caller sizes it) or a comma list ``'0,1,2'`` as labels;
    the error names ``labels`` and the classes that exist."""
    text = text.strip()
    if text == "balanced":
        return None
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"labels: expected 'balanced' or a comma-separated list of class "
                         f"numbers such as 0,1,2, got {text!r}") from None
    out = torch.tensor(values, dtype=torch.long)
    if num_classes is not None:
        check_range(out, num_classes)
    return out


def check_range(labels: Tensor, num_classes: int) -> None:
    """Labels must be classes ``0 .. num_classes - 1`` (the null class is not asked for)."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels: classes run from 0 to {num_classes - 1}, got "
                         f"{int(labels.min())} .. {int(labels.max())}")


def check_conditioning(labels: Tensor | None, guidance: float, n: int,
                       num_classes: int | None, who: str = "this model") -> Tensor | None:
    """The labels of ``n`` conditional samples checked against a model with ``num_classes``
    classes (None: unconditional), as int64; ``guidance`` must be a finite ``w >= 0`` and
    needs labels."""
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) \
            or not math.isfinite(guidance) or guidance < 0:
        raise ValueError(f"guidance: expected a number w >= 0, got {guidance!r}")
    if labels is None:
        if guidance:
            raise ValueError("guidance: classifier-free guidance needs labels (the classes to "
                             "guide towards)")
        return None
    if num_classes is None:
        raise ValueError(f"labels: {who} is unconditional (trained without data.labels: "
                         "true); sample it without labels")
    if not isinstance(labels, Tensor):
        labels = torch.as_tensor(labels)
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"labels: expected integer class numbers, got dtype {labels.dtype}")
    if tuple(labels.shape) != (n,):
        raise ValueError(f"labels: expected shape ({n},), one per sample, got "
                         f"{tuple(labels.shape)}")
    check_range(labels, num_classes)
    return labels.to(torch.long)


def drop_labels(labels: Tensor, num_classes: int, p: float,
                generator: torch.Generator | None = None) -> Tensor:
    """Training labels with label dropout: each replaced by the null class ``num_classes`` with
    probability ``p``, so one network learns both ``s(u | c)`` and ``s(u)`` (classifier-free
    guidance)."""
    labels = labels.to(torch.long)
    if p <= 0:
        return labels
    gen_dev = generator.device if generator is not None else "cpu"
    drop = torch.rand(labels.shape, generator=generator, device=gen_dev) < p
    return torch.where(drop.to(labels.device), num_classes, labels)


def conditional_score(score: Callable[..., Tensor], labels: Tensor | None, guidance: float,
                      num_classes: int | None, who: str = "this model") -> ScoreFn:
    """A no-grad score function ``(u, t) -> score(u, t, labels, guidance)`` for the samplers,
    the labels checked first (:func:`check_conditioning`; one per sample of the states)."""
    n = len(labels) if labels is not None else 0
    labels = check_conditioning(labels, guidance, n, num_classes, who=who)

    def fn(u: Tensor, t: Tensor) -> Tensor:
        with torch.no_grad():
            return score(u, t, None if labels is None else labels.to(u.device), guidance)

    return fn
