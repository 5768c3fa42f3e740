"""Linear forward SDEs: VP (linear, cosine), sub-VP, geometric VP, VE, rectified flow, CLD."""

from __future__ import annotations

from typing import Any

from .base import LinearProcess, ScalarProcess, ScoreFn
from .cld import CLD
from .flow import FLOW_PREDICTIONS, RectifiedFlow
from .scalar import VE, VP, GeometricVP, SubVP, VPCosine, VPFamily
from .tensors import per_sample

PROCESSES: dict[str, type[LinearProcess]] = {
    "vp": VP,
    "vp_cosine": VPCosine,
    "subvp": SubVP,
    "geometric_vp": GeometricVP,
    "ve": VE,
    "rectified_flow": RectifiedFlow,
    "cld": CLD,
}


def get_process(name: str, **kwargs: Any) -> LinearProcess:
    """Build a process by name; an unknown name lists the valid ones."""
    try:
        cls = PROCESSES[name]
    except KeyError:
        raise ValueError(
            f"unknown process {name!r}; valid processes: {', '.join(sorted(PROCESSES))}"
        ) from None
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ValueError(f"bad arguments for process {name!r}: {err}") from None


__all__ = [
    "CLD",
    "FLOW_PREDICTIONS",
    "PROCESSES",
    "VE",
    "VP",
    "GeometricVP",
    "LinearProcess",
    "ScalarProcess",
    "RectifiedFlow",
    "ScoreFn",
    "SubVP",
    "VPCosine",
    "VPFamily",
    "get_process",
    "per_sample",
]
