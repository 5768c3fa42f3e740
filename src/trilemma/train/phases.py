"""Phases: the trainer sees every model as a list of phases, each with its loss and parameters.

A one-loss model (``loss(batch, generator=None) -> (B,)``) is a single phase training all its
trainable parameters. A multi-phase model (a GAN such as DDGAN) declares ``train_phases``
(e.g. ``('d', 'g')``), ``param_groups() -> {phase: parameters}`` and takes
``loss(batch, generator, phase, step)``; it becomes one phase per name, each training its own
group. Either way one AdamW holds one parameter group per phase (so a checkpoint holds every
group's state), and an optimizer step runs the phases in order (see
:class:`~trilemma.train.trainer.Trainer`).

:func:`model_hooks` is the only place that looks at a model beyond ``loss``: a
:class:`trilemma.methods.base.Method` has all the hooks, but any ``nn.Module`` with ``loss`` is
accepted, so they are read by duck typing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from .batches import batch_len
from .config import TrainConfig
from .distributed import wrap_model

PhaseLoss = Callable[[Any, torch.Generator | None, int], Any]
Diagnose = Callable[[Sequence[tuple[int, Mapping[str, float]]]], str | None]


@dataclass(frozen=True)
class ModelHooks:
    """What the trainer reads from a model besides ``loss``."""

    name: str
    phases: tuple[str, ...]  # the declared train_phases; () for a one-loss model
    param_groups: Callable[[], Any] | None
    diagnose: Diagnose | None
    after_step: Callable[[int], None] | None = None  # called after each finite optimizer step


def model_hooks(model: nn.Module) -> ModelHooks:
    """Read ``train_phases``, ``param_groups``, ``diagnose`` and ``after_optimizer_step`` off
    ``model`` (all optional), checking the phase names; the trainer's one duck-typed look at a
    model."""
    name = type(model).__name__
    diagnose = getattr(model, "diagnose", None)
    diagnose = diagnose if callable(diagnose) else None
    after = getattr(model, "after_optimizer_step", None)
    after = after if callable(after) else None
    phases = getattr(model, "train_phases", None)
    if phases is None:
        return ModelHooks(name, (), None, diagnose, after)
    if (
        isinstance(phases, str)
        or not isinstance(phases, (tuple, list))
        or not phases
        or not all(isinstance(p, str) and p for p in phases)
        or len(set(phases)) != len(phases)
    ):
        raise TypeError(
            f"{name}.train_phases must be a tuple of distinct phase names, got {phases!r}"
        )
    groups = getattr(model, "param_groups", None)
    if not callable(groups):
        raise TypeError(
            f"{name} declares train_phases but has no param_groups() method "
            "returning {phase: parameters}"
        )
    return ModelHooks(name, tuple(phases), groups, diagnose, after)


@dataclass
class Phase:
    """One phase of an optimizer step: its loss, the parameters it trains and their rate.

    ``loss(batch, generator, step)`` returns per-sample losses; ``others`` are the trainable
    parameters of the other phases, whose gradients this phase drops before stepping.
    """

    name: str
    loss: PhaseLoss
    params: list[nn.Parameter]
    lr: float
    others: list[nn.Parameter] = field(default_factory=list)


@dataclass
class PhaseResult:
    """The outcome of one phase: mean loss, gradient norm before clipping, whether it stepped."""

    loss: float
    grad_norm: float
    ok: bool


@dataclass
class StepResult:
    """The outcome of one optimizer step, phase by phase (in phase order)."""

    phases: dict[str, PhaseResult]

    @property
    def ok(self) -> bool:
        """True when every phase was finite (and stepped)."""
        return all(r.ok for r in self.phases.values())

    @property
    def loss(self) -> float:
        """Sum of the phases' losses (the loss itself for a single phase)."""
        losses = [r.loss for r in self.phases.values()]
        total = losses[0]
        for v in losses[1:]:
            total += v
        return total

    @property
    def grad_norm(self) -> float:
        """2-norm of the phases' gradient norms (the norm itself, exactly, for one phase)."""
        norms = [r.grad_norm for r in self.phases.values()]
        return norms[0] if len(norms) == 1 else math.sqrt(sum(g**2 for g in norms))


def mean_loss(per: Any, batch: Any, model_name: str) -> Tensor:
    """The mean of per-sample losses ``per`` (float32 at least: bf16 is upcast first), after
    checking they are a ``(B,)`` tensor with one loss per sample of ``batch``."""
    n = batch_len(batch)
    if not isinstance(per, Tensor) or per.dim() != 1 or (n is not None and per.shape[0] != n):
        shape = tuple(per.shape) if isinstance(per, Tensor) else type(per).__name__
        raise ValueError(
            f"{model_name}.loss must return per-sample losses of shape (B,) = ({n},), got {shape}"
        )
    return per.mean() if per.dtype in (torch.float32, torch.float64) else per.float().mean()


class PhaseAdapter(nn.Module):
    """``forward(batch, generator, phase, step)`` -> ``module.loss(...)`` for multi-phase models.

    The DDP entry point of a model with ``train_phases`` (as
    :class:`~trilemma.train.distributed.LossAdapter` is for the others); the wrapped model stays
    reachable as ``.module``.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(
        self, batch: Any, generator: torch.Generator | None = None, phase: str = "", step: int = 0
    ) -> Tensor:
        """Per-sample losses of ``phase`` on ``batch`` at optimizer step ``step``."""
        return self.module.loss(batch, generator=generator, phase=phase, step=step)


def _wrap_phases(model: nn.Module, device: torch.device) -> nn.Module:
    """``DDP(PhaseAdapter(model), find_unused_parameters=True)`` when distributed, else the
    adapter: each phase leaves the other phases' parameters unused."""
    adapter = PhaseAdapter(model)
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return adapter
    if torch.distributed.get_world_size() == 1:
        return adapter
    if device.type == "cuda":
        return DistributedDataParallel(
            adapter,
            device_ids=[device.index if device.index is not None else torch.cuda.current_device()],
            find_unused_parameters=True,
        )
    return DistributedDataParallel(adapter, find_unused_parameters=True)


def _checked_groups(model: nn.Module, hooks: ModelHooks) -> dict[str, list[nn.Parameter]]:
    """``model.param_groups()`` checked: one disjoint group per phase covering every trainable
    parameter; frozen parameters are dropped."""
    raw, phases, name = hooks.param_groups(), hooks.phases, hooks.name
    if not isinstance(raw, Mapping) or set(raw) != set(phases):
        got = sorted(raw) if isinstance(raw, Mapping) else type(raw).__name__
        raise ValueError(
            f"{name}.param_groups() must return one group per phase {list(phases)}, got {got}"
        )
    names = {id(p): n for n, p in model.named_parameters()}
    seen: dict[int, str] = {}
    groups: dict[str, list[nn.Parameter]] = {}
    for phase in phases:
        ps = [p for p in raw[phase] if p.requires_grad]
        for p in ps:
            if id(p) in seen:
                raise ValueError(
                    f"parameter {names.get(id(p), '?')!r} is in the groups of both phase "
                    f"{seen[id(p)]!r} and {phase!r}"
                )
            seen[id(p)] = phase
        if not ps:
            raise ValueError(f"{name}.param_groups()[{phase!r}] holds no trainable parameter")
        groups[phase] = ps
    missing = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in seen]
    if missing:
        raise ValueError(
            f"trainable parameters in no group of {name}.param_groups(): {missing[:5]}"
        )
    return groups


def _group_rates(hooks: ModelHooks, config: TrainConfig) -> dict[str, float]:
    """The learning rate of every declared phase: ``config.group_lr`` or else ``config.lr``."""
    group_lr = dict(config.group_lr or {})
    if group_lr and not hooks.phases:
        raise ValueError(
            f"TrainConfig.group_lr names groups {sorted(group_lr)}, but {hooks.name} has a "
            "single parameter group (no train_phases)"
        )
    unknown = sorted(set(group_lr) - set(hooks.phases))
    if unknown:
        raise ValueError(
            f"TrainConfig.group_lr names unknown group(s) {unknown}; {hooks.name} has groups "
            f"{list(hooks.phases)}"
        )
    return {p: group_lr.get(p, config.lr) for p in hooks.phases}


def _one_loss(engine: nn.Module) -> PhaseLoss:
    """The loss of a one-loss model through its engine (the step is not passed)."""

    def loss(batch: Any, generator: torch.Generator | None, step: int) -> Any:
        return engine(batch, generator=generator)

    return loss


def _phase_loss(engine: nn.Module, phase: str) -> PhaseLoss:
    """The loss of ``phase`` of a multi-phase model through its engine."""

    def loss(batch: Any, generator: torch.Generator | None, step: int) -> Any:
        return engine(batch, generator=generator, phase=phase, step=step)

    return loss


def build_phases(
    model: nn.Module,
    hooks: ModelHooks,
    params: list[nn.Parameter],
    config: TrainConfig,
    device: torch.device,
    find_unused_parameters: bool = False,
) -> tuple[nn.Module, list[Phase]]:
    """The engine (the module the trainer calls, DDP-wrapped when distributed) and the phases.

    ``params`` are the model's trainable parameters. A one-loss model gives one phase named
    ``'loss'`` over all of them; a multi-phase model one phase per declared name over its group
    (DDP then always finds unused parameters: each phase leaves the others' unused).
    """
    if not hooks.phases:
        _group_rates(hooks, config)  # refuses group_lr
        engine = wrap_model(model, device, find_unused_parameters)
        return engine, [Phase("loss", _one_loss(engine), params, config.lr)]
    groups = _checked_groups(model, hooks)
    rates = _group_rates(hooks, config)
    engine = _wrap_phases(model, device)
    phases = []
    for name, ps in groups.items():
        mine = {id(p) for p in ps}
        others = [p for p in params if id(p) not in mine]
        phases.append(Phase(name, _phase_loss(engine, name), ps, rates[name], others))
    return engine, phases


def make_optimizer(phases: list[Phase], hooks: ModelHooks, config: TrainConfig) -> Any:
    """One AdamW with a parameter group per phase (named after it when the model declares
    phases), so the checkpoint keeps every group's state in one optimizer."""
    groups = []
    for phase in phases:
        group: dict[str, Any] = {"params": phase.params, "lr": phase.lr}
        if hooks.phases:
            group["name"] = phase.name
        groups.append(group)
    return torch.optim.AdamW(
        groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )
