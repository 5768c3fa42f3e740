"""The class-conditional flags: ``sample --label C | --labels balanced|0,1,2 --guidance W`` and
``evaluate --guidance W1/W2/...``, turned into labels and weights (errors name the flag)."""

from __future__ import annotations

import argparse
import math

from torch import Tensor

from ..methods.base import Method
from ..methods.labels import balanced_labels, check_conditioning, parse_labels

#: how a library error's field reads as a flag of ``trilemma sample``
FLAGS = {"labels": "--label/--labels", "guidance": "--guidance"}


def _as_flag_error(err: ValueError) -> ValueError:
    key, _, msg = str(err).partition(": ")
    return ValueError(f"{FLAGS[key]}: {msg}" if key in FLAGS else str(err))


def sample_conditioning(args: argparse.Namespace, model: Method, n_default: int
                        ) -> tuple[int, Tensor | None, float]:
    """``(n, labels, guidance)`` of ``trilemma sample``: ``--label C`` asks every sample of
    class C, ``--labels balanced`` n/num_classes of each class in order, ``--labels 0,1,2``
    one sample per entry (n is their number). Raises ``ValueError`` naming the flag."""
    guidance = 0.0 if args.guidance is None else float(args.guidance)
    if args.label is not None and args.labels is not None:
        raise ValueError("--label/--labels: give one of them (--label C for one class, "
                         "--labels balanced or a list for several)")
    n = args.n or n_default
    labels: Tensor | None = None
    try:
        if args.labels is not None:
            listed = parse_labels(args.labels, model.num_classes)
            if listed is None:  # an unconditional model is refused below
                labels = balanced_labels(n, model.num_classes or 1)
            elif args.n and args.n != len(listed):
                raise ValueError(f"labels: {len(listed)} labels for --n {args.n}; give one "
                                 "label per sample or leave out --n")
            else:
                labels, n = listed, len(listed)
        elif args.label is not None:
            labels = parse_labels(str(args.label), model.num_classes).expand(n).clone()
        labels = check_conditioning(labels, guidance, n, model.num_classes,
                                    who="this run")
    except ValueError as err:
        raise _as_flag_error(err) from None
    return n, labels, guidance


def parse_guidance(text: str | None) -> list[float] | None:
    """``--guidance 0/0.5/1/2/4`` of ``trilemma evaluate`` as weights (None when not given)."""
    if text is None:
        return None
    try:
        weights = [float(w) for w in str(text).split("/")]
    except ValueError:
        raise ValueError(f"--guidance: expected weights w >= 0 joined by '/', e.g. 0/1/2, got "
                         f"{text!r}") from None
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"--guidance: weights must be finite numbers w >= 0, got {text!r}")
    if len(set(weights)) != len(weights):
        raise ValueError(f"--guidance: each weight once, got {text!r}")
    return weights
