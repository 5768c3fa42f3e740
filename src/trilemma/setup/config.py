"""Run configuration: YAML files with a checked schema, ``--set`` overrides, a resolved dict.

A config has the sections ``process``, ``model``, ``data``, ``train``, ``sample`` and the
scalars ``seed`` and ``device``::

    seed: 0
    device: auto                  # cpu | cuda | cuda:N | auto
    process: {name: vp, beta_min: 0.1, beta_max: 20.0}
    model:
      net: {name: mlp, hidden: 256, depth: 3}   # in/out sizes come from the data
      prediction: eps             # eps, x0, v, score, edm (VP-type) | mixed, score, edm (CLD)
      objective: dsm              # dsm (VP-type) | hsm, cld_dsm (CLD)
      weighting: quality          # depends on the objective (dsm: ..., edm)
      sigma_data: 0.5             # or auto: the training data's RMS, stored when a run starts
      label_dropout: 0.1          # class-conditional nets: share trained as the null class
      t_sampling: uniform         # dsm only: uniform | lognormal (+ p_mean, p_std; EDM's)
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

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from ..data import DATASETS
from ..processes import PROCESSES
from .registry import get_setup
from .schema import ConfigError, is_int, plain, show, suggest, type_name
from .sections import resolve_classes, validate_data, validate_process, validate_train

SECTIONS = ("seed", "device", "process", "model", "data", "train", "sample")
_DEVICE_RE = re.compile(r"^(cpu|auto|cuda(:\d+)?)$")
#: the most values (every use of an alias counted) and the deepest nesting a config may have
MAX_CONFIG_VALUES = 100_000
MAX_CONFIG_DEPTH = 64


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
        return plain({name: getattr(self, name) for name in SECTIONS})

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], check_paths: bool = True) -> Config:
        """Validate and resolve a nested dict (e.g. a checkpoint's stored config)."""
        return cls(**validate(raw, check_paths=check_paths))

    def to_yaml(self) -> str:
        """The resolved config as YAML text (sections in schema order)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)

    def summary(self) -> str:
        """A few lines saying what this run is."""
        net_name = (self.model.get("net") or {}).get("name", "none")
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
    except RecursionError:
        raise ConfigError([f"{os.fspath(path)}: nested too deeply to read"]) from None
    check_expansion(raw, os.fspath(path))
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            [f"{os.fspath(path)}: expected a mapping of sections at the top level, "
             f"got {type_name(raw)}"]
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
    except RecursionError:
        raise ConfigError([f"override {key}: the value is nested too deeply"]) from None
    check_expansion(value, f"override {key}")
    return parts, value


def check_expansion(value: Any, where: str) -> None:
    """Refuse a parsed YAML value that aliases make unreasonable: an alias used inside its own
    anchor (a cycle), more than :data:`MAX_CONFIG_VALUES` values once every alias is expanded
    (an "alias bomb", which copying would expand), or nesting deeper than
    :data:`MAX_CONFIG_DEPTH`. Walks without expanding: stops at the first limit reached."""
    count = 0
    on_path: set[int] = set()
    stack: list[tuple[Any, int, bool]] = [(value, 0, False)]
    while stack:
        node, depth, leaving = stack.pop()
        if leaving:
            on_path.discard(id(node))
            continue
        count += 1
        if count > MAX_CONFIG_VALUES:
            raise ConfigError([f"{where}: its aliases expand to more than {MAX_CONFIG_VALUES:,} "
                               "values (an alias bomb?); write the values out instead"])
        if not isinstance(node, (dict, list)):
            continue
        if id(node) in on_path:
            raise ConfigError([f"{where}: an alias refers to itself (it is used inside its own "
                               "anchor); a config must be a tree"])
        if depth >= MAX_CONFIG_DEPTH:
            raise ConfigError([f"{where}: nested deeper than {MAX_CONFIG_DEPTH} levels"])
        on_path.add(id(node))
        stack.append((node, depth, True))
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1, False) for child in children)


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


# --------------------------------------------------------------------------- validation
def _valid_name(section: dict[str, Any], registry: Any) -> str | None:
    name = section.get("name")
    return name if isinstance(name, str) and name in registry else None


def _validate_model(raw: Any, process: str | None, data: str | None,
                    problems: list[str]) -> tuple[dict[str, Any], Any]:
    """The ``model`` section by its method's setup; returns it and the setup (or None)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"model: expected a mapping of keys, got {type_name(raw)} ({show(raw)})")
        return {}, None
    try:
        setup = get_setup(raw.get("method"))
    except ValueError as err:
        problems.append(f"model.method: {err}")
        return {}, None
    return setup.validate_model(raw, process, data, problems), setup


def validate(raw: Mapping[str, Any], check_paths: bool = True) -> dict[str, Any]:
    """Check a raw config dict; return the resolved sections or raise :class:`ConfigError`."""
    problems: list[str] = []
    if not isinstance(raw, Mapping):
        raise ConfigError([f"expected a mapping of sections, got {type_name(raw)}"])
    for key in raw:
        if key not in SECTIONS:
            problems.append(f"unknown key {str(key)!r}{suggest(str(key), SECTIONS)}")
    for key in ("process", "model", "data"):
        if key not in raw:
            problems.append(f"{key}: required section is missing")
    seed = raw.get("seed", 0)
    if not is_int(seed) or seed < 0:
        problems.append(f"seed: expected an integer >= 0, got {show(seed)}")
        seed = 0
    device = raw.get("device", "auto")
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        problems.append(f"device: expected one of: cpu, cuda, cuda:N, auto; got {show(device)}")
    process = validate_process(raw.get("process"), problems) if "process" in raw else {}
    data = validate_data(raw.get("data"), problems, check_paths) if "data" in raw else {}
    # cross-section checks only against names that are themselves valid
    pname, dname = _valid_name(process, PROCESSES), _valid_name(data, DATASETS)
    model, setup = (_validate_model(raw.get("model"), pname, dname, problems)
                    if "model" in raw else ({}, get_setup(None)))
    if "model" in raw and "data" in raw and dname is not None:
        resolve_classes(model, data, model.get("method"), problems,
                        reads_labels=setup is not None and setup.labels)
    train = validate_train(raw.get("train"), seed, problems)
    sample = (setup.validate_sample(raw.get("sample"), model, pname, problems)
              if setup is not None else {})
    if problems:
        raise ConfigError(problems)
    return {"process": process, "model": model, "data": data, "train": train,
            "sample": sample, "seed": raw.get("seed", 0), "device": device}


def resolve_device(device: str) -> str:
    """``'auto'`` -> ``'cuda'`` when available, else ``'cpu'``; a device trilemma does not
    run on, a missing CUDA or a GPU index past the last are errors."""
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        raise ConfigError([f"device: expected one of: cpu, cuda, cuda:N, auto; got "
                           f"{show(device)}"])
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError([f"device: {device!r} was asked for but CUDA is not available; "
                           "use --device cpu or auto"])
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        raise ConfigError([f"device: {device!r} was asked for but there are "
                           f"{torch.cuda.device_count()} GPU(s); use cuda:0 to "
                           f"cuda:{torch.cuda.device_count() - 1}"])
    return device
