"""Setup of reflow (``model.method: reflow``): a rectified flow trained on (noise, sample)
pairs of a trained teacher run (``model.teacher``), drawn with ``model.pair_sampler`` at
``model.pair_nfe`` from ``model.pairs`` seeded draws of ``N(0, I)`` (``model.pair_seed``).

``trilemma train`` draws the pairs before the first step and writes them to
``RUN_DIR/reflow_pairs.safetensors`` with what made them; a resumed or restarted run reloads
that file when it was made the same way, so the pairs are drawn once per run.
``model.distill: true`` trains only the one-step map on the pairs (Liu et al.'s distillation),
usually with ``model.init_from`` naming the reflow run to start from (its weights are loaded
unless the run resumes).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import RunError
from ...methods.reflow import (
    PAIR_SAMPLERS,
    PAIRS_FILE,
    Reflow,
    check_teacher,
    load_pairs,
    pairs_meta,
    reflow_pairs,
    save_pairs,
)
from ...nets import NETS, build_net
from ...processes import get_process
from ..build import load_run
from ..registry import MethodSetup
from ..schema import Field, check_section, non_negative_int, one_of, positive, positive_int
from ..sections import DERIVED_NET_KEYS, size_net, validate_subnet, wrap_errors

if TYPE_CHECKING:
    from ..config import Config

FLOW = "rectified_flow"
FIELDS = {
    "method": Field("method", str, "reflow"),
    "teacher": Field("teacher", str),
    "pair_sampler": Field("pair_sampler", str, "heun", one_of(*PAIR_SAMPLERS)),
    "pair_nfe": Field("pair_nfe", int, 100, positive_int),
    "pairs": Field("pairs", int, 20000, positive_int),
    "pair_seed": Field("pair_seed", int, 0, non_negative_int),
    "pair_batch": Field("pair_batch", int, 2000, positive_int),
    "sigma_data": Field("sigma_data", float, 0.5, positive),
    "distill": Field("distill", bool, False),
    "init_from": Field("init_from", str | None, None),
}
#: the keys that decide the pairs (a pairs file made otherwise is drawn again)
PAIR_KEYS = ("teacher", "pair_sampler", "pair_nfe", "pairs", "pair_seed", "pair_batch")


def validate_model(raw: dict[str, Any], process: str | None, data: str | None,
                   problems: list[str]) -> dict[str, Any]:
    """The ``model`` section of reflow: the teacher run, how its pairs are drawn, the net."""
    body = {k: v for k, v in raw.items() if k != "net"}
    out = check_section("model", body, FIELDS, problems)
    if process is not None and process != FLOW:
        problems.append(f"model.method: reflow trains a rectified flow; set process.name: "
                        f"{FLOW} (got {process!r})")
    want = None if data is None else ("mlp" if data == "toy" else "unet")
    kind = "points (n, d)" if data == "toy" else "images (n, C, H, W)"
    net = validate_subnet("model.net", raw.get("net"), NETS, DERIVED_NET_KEYS, problems,
                          default=want or "unet", want=want, fits=f"data {data!r} ({kind})")
    out["net"] = net if net is not None else {"name": want or "unet"}
    return out


def net_kwargs(config: Config, data_shape: tuple[int, ...]) -> dict[str, Any]:
    """The flow network's config sized for the data."""
    return size_net(config.model["net"], data_shape, in_factor=1, seed=config.seed)


def build(config: Config, data_shape: tuple[int, ...]) -> Reflow:
    """The :class:`~trilemma.methods.Reflow` model (its pairs come in :func:`prepare`)."""
    process = wrap_errors("process", lambda: get_process(**config.process))
    net = wrap_errors("model.net", lambda: build_net(net_kwargs(config, data_shape)))
    m = config.model
    return wrap_errors("model", lambda: Reflow(process, net, tuple(data_shape),
                                               sigma_data=m["sigma_data"],
                                               distill=m.get("distill", False)))


def prepare(model: Reflow, config: Config, run_dir: Path, resume: bool) -> None:
    """Reload the run's pairs file when it was made from the same keys, else load the teacher
    and draw the pairs (then write the file)."""
    m = config.model
    if m.get("init_from") and not resume:
        _init_from(model, m["init_from"])
    meta = {k: str(m[k]) for k in PAIR_KEYS}
    path = Path(run_dir) / PAIRS_FILE
    if path.exists() and {k: pairs_meta(path).get(k) for k in PAIR_KEYS} == meta:
        model.set_pairs(*load_pairs(path))
        return
    device = next(model.parameters()).device
    try:
        teacher = check_teacher(load_run(m["teacher"], device)[0])
    except (FileNotFoundError, RunError, ValueError) as err:
        raise ValueError(f"model.teacher: {err}") from None
    if teacher.data_shape != model.data_shape:
        raise ValueError(f"model.teacher: its data shape {teacher.data_shape} differs from this "
                         f"run's {model.data_shape}")
    noise, samples, nfe = reflow_pairs(teacher, m["pairs"], sampler=m["pair_sampler"],
                                       nfe=m["pair_nfe"], seed=m["pair_seed"],
                                       batch_size=m["pair_batch"])
    save_pairs(path, noise, samples, {**meta, "nfe_per_sample": nfe})
    model.set_pairs(noise, samples)


def _init_from(model: Reflow, path: str) -> None:
    """Start from a trained flow run's (EMA) weights; the networks must match."""
    try:
        source = load_run(path, next(model.parameters()).device)[0]
        model.load_state_dict(source.state_dict())
    except (FileNotFoundError, RunError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"model.init_from: {first}") from None


SETUP = MethodSetup(
    name="reflow",
    summary="reflow: a rectified flow trained on a teacher flow's (noise, sample) pairs",
    validate_model=validate_model,
    build=build,
    net_kwargs=net_kwargs,
    prepare=prepare,
)
