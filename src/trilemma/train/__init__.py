"""Training: the trainer loop and its parts (config, batches, phases, log), EMA, safetensors
checkpoints and distributed helpers.

This module is also callable: ``trilemma.train(config, out=...)`` trains a run folder from a
config exactly as ``trilemma train`` does (it forwards to :func:`trilemma.api.train`, which
the ``trilemma`` package registers with :func:`set_entry_point` when it is imported; this layer
imports nothing above itself). ``from trilemma.train import Trainer`` still gives the loop.
"""

import sys
import types
from collections.abc import Callable
from typing import Any

from .checkpoint import (
    CheckpointError,
    checkpoint_dir,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    save_weights,
)
from .config import TrainConfig, lr_factor
from .distributed import (
    DistInfo,
    LossAdapter,
    cleanup_distributed,
    dist_info,
    init_distributed,
    rank_seed,
    shard_batches,
    wrap_model,
)
from .ema import EMA
from .trainer import Trainer, TrainingDivergedError

__all__ = [
    "EMA",
    "set_entry_point",
    "CheckpointError",
    "DistInfo",
    "LossAdapter",
    "TrainConfig",
    "Trainer",
    "TrainingDivergedError",
    "checkpoint_dir",
    "cleanup_distributed",
    "dist_info",
    "init_distributed",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_weights",
    "lr_factor",
    "rank_seed",
    "save_checkpoint",
    "save_weights",
    "shard_batches",
    "wrap_model",
]


_ENTRY_POINT: list[Callable[..., Any]] = []


def set_entry_point(fn: Callable[..., Any]) -> None:
    """Register what calling this module does (``trilemma/__init__.py`` registers
    :func:`trilemma.api.train`)."""
    _ENTRY_POINT[:] = [fn]


class _CallableModule(types.ModuleType):
    """The ``trilemma.train`` module, callable as :func:`trilemma.api.train`.

    ``trilemma.train`` cannot be both a subpackage and a function of the package (importing
    the subpackage rebinds the name), so the subpackage itself forwards calls.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not _ENTRY_POINT:
            raise RuntimeError("trilemma.train(...) needs the trilemma package: import trilemma")
        return _ENTRY_POINT[0](*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
