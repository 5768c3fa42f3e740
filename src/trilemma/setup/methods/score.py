"""Setup of the data-space score model (``model.method: score``, the default): its ``model``
keys, their validation against the process and data, and its builder."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ...methods.score_model import OBJECTIVES, ScoreModel
from ...nets import NETS, build_net
from ...objectives import FLOW_WEIGHTINGS, LOGNORMAL_WEIGHTINGS, T_SAMPLINGS
from ...parametrization import SCALAR_PREDICTIONS
from ...processes import PROCESSES, get_process
from ..registry import MethodSetup
from ..schema import ConfigError, coerce, is_num, show, suggest
from ..sections import DERIVED_NET_KEYS, size_net, validate_subnet, wrap_errors

if TYPE_CHECKING:
    from ..config import Config

MODEL_KEYS = ("method", "net", "prediction", "objective", "weighting", "sigma_data",
              "label_dropout", "t_sampling", "p_mean", "p_std")
#: the rectified flow's process name (its default weighting is ``velocity``)
FLOW = "rectified_flow"
#: ``model.sigma_data: auto``: estimated from the training data when a run starts
#: (:func:`trilemma.setup.build.resolve_from_data`), stored as a number in the run's config
AUTO = "auto"


def _net_fits(data: str | None) -> tuple[str | None, str]:
    if data is None:
        return None, "the data"
    want = "mlp" if data == "toy" else "unet"
    kind = "points (n, d)" if data == "toy" else "images (n, C, H, W)"
    return want, f"data {data!r} ({kind})"


def _choice(key: str, given: Any, valid: tuple[str, ...], against: str,
            problems: list[str]) -> Any:
    """``given`` (None: the first valid choice) checked against ``valid``."""
    if given is None:
        return valid[0]
    if given not in valid:
        problems.append(f"model.{key}: {show(given)} does not fit {against}; use one of: "
                        + ", ".join(valid))
    return given


def _number(key: str, given: Any, ok: Any, expected: str, problems: list[str]) -> Any:
    value = coerce(given, float)
    if not (is_num(value) and ok(value)):
        problems.append(f"model.{key}: expected {expected}, got {show(given)}")
    return value


def validate_model(raw: dict[str, Any], process: str | None, data: str | None,
                   problems: list[str]) -> dict[str, Any]:
    """The ``model`` section of a score model: ``net``, ``prediction``, ``objective``,
    ``weighting``, ``sigma_data``, ``label_dropout`` (defaults fit the process)."""
    for key in raw:
        if key not in MODEL_KEYS:
            problems.append(f"unknown key 'model.{key}'{suggest(str(key), MODEL_KEYS)}")
    out: dict[str, Any] = {"method": "score"} if raw.get("method") is not None else {}
    is_cld = process == "cld"
    want, fits = _net_fits(data)
    net = validate_subnet("model.net", raw.get("net"), NETS, DERIVED_NET_KEYS, problems,
                          default=want or "unet", want=want, fits=fits)
    if net is not None:
        out["net"] = net
    preds = PROCESSES[process].predictions if process in PROCESSES else SCALAR_PREDICTIONS
    pred = raw.get("prediction")
    if pred is None:
        out["prediction"] = preds[0] if process else None
    else:
        out["prediction"] = _choice("prediction", pred, preds, f"process {process!r}",
                                    problems) if process is not None else pred
    fits_obj = ("hsm", "cld_dsm") if is_cld else ("dsm",)
    obj = raw.get("objective")
    if obj is not None and obj not in OBJECTIVES:
        problems.append(f"model.objective: unknown objective {show(obj)}; use one of: "
                        + ", ".join(fits_obj))
        obj = False
    elif obj is not None and process is not None and obj not in fits_obj:
        problems.append(f"model.objective: {show(obj)} does not fit process {process!r}; "
                        "use one of: " + ", ".join(fits_obj))
        obj = False
    obj = fits_obj[0] if obj is None else (obj or None)
    out["objective"] = obj
    out["weighting"] = _weighting(raw.get("weighting"), obj, process, problems)
    sd = raw.get("sigma_data", 0.5)
    out["sigma_data"] = sd if sd == AUTO else _number(
        "sigma_data", sd, lambda v: v > 0, "a positive number or 'auto'", problems)
    out["label_dropout"] = _number("label_dropout", raw.get("label_dropout", 0.1),
                                   lambda v: 0 <= v < 1, "a number in [0, 1)", problems)
    out.update(_t_sampling(raw, is_cld, obj, out["weighting"], problems))
    return out


def _weighting(given: Any, objective: str | None, process: str | None,
               problems: list[str]) -> Any:
    """The objective's weighting: the rectified flow defaults to its ``velocity`` objective,
    which no other process takes."""
    if objective is None:
        return given
    if process == FLOW and given is None:
        return FLOW_WEIGHTINGS[0]
    if process is not None and process != FLOW and given in FLOW_WEIGHTINGS:
        problems.append(f"model.weighting: {show(given)} is the rectified flow's objective "
                        f"(process.name: {FLOW}); process {process!r} needs another weighting")
        return given
    valid = tuple(w for w in OBJECTIVES[objective]
                  if process in (None, FLOW) or w not in FLOW_WEIGHTINGS)
    return _choice("weighting", given, valid, f"objective {objective!r}", problems)


def _t_sampling(raw: dict[str, Any], is_cld: bool, objective: str | None, weighting: Any,
                problems: list[str]) -> dict[str, Any]:
    """``t_sampling`` (and its ``p_mean``, ``p_std``): only in the resolved config when given,
    so configs without it resolve as before."""
    ts = raw.get("t_sampling")
    if ts is None:
        for key in ("p_mean", "p_std"):
            if key in raw:
                problems.append(f"model.{key}: only used with model.t_sampling: lognormal")
        return {}
    out: dict[str, Any] = {"t_sampling": _choice("t_sampling", ts, T_SAMPLINGS,
                                                 "the DSM time sampling", problems)}
    if ts != "lognormal":
        for key in ("p_mean", "p_std"):
            if key in raw:
                problems.append(f"model.{key}: only used with model.t_sampling: lognormal")
        return out
    if is_cld or objective not in (None, "dsm"):
        problems.append("model.t_sampling: 'lognormal' needs a scalar process and the dsm "
                        "objective (EDM's noise levels sigma = sigma_t/alpha_t)")
    elif weighting in OBJECTIVES["dsm"] and weighting not in LOGNORMAL_WEIGHTINGS:
        problems.append(f"model.t_sampling: 'lognormal' does not fit weighting {show(weighting)} "
                        "(a likelihood bound needs its own t); use weighting: "
                        + " or ".join(LOGNORMAL_WEIGHTINGS))
    out["p_mean"] = _number("p_mean", raw.get("p_mean", -1.2), math.isfinite, "a number",
                            problems)
    out["p_std"] = _number("p_std", raw.get("p_std", 1.2), lambda v: 0 < v < math.inf,
                           "a positive number", problems)
    return out


def net_kwargs(config: Config, data_shape: tuple[int, ...]) -> dict[str, Any]:
    """The score network's config sized for the data (CLD doubles the input)."""
    k = 2 if config.process["name"] == "cld" else 1
    return size_net(config.model["net"], data_shape, in_factor=k, seed=config.seed)


def build(config: Config, data_shape: tuple[int, ...]) -> ScoreModel:
    """The :class:`~trilemma.methods.ScoreModel` (process + net + parametrisation + objective)."""
    process = wrap_errors("process", lambda: get_process(**config.process))
    kw = net_kwargs(config, data_shape)
    net = wrap_errors("model.net", lambda: build_net(kw))
    m = config.model
    if m["sigma_data"] == AUTO:
        raise ConfigError(["model.sigma_data: 'auto' is estimated from the training data when a "
                           "run starts (trilemma.setup.resolve_from_data); give a number to "
                           "build the model without the data"])
    return wrap_errors("model", lambda: ScoreModel(
        process, net, tuple(data_shape), prediction=m["prediction"], objective=m["objective"],
        weighting=m["weighting"], sigma_data=m["sigma_data"],
        label_dropout=m.get("label_dropout", 0.1), t_sampling=m.get("t_sampling", "uniform"),
        p_mean=m.get("p_mean", -1.2), p_std=m.get("p_std", 1.2),
    ))


SETUP = MethodSetup(
    name="score",
    summary="score model in data space (DSM; HSM for CLD), sampled by any core sampler",
    validate_model=validate_model,
    build=build,
    net_kwargs=net_kwargs,
)
