"""What a checkpoint says, checked before the trainer believes it.

A checkpoint folder is user-editable JSON and safetensors: every field of ``state.json`` the
trainer reads (type and range), the optimizer's parameter groups in ``optimizer.json``, the
scheduler state (whose keys the scheduler would copy onto itself), and the finiteness of the
stored weights and optimizer moments. Each failure is a :class:`CheckpointError` naming the
file and the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from torch import Tensor

from .storage import CheckpointError

#: scheduler keys needed where the scheduler has them (others of its state_dict() optional)
_SCHEDULER_KEYS = ("base_lrs", "last_epoch", "lr_lambdas")
#: the largest step or micro-batch count believed (seeds derived from them must fit 64 bits)
_MAX_COUNT = 2**53
#: optimizer group keys that must be there (flags may be missing: torch fills in defaults)
_GROUP_KEYS = ("lr", "betas", "eps", "weight_decay")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fail(file: Path, field: str, expected: str, got: Any) -> NoReturn:
    shown = repr(got)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise CheckpointError(f"{file}: field {field!r} must be {expected}, got {shown}")


def _int_field(info: Mapping[str, Any], key: str, file: Path, lo: int,
               hi: int | None = None) -> None:
    if key not in info:
        return
    v = info[key]
    if not _is_int(v) or v < lo or (hi is not None and v > hi):
        _fail(file, key, f"an integer in [{lo}, {hi}]" if hi is not None
              else f"an integer >= {lo}", v)


def check_state(info: Any, file: Path, folder_step: int | None,
                format_version: int) -> None:
    """The fields of ``state.json`` the trainer and the readers use. ``folder_step`` is the
    step in the folder's name (``step_000123``), which ``step`` must equal."""
    if not isinstance(info, dict):
        raise CheckpointError(f"{file}: expected a JSON object, got {type(info).__name__}")
    if "step" not in info:
        raise CheckpointError(f"{file}: field 'step' is missing")
    step = info["step"]
    if not _is_int(step) or not 0 <= step <= _MAX_COUNT:
        _fail(file, "step", f"an integer in [0, {_MAX_COUNT}]", step)
    if folder_step is not None and step != folder_step:
        _fail(file, "step", f"{folder_step}, the step of its folder", step)
    fv = info.get("format_version", format_version)
    if not _is_int(fv) or not 1 <= fv <= format_version:
        _fail(file, "format_version", f"an integer in [1, {format_version}]", fv)
    _int_field(info, "micro_batches", file, step, _MAX_COUNT)  # each step reads >= 1
    _int_field(info, "epoch", file, 0, _MAX_COUNT)
    _int_field(info, "world_size", file, 1)
    _int_field(info, "skipped_steps", file, 0, step)
    _int_field(info, "bad_steps", file, 0, step)
    for key in ("config", "metadata", "ema", "scheduler", "rng"):
        if key in info and not isinstance(info[key], dict):
            _fail(file, key, "a JSON object", info[key])
    files = info.get("files", [])
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        _fail(file, "files", "a list of file names", files)
    ema = info.get("ema", {})
    if "num_updates" in ema and (not _is_int(ema["num_updates"])
                                 or not 0 <= ema["num_updates"] <= step):
        _fail(file, "ema.num_updates", f"an integer in [0, step = {step}]", ema["num_updates"])


def check_scheduler(saved: Any, expected: Mapping[str, Any], n_groups: int,
                    file: Path) -> None:
    """A scheduler state that fits the scheduler (``expected`` is its own ``state_dict()``):
    known keys only (loading copies each onto the scheduler), one base rate per group."""
    if not isinstance(saved, dict):
        _fail(file, "scheduler", "a JSON object", saved)
    missing = [k for k in _SCHEDULER_KEYS if k in expected and k not in saved]
    if missing:
        raise CheckpointError(f"{file}: field 'scheduler' lacks {missing}")
    unknown = sorted(set(saved) - set(expected) - {"verbose"})
    if unknown:
        raise CheckpointError(f"{file}: field 'scheduler' holds unknown key(s) {unknown}")
    base = saved.get("base_lrs", [1.0] * n_groups)
    if not isinstance(base, list) or len(base) != n_groups or not all(
            _is_num(b) and b > 0 for b in base):
        _fail(file, "scheduler.base_lrs", f"a list of {n_groups} positive number(s)", base)
    last_epoch = saved.get("last_epoch", 0)
    if not _is_int(last_epoch) or not 0 <= last_epoch <= _MAX_COUNT:
        _fail(file, "scheduler.last_epoch", "an integer >= 0", last_epoch)
    lambdas = saved.get("lr_lambdas", [None] * n_groups)
    if not isinstance(lambdas, list) or len(lambdas) != n_groups or any(
            x is not None for x in lambdas):
        _fail(file, "scheduler.lr_lambdas", f"a list of {n_groups} null(s)", lambdas)
    last = saved.get("_last_lr", [])
    if not isinstance(last, list) or not all(_is_num(v) and v >= 0 for v in last):
        _fail(file, "scheduler._last_lr", "a list of numbers >= 0", last)
    if "_step_count" in saved and (not _is_int(saved["_step_count"])
                                   or saved["_step_count"] < 0):
        _fail(file, "scheduler._step_count", "an integer >= 0", saved["_step_count"])
    for key, v in saved.items():
        if isinstance(expected.get(key), bool) and not isinstance(v, bool):
            _fail(file, f"scheduler.{key}", "true or false", v)


def _check_group_value(key: str, value: Any, ref: Any, field: str, file: Path) -> None:
    if isinstance(ref, bool) or ref is None:
        if not (value is None or isinstance(value, bool)):
            _fail(file, field, "true, false or null", value)
    elif isinstance(ref, (int, float)):
        if not _is_num(value) or value < 0:
            _fail(file, field, "a finite number >= 0", value)
    elif isinstance(ref, (tuple, list)):
        if not isinstance(value, (tuple, list)) or len(value) != len(ref) or not all(
                _is_num(b) and 0 <= b < 1 for b in value):
            _fail(file, field, f"{len(ref)} numbers in [0, 1)", value)
    elif isinstance(ref, str) and not isinstance(value, str):
        _fail(file, field, "a string", value)


def check_optimizer_groups(groups: Any, expected: list[Mapping[str, Any]], file: Path) -> None:
    """The parameter groups of a saved optimizer state against the optimizer's own
    (``expected``, from its ``state_dict()``): the same keys, values of their kind."""
    if not isinstance(groups, list) or len(groups) != len(expected):
        raise CheckpointError(f"{file}: 'param_groups' must be a list of {len(expected)} "
                              f"group(s), got {type(groups).__name__} of "
                              f"{len(groups) if isinstance(groups, list) else '?'}")
    for i, (group, ref) in enumerate(zip(groups, expected, strict=True)):
        if not isinstance(group, dict):
            _fail(file, f"param_groups[{i}]", "a JSON object", group)
        missing = [k for k in _GROUP_KEYS if k in ref and k not in group]
        if missing:
            raise CheckpointError(f"{file}: 'param_groups[{i}]' lacks {missing}")
        for key, value in group.items():
            field = f"param_groups[{i}].{key}"
            if key == "params":
                if not isinstance(value, list) or not all(_is_int(p) for p in value):
                    _fail(file, field, "a list of integers", value)
            elif key not in ref:
                raise CheckpointError(f"{file}: unknown key {field!r}")
            else:
                _check_group_value(key, value, ref[key], field, file)


def nonfinite(tensors: Mapping[str, Tensor]) -> tuple[str, int, int] | None:
    """``(first key, its non-finite count, tensors affected)`` of floating tensors holding NaN
    or infinity, or None when all are finite."""
    first, count, affected = None, 0, 0
    for key, t in tensors.items():
        if isinstance(t, Tensor) and t.is_floating_point():
            bad = int(t.numel() - t.isfinite().sum()) if t.numel() else 0
            if bad:
                affected += 1
                if first is None:
                    first, count = key, bad
    return None if first is None else (first, count, affected)


def check_finite(tensors: Mapping[str, Tensor], file: Path, what: str) -> None:
    """Raise :class:`CheckpointError` when a floating tensor of ``tensors`` is not finite."""
    found = nonfinite(tensors)
    if found is not None:
        key, count, affected = found
        raise CheckpointError(
            f"{file}: non-finite {what} ({count} NaN/inf values in {key!r}, {affected} "
            "tensor(s) affected); use an earlier checkpoint")
