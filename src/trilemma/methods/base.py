"""The method protocol: what every trainable method (score model, LSGM, DDGAN, ...) offers.

A method is an ``nn.Module`` that the trainer, ``trilemma sample``, ``trilemma evaluate`` and
``trilemma info`` use through this interface alone, never by probing for attributes. Subclass
:class:`Method`, set :attr:`Method.name` and implement :meth:`Method.loss` and
:meth:`Method.sample`; everything else has a default that says what the method lacks.

A method imports neither the config system nor the builders: how a config becomes a method lives
in the setup layer (:mod:`trilemma.setup`), one small module per method.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..nets import count_parameters
from ..processes.base import LinearProcess
from ..samplers.base import SampleResult
from ..samplers.registry import check_sampler as check_core_sampler
from ..samplers.registry import samplers_for
from ..samplers.teleport import TELEPORT_OPTIONS


class Method(nn.Module):
    """Base class of what a user trains (see the module docstring).

    Attributes:
        name: the registry name (``model.method`` in a config), e.g. ``'score'``.
        train_phases: ``None`` for a one-loss method; else the names of the trainer's phases
            (each with its own optimizer, see :meth:`param_groups`), e.g. ``('d', 'g')``.
        process: the forward SDE the samplers integrate (None for a method with its own chain).
        data_shape: shape of one data sample, without the batch dimension.
        num_classes: the classes a class-conditional method samples (``labels=`` of
            :meth:`sample`); None for an unconditional one.
        teleport_space: ``'data'`` when the sampler's state is the data's, so the teleport
            (:mod:`trilemma.samplers.teleport`) may use the training data's moments.
    """

    name: ClassVar[str] = "method"
    train_phases: ClassVar[tuple[str, ...] | None] = None
    process: LinearProcess | None = None
    data_shape: tuple[int, ...] = ()
    num_classes: int | None = None
    teleport_space: ClassVar[str] = "data"

    # ------------------------------------------------------------------ training
    def loss(self, batch: Tensor | tuple | list, generator: torch.Generator | None = None,
             **kwargs: Any) -> Tensor:
        """Per-sample training loss of a batch (multi-phase methods get ``phase``, ``step``)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement loss()")

    def batch_data(self, batch: Tensor | tuple | list) -> Tensor:
        """The data of a training batch (``x`` or the first item of ``(x, labels)``), checked
        against :attr:`data_shape` (a ValueError naming both shapes)."""
        x0 = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not isinstance(x0, Tensor) or tuple(x0.shape[1:]) != self.data_shape:
            shape = tuple(x0.shape[1:]) if isinstance(x0, Tensor) else type(x0).__name__
            raise ValueError(f"batch has sample shape {shape}, the model expects "
                             f"{self.data_shape}")
        return x0

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters per training phase (only read when :attr:`train_phases` is set)."""
        return {phase: [] for phase in self.train_phases or ()}

    def prepare_training(self, *, run_dir: str | os.PathLike, config: Mapping[str, Any],
                         is_main: bool = True, resume: bool = False) -> None:
        """Hook called by ``trilemma train`` once the model is built, before the trainer
        (e.g. LSGM opens its loss-parts log). Default: nothing."""

    def after_optimizer_step(self, step: int) -> None:
        """Hook called by the trainer after every optimizer step whose losses were finite
        (``step``: 0-based), before its EMA update; e.g. a consistency model moves its target
        network. Default: nothing."""

    def diagnose(self, history: Sequence[tuple[int, Mapping[str, float]]]) -> str | None:
        """A warning for the training log from the logged rows so far, or None (default)."""
        return None

    # ------------------------------------------------------------------ sampling
    @property
    def display_name(self) -> str:
        """How reports name the method, e.g. ``'DDGAN T=4'``."""
        return self.name

    def samplers(self) -> list[str]:
        """Names of the samplers this method can use."""
        return samplers_for(self.process.name) if self.process is not None else []

    def check_sampler(self, sampler: str, nfe: int | None = None,
                      options: Mapping[str, Any] | None = None) -> None:
        """Raise ``ValueError('sampler: ...' / 'nfe: ...' / 'options: ...')`` when a sampler,
        NFE budget or option does not fit. Default: the core samplers of :attr:`process`."""
        if self.teleport_space != "data" and any(k in (options or {}) for k in TELEPORT_OPTIONS):
            raise ValueError(f"options: {self.name} samples in its {self.teleport_space} space, "
                             "where the training data's moments (teleport) do not apply; drop "
                             "teleport")
        check_core_sampler(sampler, self.process.name if self.process is not None else None,
                           nfe, options)

    def state_shape(self, n: int) -> tuple[int, ...]:
        """Shape of ``n`` data samples (a sampler lifts it to the process's state)."""
        return (n, *self.data_shape)

    def sample(self, n: int, sampler: str, nfe: int | None,
               generator: torch.Generator | None = None, **opts: Any) -> SampleResult:
        """Draw ``n`` samples with ``sampler`` within ``nfe`` network calls."""
        raise NotImplementedError(f"{type(self).__name__} does not implement sample()")

    # ------------------------------------------------------------------ likelihood
    @property
    def has_likelihood(self) -> bool:
        """Whether :meth:`nll` is defined for this method."""
        return type(self).nll is not Method.nll

    @property
    def likelihood_decoder(self) -> str | None:
        """``'bernoulli'``/``'categorical'`` when :meth:`nll` is a probability mass over
        discrete data (no dequantisation), ``'gaussian'`` for a latent-variable density, None
        for a density of the data itself."""
        return None

    def nll(self, x: Tensor, *, generator: torch.Generator | None = None,
            divergence: str = "auto", **ode: Any) -> dict[str, Any]:
        """Negative log-likelihood of data ``x`` in nats per sample.

        Returns at least ``nll`` (per-sample, float64), ``nfe`` (network calls), ``bound``
        (True when ``nll`` is an upper bound, e.g. an ELBO), ``divergence`` (as used) and
        ``meaning`` (one line for reports). ``divergence='auto'`` picks the exact trace for
        ODEs of at most 16 dimensions and Hutchinson's estimator above.
        """
        raise NotImplementedError(
            f"{self.display_name} has no likelihood: it is defined for score models "
            "(probability-flow ODE) and LSGM (its NELBO)")

    # ------------------------------------------------------------------ description
    def parameter_counts(self) -> dict[str, int]:
        """Parameter counts by part for ``trilemma info`` (default: the whole model)."""
        return {"total": count_parameters(self)}


def auto_divergence(dim: int, divergence: str) -> str:
    """``'exact'`` for ODEs of at most 16 dimensions, else ``'hutchinson'`` (when ``'auto'``)."""
    if divergence != "auto":
        return divergence
    return "exact" if dim <= 16 else "hutchinson"
