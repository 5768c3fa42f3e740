"""The frozen teacher of a distillation method (``model.teacher``), shared by consistency and
progressive distillation: a trained score-model run folder, read only when training starts (a
:class:`~trilemma.methods.consistency_teacher.DeferredTeacher`), or ``oracle:NAME``, the exact
score of a ready-made mixture of :mod:`trilemma.oracle`. Not a method: this module has no
``SETUP``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import RunError
from ...methods.consistency_teacher import DeferredTeacher, Teacher, teacher_from_model
from ...oracle import MIXTURES, get_mixture
from ...processes import get_process
from ...train import CheckpointError
from ..build import load_run
from ..schema import ConfigError
from ..sections import wrap_errors

if TYPE_CHECKING:
    from ..config import Config

ORACLE = "oracle:"


def check_teacher_ref(v: Any) -> str | None:
    """The ``model.teacher`` field check: a run folder or ``oracle:NAME`` of a known mixture."""
    if not isinstance(v, str) or not v.strip():
        return "a trained score-model run folder or oracle:NAME"
    if v.startswith(ORACLE) and v[len(ORACLE):] not in MIXTURES:
        return "oracle:NAME with NAME one of: " + ", ".join(MIXTURES)
    return None


def load_teacher(config: Config, data_shape: tuple[int, ...],
                 inherit: tuple[str, ...] = ()) -> Teacher:
    """The teacher named by ``model.teacher``: the oracle at once; a run deferred (loaded for
    training by ``prepare_training``, never for sampling), with a ConfigError naming the field
    when it is missing or does not fit the student's process, data or the ``model`` keys in
    ``inherit`` (those a student that starts from the teacher's weights must share)."""
    ref = config.model["teacher"]
    shape = tuple(int(s) for s in data_shape)
    process = wrap_errors("process", lambda: get_process(**config.process))
    if ref.startswith(ORACLE):
        mixture = get_mixture(ref[len(ORACLE):])
        if shape != (mixture.dim,):
            raise ConfigError([f"model.teacher: {ref!r} is a {mixture.dim}-D mixture, the data "
                               f"has sample shape {shape}; use data of that mixture"])
        return wrap_errors("model.teacher", lambda: Teacher(mixture.score_fn(process), process,
                                                            ref))
    return wrap_errors("model.teacher", lambda: DeferredTeacher(
        lambda: _load_run_teacher(config, ref, shape, inherit), process, ref))


def _load_run_teacher(config: Config, ref: str, shape: tuple[int, ...],
                      inherit: tuple[str, ...]) -> Teacher:
    """The teacher run ``ref``, checked against the student's process, data shape and the
    ``model`` keys in ``inherit``."""
    if not Path(ref).exists():
        raise ConfigError([f"model.teacher: the teacher run {ref!r} was not found (a relative "
                           "path is read from the working directory); train it first, e.g. "
                           f"trilemma train configs/toy_vp.yaml --out {ref}, or point "
                           "model.teacher at it"])
    try:
        model, tconfig, _ = load_run(ref, "cpu")
    except (RunError, CheckpointError, ConfigError, FileNotFoundError) as err:
        raise ConfigError([f"model.teacher: cannot load the teacher run {ref!r}: {err}"]
                          ) from None
    if tconfig.process != config.process:
        raise ConfigError([f"process: the student works in its teacher's process; the teacher "
                           f"run {ref!r} has {tconfig.process}, this config {config.process}"])
    if tuple(getattr(model, "data_shape", ())) != shape:
        raise ConfigError([f"model.teacher: the teacher run {ref!r} models samples of shape "
                           f"{tuple(model.data_shape)}, the data has {shape}"])
    if tconfig.model.get("method", "score") != "score":
        raise ConfigError([f"model.teacher: the teacher run {ref!r} is a "
                           f"{tconfig.model.get('method')!r} run; it must be a score model"])
    for key in inherit:
        if tconfig.model.get(key) != config.model.get(key):
            raise ConfigError([f"model.{key}: the student starts from the teacher's weights, "
                               f"so it must be the teacher run's: {tconfig.model.get(key)!r} "
                               f"(got {config.model.get(key)!r})"])
    return wrap_errors("model.teacher", lambda: teacher_from_model(model, ref))
