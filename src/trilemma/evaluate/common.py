"""What every part of the evaluation shares: its error, format tag, sample minimum and small
JSON helpers."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..metrics.prdc import DEFAULT_K_DC, DEFAULT_K_PR

#: the ``format`` tag of a results dict (``results.json``)
FORMAT = "trilemma.evaluation/1"
#: the k-NN metrics need k + 1 samples per set
MIN_SAMPLES = max(DEFAULT_K_PR, DEFAULT_K_DC) + 1


class EvaluationError(ValueError):
    """A request that cannot be evaluated: a sampler that does not fit, a metric that does not
    fit the data, too few samples, a classifier for other data."""


def default_cache_dir() -> Path:
    """``$TRILEMMA_CACHE`` or ``~/.cache/trilemma``: cached classifiers and reference stats."""
    env = os.environ.get("TRILEMMA_CACHE")
    return Path(env).expanduser() if env else Path("~/.cache/trilemma").expanduser()


def safe_name(text: str) -> str:
    """``text`` as a file-name part: runs of other characters than ``[A-Za-z0-9._-]`` -> ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "x"


def finite(x: Any) -> Any:
    """NaN/inf floats -> None (JSON-safe); numpy scalars -> Python."""
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def dedupe(items: Sequence[str]) -> list[str]:
    """``items`` in order without repeats (warnings shared by several rows appear once)."""
    return list(dict.fromkeys(items))
