"""Config checks shared by the network builders: clear errors for unknown or missing keys.

A submodule of its own so that sibling modules (:mod:`.vae`) import it from here rather than
from the package ``__init__``, which re-exports it and may import them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


def check_kwargs(kind: str, name: str, fn: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """Raise a clear error for keys ``fn`` does not accept or required keys that are missing."""
    params = inspect.signature(fn).parameters
    valid = [p for p in params if p != "self"]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} for {kind} {name!r}; valid keys: {', '.join(valid)}"
        )
    missing = [
        p for p, v in params.items()
        if v.default is inspect.Parameter.empty and p != "self" and p not in kwargs
        and v.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    if missing:
        raise ValueError(f"{kind} {name!r} needs key(s) {missing}")
