"""The schema engine of the setup layer: typed fields, range checks, one checker for a section.

The keys a process, net, data set or trainer accepts are read from the signature of the code
that consumes them (so the schema cannot drift from the library), with their types from the
annotations and explicit ranges on top. Every problem names the key's dotted path and what is
allowed; unknown keys get ``difflib`` suggestions. This module imports nothing of trilemma but
the leaf :mod:`trilemma.errors`.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["ConfigError", "Field", "MISSING", "as_mapping", "check_name", "check_section",
           "coerce", "fields_from_dataclass", "fields_from_signature", "is_int", "is_num",
           "non_negative", "non_negative_int", "one_of", "plain", "positive", "positive_int",
           "positive_int_list", "show", "suggest", "type_name", "unit_interval"]

MISSING = object()


def plain(value: Any) -> Any:
    """Tuples -> lists, paths -> str, recursively (JSON/YAML-safe)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _union_args(hint: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(hint)
    if origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        return typing.get_args(hint)
    return None


def coerce(value: Any, hint: Any) -> Any:
    """Light coercions YAML needs: '1e-3' (a YAML 1.1 string) -> float; int -> float."""
    if hint is float or (_union_args(hint) and float in _union_args(hint)):
        if isinstance(value, str):
            try:
                f = float(value)
            except ValueError:
                return value
            return f if math.isfinite(f) else value
        if is_int(value) and (hint is float or int not in (_union_args(hint) or ())):
            return float(value)
    return value


def _matches(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a (resolved) annotation; unknown annotations accept anything."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    if hint is type(None) or hint is None:
        return value is None
    args = _union_args(hint)
    if args is not None:
        return any(_matches(value, a) for a in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return is_int(value)
    if hint is float:
        return is_num(value)
    if hint is str:
        return isinstance(value, str)
    if hint in (os.PathLike, Path):
        return isinstance(value, str)
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin in (list, tuple, Sequence, typing.Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        args = typing.get_args(hint)
        if origin is tuple and args and Ellipsis not in args:  # fixed length
            if len(args) != len(value):
                return False
            return all(_matches(v, a) for v, a in zip(value, args, strict=True))
        return not args or all(_matches(v, args[0]) for v in value)
    if origin in (dict, Mapping) or hint is dict:
        return isinstance(value, dict)
    return True


def _describe(hint: Any) -> str:
    """Human words for an annotation ('an integer', 'a number or null', ...)."""
    if hint is type(None) or hint is None:
        return "null"
    args = _union_args(hint)
    if args is not None:
        parts = [_describe(a) for a in args if a is not type(None)]
        if type(None) in args:
            parts.append("null")
        return " or ".join(dict.fromkeys(parts))
    words = {bool: "a boolean (true/false)", int: "an integer", float: "a number",
             str: "a string", dict: "a mapping", os.PathLike: "a path", Path: "a path"}
    if hint in words:
        return words[hint]
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return "one of: " + ", ".join(map(show, typing.get_args(hint)))
    if origin in (list, tuple, Sequence, typing.Sequence) or hint in (list, tuple):
        args = typing.get_args(hint)
        sub = [a for a in args if a is not Ellipsis]
        if origin is tuple and sub and Ellipsis not in args and len(sub) > 1:
            return f"a list of {len(sub)} items (" + ", ".join(_describe(a) for a in sub) + ")"
        if sub:
            inner = _describe(sub[0])
            for article in ("an ", "a "):
                if inner.startswith(article):
                    inner = inner[len(article):]
            return f"a list of {inner}s" if " or " not in inner else f"a list of ({inner})"
        return "a list"
    if origin in (dict, Mapping):
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


# --------------------------------------------------------------------------- fields
@dataclass
class Field:
    """One key of a section: its annotation, default (``MISSING`` = required) and checks."""

    name: str
    hint: Any = Any
    default: Any = MISSING
    check: Callable[[Any], str | None] | None = None

    @property
    def required(self) -> bool:
        return self.default is MISSING


def _hints(fn: Any) -> dict[str, Any]:
    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        return typing.get_type_hints(target)
    except Exception:  # unresolvable annotation: accept anything for it
        return {}


def fields_from_signature(
    fn: Callable[..., Any], exclude: Sequence[str] = (), checks: Mapping[str, Any] | None = None
) -> dict[str, Field]:
    """The keyword arguments of ``fn`` (a function or class) as schema fields."""
    hints = _hints(fn)
    out: dict[str, Field] = {}
    for name, p in inspect.signature(fn).parameters.items():
        if name in ("self", *exclude) or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = MISSING if p.default is p.empty else plain(p.default)
        out[name] = Field(name, hints.get(name, Any), default, (checks or {}).get(name))
    return out


def fields_from_dataclass(cls: type, checks: Mapping[str, Any] | None = None) -> dict[str, Field]:
    """The fields of a dataclass (e.g. ``TrainConfig``) as schema fields."""
    hints = _hints(cls)
    out: dict[str, Field] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = plain(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = plain(f.default_factory())
        else:
            default = MISSING
        out[f.name] = Field(f.name, hints.get(f.name, Any), default, (checks or {}).get(f.name))
    return out


# range checks: each returns None when fine, else the message after "expected"
def positive(v: Any) -> str | None:
    return None if v is None or (is_num(v) and v > 0) else "a positive number"


def non_negative(v: Any) -> str | None:
    return None if v is None or (is_num(v) and v >= 0) else "a number >= 0"


def positive_int(v: Any) -> str | None:
    return None if v is None or (is_int(v) and v >= 1) else "a positive integer"


def non_negative_int(v: Any) -> str | None:
    return None if v is None or (is_int(v) and v >= 0) else "an integer >= 0"


def unit_interval(v: Any) -> str | None:
    return None if v is None or (is_num(v) and 0 <= v < 1) else "a number in [0, 1)"


def one_of(*choices: Any) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v is None or v in choices else "one of: " + ", ".join(map(show, choices))

    return check


def positive_int_list(v: Any) -> str | None:
    if v is None or (isinstance(v, (list, tuple)) and all(is_int(x) and x >= 1 for x in v)):
        return None
    return "a list of positive integers"


def suggest(key: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=3, cutoff=0.6)
    if close:
        return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"
    return "; valid keys: " + ", ".join(valid) if valid else ""


def join_path(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def check_section(
    prefix: str,
    raw: Any,
    fields: Mapping[str, Field],
    problems: list[str],
    fill_defaults: bool = True,
) -> dict[str, Any]:
    """Check a mapping against ``fields``; append problems; return it with defaults filled."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{prefix}: expected a mapping of keys, got {type_name(raw)} "
                        f"({show(raw)})")
        return {}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        path = join_path(prefix, str(key))
        if key not in fields:
            problems.append(f"unknown key {path!r}{suggest(str(key), list(fields))}")
            continue
        f = fields[key]
        given = value
        value = coerce(value, f.hint)
        if not _matches(value, f.hint):
            problems.append(f"{path}: expected {_describe(f.hint)}, got {type_name(given)} "
                            f"({show(given)})")
            continue
        check = f.check
        msg = check(value) if check else None
        if msg:
            problems.append(f"{path}: expected {msg}, got {show(given)}")
            continue
        out[key] = value
    for key, f in fields.items():
        if key in out or key in raw:
            continue
        if f.required:
            problems.append(f"{join_path(prefix, key)}: required key is missing "
                            f"(expected {_describe(f.hint)})")
        elif fill_defaults:
            out[key] = f.default
    return out


def check_name(prefix: str, raw: Mapping[str, Any], registry: Sequence[str], what: str,
          problems: list[str], default: str | None = None) -> str | None:
    """The ``name`` key of a section, checked against ``registry`` (``what``: singular noun)."""
    name = raw.get("name", default)
    if name is None:
        problems.append(f"{prefix}.name: required key is missing; use one of: "
                        + ", ".join(registry))
        return None
    if name not in registry:
        hint = difflib.get_close_matches(str(name), list(registry), n=1, cutoff=0.6)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        problems.append(f"{prefix}.name: unknown {what} {show(name)}{extra}; use one of: "
                        + ", ".join(registry))
        return None
    return name


def as_mapping(prefix: str, raw: Any, problems: list[str]) -> dict[str, Any] | None:
    """``raw`` as a section mapping (None -> {}); None (and a problem) when it is not one."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"{prefix}: expected a mapping of keys, got {type_name(raw)} "
                        f"({show(raw)})")
        return None
    return raw
