"""The sections every config shares: ``process``, ``data``, ``train``, ``sample``, and the
network sub-sections of a method (``model.net``, ``model.disc``, ...), checked and sized.

Each ``validate_*`` appends one line per problem (dotted path, what is allowed) and returns the
section with its defaults filled in. :func:`size_net` fills in the sizes a network takes from
the data (or a latent): the one place where a net is sized.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..data import DATASETS, dataset_classes, toy_names
from ..errors import ConfigError
from ..nets import NETS
from ..nets.external import (
    SIZE_ARGUMENTS,
    WRAPPER_KEYS,
    accepted_arguments,
    import_class,
    is_class_path,
)
from ..nets.unet import UNet, fit_attn_resolutions
from ..oracle import MIXTURES
from ..processes import PROCESSES, get_process
from ..samplers.registry import check_sampler
from ..train import TrainConfig
from .schema import (
    MISSING,
    Field,
    as_mapping,
    check_name,
    check_section,
    fields_from_dataclass,
    fields_from_signature,
    is_num,
    non_negative,
    non_negative_int,
    one_of,
    positive,
    positive_int,
    positive_int_list,
    suggest,
    unit_interval,
)

SAMPLE_DEFAULTS: dict[str, Any] = {"sampler": "em", "nfe": 100, "n": 64, "options": {}}
#: net keys derived from the data shape (and the process: CLD doubles the input)
DERIVED_NET_KEYS = {
    "mlp": ("in_dim", "out_dim"),
    "unet": ("in_channels", "out_channels", "image_size"),
    "diffusers_unet": ("in_channels", "out_channels", "image_size"),
}
#: the U-Net's default channel multipliers (its signature's)
UNET_DEFAULT_MULTS = inspect.signature(UNet).parameters["channel_mults"].default
#: what each built-in score network takes: points (n, d) or images (n, C, H, W)
NET_KINDS = {"mlp": "points", "unet": "images", "diffusers_unet": "images"}
#: data keys holding a path that must exist
PATH_KEYS = {"folder": ("path",), "idx": ("images", "labels", "root"), "cifar10": ("root",)}

Check = Callable[[Any], "str | None"]

PROCESS_CHECKS: dict[str, Check] = {
    "beta_min": positive, "beta_max": positive, "sigma_min": positive,
    "sigma_max": positive, "m_inv": positive, "gamma": positive, "eps": positive,
    "s": positive, "T": positive, "sigma2_min": positive, "sigma2_max": positive,
    "eps_num": non_negative,
}
DATA_CHECKS: dict[str, Check] = {
    "n": positive_int, "size": positive_int, "seed": non_negative_int,
    "test_fraction": lambda v: None if is_num(v) and 0 < v < 1 else "a number in (0, 1)",
    "split": one_of("train", "test", "all"),
}
NET_CHECKS: dict[str, Check] = {
    "hidden": positive_int, "depth": non_negative_int, "base_channels": positive_int,
    "num_res_blocks": positive_int, "num_heads": positive_int, "dropout": unit_interval,
    "channel_mults": positive_int_list, "num_classes": positive_int,
    "embed_scale": positive, "time_embed": one_of("fourier", "sinusoidal"),
    "z_dim": non_negative_int, "time_dim": positive_int, "map_dim": positive_int,
    "map_layers": positive_int,
}


def wrap_errors(section: str, fn: Callable[[], Any]) -> Any:
    """Run a builder; re-raise its ``ValueError``/``TypeError`` as a ConfigError naming
    ``section``."""
    try:
        return fn()
    except ConfigError:
        raise
    except (ValueError, TypeError, ImportError) as err:  # ImportError: an optional package
        raise ConfigError([f"{section}: {err}"]) from None


# --------------------------------------------------------------------------- process
def validate_process(raw: Any, problems: list[str]) -> dict[str, Any]:
    """The ``process`` section: a registered process name and its constructor's keys."""
    raw = as_mapping("process", raw, problems)
    if raw is None:
        return {}
    name = check_name("process", raw, list(PROCESSES), "process", problems)
    if name is None:
        return dict(raw)
    fields = {"name": Field("name", str, MISSING),
              **fields_from_signature(PROCESSES[name], checks=PROCESS_CHECKS)}
    n_before = len(problems)
    out = check_section("process", raw, fields, problems)
    if len(problems) == n_before:
        try:  # the constructor checks ranges that couple keys (beta_max >= beta_min, ...)
            get_process(**out)
        except (ValueError, TypeError) as err:
            problems.append(f"process: {err}")
    return out


# --------------------------------------------------------------------------- data
def validate_data(raw: Any, problems: list[str], check_paths: bool) -> dict[str, Any]:
    """The ``data`` section: a registered data set, its loader's keys, and existing paths."""
    raw = as_mapping("data", raw, problems)
    if raw is None:
        return {}
    name = check_name("data", raw, list(DATASETS), "dataset", problems)
    if name is None:
        return dict(raw)
    fields = {"name": Field("name", str, MISSING),
              **fields_from_signature(DATASETS[name], checks=DATA_CHECKS)}
    fields.update({
        "binarize": Field("binarize", str | None, None, one_of("threshold", "stochastic")),
        "binarize_seed": Field("binarize_seed", int, 0, non_negative_int),
        "limit": Field("limit", int | None, None, positive_int),
    })
    if name == "toy":
        fields["toy"].check = one_of(*toy_names())
        fields["seed"].check = non_negative_int
    if name == "digits" and "mode" in fields:
        fields["mode"].check = one_of("bilinear", "nearest")
    if "labels" not in fields:
        fields["labels"] = Field("labels", bool, False)
    elif name == "idx":  # its labels file, or the class-label flag with root
        fields["labels"] = Field("labels", str | bool | None, None)
    n_before = len(problems)
    out = check_section("data", raw, fields, problems)
    if len(problems) == n_before:
        _check_labels(name, raw, out, problems)
    if check_paths and len(problems) == n_before:
        for key in PATH_KEYS.get(name, ()):
            val = out.get(key)
            if isinstance(val, str) and not Path(val).expanduser().exists():  # not labels: true
                problems.append(f"data.{key}: no such file or directory: {val}")
    return out


def _check_labels(name: str, raw: Mapping[str, Any], out: dict[str, Any],
                  problems: list[str]) -> None:
    """``data.labels: true`` (class-conditional training) needs data with class labels; the
    key stays out of the resolved section unless given, so older configs resolve as before."""
    if "labels" not in raw:
        if name != "toy":  # the toy's own key was always resolved
            out.pop("labels", None)
        return
    if out["labels"] is not True or dataset_classes(out) is not None:
        return
    if name == "toy":
        problems.append(f"data.labels: toy {out.get('toy')!r} has no classes; class labels "
                        "come from a mixture's components: " + ", ".join(MIXTURES))
    elif name == "idx":
        problems.append("data.labels: true needs data.root (the standard files with their "
                        "labels); with data.images, conditional training is not available")
    else:
        problems.append(f"data.labels: dataset {name!r} has no class labels; remove "
                        "data.labels (it trains unconditional)")


#: methods whose network (LSGM: the latent prior's) takes class labels from ``data.labels``
CONDITIONAL_METHODS = ("score", "lsgm")


def resolve_classes(model: dict[str, Any], data: Mapping[str, Any], method: str | None,
                    problems: list[str], reads_labels: bool = False) -> None:
    """Class-conditional training: with ``data.labels: true`` the score network's
    ``num_classes`` is filled in from the data (a net with a learned null class besides);
    ``num_classes`` without labelled data, or a method without conditioning, is a problem.
    A method that trains on labels itself (``reads_labels``, e.g. a noise classifier) checks
    its own classes."""
    if reads_labels:
        return
    net = model.get("net") if isinstance(model.get("net"), dict) else None
    given = net.get("num_classes") if net is not None else None
    if data.get("labels") is not True:
        if given is not None:
            problems.append("model.net.num_classes: class-conditional training reads the labels "
                            "of the data; set data.labels: true (num_classes then comes from "
                            "the data) or remove num_classes")
        return
    if (method or "score") not in CONDITIONAL_METHODS:
        problems.append(f"data.labels: class-conditional training is implemented for the "
                        f"methods {', '.join(CONDITIONAL_METHODS)}; {method!r} is unconditional "
                        "here, remove data.labels")
        return
    classes = dataset_classes(dict(data))
    if net is None or classes is None:
        return
    if given is not None and given != classes:
        problems.append(f"model.net.num_classes: {given} does not match the {classes} classes "
                        "of the data; remove it (it comes from the data)")
    elif net.get("name") not in ("mlp", "unet") and not is_class_path(net.get("name")):
        problems.append(f"model.net.name: {net.get('name')!r} takes no class labels here; use "
                        "unet (images) or mlp (points) for class-conditional training")
    else:
        net["num_classes"] = classes


# --------------------------------------------------------------------------- train
def validate_train(raw: Any, seed: int, problems: list[str]) -> dict[str, Any]:
    """The ``train`` section: the fields of :class:`~trilemma.train.TrainConfig`."""
    fields = fields_from_dataclass(TrainConfig, TrainConfig.CHECKS)
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


# --------------------------------------------------------------------------- sample
def sample_fields(sampler: str = "em", nfe: int = 100) -> dict[str, Field]:
    """The keys of a ``sample`` section with the given defaults."""
    return {
        "sampler": Field("sampler", str, sampler),
        "nfe": Field("nfe", int, nfe, positive_int),
        "n": Field("n", int, SAMPLE_DEFAULTS["n"], positive_int),
        "options": Field("options", dict, {}),
    }


def validate_sample(raw: Any, process: str | None, problems: list[str]) -> dict[str, Any]:
    """The ``sample`` section of a diffusion method: a core sampler that fits the process."""
    n_before = len(problems)
    out = check_section("sample", raw, sample_fields(), problems)
    if len(problems) > n_before:
        return out
    try:
        check_sampler(out["sampler"], process, out["nfe"], out["options"])
    except ValueError as err:
        problems.append(f"sample.{err}")
    return out


# --------------------------------------------------------------------------- networks
def validate_subnet(
    prefix: str,
    raw: Any,
    registry: Mapping[str, Any],
    derived: Mapping[str, tuple[str, ...]],
    problems: list[str],
    *,
    default: str,
    want: str | None = None,
    what: str = "net",
    derived_from: str = "the data",
    fits: str = "the data",
    checks: Mapping[str, Check] | None = None,
) -> dict[str, Any] | None:
    """A network sub-section (``model.net``, ``model.vae``, ``model.disc``): a registered
    name, its constructor's keys minus those derived from ``why`` (the data, the latent), an
    optional ``seed``; ``want`` is the name that fits (``fits`` says what; None: any)."""
    sraw = as_mapping(prefix, raw, problems)
    if sraw is None:
        return None
    if registry is NETS and is_class_path(sraw.get("name")):
        return validate_custom_net(prefix, sraw, problems)
    name = check_name(prefix, sraw, list(registry), what, problems, default=default)
    if name is None:
        return None
    skip = derived.get(name, ())
    for key in skip:
        if key in sraw:
            problems.append(f"{prefix}.{key}: is derived from {derived_from} (and the process: CLD "
                            "doubles the input); remove it")
    fields = {"name": Field("name", str, name),
              "seed": Field("seed", int | None, None, non_negative_int),
              **fields_from_signature(registry[name], exclude=skip,
                                       checks={**NET_CHECKS, **(checks or {})})}
    body = {k: v for k, v in sraw.items() if k not in skip}
    body["name"] = name
    passed_on = {}
    if name == "diffusers_unet":  # keys beyond its own go to UNet2DModel, which checks them
        passed_on = {k: v for k, v in body.items() if k not in fields}
        body = {k: v for k, v in body.items() if k in fields}
    out = check_section(prefix, body, fields, problems) | passed_on
    if want is not None and name != want and (NET_KINDS.get(name) is None
                                              or NET_KINDS.get(name) != NET_KINDS.get(want)):
        problems.append(f"{prefix}.name: {name!r} does not fit {fits}; use: {want}")
    return out


def validate_custom_net(prefix: str, raw: dict[str, Any], problems: list[str]
                        ) -> dict[str, Any] | None:
    """A ``name: "package.module:Class"`` network section: the class must import, and the
    keys must be its keyword arguments (any key when it takes ``**kwargs``), ``seed`` or the
    wrapper's ``time_scale``/``time_shift`` (:mod:`trilemma.nets.external`)."""
    try:
        cls = import_class(raw["name"])
    except ValueError as err:
        problems.append(f"{prefix}.name: {err}")
        return None
    names, var_kw = accepted_arguments(cls)
    allowed = names | {"name", "seed", *WRAPPER_KEYS}
    for key in raw:
        if key not in allowed and not var_kw:
            problems.append(f"unknown key {prefix + '.' + str(key)!r}"
                            + suggest(str(key), sorted(allowed)))
    out = dict(raw)
    out.setdefault("seed", None)
    return out


def _size_custom(out: dict[str, Any], shape: tuple[int, ...], in_factor: int) -> None:
    """Fill the size arguments a class of your own accepts (and the config leaves out)."""
    names, _ = accepted_arguments(import_class(out["name"]))
    flat = len(shape) == 1
    sizes = {"in": in_factor * shape[0], "out": shape[0]} if flat else {
        "in": in_factor * shape[0], "out": shape[0],
        "size": shape[1] if len(shape) == 3 and shape[1] == shape[2] else list(shape[1:])}
    for arg, what in SIZE_ARGUMENTS.items():
        if arg in names and arg not in out and what in sizes:
            if flat == (arg in ("in_dim", "out_dim")):
                out[arg] = sizes[what]


def size_net(net: Mapping[str, Any], shape: tuple[int, ...], *, in_factor: int = 1,
             seed: int = 0, section: str = "model.net", of: str = "the data") -> dict[str, Any]:
    """A net config with the sizes it takes from ``shape`` filled in: an MLP gets
    ``in_dim = in_factor d`` and ``out_dim = d``, a U-Net ``in_channels = in_factor C``,
    ``out_channels = C`` and ``image_size``; ``in_factor = 2`` for CLD's ``(x, v)`` input."""
    out = dict(net)
    shape = tuple(int(s) for s in shape)
    if out["name"] == "mlp":
        if len(shape) != 1:
            raise ConfigError([f"{section}.name: 'mlp' needs a flat shape (d,), {of} has "
                               f"shape {shape}; use: unet"])
        out.update(in_dim=in_factor * shape[0], out_dim=shape[0])
    elif is_class_path(out["name"]):
        _size_custom(out, shape, in_factor)
    elif out["name"] in ("unet", "diffusers_unet"):
        if len(shape) != 3:
            raise ConfigError([f"{section}.name: 'unet' needs images (C, H, W), {of} has "
                               f"shape {shape}; use: mlp"])
        c, h, w = shape
        out.update(in_channels=in_factor * c, out_channels=c,
                   image_size=[h, w] if h != w else h)
        if out["name"] == "unet" and out.get("attn_resolutions") is not None:
            mults = out.get("channel_mults", UNET_DEFAULT_MULTS)
            out["attn_resolutions"], note = fit_attn_resolutions(
                out["attn_resolutions"], out["image_size"], mults)
            if note:
                warnings.warn(f"{section}: {note}", stacklevel=2)
    if out.get("seed") is None:
        out["seed"] = seed
    return out
