"""Setup of the noise-conditional classifier for classifier guidance (``model.method:
noise_classifier``): its ``model`` keys (``net``: ``conv`` for images, ``mlp`` for points;
``num_classes``), the builder, and what its training needs (labelled batches, no sample grids).

Why ``noise_classifier``: the classifier is trained on the forward process's noisy states
``u_t`` at every ``t``, which is what guidance needs and what a plain classifier of clean data
(the evaluation's ``trilemma features`` classifier) is not.

Labels: scikit-learn digits, ``idx`` with labels, MNIST and CIFAR-10 data sets carry their
labels always; toy data sets carry the mixture component as the label with ``data.labels:
true``. The trainer gets ``(x, labels)`` batches because :attr:`MethodSetup.labels` is set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ...methods.noise_classifier import NoiseClassifier
from ...nets import check_kwargs
from ...nets.classifier import CLASSIFIER_DERIVED_KEYS, CLASSIFIER_NETS
from ...processes import get_process
from ..registry import MethodSetup
from ..schema import ConfigError, Field, check_section, show
from ..sections import sample_fields, validate_subnet, wrap_errors

if TYPE_CHECKING:
    from ..config import Config

#: data sets whose labels are the ten classes (digits, MNIST-style idx, CIFAR-10)
TEN_CLASSES = ("digits", "idx", "cifar10")


def _num_classes(raw: dict[str, Any], data: str | None, problems: list[str]) -> Any:
    given = raw.get("num_classes")
    if given is None:
        if data in TEN_CLASSES:
            return 10
        if data is not None:
            problems.append(f"model.num_classes: required for data {data!r} (toy data: the "
                            "number of mixture components, e.g. 25 for grid25)")
        return None
    if isinstance(given, bool) or not isinstance(given, int) or given < 2:
        problems.append(f"model.num_classes: expected an integer >= 2, got {show(given)}")
    return given


def validate_model(raw: dict[str, Any], process: str | None, data: str | None,
                   problems: list[str]) -> dict[str, Any]:
    """The ``model`` section of a noise classifier: ``method``, ``net``, ``num_classes``."""
    body = {k: v for k, v in raw.items() if k not in ("net", "num_classes")}
    out = check_section("model", body, {"method": Field("method", str, "noise_classifier")},
                        problems)
    want = None if data is None else ("mlp" if data == "toy" else "conv")
    kind = "points (n, d)" if data == "toy" else "images (n, C, H, W)"
    net = validate_subnet("model.net", raw.get("net"), CLASSIFIER_NETS, CLASSIFIER_DERIVED_KEYS,
                          problems, default=want or "conv", want=want, what="classifier net",
                          fits=f"data {data!r} ({kind})")
    out["net"] = net if net is not None else {"name": want or "conv"}
    out["num_classes"] = _num_classes(raw, data, problems)
    return out


def validate_sample(raw: Any, model: dict[str, Any], process: str | None,
                    problems: list[str]) -> dict[str, Any]:
    """The ``sample`` section: kept as given (a classifier draws no samples; the section of
    the score run it guides is what ``trilemma sample`` reads)."""
    return check_section("sample", raw, sample_fields(), problems)


def net_kwargs(config: Config, data_shape: tuple[int, ...]) -> dict[str, Any]:
    """The classifier network's config sized for the data (CLD doubles the input: it sees
    ``(x, v)``) and ``model.num_classes``."""
    out = dict(config.model["net"])
    shape = tuple(int(s) for s in data_shape)
    k = 2 if config.process["name"] == "cld" else 1
    if out["name"] == "mlp":
        if len(shape) != 1:
            raise ConfigError([f"model.net.name: 'mlp' needs points (d,), the data has shape "
                               f"{shape}; use: conv"])
        out["in_dim"] = k * shape[0]
    else:
        if len(shape) != 3:
            raise ConfigError([f"model.net.name: 'conv' needs images (C, H, W), the data has "
                               f"shape {shape}; use: mlp"])
        out["in_channels"] = k * shape[0]
        out["image_size"] = shape[1] if shape[1] == shape[2] else list(shape[1:])
    out["num_classes"] = config.model["num_classes"]
    if out.get("seed") is None:
        out["seed"] = config.seed
    return out


def build(config: Config, data_shape: tuple[int, ...]) -> NoiseClassifier:
    """The :class:`~trilemma.methods.NoiseClassifier` of a config for data of ``data_shape``."""
    process = wrap_errors("process", lambda: get_process(**config.process))
    kw = net_kwargs(config, data_shape)
    name, seed = kw.pop("name"), kw.pop("seed")
    cls = CLASSIFIER_NETS[name]

    def make() -> Any:
        check_kwargs("model.net", name, cls, kw)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return cls(**kw)

    net = wrap_errors("model.net", make)
    return wrap_errors("model", lambda: NoiseClassifier(
        process, net, tuple(int(s) for s in data_shape), config.model["num_classes"]))


SETUP = MethodSetup(
    name="noise_classifier",
    summary="noise-conditional classifier p(c | u_t, t) on the forward process, for "
            "classifier guidance of a score model (draws no samples)",
    validate_model=validate_model,
    build=build,
    net_kwargs=net_kwargs,
    validate_sample=validate_sample,
    labels=True,
    sample_grids=False,
)
