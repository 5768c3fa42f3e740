"""The one table of methods: each :class:`MethodSetup` says how a ``model`` section becomes a
method (its config fields and validation, its builder, its sampling section).

Built-in methods are discovered from the modules of :mod:`trilemma.setup.methods` (each
defines ``SETUP``), so adding a method is one model module (in :mod:`trilemma.methods` or
anywhere) plus one setup module, nothing else edited. A config may also name a method by an
importable module path (``model.method: mypackage.my_method``) whose ``SETUP`` is then
registered: plug-ins outside the package need no edit of trilemma at all.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import methods as _builtin_methods
from .sections import validate_sample

if TYPE_CHECKING:
    from ..methods.base import Method
    from .config import Config

DEFAULT_METHOD = "score"


def _core_sample(raw: Any, model: dict[str, Any], process: str | None,
                 problems: list[str]) -> dict[str, Any]:
    return validate_sample(raw, process, problems)


@dataclass(frozen=True)
class MethodSetup:
    """How a config becomes one method.

    Attributes:
        name: the value of ``model.method``.
        summary: one line for listings.
        validate_model: ``(raw model section, process name, data name, problems) -> resolved
            model section``; appends one line per problem (names are None when invalid).
        build: ``(Config, data_shape) -> Method``.
        net_kwargs: ``(Config, data_shape) -> the main network's sized config`` (for
            ``trilemma info``).
        validate_sample: ``(raw sample section, resolved model, process name, problems) ->
            resolved sample section``; default: a core sampler that fits the process.
        prepare: ``(model, config, run_dir, resume) -> None`` run by ``trilemma train`` after
            building (e.g. LSGM loads ``model.init_from``); None: nothing.
        labels: the method trains on labelled batches ``(x, labels)`` (``trilemma train``
            refuses data without labels).
        sample_grids: the trainer draws the ``sample`` section's grid every
            ``train.sample_every`` steps (False for a method that draws no samples).
    """

    name: str
    summary: str
    validate_model: Callable[[dict[str, Any], str | None, str | None, list[str]],
                             dict[str, Any]]
    build: Callable[[Config, tuple[int, ...]], Method]
    net_kwargs: Callable[[Config, tuple[int, ...]], dict[str, Any]]
    validate_sample: Callable[[Any, dict[str, Any], str | None, list[str]],
                              dict[str, Any]] = _core_sample
    prepare: Callable[..., None] | None = None
    labels: bool = False
    sample_grids: bool = True


_REGISTRY: dict[str, MethodSetup] = {}


def register(setup: MethodSetup, *aliases: str) -> MethodSetup:
    """Add ``setup`` to the table under its name (and ``aliases``); returns it."""
    if not isinstance(setup, MethodSetup):
        raise TypeError(f"SETUP must be a trilemma.setup.MethodSetup, got {type(setup).__name__}")
    for key in (setup.name, *aliases):
        _REGISTRY[key] = setup
    return setup


_DISCOVERY = threading.Lock()
_discovered = False


def _discover() -> None:
    """Register every built-in setup module once (thread-safe: two runs started together in one
    process must not see a half-filled table)."""
    global _discovered
    if _discovered:
        return
    with _DISCOVERY:
        if _discovered:
            return
        for info in sorted(pkgutil.iter_modules(_builtin_methods.__path__),
                           key=lambda m: m.name):
            module = importlib.import_module(f"{_builtin_methods.__name__}.{info.name}")
            setup = getattr(module, "SETUP", None)
            if setup is not None:
                register(setup)
        _discovered = True


def method_names() -> list[str]:
    """The registered method names (built-in ones first discovered)."""
    _discover()
    return sorted({s.name for s in _REGISTRY.values()})


def _import_plugin(name: str) -> MethodSetup | None:
    try:
        module = importlib.import_module(name)
    except ImportError:
        return None
    setup = getattr(module, "SETUP", None)
    if not isinstance(setup, MethodSetup):
        raise ValueError(f"module {name!r} defines no SETUP (a trilemma.setup.MethodSetup)")
    return register(setup, name)


def get_setup(name: str | None) -> MethodSetup:
    """The setup of ``model.method`` (None: the data-space score model); a dotted name that
    is not registered is imported as a plug-in module. Raises ``ValueError`` listing the
    valid names."""
    _discover()
    key = DEFAULT_METHOD if name is None else name
    if not isinstance(key, str):
        raise ValueError(f"expected a method name (a string), got {key!r}")
    if key in _REGISTRY:
        return _REGISTRY[key]
    if "." in key:
        setup = _import_plugin(key)
        if setup is not None:
            return setup
    names = method_names()
    hint = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    extra = f" (did you mean {hint[0]!r}?)" if hint else ""
    raise ValueError(f"unknown method {key!r}{extra}; use one of: {', '.join(names)}, or an "
                     "importable module path whose module defines SETUP")
