"""Run configuration (compatibility names): the schema, loading and validation live in the
setup layer (:mod:`trilemma.setup`); this module keeps ``trilemma.config`` imports working.

See :mod:`trilemma.setup.config` for the format of a config file.
"""

from .errors import ConfigError
from .samplers.registry import check_sampler, samplers_for
from .setup.config import (
    SECTIONS,
    Config,
    apply_overrides,
    load_config,
    parse_override,
    read_yaml,
    resolve_device,
    validate,
)
from .setup.schema import (
    Field,
    check_section,
    fields_from_dataclass,
    fields_from_signature,
    non_negative,
    non_negative_int,
    one_of,
    positive,
    positive_int,
    unit_interval,
)
from .setup.sections import DERIVED_NET_KEYS, PATH_KEYS, SAMPLE_DEFAULTS

__all__ = [
    "DERIVED_NET_KEYS",
    "PATH_KEYS",
    "SAMPLE_DEFAULTS",
    "SECTIONS",
    "Config",
    "ConfigError",
    "Field",
    "apply_overrides",
    "check_sampler",
    "check_section",
    "fields_from_dataclass",
    "fields_from_signature",
    "load_config",
    "non_negative",
    "non_negative_int",
    "one_of",
    "parse_override",
    "positive",
    "positive_int",
    "read_yaml",
    "resolve_device",
    "samplers_for",
    "unit_interval",
    "validate",
]
