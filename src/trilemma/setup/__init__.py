"""The setup layer: configs (one schema engine), the method table, and the builders.

It sits above :mod:`trilemma.methods` (methods never import it): a config is validated by
:func:`validate` (shared sections plus the ``model`` section of its method's setup module),
and :func:`build_model` / :func:`load_run` turn it into a method. New methods register a
:class:`MethodSetup` (see :mod:`trilemma.setup.registry`).
"""

from .build import (
    build_dataset,
    build_model,
    build_net,
    build_process,
    build_train_config,
    data_shape_of,
    estimate_sigma_data,
    load_run,
    make_generator,
    memory_budget,
    net_kwargs,
    resolve_from_data,
    resolve_teleport,
)
from .config import (
    SECTIONS,
    Config,
    apply_overrides,
    load_config,
    parse_override,
    read_yaml,
    resolve_device,
    validate,
)
from .registry import MethodSetup, get_setup, method_names, register
from .schema import ConfigError, Field, check_section, fields_from_signature

__all__ = [
    "SECTIONS",
    "Config",
    "ConfigError",
    "Field",
    "MethodSetup",
    "apply_overrides",
    "build_dataset",
    "build_model",
    "build_net",
    "build_process",
    "build_train_config",
    "check_section",
    "data_shape_of",
    "estimate_sigma_data",
    "fields_from_signature",
    "get_setup",
    "load_config",
    "load_run",
    "make_generator",
    "memory_budget",
    "method_names",
    "net_kwargs",
    "parse_override",
    "read_yaml",
    "register",
    "resolve_device",
    "resolve_from_data",
    "resolve_teleport",
    "validate",
]
