"""Setup of the test-only ``noisefree`` method: its ``model`` keys, builder and ``sample``
section; registered when a config names this module (``model.method: noisefree.setup``)."""

from __future__ import annotations

from typing import Any

from trilemma.setup import Field, MethodSetup, check_section
from trilemma.setup.sections import sample_fields

from .model import NoiseFree

NAME = "noisefree.setup"


def validate_model(raw: dict[str, Any], process: str | None, data: str | None,
                   problems: list[str]) -> dict[str, Any]:
    """Keys: ``method`` and ``init_log_std``."""
    fields = {"method": Field("method", str, NAME),
              "init_log_std": Field("init_log_std", float, 0.0)}
    return check_section("model", raw, fields, problems)


def validate_sample(raw: Any, model: dict[str, Any], process: str | None,
                    problems: list[str]) -> dict[str, Any]:
    """``sampler: direct`` with ``nfe: 1``."""
    out = check_section("sample", raw, sample_fields("direct", 1), problems)
    if out.get("sampler") != "direct" or out.get("nfe") != 1:
        problems.append("sample: the noisefree method samples with 'direct' at nfe 1")
    return out


SETUP = MethodSetup(
    name=NAME,
    summary="test-only: a diagonal Gaussian, sampled in one call",
    validate_model=validate_model,
    build=lambda config, shape: NoiseFree(shape, config.model["init_log_std"]),
    net_kwargs=lambda config, shape: {"name": "none"},
    validate_sample=validate_sample,
)
