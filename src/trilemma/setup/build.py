"""Factories from a resolved :class:`~trilemma.setup.config.Config` to the objects of a run.

Each method's own construction lives in its setup module (:mod:`trilemma.setup.methods`);
this module dispatches to it through the registry and builds what every run shares (process,
data set, trainer config, generator), and rebuilds trained models from a run folder
(:mod:`trilemma.runs`). Errors raised by a component are re-raised as
:class:`~trilemma.errors.ConfigError` naming its section.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch
from torch import nn

from ..data import load_dataset
from ..errors import ConfigError
from ..methods.base import Method
from ..nets import build_net as _build_net
from ..processes import LinearProcess, get_process
from ..runs import SavedRun, locate_run
from ..train import TrainConfig
from ..train.checkpoint import load_weights
from .config import Config
from .registry import get_setup
from .sections import wrap_errors


def build_process(config: Config) -> LinearProcess:
    """The forward SDE of ``config.process``."""
    return wrap_errors("process", lambda: get_process(**config.process))


def build_dataset(config: Config) -> Any:
    """The training data set of ``config.data`` (an ``ArrayDataset``)."""

    def load() -> Any:
        try:
            return load_dataset(dict(config.data))
        except (FileNotFoundError, OSError) as err:
            raise ValueError(str(err)) from None

    return wrap_errors("data", load)


def estimate_sigma_data(dataset: Any) -> float:
    """The data's scale for EDM's preconditioning: the root mean square of every value of the
    training data (the second moment EDM's ``c_skip``, ``c_out``, ``c_in`` are derived from; the
    std for centred data), to 4 significant digits."""
    data = dataset.data if hasattr(dataset, "data") else dataset
    rms = float(torch.as_tensor(data).to(torch.float64).pow(2).mean().sqrt())
    if not rms > 0:
        raise ConfigError(["model.sigma_data: 'auto' needs data that is not all zero"])
    return float(f"{rms:.4g}")


def resolve_from_data(config: Config, dataset: Any) -> Config:
    """``config`` with ``model.sigma_data: auto`` replaced by :func:`estimate_sigma_data` of the
    training data (the same config when nothing is ``auto``): the number is what the run's
    resolved config stores, so the run reloads without its data."""
    if config.model.get("sigma_data") != "auto":
        return config
    return dataclasses.replace(config, model={**config.model,
                                              "sigma_data": estimate_sigma_data(dataset)})


def data_shape_of(dataset: Any) -> tuple[int, ...]:
    """Shape of one sample of a data set (``ArrayDataset.shape`` or its first item)."""
    shape = getattr(dataset, "shape", None)
    if shape is None:
        first = dataset[0]
        first = first[0] if isinstance(first, (tuple, list)) else first
        shape = tuple(first.shape)
    return tuple(int(s) for s in shape)


def net_kwargs(config: Config, data_shape: tuple[int, ...]) -> dict[str, Any]:
    """The method's main network config with its data-derived sizes filled in."""
    return get_setup(config.model.get("method")).net_kwargs(config, tuple(data_shape))


def build_net(config: Config, data_shape: tuple[int, ...]) -> nn.Module:
    """The method's main network, sized for ``data_shape``."""
    kw = net_kwargs(config, data_shape)
    return wrap_errors("model.net", lambda: _build_net(kw))


def build_model(config: Config, data_shape: tuple[int, ...]) -> Method:
    """The method of ``config.model.method`` (default: the data-space score model)."""
    return get_setup(config.model.get("method")).build(config, tuple(data_shape))


def build_train_config(config: Config) -> TrainConfig:
    """The trainer's :class:`~trilemma.train.TrainConfig` from ``config.train``."""
    return wrap_errors("train", lambda: TrainConfig(**config.train))


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A seeded generator on ``device``."""
    return torch.Generator(device=device).manual_seed(int(seed))


def load_run(path: str | os.PathLike, device: str | torch.device = "cpu"
             ) -> tuple[Method, Config, SavedRun]:
    """Rebuild a trained model (EMA weights) from a run/checkpoint path.

    Returns ``(model, config, saved)`` with the model in eval mode on ``device``.
    """
    saved = locate_run(path)
    config = Config.from_dict(saved.config, check_paths=False)
    shape = saved.data_shape
    if shape is None:  # older runs: ask the data (needs the data to be there)
        shape = data_shape_of(build_dataset(config))
    model = build_model(config, shape)
    load_weights(saved.weights, model)
    model.to(device).eval()
    return model, config, saved
