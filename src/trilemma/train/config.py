"""The training configuration: :class:`TrainConfig`, its checks, and the learning-rate schedule.

:attr:`TrainConfig.CHECKS` holds the one range/type check of every field and
:meth:`TrainConfig.problems` adds the couplings between fields (``warmup_steps < steps``,
``min_lr <= lr``); ``__post_init__`` raises on what they report, and the config layer can
report the same problems with its own prefix instead of repeating the ranges.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

Check = Callable[[Any], str | None]

# fields that may change between a run and its resumption without a warning
RUNTIME_FIELDS = frozenset(
    {
        "steps",
        "log_every",
        "ckpt_every",
        "keep_last",
        "sample_every",
        "max_bad_steps",
        "num_workers",
        "tensorboard",
    }
)


def _is_int(v: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    """A finite int or float that is not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int_from(lo: int) -> Check:
    """Check: an int >= ``lo`` (worded as the config layer words it)."""
    expected = "a positive integer" if lo == 1 else f"an integer >= {lo}"
    return lambda v: None if _is_int(v) and v >= lo else expected


def _positive(v: Any) -> str | None:
    """Check: a finite number > 0."""
    return None if _is_num(v) and v > 0 else "a positive number"


def _non_negative(v: Any) -> str | None:
    """Check: a finite number >= 0."""
    return None if _is_num(v) and v >= 0 else "a number >= 0"


def _bool(v: Any) -> str | None:
    """Check: a bool (not 0/1)."""
    return None if isinstance(v, bool) else "a boolean (true/false)"


def _betas(v: Any) -> str | None:
    """Check: two numbers in [0, 1) (a tuple, or a list as YAML gives it)."""
    ok = isinstance(v, (tuple, list)) and len(v) == 2 and all(_is_num(b) and 0 <= b < 1 for b in v)
    return None if ok else "two numbers in [0, 1)"


def _schedule(v: Any) -> str | None:
    """Check: one of the schedules :func:`lr_factor` knows."""
    return None if v in ("constant", "cosine") else "one of: 'constant', 'cosine'"


#: values of :attr:`TrainConfig.precision`
PRECISIONS = ("fp32", "bf16")


def _precision(v: Any) -> str | None:
    """Check: one of :data:`PRECISIONS`."""
    return None if v in PRECISIONS else "one of: " + ", ".join(repr(p) for p in PRECISIONS)


def _grad_clip(v: Any) -> str | None:
    """Check: null (no clipping) or a positive number."""
    return None if v is None else _positive(v)


def _ema_decay(v: Any) -> str | None:
    """Check: a number in [0, 1)."""
    return None if _is_num(v) and 0 <= v < 1 else "a number in [0, 1)"


def maybe_float(v: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` as a string: turn numeric strings into floats, keep the rest."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def _group_lr(v: Any) -> str | None:
    """Check: null, or a mapping of non-empty group names to positive learning rates."""
    if v is None:
        return None
    ok = isinstance(v, Mapping) and all(
        isinstance(k, str) and k and _positive(maybe_float(r)) is None for k, r in v.items()
    )
    return None if ok else "null or a mapping of group names to positive learning rates"


def _couplings(values: Mapping[str, Any], bad: set[str]) -> list[tuple[str, str]]:
    """``(field, expected)`` for the checks between two fields, each made when both are valid."""
    out = []
    if not bad & {"steps", "warmup_steps"} and values["warmup_steps"] >= values["steps"]:
        out.append(("warmup_steps", f"< steps = {values['steps']}"))
    if not bad & {"lr", "min_lr"} and values["min_lr"] > values["lr"]:
        out.append(("min_lr", f"<= lr = {values['lr']}"))
    return out


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping settings of a training run (validated on creation).

    ``batch_size`` is the global micro-batch (split over DDP ranks); an optimizer step sees
    ``batch_size * grad_accum`` samples. ``grad_clip = None`` disables clipping (the norm is
    still logged). ``ckpt_every = 0`` / ``sample_every = 0`` checkpoint only at the end / never
    sample; ``keep_last = 0`` keeps every checkpoint. ``precision = "bf16"`` computes the loss
    under bfloat16 autocast on CPU and CUDA alike (the backward pass follows the dtypes autocast
    chose); weights, gradients, optimizer state and EMA stay float32 (see
    :func:`autocast_device`). ``bf16`` is the older switch, kept so that old configs load and
    behave as before: autocast on CUDA only (on CPU it warns and trains in float32);
    ``precision`` is what new configs should set.
    ``group_lr`` sets the learning rate of named parameter groups of a multi-phase model (a GAN,
    e.g. ``{"g": 1.6e-4, "d": 1.25e-4}``); groups it does not name use ``lr``. Warm-up and the
    cosine decay scale every group alike (each group decays to the fraction ``min_lr / lr`` of
    its own rate). ``tensorboard`` also writes the ``log.csv`` rows as TensorBoard scalars to
    ``<run>/tensorboard/`` (needs the optional ``tensorboard`` package).
    """

    steps: int = 1000
    batch_size: int = 128
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    schedule: str = "constant"
    min_lr: float = 0.0
    grad_clip: float | None = 1.0
    ema_decay: float = 0.999
    ema_warmup: bool = True
    grad_accum: int = 1
    bf16: bool = False
    precision: str = "fp32"
    log_every: int = 50
    ckpt_every: int = 1000
    keep_last: int = 3
    sample_every: int = 0
    max_bad_steps: int = 10
    seed: int = 0
    num_workers: int = 0
    group_lr: dict[str, float] | None = None
    tensorboard: bool = False

    # field -> check(value): None when the value fits, else what was expected ("a positive
    # integer"); the one place holding each field's type and range
    CHECKS: ClassVar[Mapping[str, Check]] = {
        "steps": _int_from(1),
        "batch_size": _int_from(1),
        "lr": _positive,
        "weight_decay": _non_negative,
        "betas": _betas,
        "warmup_steps": _int_from(0),
        "schedule": _schedule,
        "min_lr": _non_negative,
        "grad_clip": _grad_clip,
        "ema_decay": _ema_decay,
        "ema_warmup": _bool,
        "grad_accum": _int_from(1),
        "bf16": _bool,
        "precision": _precision,
        "log_every": _int_from(1),
        "ckpt_every": _int_from(0),
        "keep_last": _int_from(0),
        "sample_every": _int_from(0),
        "max_bad_steps": _int_from(1),
        "seed": _int_from(0),
        "num_workers": _int_from(0),
        "group_lr": _group_lr,
        "tensorboard": _bool,
    }

    def __post_init__(self) -> None:
        if isinstance(self.betas, list):
            self.betas = tuple(self.betas)
        if isinstance(self.group_lr, Mapping):
            self.group_lr = {k: maybe_float(v) for k, v in self.group_lr.items()}
        self.validate()

    @classmethod
    def _issues(cls, values: Mapping[str, Any]) -> list[tuple[str, str, Any]]:
        """``(field, expected, value)`` for every bad known field; missing fields take defaults."""
        full = {f.name: f.default for f in fields(cls)} | dict(values)
        issues = []
        for name, check in cls.CHECKS.items():
            expected = check(full[name])
            if expected is not None:
                issues.append((name, expected, full[name]))
        bad = {name for name, _, _ in issues}
        return issues + [(name, exp, full[name]) for name, exp in _couplings(full, bad)]

    @classmethod
    def problems(cls, values: Mapping[str, Any]) -> list[str]:
        """Every problem of the field values ``values`` as ``"field: expected X, got V"`` (or
        ``"field: unknown field"``); empty when ``TrainConfig(**values)`` would be accepted.

        Missing fields take their defaults. Lets the config layer report all problems at once,
        under its own prefix, without repeating the ranges.
        """
        unknown = [f"{k}: unknown field" for k in values if k not in cls.CHECKS]
        known = {k: v for k, v in values.items() if k in cls.CHECKS}
        return unknown + [f"{n}: expected {exp}, got {v!r}" for n, exp, v in cls._issues(known)]

    def validate(self) -> None:
        """Check every field; the error names each bad field and what was expected."""
        issues = self._issues({f.name: getattr(self, f.name) for f in fields(self)})
        if issues:
            raise ValueError(
                "; ".join(f"TrainConfig.{n} must be {exp}, got {v!r}" for n, exp, v in issues)
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of the fields."""
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Build from a dict (e.g. YAML); unknown keys are an error naming them."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; valid: {', '.join(names)}")
        return cls(**dict(d))


def autocast_device(config: TrainConfig, device_type: str) -> bool:
    """Whether a step on a ``device_type`` device ('cpu', 'cuda') runs under bf16 autocast:
    ``precision = "bf16"`` everywhere, the legacy ``bf16 = True`` on CUDA only."""
    return config.precision == "bf16" or (config.bf16 and device_type == "cuda")


def changed_fields(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """Fields (not runtime-only ones) whose value differs between a checkpoint and this run."""
    return sorted(k for k in now if k not in RUNTIME_FIELDS and k in saved and saved[k] != now[k])


def lr_factor(step: int, config: TrainConfig) -> float:
    """LR multiplier at optimizer step ``step`` (0-based): linear warm-up, then constant/cosine.

    Warm-up: ``(step + 1) / warmup_steps``; cosine decays from 1 to ``min_lr / lr`` at the last
    step ``steps - 1``.
    """
    w = config.warmup_steps
    if step < w:
        return (step + 1) / w
    if config.schedule == "constant":
        return 1.0
    span = max(1, config.steps - 1 - w)
    progress = min(1.0, (step - w) / span)
    floor = config.min_lr / config.lr
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
