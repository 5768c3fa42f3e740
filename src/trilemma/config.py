"""Run configuration: YAML files with a checked schema, ``--set`` overrides, a resolved dict.

A config has the sections ``process``, ``model``, ``data``, ``train``, ``sample`` and the
scalars ``seed`` and ``device``::

    seed: 0
    device: auto                  # cpu | cuda | cuda:N | auto
    process: {name: vp, beta_min: 0.1, beta_max: 20.0}
    model:
      net: {name: mlp, hidden: 256, depth: 3}   # in/out sizes come from the data
      prediction: eps             # eps, x0, v, score (VP-type) | mixed, score (CLD)
      objective: dsm              # dsm (VP-type) | hsm, cld_dsm (CLD)
      weighting: quality          # depends on the objective
      sigma_data: 0.5
      label_dropout: 0.1          # class-conditional nets: share trained as the null class
    data: {name: toy, toy: grid25, n: 50000}
    train: {steps: 5000, batch_size: 512, lr: 2.0e-3, ...}   # trilemma.train.TrainConfig
    sample: {sampler: em, nfe: 100, n: 64, options: {}}

The keys a process, net, data set or trainer accepts are read from the signature of the code
that consumes them (so the schema cannot drift from the library), with their types from the
annotations and explicit ranges on top. Every error names the key's dotted path and what is
allowed; unknown keys get ``difflib`` suggestions. :func:`load_config` fills in every default,
so :meth:`Config.to_dict` is the complete, JSON-safe record a checkpoint stores.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import os
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

SECTIONS = ("seed", "device", "process", "model", "data", "train", "sample")
MODEL_KEYS = (
    "net", "prediction", "objective", "weighting", "sigma_data", "label_dropout"
)
SAMPLE_KEYS = ("sampler", "nfe", "n", "options")
SAMPLE_DEFAULTS: dict[str, Any] = {"sampler": "em", "nfe": 100, "n": 64, "options": {}}
# net keys the builder derives from the data (and the process: CLD doubles the input)
DERIVED_NET_KEYS = {
    "mlp": ("in_dim", "out_dim"),
    "unet": ("in_channels", "out_channels", "image_size"),
}
# data keys holding a path that must exist
PATH_KEYS = {"folder": ("path",), "idx": ("images", "labels", "root"), "cifar10": ("root",)}
_DEVICE_RE = re.compile(r"^(cpu|auto|cuda(:\d+)?)$")

_MISSING = object()


# --------------------------------------------------------------------------- the Config
@dataclass
class Config:
    """A validated, fully resolved run configuration (sections are plain dicts)."""

    process: dict[str, Any]
    model: dict[str, Any]
    data: dict[str, Any]
    train: dict[str, Any]
    sample: dict[str, Any]
    seed: int = 0
    device: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as a plain, JSON- and YAML-safe nested dict."""
        return _plain({name: getattr(self, name) for name in SECTIONS})

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], check_paths: bool = True) -> Config:
        """Validate and resolve a nested dict (e.g. a checkpoint's stored config)."""
        return cls(**validate(raw, check_paths=check_paths))

    def to_yaml(self) -> str:
        """The resolved config as YAML text (sections in schema order)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)

    def summary(self) -> str:
        """A few lines saying what this run is."""
        net = dict(self.model["net"])
        net_name = net.pop("name")
        lines = [
            f"process  {self.process['name']}  "
            + _kv({k: v for k, v in self.process.items() if k != "name"}),
            f"model    net={net_name} "
            + _kv({k: self.model[k] for k in ("method", "prediction", "objective", "weighting")
                   if self.model.get(k) is not None}),
            f"data     {self.data['name']}  "
            + _kv({k: v for k, v in self.data.items() if k != "name"}),
            "train    " + _kv(self.train),
            "sample   " + _kv(self.sample),
            f"seed     {self.seed}   device {self.device}",
        ]
        return "\n".join(lines)


def _kv(d: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in d.items())


def _plain(value: Any) -> Any:
    """Tuples -> lists, paths -> str, recursively (JSON/YAML-safe)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


# --------------------------------------------------------------------------- loading
def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config, apply ``a.b=value`` overrides, validate and resolve it.

    Raises :class:`ConfigError` (a ``ValueError``) naming the file or the key at fault.
    """
    raw = read_yaml(path)
    raw = apply_overrides(raw, overrides)
    return Config.from_dict(raw)


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a YAML mapping from ``path`` with ``yaml.safe_load``."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError([f"config file not found: {os.fspath(path)}"])
    if p.is_dir():
        raise ConfigError([f"config path is a directory, not a YAML file: {os.fspath(path)}"])
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise ConfigError([f"{os.fspath(path)}: invalid YAML: {err}"]) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError([f"cannot read config file {os.fspath(path)}: {err}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            [f"{os.fspath(path)}: expected a mapping of sections at the top level, "
             f"got {_type_name(raw)}"]
        )
    return raw


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``'a.b.c=value'`` into ``(['a', 'b', 'c'], value)``; the value is parsed as YAML."""
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError([f"override {text!r}: expected KEY=VALUE, e.g. train.lr=1e-3"])
    key, _, val = text.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError([f"override {text!r}: bad key {key!r}; use dotted keys like train.lr"])
    try:
        value = yaml.safe_load(val) if val.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError([f"override {text!r}: the value is not valid YAML: {err}"]) from None
    return parts, value


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A deep copy of ``raw`` with each ``a.b=value`` override set (sections created as needed)."""
    out = _deepcopy(raw)
    for text in overrides or ():
        parts, value = parse_override(text)
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(
                    [f"override {text!r}: {where!r} is a value ({child!r}), not a section"]
                )
            node = child
        node[parts[-1]] = value
    return out


def _deepcopy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deepcopy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deepcopy(v) for v in value]
    return value


# --------------------------------------------------------------------------- type checking
def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _union_args(hint: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(hint)
    if origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        return typing.get_args(hint)
    return None


def _coerce(value: Any, hint: Any) -> Any:
    """Light coercions YAML needs: '1e-3' (a YAML 1.1 string) -> float; int -> float."""
    if hint is float or (_union_args(hint) and float in _union_args(hint)):
        if isinstance(value, str):
            try:
                f = float(value)
            except ValueError:
                return value
            return f if math.isfinite(f) else value
        if _is_int(value) and (hint is float or int not in (_union_args(hint) or ())):
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
        return _is_int(value)
    if hint is float:
        return _is_num(value)
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
        return "one of: " + ", ".join(map(_show, typing.get_args(hint)))
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
    """One key of a section: its annotation, default (``_MISSING`` = required) and checks."""

    name: str
    hint: Any = Any
    default: Any = _MISSING
    check: Callable[[Any], str | None] | None = None

    @property
    def required(self) -> bool:
        return self.default is _MISSING


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
        default = _MISSING if p.default is p.empty else _plain(p.default)
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
            default = _plain(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = _plain(f.default_factory())
        else:
            default = _MISSING
        out[f.name] = Field(f.name, hints.get(f.name, Any), default, (checks or {}).get(f.name))
    return out


# range checks: each returns None when fine, else the message after "expected"
def positive(v: Any) -> str | None:
    return None if v is None or (_is_num(v) and v > 0) else "a positive number"


def non_negative(v: Any) -> str | None:
    return None if v is None or (_is_num(v) and v >= 0) else "a number >= 0"


def positive_int(v: Any) -> str | None:
    return None if v is None or (_is_int(v) and v >= 1) else "a positive integer"


def non_negative_int(v: Any) -> str | None:
    return None if v is None or (_is_int(v) and v >= 0) else "an integer >= 0"


def unit_interval(v: Any) -> str | None:
    return None if v is None or (_is_num(v) and 0 <= v < 1) else "a number in [0, 1)"


def one_of(*choices: Any) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v is None or v in choices else "one of: " + ", ".join(map(_show, choices))

    return check


def _positive_int_list(v: Any) -> str | None:
    if v is None or (isinstance(v, (list, tuple)) and all(_is_int(x) and x >= 1 for x in v)):
        return None
    return "a list of positive integers"


# range checks by section and key (the consuming code checks again; these give the dotted path)
CHECKS: dict[str, dict[str, Callable[[Any], str | None]]] = {
    "train": {
        "steps": positive_int, "batch_size": positive_int, "lr": positive,
        "weight_decay": non_negative, "grad_clip": positive, "ema_decay": unit_interval,
        "warmup_steps": non_negative_int, "min_lr": non_negative, "log_every": positive_int,
        "ckpt_every": non_negative_int, "sample_every": non_negative_int,
        "keep_last": non_negative_int, "grad_accum": positive_int,
        "max_bad_steps": positive_int, "seed": non_negative_int, "num_workers": non_negative_int,
        "schedule": one_of("constant", "cosine"),
    },
    "data": {
        "n": positive_int, "size": positive_int, "seed": non_negative_int,
        "test_fraction": lambda v: None if _is_num(v) and 0 < v < 1 else "a number in (0, 1)",
        "split": one_of("train", "test", "all"),
    },
    "model.net": {
        "hidden": positive_int, "depth": non_negative_int, "base_channels": positive_int,
        "num_res_blocks": positive_int, "num_heads": positive_int, "dropout": unit_interval,
        "channel_mults": _positive_int_list, "num_classes": positive_int,
        "embed_scale": positive, "time_embed": one_of("fourier", "sinusoidal"),
    },
    "process": {
        "beta_min": positive, "beta_max": positive, "sigma_min": positive,
        "sigma_max": positive, "m_inv": positive, "gamma": positive, "eps": positive,
        "s": positive, "T": positive, "sigma2_min": positive, "sigma2_max": positive,
        "eps_num": non_negative,
    },
}


def _suggest(key: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=3, cutoff=0.6)
    if close:
        return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"
    return "; valid keys: " + ", ".join(valid) if valid else ""


def _join(prefix: str, key: str) -> str:
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
        problems.append(f"{prefix}: expected a mapping of keys, got {_type_name(raw)} "
                        f"({_show(raw)})")
        return {}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        path = _join(prefix, str(key))
        if key not in fields:
            problems.append(f"unknown key {path!r}{_suggest(str(key), list(fields))}")
            continue
        f = fields[key]
        given = value
        value = _coerce(value, f.hint)
        if not _matches(value, f.hint):
            problems.append(f"{path}: expected {_describe(f.hint)}, got {_type_name(given)} "
                            f"({_show(given)})")
            continue
        check = f.check or CHECKS.get(prefix, {}).get(key)
        msg = check(value) if check else None
        if msg:
            problems.append(f"{path}: expected {msg}, got {_show(given)}")
            continue
        out[key] = value
    for key, f in fields.items():
        if key in out or key in raw:
            continue
        if f.required:
            problems.append(f"{_join(prefix, key)}: required key is missing "
                            f"(expected {_describe(f.hint)})")
        elif fill_defaults:
            out[key] = f.default
    return out


# --------------------------------------------------------------------------- validation
def _name(prefix: str, raw: Mapping[str, Any], registry: Sequence[str], what: str,
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
        problems.append(f"{prefix}.name: unknown {what} {_show(name)}{extra}; use one of: "
                        + ", ".join(registry))
        return None
    return name


def _as_dict(prefix: str, raw: Any, problems: list[str]) -> dict[str, Any] | None:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"{prefix}: expected a mapping of keys, got {_type_name(raw)} "
                        f"({_show(raw)})")
        return None
    return raw


def _validate_process(raw: Any, problems: list[str]) -> dict[str, Any]:
    from .processes import PROCESSES, get_process

    raw = _as_dict("process", raw, problems)
    if raw is None:
        return {}
    name = _name("process", raw, list(PROCESSES), "process", problems)
    if name is None:
        return dict(raw)
    fields = fields_from_signature(PROCESSES[name])
    fields = {"name": Field("name", str, _MISSING), **fields}
    n_before = len(problems)
    out = check_section("process", raw, fields, problems)
    if len(problems) == n_before:
        try:  # the constructor checks ranges that couple keys (beta_max >= beta_min, ...)
            get_process(**out)
        except (ValueError, TypeError) as err:
            problems.append(f"process: {err}")
    return out


def _validate_model(raw: Any, process: str | None, data: str | None,
                    problems: list[str]) -> dict[str, Any]:
    from .methods.score_model import OBJECTIVES
    from .nets import NETS
    from .parametrization import CLD_PREDICTIONS, SCALAR_PREDICTIONS

    raw = _as_dict("model", raw, problems)
    if raw is None:
        return {}
    if raw.get("method") == "lsgm":  # LSGM: VAE + latent prior (trilemma.methods.lsgm)
        from .methods.lsgm import validate_lsgm_model

        return validate_lsgm_model(raw, process, data, problems)
    if raw.get("method") == "ddgan":  # denoising diffusion GAN (trilemma.methods.ddgan)
        from .methods.ddgan import validate_ddgan_model

        return validate_ddgan_model(raw, process, data, problems)
    for key in raw:
        if key not in MODEL_KEYS:
            problems.append(f"unknown key 'model.{key}'{_suggest(str(key), MODEL_KEYS)}")
    out: dict[str, Any] = {}
    is_cld = process == "cld"
    # net
    net_raw = _as_dict("model.net", raw.get("net"), problems)
    if net_raw is not None:
        default_net = "mlp" if data == "toy" else "unet"
        net_name = _name("model.net", net_raw, list(NETS), "net", problems, default=default_net)
        if net_name is not None:
            derived = DERIVED_NET_KEYS.get(net_name, ())
            for key in derived:
                if key in net_raw:
                    problems.append(
                        f"model.net.{key}: is derived from the data (and the process: CLD "
                        "doubles the input); remove it"
                    )
            fields = fields_from_signature(NETS[net_name], exclude=derived)
            fields = {"name": Field("name", str, _MISSING), "seed": Field("seed", int | None,
                                                                          None, non_negative_int),
                      **fields}
            body = {k: v for k, v in net_raw.items() if k not in derived}
            body["name"] = net_name
            out["net"] = check_section("model.net", body, fields, problems)
            if data is not None:
                want = "mlp" if data == "toy" else "unet"
                if net_name != want:
                    kind = "points (n, d)" if data == "toy" else "images (n, C, H, W)"
                    problems.append(f"model.net.name: {net_name!r} does not fit data {data!r} "
                                    f"({kind}); use: {want}")
    # prediction
    preds = CLD_PREDICTIONS if is_cld else SCALAR_PREDICTIONS
    pred = raw.get("prediction")
    if pred is None:
        out["prediction"] = preds[0] if process else None
    elif process is not None and pred not in preds:
        problems.append(f"model.prediction: {_show(pred)} does not fit process {process!r}; "
                        "use one of: " + ", ".join(preds))
    else:
        out["prediction"] = pred
    # objective
    fits = ("hsm", "cld_dsm") if is_cld else ("dsm",)
    obj = raw.get("objective")
    if obj is None:
        obj = fits[0]
    elif obj not in OBJECTIVES:
        problems.append(f"model.objective: unknown objective {_show(obj)}; use one of: "
                        + ", ".join(fits))
        obj = None
    elif process is not None and obj not in fits:
        problems.append(f"model.objective: {_show(obj)} does not fit process {process!r}; "
                        "use one of: " + ", ".join(fits))
        obj = None
    out["objective"] = obj
    # weighting
    w = raw.get("weighting")
    if obj is not None:
        valid_w = OBJECTIVES[obj]
        if w is None:
            w = valid_w[0]
        elif w not in valid_w:
            problems.append(f"model.weighting: {_show(w)} does not fit objective {obj!r}; "
                            "use one of: " + ", ".join(valid_w))
    out["weighting"] = w
    given = raw.get("sigma_data", 0.5)
    sd = _coerce(given, float)
    if not (_is_num(sd) and sd > 0):
        problems.append(f"model.sigma_data: expected a positive number, got {_show(given)}")
    out["sigma_data"] = sd
    given = raw.get("label_dropout", 0.1)
    ld = _coerce(given, float)
    if not (_is_num(ld) and 0 <= ld < 1):
        problems.append(f"model.label_dropout: expected a number in [0, 1), got {_show(given)}")
    out["label_dropout"] = ld
    return out


def _validate_data(raw: Any, problems: list[str], check_paths: bool) -> dict[str, Any]:
    from .data import DATASETS

    raw = _as_dict("data", raw, problems)
    if raw is None:
        return {}
    name = _name("data", raw, list(DATASETS), "dataset", problems)
    if name is None:
        return dict(raw)
    fields = fields_from_signature(DATASETS[name])
    fields = {"name": Field("name", str, _MISSING), **fields}
    common = {
        "binarize": Field("binarize", str | None, None, one_of("threshold", "stochastic")),
        "binarize_seed": Field("binarize_seed", int, 0, non_negative_int),
        "limit": Field("limit", int | None, None, positive_int),
    }
    fields.update(common)
    if name == "toy":
        from .data import toy_names

        fields["toy"].check = one_of(*toy_names())
        fields["seed"].check = non_negative_int
    if name == "digits" and "mode" in fields:
        fields["mode"].check = one_of("bilinear", "nearest")
    n_before = len(problems)
    out = check_section("data", raw, fields, problems)
    if check_paths and len(problems) == n_before:
        for key in PATH_KEYS.get(name, ()):
            val = out.get(key)
            if val is not None and not Path(val).expanduser().exists():
                problems.append(f"data.{key}: no such file or directory: {val}")
    return out


def _validate_train(raw: Any, seed: int, problems: list[str]) -> dict[str, Any]:
    from .train import TrainConfig

    fields = fields_from_dataclass(TrainConfig)
    if "seed" in fields:  # the trainer's noise/data seed follows the run's seed unless set
        fields["seed"].default = seed
    n_before = len(problems)
    out = check_section("train", raw, fields, problems)
    if len(problems) == n_before:
        try:  # couplings such as warmup_steps < steps, min_lr <= lr
            TrainConfig(**out)
        except (ValueError, TypeError) as err:
            msg = str(err)
            problems.append(msg.replace("TrainConfig.", "train.", 1)
                            if msg.startswith("TrainConfig.") else f"train: {msg}")
    return out


def _validate_sample(raw: Any, process: str | None, problems: list[str]) -> dict[str, Any]:
    fields = {
        "sampler": Field("sampler", str, SAMPLE_DEFAULTS["sampler"]),
        "nfe": Field("nfe", int, SAMPLE_DEFAULTS["nfe"], positive_int),
        "n": Field("n", int, SAMPLE_DEFAULTS["n"], positive_int),
        "options": Field("options", dict, {}),
    }
    n_before = len(problems)
    out = check_section("sample", raw, fields, problems)
    if len(problems) > n_before:
        return out
    try:
        check_sampler(out["sampler"], process, out["nfe"], out["options"])
    except ValueError as err:
        problems.append(f"sample.{err}")
    return out


def samplers_for(process: str) -> list[str]:
    """Names of the samplers that can run on the named process."""
    from .samplers.registry import samplers_for as _samplers_for

    return _samplers_for(process)


def check_sampler(name: str, process: str | None, nfe: int | None = None,
                  options: Mapping[str, Any] | None = None) -> None:
    """See :func:`trilemma.samplers.registry.check_sampler`."""
    from .samplers.registry import check_sampler as _check

    _check(name, process, nfe, dict(options or {}))


def validate(raw: Mapping[str, Any], check_paths: bool = True) -> dict[str, Any]:
    """Check a raw config dict; return the resolved sections or raise :class:`ConfigError`."""
    from .data import DATASETS
    from .processes import PROCESSES

    problems: list[str] = []
    if not isinstance(raw, Mapping):
        raise ConfigError([f"expected a mapping of sections, got {_type_name(raw)}"])
    for key in raw:
        if key not in SECTIONS:
            problems.append(f"unknown key {str(key)!r}{_suggest(str(key), SECTIONS)}")
    for key in ("process", "model", "data"):
        if key not in raw:
            problems.append(f"{key}: required section is missing")
    seed = raw.get("seed", 0)
    if not _is_int(seed) or seed < 0:
        problems.append(f"seed: expected an integer >= 0, got {_show(seed)}")
    device = raw.get("device", "auto")
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        problems.append(f"device: expected one of: cpu, cuda, cuda:N, auto; got {_show(device)}")
    process = _validate_process(raw.get("process"), problems) if "process" in raw else {}
    data = _validate_data(raw.get("data"), problems, check_paths) if "data" in raw else {}
    # cross-section checks only against names that are themselves valid
    pname, dname = process.get("name"), data.get("name")
    pname = pname if isinstance(pname, str) and pname in PROCESSES else None
    dname = dname if isinstance(dname, str) and dname in DATASETS else None
    model = _validate_model(raw.get("model"), pname, dname, problems) if "model" in raw else {}
    train = _validate_train(raw.get("train"), seed if _is_int(seed) and seed >= 0 else 0,
                            problems)
    if isinstance(raw.get("model"), Mapping) and raw["model"].get("method") == "ddgan":
        from .methods.ddgan import validate_ddgan_sample

        sample = validate_ddgan_sample(raw.get("sample"), model, problems)
    else:
        sample = _validate_sample(raw.get("sample"), pname, problems)
    if problems:
        raise ConfigError(problems)
    return {"process": process, "model": model, "data": data, "train": train,
            "sample": sample, "seed": seed, "device": device}


def resolve_device(device: str) -> str:
    """``'auto'`` -> ``'cuda'`` when available, else ``'cpu'``; a missing CUDA is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError([f"device: {device!r} was asked for but CUDA is not available; "
                           "use --device cpu or auto"])
    return device
