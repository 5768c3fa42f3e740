"""Setup of consistency distillation (``model.method: consistency``): the ``model`` keys, the
teacher (``model.teacher``: a trained score-model run folder, or ``oracle:NAME`` for the exact
score of a ready-made mixture of :mod:`trilemma.oracle`), a ``sample`` section of its own
sampler (``sampler: consistency``, ``nfe`` = steps), and the builder.

The student works in the teacher's process and data space: with a run teacher the config's
``process`` must be the teacher run's; with an oracle teacher it is the process whose
probability-flow ODE the oracle's score drives. A teacher run is loaded when training starts
(and on ``--resume``), never for sampling and never saved with the student: a trained student
samples without it, but training needs the run where ``model.teacher`` says (a relative path is
read from the working directory).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...methods.consistency import (
    DISTANCES,
    SAMPLE_OPTIONS,
    SAMPLERS,
    WEIGHTINGS,
    ConsistencyModel,
)
from ...methods.consistency_teacher import SOLVERS
from ...nets import NETS, build_net
from ...processes import PROCESSES
from ...processes.base import ScalarProcess
from ..registry import MethodSetup
from ..schema import Field, check_section, fields_from_signature, one_of, positive
from ..sections import DERIVED_NET_KEYS, sample_fields, size_net, validate_subnet, wrap_errors
from .teachers import check_teacher_ref, load_teacher

if TYPE_CHECKING:
    from ..config import Config

_NOT_CONFIG = ("net", "teacher", "data_shape")


def _num_scales(v: Any) -> str | None:
    ok = isinstance(v, int) and not isinstance(v, bool) and v >= 2
    return None if ok else "an integer >= 2 (the points of the training grid)"


def _ema_target(v: Any) -> str | None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1
    return None if ok else "a number in [0, 1) (the target network's EMA rate mu)"




def _net(raw: dict[str, Any], data: str | None, problems: list[str]) -> dict[str, Any]:
    want = None if data is None else ("mlp" if data == "toy" else "unet")
    kind = "points (n, d)" if data == "toy" else "images (n, C, H, W)"
    out = validate_subnet("model.net", raw.get("net"), NETS, DERIVED_NET_KEYS, problems,
                          default=want or "mlp", want=want, what="student network",
                          fits=f"data {data!r} ({kind})")
    return out if out is not None else {"name": want or "mlp"}


def validate_model(raw: dict[str, Any], process: str | None, data: str | None,
                   problems: list[str]) -> dict[str, Any]:
    """The ``model`` section of a consistency model (see the module docstring)."""
    if process is not None and not issubclass(PROCESSES[process], ScalarProcess):
        problems.append(f"process.name: consistency distillation needs a scalar process (the "
                        f"teacher's: vp, subvp, ve, ...); got {process!r}")
    checks = {"num_scales": _num_scales, "ema_target": _ema_target,
              "distance": one_of(*DISTANCES), "solver": one_of(*SOLVERS),
              "weighting": one_of(*WEIGHTINGS),
              "sigma_data": positive, "rho": positive}
    fields = {"method": Field("method", str, "consistency"),
              "teacher": Field("teacher", str, check=check_teacher_ref),
              **fields_from_signature(ConsistencyModel, exclude=_NOT_CONFIG, checks=checks)}
    body = {k: v for k, v in raw.items() if k != "net"}
    out = check_section("model", body, fields, problems)
    out["net"] = _net(raw, data, problems)
    return out


def _check_taus(taus: Any, nfe: int, problems: list[str]) -> None:
    ok = isinstance(taus, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in taus)
    if not ok or len(taus) != nfe or any(b >= a for a, b in zip(taus, taus[1:], strict=False)):
        problems.append(f"sample.options.taus: expected {nfe} strictly decreasing positive noise "
                        f"levels (one per step; nfe = {nfe}), got {taus!r}")


def validate_sample(raw: Any, model: dict[str, Any], process: str | None,
                    problems: list[str]) -> dict[str, Any]:
    """The ``sample`` section: ``sampler: consistency``, ``nfe`` = steps, option ``taus``."""
    n_before = len(problems)
    out = check_section("sample", raw, sample_fields("consistency", 1), problems)
    if len(problems) > n_before:
        return out
    if out["sampler"] not in SAMPLERS:
        problems.append(f"sample.sampler: a consistency model samples with its own steps; use "
                        f"{', '.join(SAMPLERS)} (got {out['sampler']!r})")
    bad = sorted(set(out["options"]) - set(SAMPLE_OPTIONS))
    if bad:
        problems.append(f"sample.options: unknown option(s) {bad} for sampler 'consistency'; "
                        f"its options: {', '.join(SAMPLE_OPTIONS)}")
    if out["options"].get("taus") is not None:
        _check_taus(out["options"]["taus"], out["nfe"], problems)
    return out


def net_kwargs(config: Config, data_shape: tuple[int, ...]) -> dict[str, Any]:
    """The student network's config sized for the data."""
    return size_net(config.model["net"], data_shape, seed=config.seed)


def build(config: Config, data_shape: tuple[int, ...]) -> ConsistencyModel:
    """The :class:`~trilemma.methods.ConsistencyModel` of a config (its teacher loaded)."""
    teacher = load_teacher(config, data_shape)
    kw = net_kwargs(config, data_shape)
    net = wrap_errors("model.net", lambda: build_net(kw))
    m = {k: v for k, v in config.model.items() if k not in ("method", "teacher", "net")}
    return wrap_errors("model", lambda: ConsistencyModel(net, teacher, tuple(data_shape), **m))


SETUP = MethodSetup(
    name="consistency",
    summary="consistency distillation of a score model or the exact mixture oracle: 1-4 steps",
    validate_model=validate_model,
    build=build,
    net_kwargs=net_kwargs,
    validate_sample=validate_sample,
)
