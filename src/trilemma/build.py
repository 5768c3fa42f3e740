"""Builders (compatibility names): they live in :mod:`trilemma.setup.build`, run folders in
:mod:`trilemma.runs`; this module keeps ``trilemma.build`` imports working."""

from .runs import FINAL_WEIGHTS, RUN_CONFIG, RUN_INFO, SavedRun, locate_run
from .setup.build import (
    build_dataset,
    build_model,
    build_net,
    build_process,
    build_train_config,
    data_shape_of,
    load_run,
    make_generator,
    net_kwargs,
    resolve_from_data,
)

__all__ = [
    "FINAL_WEIGHTS",
    "RUN_CONFIG",
    "RUN_INFO",
    "SavedRun",
    "build_dataset",
    "build_model",
    "build_net",
    "build_process",
    "build_train_config",
    "data_shape_of",
    "load_run",
    "locate_run",
    "make_generator",
    "resolve_from_data",
    "net_kwargs",
]
