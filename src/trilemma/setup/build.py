"""Factories from a resolved :class:`~trilemma.setup.config.Config` to the objects of a run.

Each method's own construction lives in its setup module (:mod:`trilemma.setup.methods`);
this module dispatches to it through the registry and builds what every run shares (process,
data set, trainer config, generator), and rebuilds trained models from a run folder
(:mod:`trilemma.runs`). Errors raised by a component are re-raised as
:class:`~trilemma.errors.ConfigError` naming its section.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..data import load_dataset
from ..errors import ConfigError
from ..methods.base import Method
from ..nets import build_net as _build_net
from ..processes import LinearProcess, get_process
from ..runs import SavedRun, locate_run
from ..samplers.teleport import FROM_DATA, GaussianMoments
from ..train import CheckpointError, TrainConfig
from ..train.checkpoint import load_weights
from ..train.validation import check_finite
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


def resolve_teleport(options: dict[str, Any], config: Config, data: Any = None
                     ) -> dict[str, Any]:
    """Sampler ``options`` with ``teleport: data`` replaced by the mean and covariance of the
    run's training data (``data``, or the data set of ``config.data``) for
    :mod:`trilemma.samplers.teleport`; other options unchanged."""
    if options.get("teleport") != FROM_DATA:
        return dict(options)
    if data is None:
        data = build_dataset(config)
    data = data.data if hasattr(data, "data") else data
    return {**options, "teleport": GaussianMoments.from_samples(torch.as_tensor(data))}


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
    """The method of ``config.model.method`` (default: the data-space score model).

    Build it inside :func:`memory_budget` to refuse a model too large for the machine before
    allocating it."""
    return get_setup(config.model.get("method")).build(config, tuple(data_shape))


#: copies of every parameter that training holds (weights, gradients, the two AdamW moments,
#: the EMA) and that loading holds (the file's tensors and the model's)
TRAIN_COPIES = 5
LOAD_COPIES = 2
_SIZED = {torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn}
_LIKE = {torch.empty_like, torch.zeros_like, torch.ones_like, torch.full_like,
         torch.rand_like, torch.randn_like}


def _requested_bytes(func: Any, args: tuple, kwargs: dict) -> int:
    """Bytes a tensor factory call is about to allocate (0 when it cannot be told)."""
    if func in _LIKE:
        like = args[0] if args else kwargs.get("input")
        if not isinstance(like, torch.Tensor):
            return 0
        return like.numel() * (kwargs.get("dtype") or like.dtype).itemsize
    size = kwargs.get("size", args[0] if args else ())
    if isinstance(size, int):
        size = [a for a in args if isinstance(a, int)]
    try:
        numel = math.prod(int(s) for s in size)
    except (TypeError, ValueError):
        return 0
    return numel * (kwargs.get("dtype") or torch.get_default_dtype()).itemsize


class _MemoryBudget(TorchFunctionMode):
    """Counts the bytes tensor factories allocate and raises :class:`ConfigError` before the
    allocation that would pass ``limit``."""

    def __init__(self, limit: float, what: str) -> None:
        super().__init__()
        self.limit, self.what, self.total = limit, what, 0

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _SIZED or func in _LIKE:
            self.total += _requested_bytes(func, args, kwargs)
            if self.total > self.limit:
                raise ConfigError([f"model: too large for this machine: its parameters "
                                   f"reach {_gb(self.total)} while it is built, and "
                                   f"{self.what}; make the net smaller"])
        return func(*args, **kwargs)


def available_memory(device: str | torch.device) -> int | None:
    """Free bytes on ``device``: CUDA's free memory, else the host's ``MemAvailable``."""
    dev = torch.device(device)
    if dev.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(dev)[0])
        except (RuntimeError, AssertionError, ValueError):
            return None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB" if n < 1e12 else f"{n / 1e12:,.0f} TB"


def memory_budget(device: str | torch.device = "cpu", training: bool = False
                  ) -> _MemoryBudget | contextlib.nullcontext:
    """A context in which building a model fails cleanly (:class:`ConfigError`) before it
    allocates more than the memory free for it: :data:`TRAIN_COPIES` (``training``) or
    :data:`LOAD_COPIES` copies of its parameters on ``device`` (the model is built on the
    CPU, so one copy there too). Activations come on
    top, so passing is no promise; failing is certain. Counts nothing where the free memory
    cannot be read."""
    dev = torch.device(device)
    copies = TRAIN_COPIES if training else LOAD_COPIES
    cpu_free = available_memory("cpu")
    limits, parts = [], []
    if cpu_free is not None:
        cpu_copies = copies if dev.type == "cpu" else 1
        limits.append(cpu_free / cpu_copies)
        parts.append(f"{cpu_copies} copies of them need more than the {_gb(cpu_free)} of "
                     "memory free on cpu" if cpu_copies > 1
                     else f"they need more than the {_gb(cpu_free)} of memory free on cpu")
    if dev.type != "cpu":
        dev_free = available_memory(dev)
        if dev_free is not None:
            limits.append(dev_free / copies)
            parts.append(f"{copies} copies of them need more than the {_gb(dev_free)} of "
                         f"memory free on {dev}")
    if not limits:
        return contextlib.nullcontext()
    return _MemoryBudget(min(limits), " or ".join(parts))


def build_train_config(config: Config) -> TrainConfig:
    """The trainer's :class:`~trilemma.train.TrainConfig` from ``config.train``."""
    return wrap_errors("train", lambda: TrainConfig(**config.train))


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A seeded generator on ``device``."""
    return torch.Generator(device=device).manual_seed(int(seed))


def load_run(path: str | os.PathLike, device: str | torch.device = "cpu",
             finite: bool = True) -> tuple[Method, Config, SavedRun]:
    """Rebuild a trained model (EMA weights) from a run/checkpoint path.

    Returns ``(model, config, saved)`` with the model in eval mode on ``device``. Weights that
    are not finite raise :class:`~trilemma.train.CheckpointError` naming the file, unless
    ``finite=False``. A run being trained may drop the checkpoint just found (``keep_last``):
    the run is then read again.
    """
    for attempt in range(3):
        saved = locate_run(path)
        try:
            return _load_saved(saved, device, finite)
        except (FileNotFoundError, CheckpointError):
            if attempt == 2 or saved.weights.parent.exists():
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _load_saved(saved: SavedRun, device: str | torch.device, finite: bool
                ) -> tuple[Method, Config, SavedRun]:
    config = Config.from_dict(saved.config, check_paths=False)
    shape = saved.data_shape
    if shape is None:  # older runs: ask the data (needs the data to be there)
        shape = data_shape_of(build_dataset(config))
    with memory_budget("cpu"):
        model = build_model(config, shape)
    load_weights(saved.weights, model)
    if finite:
        check_finite(model.state_dict(), saved.weights, "weights")
    model.to(device).eval()
    return model, config, saved
