"""Setup of progressive distillation (``model.method: progressive``): the ``model`` keys, the
teacher (``model.teacher``: a trained score-model run folder, or ``oracle:NAME`` for the exact
score of a ready-made mixture), a ``sample`` section defaulting to ``ddim`` at
``final_steps`` NFE, and the builder.

With a run teacher the student starts from the teacher's weights, so ``process``, ``model.net``,
``model.prediction`` and ``model.sigma_data`` must be the teacher run's (checked when training
starts). The run is read only then, never for sampling: a trained student samples without it.
With an oracle teacher the student starts from a fresh network (default prediction ``v``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...methods.progressive import DDIM, WEIGHTINGS, ProgressiveModel, is_power_of_two
from ...nets import NETS, build_net
from ...parametrization import SCALAR_PREDICTIONS
from ...processes import PROCESSES, get_process
from ...processes.base import ScalarProcess
from ...samplers.registry import check_sampler
from ..registry import MethodSetup
from ..schema import Field, check_section, one_of, positive
from ..sections import DERIVED_NET_KEYS, sample_fields, size_net, validate_subnet, wrap_errors
from .teachers import check_teacher_ref, load_teacher

if TYPE_CHECKING:
    from ..config import Config

#: the model keys a run teacher fixes (the student starts from its weights)
TEACHER_KEYS = ("net", "prediction", "sigma_data")


def _power_of_two(v: Any) -> str | None:
    return None if is_power_of_two(v) else "a power of two (1, 2, 4, 8, ...)"


def _positive_int(v: Any) -> str | None:
    ok = isinstance(v, int) and not isinstance(v, bool) and v >= 1
    return None if ok else "a positive integer (optimizer steps per halving)"




def _fields() -> dict[str, Field]:
    return {"method": Field("method", str, "progressive"),
            "teacher": Field("teacher", str, check=check_teacher_ref),
            "start_steps": Field("start_steps", int, 64, _power_of_two),
            "final_steps": Field("final_steps", int, 1, _power_of_two),
            "steps_per_round": Field("steps_per_round", int, 500, _positive_int),
            "weighting": Field("weighting", str, WEIGHTINGS[0], one_of(*WEIGHTINGS)),
            "prediction": Field("prediction", str, "v", one_of(*SCALAR_PREDICTIONS)),
            "sigma_data": Field("sigma_data", float, 0.5, positive)}


def validate_model(raw: dict[str, Any], process: str | None, data: str | None,
                   problems: list[str]) -> dict[str, Any]:
    """The ``model`` section of a progressive distillation (see the module docstring)."""
    if process is not None and (not issubclass(PROCESSES[process], ScalarProcess)
                                or process == "rectified_flow"):
        problems.append(f"process.name: progressive distillation needs a diffusion with a "
                        f"scalar kernel (the teacher's: vp, subvp, ve, ...); got {process!r}")
    body = {k: v for k, v in raw.items() if k != "net"}
    out = check_section("model", body, _fields(), problems)
    start, final = out.get("start_steps"), out.get("final_steps")
    if is_power_of_two(start) and is_power_of_two(final) and final >= start:
        problems.append(f"model.final_steps: must be below model.start_steps ({start}: the "
                        f"teacher's steps in the first round); got {final}")
    if start == 1:
        problems.append("model.start_steps: the first teacher needs >= 2 steps (a power of "
                        "two such as 64)")
    want = None if data is None else ("mlp" if data == "toy" else "unet")
    kind = "points (n, d)" if data == "toy" else "images (n, C, H, W)"
    net = validate_subnet("model.net", raw.get("net"), NETS, DERIVED_NET_KEYS, problems,
                          default=want or "mlp", want=want, what="student network",
                          fits=f"data {data!r} ({kind})")
    out["net"] = net if net is not None else {"name": want or "mlp"}
    return out


def validate_sample(raw: Any, model: dict[str, Any], process: str | None,
                    problems: list[str]) -> dict[str, Any]:
    """The ``sample`` section: any sampler of a score model; default ``ddim`` at
    ``final_steps`` NFE, which here ends without Tweedie's call (``nfe`` >= 1)."""
    final = model.get("final_steps")
    n_before = len(problems)
    out = check_section("sample", raw, sample_fields(DDIM, final if is_power_of_two(final)
                                                     else 1), problems)
    if len(problems) > n_before:
        return out
    try:
        nfe = None if out["sampler"] == DDIM else out["nfe"]
        check_sampler(out["sampler"], process, nfe, out["options"])
    except ValueError as err:
        problems.append(f"sample.{err}")
    return out


def net_kwargs(config: Config, data_shape: tuple[int, ...]) -> dict[str, Any]:
    """The student network's config sized for the data."""
    return size_net(config.model["net"], data_shape, seed=config.seed)


def build(config: Config, data_shape: tuple[int, ...]) -> ProgressiveModel:
    """The :class:`~trilemma.methods.progressive.ProgressiveModel` of a config."""
    teacher = load_teacher(config, data_shape, TEACHER_KEYS)
    process = wrap_errors("process", lambda: get_process(**config.process))
    net = wrap_errors("model.net", lambda: build_net(net_kwargs(config, data_shape)))
    m = {k: v for k, v in config.model.items() if k not in ("method", "teacher", "net")}
    return wrap_errors("model", lambda: ProgressiveModel(process, net, teacher,
                                                         tuple(data_shape), **m))


SETUP = MethodSetup(
    name="progressive",
    summary="progressive distillation of a score model or the exact mixture oracle: DDIM at "
            "1-4 steps",
    validate_model=validate_model,
    build=build,
    net_kwargs=net_kwargs,
    validate_sample=validate_sample,
)
