"""Factories from a resolved :class:`~trilemma.config.Config` to the objects of a run.

The net's sizes come from the data: an MLP gets ``in_dim = k d`` and ``out_dim = d``, a U-Net
``in_channels = k C``, ``out_channels = C`` and ``image_size = (H, W)``, where ``k = 2`` for
CLD (the net sees ``(x, v)`` and outputs the velocity score) and 1 otherwise. Errors raised by
a component are re-raised as :class:`~trilemma.config.ConfigError` naming its section.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .config import Config, ConfigError


def _wrap(section: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError([f"{section}: {err}"]) from None


def build_process(config: Config):
    """The forward SDE of ``config.process``."""
    from .processes import get_process

    return _wrap("process", lambda: get_process(**config.process))


def build_dataset(config: Config):
    """The training data set of ``config.data`` (an ``ArrayDataset``)."""
    from .data import load_dataset

    def load():
        try:
            return load_dataset(dict(config.data))
        except (FileNotFoundError, OSError) as err:
            raise ValueError(str(err)) from None

    return _wrap("data", load)


def data_shape_of(dataset: Any) -> tuple[int, ...]:
    """Shape of one sample of a data set (``ArrayDataset.shape`` or its first item)."""
    shape = getattr(dataset, "shape", None)
    if shape is None:
        first = dataset[0]
        first = first[0] if isinstance(first, (tuple, list)) else first
        shape = tuple(first.shape)
    return tuple(int(s) for s in shape)


def net_kwargs(config: Config, data_shape: tuple[int, ...]) -> dict[str, Any]:
    """The net config with its data-derived sizes filled in (see the module docstring)."""
    if config.model.get("method") == "lsgm":  # the prior's net is sized for the latent
        from .methods.lsgm import lsgm_net_kwargs

        return lsgm_net_kwargs(config, data_shape)
    net = dict(config.model["net"])
    k = 2 if config.process["name"] == "cld" else 1
    shape = tuple(data_shape)
    if net["name"] == "mlp":
        if len(shape) != 1:
            raise ConfigError([f"model.net.name: 'mlp' needs flat data (d,), the data has "
                               f"sample shape {shape}; use: unet"])
        net.update(in_dim=k * shape[0], out_dim=shape[0])
    elif net["name"] == "unet":
        if len(shape) != 3:
            raise ConfigError([f"model.net.name: 'unet' needs images (C, H, W), the data has "
                               f"sample shape {shape}; use: mlp"])
        c, h, w = shape
        net.update(in_channels=k * c, out_channels=c, image_size=[h, w] if h != w else h)
    if net.get("seed") is None:
        net["seed"] = config.seed
    return net


def build_net(config: Config, data_shape: tuple[int, ...]) -> nn.Module:
    """The score network, sized for ``data_shape`` and the process."""
    from .nets import build_net as _build_net

    kw = net_kwargs(config, data_shape)
    return _wrap("model.net", lambda: _build_net(kw))


def build_model(config: Config, data_shape: tuple[int, ...]):
    """The :class:`~trilemma.methods.ScoreModel` (process + net + parametrisation + objective),
    the :class:`~trilemma.methods.lsgm.LSGM` of a ``model.method: lsgm`` config or the
    :class:`~trilemma.methods.ddgan.DDGAN` of a ``model.method: ddgan`` one."""
    from .methods import ScoreModel

    if config.model.get("method") == "lsgm":
        from .methods.lsgm import build_lsgm

        return build_lsgm(config, data_shape)
    if config.model.get("method") == "ddgan":
        from .methods.ddgan import build_ddgan

        return build_ddgan(config, data_shape)
    process = build_process(config)
    net = build_net(config, data_shape)
    m = config.model
    return _wrap("model", lambda: ScoreModel(
        process, net, tuple(data_shape), prediction=m["prediction"], objective=m["objective"],
        weighting=m["weighting"], sigma_data=m["sigma_data"],
        label_dropout=m.get("label_dropout", 0.1),
    ))


def build_train_config(config: Config):
    """The trainer's :class:`~trilemma.train.TrainConfig` from ``config.train``."""
    from .train import TrainConfig

    return _wrap("train", lambda: TrainConfig(**config.train))


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A seeded generator on ``device``."""
    return torch.Generator(device=device).manual_seed(int(seed))


# --------------------------------------------------------------------------- saved runs
from .runs import FINAL_WEIGHTS, RUN_CONFIG, RUN_INFO, SavedRun, locate_run  # noqa: E402,F401


def load_run(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Rebuild a trained model (EMA weights) from a run/checkpoint path.

    Returns ``(model, config, saved)`` with the model in eval mode on ``device``.
    """
    from .train import load_weights

    saved = locate_run(path)
    config = Config.from_dict(saved.config, check_paths=False)
    shape = saved.data_shape
    if shape is None:  # older runs: ask the data (needs the data to be there)
        shape = data_shape_of(build_dataset(config))
    model = build_model(config, shape)
    load_weights(saved.weights, model)
    model.to(device).eval()
    return model, config, saved
