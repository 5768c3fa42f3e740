"""What to sample: ``--samplers``/``--opt`` parsing and the check that a request fits a method.

A request is one sampler at one NFE budget with its options (:class:`SamplerRequest`). Whether
it fits is the method's call (:meth:`trilemma.methods.base.Method.check_sampler`): a score model
or LSGM checks the registry samplers against its process, a DDGAN its own chain at its fixed
NFE. The only rule added here is that a registry sampler other than the adaptive ``ode`` needs
an NFE budget.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..samplers import SAMPLERS
from ..setup import parse_override
from .common import EvaluationError

if TYPE_CHECKING:
    from ..methods.base import Method


@dataclass
class SamplerRequest:
    """One sampler at one NFE budget (``None``: the adaptive ODE's open budget, or a method's
    fixed NFE) with its options."""

    name: str
    nfe: int | None
    options: dict[str, Any] = field(default_factory=dict)
    guidance: float | None = None
    #: classifier guidance scale of the row (None: unguided; :mod:`~trilemma.evaluate.guided`)
    classifier_scale: float | None = None

    @property
    def label(self) -> str:
        """``name`` plus non-empty options, e.g. ``gddim[order=2]``, the classifier-free
        guidance weight of a class-conditional row (``dpm2m w=2``) and the classifier
        guidance scale (``em cg=2``)."""
        text = self.name
        if self.options:
            text += "[" + ",".join(f"{k}={v}" for k, v in sorted(self.options.items())) + "]"
        if self.guidance is not None:
            text += f" w={self.guidance:g}"
        return text if self.classifier_scale is None else f"{text} cg={self.classifier_scale:g}"

    @property
    def adaptive(self) -> bool:
        """Whether the sampler picks its own steps (its NFE budget is only a cap)."""

        return bool(self.name in SAMPLERS and SAMPLERS[self.name].adaptive)


def _parse_value(text: str) -> Any:

    try:
        _, value = parse_override(f"x={text}")
    except ConfigError:
        return text
    return value


def _parse_entry(entry: str) -> list[SamplerRequest]:
    """The requests of one ``NAME[:NFE[/NFE...]][:KEY=VALUE...]`` entry."""
    parts = entry.split(":")
    name = parts[0].strip()
    if not name:
        raise EvaluationError(f"--samplers: entry {entry!r} has no sampler name")
    budgets: list[int | None] = [None]
    opts: dict[str, Any] = {}
    for part in parts[1:]:
        part = part.strip()
        if "=" in part:
            key, _, value = part.partition("=")
            if not key.strip():
                raise EvaluationError(f"--samplers: option {part!r} in {entry!r} has no key")
            opts[key.strip()] = _parse_value(value.strip())
            continue
        try:
            budgets = [int(b) for b in part.split("/")]
        except ValueError:
            raise EvaluationError(
                f"--samplers: {part!r} in {entry!r} is neither an NFE budget (an integer, "
                "or several joined by '/') nor an option KEY=VALUE") from None
        if any(b < 1 for b in budgets):
            raise EvaluationError(f"--samplers: NFE budgets must be positive, got {part!r} "
                                  f"in {entry!r}")
    return [SamplerRequest(name, b, dict(opts)) for b in budgets]


def parse_samplers(text: str) -> list[SamplerRequest]:
    """Parse ``sscs:20,gddim:10/20:order=2,em:200,ode`` into requests.

    Comma-separated entries ``NAME[:NFE[/NFE...]][:KEY=VALUE...]``; several budgets separated
    by ``/`` give one request each; ``NAME`` alone means no budget (the adaptive ``ode``
    sampler without a cap, or a method with a fixed NFE).
    """
    if not isinstance(text, str) or not text.strip():
        raise EvaluationError("--samplers: expected NAME:NFE[,NAME:NFE...], e.g. "
                              "'sscs:20,gddim:10,em:200', got an empty string")
    out = [req for entry in text.split(",") if entry.strip()
           for req in _parse_entry(entry.strip())]
    if not out:
        raise EvaluationError(f"--samplers: no sampler in {text!r}")
    return out


def parse_options(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``['gddim.order=2', 'ddim.eta=0.5']`` -> ``{'gddim': {'order': 2}, 'ddim': {...}}``."""

    out: dict[str, dict[str, Any]] = {}
    for text in items:
        try:
            key, value = parse_override(text)
        except ConfigError as err:
            raise EvaluationError(str(err).replace("override", "--opt", 1)) from None
        if len(key) != 2:
            raise EvaluationError(f"--opt: expected SAMPLER.KEY=VALUE (e.g. gddim.order=2), "
                                  f"got {text!r}")
        out.setdefault(key[0], {})[key[1]] = value
    return out


def as_requests(
    samplers: Sequence[SamplerRequest | tuple],
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[SamplerRequest]:
    """Requests from :class:`SamplerRequest` or ``(name, nfe[, options])`` tuples, with the
    per-sampler ``options`` under each request's own options (those win)."""
    reqs = [s if isinstance(s, SamplerRequest) else
            SamplerRequest(s[0], s[1], dict(s[2]) if len(s) > 2 else {}) for s in samplers]
    if not reqs:
        raise EvaluationError("no sampler given: pass e.g. --samplers em:100")
    shared = {k: dict(v) for k, v in (options or {}).items()}
    return [SamplerRequest(r.name, r.nfe, {**shared.get(r.name, {}), **r.options})
            for r in reqs]


def check_request(model: Method, req: SamplerRequest) -> None:
    """Raise :class:`EvaluationError` (naming the flag to fix) when ``req`` does not fit the
    method, by its :meth:`~trilemma.methods.base.Method.check_sampler`."""
    if not isinstance(req, SamplerRequest):
        raise TypeError(f"check_request needs a SamplerRequest, got {type(req).__name__}")
    try:
        model.check_sampler(req.name, req.nfe, dict(req.options))
    except ValueError as err:
        key, _, msg = str(err).partition(": ")
        flag = {"sampler": "--samplers", "nfe": f"--samplers {req.name}",
                "options": f"--opt {req.name}"}.get(key)
        raise EvaluationError(f"{flag}: {msg}" if flag else str(err)) from None

    spec = SAMPLERS.get(req.name)
    if req.nfe is None and spec is not None and not spec.adaptive:
        raise EvaluationError(f"--samplers: sampler {req.name!r} needs an NFE budget, e.g. "
                              f"{req.name}:{max(spec.min_nfe(True, **req.options), 20)}")


def fitting_requests(
    model: Method, reqs: Sequence[SamplerRequest], skip_unfit: bool = False,
) -> tuple[list[SamplerRequest], list[dict[str, Any]]]:
    """The requests that fit ``model`` and a record per skipped one (``skip_unfit``; else the
    first misfit raises)."""
    fitting: list[SamplerRequest] = []
    skipped: list[dict[str, Any]] = []
    for req in reqs:
        try:
            check_request(model, req)
            fitting.append(req)
        except EvaluationError as err:
            if not skip_unfit:
                raise
            skipped.append({"sampler": req.label, "nfe_budget": req.nfe, "reason": str(err)})
    return fitting, skipped
