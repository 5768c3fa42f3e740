"""The training loop: AdamW, LR warm-up then constant/cosine, clipping, EMA, accumulation,
non-finite step skipping, CSV log, periodic samples, atomic checkpoints and exact resume.

What is trained is any ``nn.Module`` with ``loss(batch, generator=None) -> Tensor`` returning
per-sample losses of shape ``(B,)``. The batch is passed to ``loss`` exactly as the data yields
it, moved to the device: a tensor, or a tuple ``(x, labels)`` (the model decides whether it
uses the labels; :class:`trilemma.methods.ScoreModel` takes ``batch[0]``).

Multi-phase models (GANs such as :class:`trilemma.methods.ddgan.DDGAN`) declare
``train_phases`` and ``param_groups()`` and take ``loss(batch, generator, phase, step)``. The
loop sees every model as a list of phases (:mod:`trilemma.train.phases`; a one-loss model is a
single phase): every optimizer step runs the phases in turn, each updating its own parameter
group of the one optimizer (see :class:`Trainer`), with the same checkpoints, resume, DDP and
NaN guard.

The parts: :mod:`~trilemma.train.config` (``TrainConfig``, the LR schedule),
:mod:`~trilemma.train.batches` (micro-batches), :mod:`~trilemma.train.phases` (models as
phases), :mod:`~trilemma.train.log` (``log.csv``, progress bar, diagnosis); this module is
the loop.

Determinism: the data position follows from the number of micro-batches consumed
(:mod:`~trilemma.train.batches`); the loss noise comes from a ``torch.Generator`` seeded by
``(seed, rank)`` and saved in every checkpoint, together with the global torch RNG state
(dropout) of every rank. Python's ``random`` and numpy's global RNG are not used by the trainer
and are not saved.

So on CPU, ``N`` steps + crash + ``N`` resumed steps give bit-identical weights to ``2 N``
straight steps (tests/test_trainer.py checks it).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .batches import Batches, StepBatches, to_device
from .config import TrainConfig, autocast_device, lr_factor
from .distributed import all_reduce_mean, barrier, dist_info, rank_seed
from .ema import EMA
from .log import TrainLog, check_tensorboard, ddp_message
from .phases import (
    Phase,
    PhaseResult,
    StepResult,
    build_phases,
    make_optimizer,
    mean_loss,
    model_hooks,
)
from .resume import Checkpointing

__all__ = ["SampleFn", "TrainConfig", "Trainer", "TrainingDivergedError", "lr_factor"]

logger = logging.getLogger("trilemma.train")

SampleFn = Callable[[nn.Module, int, Path], Any]

_BF16_CPU_WARNED = False


class TrainingDivergedError(RuntimeError):
    """Raised after ``max_bad_steps`` consecutive non-finite steps."""


def _grad_norm(params: list[nn.Parameter], clip: float | None) -> float:
    """Clip (if ``clip`` is set) and return the total gradient 2-norm before clipping."""
    if clip is not None:
        return float(torch.nn.utils.clip_grad_norm_(params, clip))
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    return float(
        torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
    )


def _as_config(config: TrainConfig | Mapping[str, Any]) -> TrainConfig:
    """``config`` as a checked :class:`TrainConfig` (a dict goes through ``from_dict``)."""
    if isinstance(config, Mapping):
        config = TrainConfig.from_dict(config)
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig or a dict, got {type(config).__name__}")
    config.validate()
    return config


class Trainer(Checkpointing):
    """Train ``model`` (anything with per-sample ``loss(batch, generator)``) on ``data``.

    Args:
        model: the module; moved to ``device``. Under ``torch.distributed`` (see
            :func:`~trilemma.train.distributed.init_distributed`) it is wrapped in DDP through a
            :class:`~trilemma.train.distributed.LossAdapter`; rank 0's weights are broadcast.
        data: a tensor, tuple of tensors, Dataset or re-iterable (see
            :mod:`~trilemma.train.batches`).
        config: a :class:`TrainConfig` (or a dict for :meth:`TrainConfig.from_dict`).
        out_dir: run folder: ``log.csv`` and ``checkpoints/step_*/`` (rank 0 writes).
        device: where to train (``'cpu'``, ``'cuda:0'``; under DDP the rank's device).
        sample_fn: ``sample_fn(model_with_ema_weights, step, out_dir)`` every
            ``config.sample_every`` steps on rank 0, in eval mode under ``torch.no_grad()``
            with the global RNG forked (so sampling never changes the training stream).
        progress: tqdm bar (loss, lr, steps/s) on rank 0.
        find_unused_parameters: passed to DDP (needed when some parameters get no gradient).
        metadata: JSON-ready extras stored in every checkpoint's ``state.json``.

    The loop sees every model as a list of phases (:mod:`~trilemma.train.phases`). A one-loss
    model is one phase over all its trainable parameters. Multi-phase models (GANs) declare
    ``train_phases`` (e.g. ``('d', 'g')``), a ``param_groups() -> {phase: parameters}`` method
    (disjoint groups covering every trainable parameter) and
    ``loss(batch, generator, phase, step) -> (B,)``: one phase per name. The optimizer holds one
    parameter group per phase (``config.group_lr`` sets their rates; one AdamW, so checkpoints
    hold every group's state) and each optimizer step runs the phases in order on the same
    micro-batches: zero the gradients, forward/backward the phase's loss, drop gradients that
    reached other groups, clip and step the phase's group alone. A phase with a non-finite loss
    or gradient is not applied and the whole step counts as skipped (the NaN guard); the EMA
    (of the whole model) is updated after a step whose phases were all finite. ``step`` is the
    0-based optimizer step (for lazy regularisation). Under DDP the phase adapter is wrapped
    with ``find_unused_parameters=True``. ``log.csv`` gains ``loss_<phase>`` and
    ``grad_norm_<phase>`` columns; ``loss`` is their sum, ``lr`` the first group's rate.

    A model may define ``diagnose(history) -> str | None``: at every log step (rank 0) it gets
    the list of ``(step, {phase: mean loss})`` so far (``{'loss': ...}`` for one-loss models)
    and returns a warning to log once, e.g. DDGAN's "discriminator at chance".
    """

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        config: TrainConfig | Mapping[str, Any],
        out_dir: str | os.PathLike,
        device: torch.device | str = "cpu",
        sample_fn: SampleFn | None = None,
        progress: bool = True,
        find_unused_parameters: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.metadata = dict(metadata or {})
        self.config = config = _as_config(config)
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if sample_fn is not None and not callable(sample_fn):
            raise TypeError("sample_fn must be callable(model, step, out_dir) or None")
        self.out_dir = Path(out_dir)
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.info = dist_info(self.device)
        world = self.info.world_size
        if config.batch_size % world:
            raise ValueError(
                f"TrainConfig.batch_size = {config.batch_size} must be divisible by "
                f"the number of ranks ({world})"
            )
        if config.tensorboard and self.info.is_main:
            check_tensorboard()
        self.sample_fn = sample_fn
        self.progress = progress
        self.model = model.to(self.device)
        self.hooks = model_hooks(self.model)
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        if not self._params:
            raise ValueError("model has no trainable parameters (requires_grad=True)")
        self.engine, self.phases = build_phases(
            self.model, self.hooks, self._params, config, self.device, find_unused_parameters
        )
        self.optimizer = make_optimizer(self.phases, self.hooks, config)

        def factor(step: int) -> float:  # a function, not a callable object: see LambdaLR
            return lr_factor(step, config)

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.ema = EMA(self.model, config.ema_decay, config.ema_warmup)
        self.noise = torch.Generator(device=self.device)
        self.noise.manual_seed(rank_seed(config.seed, self.info.rank, "noise"))
        self.batches = Batches(data, config.batch_size // world, self.info.rank, world,
                               rank_seed(config.seed, 0, "data"), config.num_workers)
        self.step = 0
        self.micro_batches = 0
        self.skipped_steps = 0
        self.bad_streak = 0
        self.last_checkpoint: Path | None = None
        self._opened: list[str | None] = []  # what open() returned, until fit() takes it

    # -- one optimizer step ---------------------------------------------------------------------

    def _read(self, stream: Iterator[Any]) -> Iterator[Any]:
        """The micro-batches of ``stream`` moved to the device, each counted as consumed."""
        for batch in stream:
            batch = to_device(batch, self.device)
            self.micro_batches += 1
            yield batch

    def _run_phase(self, phase: Phase, batches: StepBatches, autocast: bool) -> PhaseResult:
        """Forward/backward ``phase``'s loss over the step's micro-batches, then clip and step
        its parameter group alone (gradients that reached other phases' groups are dropped),
        or skip it when the loss or the gradient norm is not finite."""
        accum = self.config.grad_accum
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        ddp = isinstance(self.engine, DistributedDataParallel)
        for k, batch in enumerate(batches):
            last = k == len(batches) - 1
            sync = nullcontext() if (not ddp or last) else self.engine.no_sync()
            amp = (torch.autocast(self.device.type, dtype=torch.bfloat16) if autocast
                   else nullcontext())
            with sync:
                with amp:
                    per = phase.loss(batch, self.noise, self.step)
                loss = mean_loss(per, batch, self.hooks.name)
                (loss / accum).backward()
            total += loss.detach().to(torch.float64)
        loss_val = float(all_reduce_mean(total / accum))
        for p in phase.others:  # e.g. D's gradients from G's loss
            p.grad = None
        gnorm = _grad_norm(phase.params, self.config.grad_clip)
        ok = math.isfinite(loss_val) and math.isfinite(gnorm)
        if ok:
            self.optimizer.step()
        return PhaseResult(loss_val, gnorm, ok)

    def _train_step(self, reader: Iterator[Any], autocast: bool) -> StepResult:
        """One optimizer step: every phase in order on the same ``grad_accum`` micro-batches;
        the model's ``after_optimizer_step`` hook and the EMA follow a step whose phases were all
        finite."""
        self.model.train()
        batches = StepBatches(reader, self.config.grad_accum, len(self.phases))
        result = StepResult({ph.name: self._run_phase(ph, batches, autocast) for ph in self.phases})
        self.optimizer.zero_grad(set_to_none=True)
        if result.ok:
            if self.hooks.after_step is not None:  # e.g. a consistency model's EMA target
                self.hooks.after_step(self.step)
            self.ema.update(self.model)
        self.scheduler.step()
        return result

    def _guard(self, result: StepResult, first_bad: int | None) -> int | None:
        """The NaN guard after a step: count a skipped step and raise
        :class:`TrainingDivergedError` after ``max_bad_steps`` in a row; returns the first step
        of the current bad streak (None after a good step)."""
        if result.ok:
            self.bad_streak = 0
            return None
        cfg = self.config
        self.skipped_steps += 1
        self.bad_streak += 1
        first_bad = first_bad or self.step
        loss, gnorm = result.loss, result.grad_norm
        logger.warning("step %d: non-finite loss (%g) or gradient norm (%g); step skipped",
                       self.step, loss, gnorm)
        if self.bad_streak >= cfg.max_bad_steps:
            where = self.last_checkpoint or "none was written"
            raise TrainingDivergedError(
                f"training stopped: {self.bad_streak} non-finite steps in a row "
                f"(steps {first_bad}..{self.step}, max_bad_steps = "
                f"{cfg.max_bad_steps}; last loss {loss:g}, gradient norm {gnorm:g}). "
                f"Checkpoints hold finite weights only; the latest: {where}. Lower the lr, "
                "set grad_clip, or check the data and the model."
            )
        return first_bad

    def _sample(self) -> None:
        """Call ``sample_fn`` with the EMA weights swapped in (rank 0 only)."""
        if self.sample_fn is None or not self.info.is_main:
            return
        devices = [self.device.index] if self.device.type == "cuda" else []
        was_training = self.model.training
        amp = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self._autocast()
               else nullcontext())
        with torch.random.fork_rng(devices=devices), self.ema.swap_in(self.model), \
                torch.no_grad(), amp:
            self.model.eval()
            try:
                self.sample_fn(self.model, self.step, self.out_dir)
            finally:
                self.model.train(was_training)

    # -- the loop -------------------------------------------------------------------------------

    def _autocast(self) -> bool:
        """Whether to autocast to bf16 (:func:`~trilemma.train.config.autocast_device`); the
        legacy ``bf16 = True`` on a CPU warns once per process that it does nothing there."""
        global _BF16_CPU_WARNED
        autocast = autocast_device(self.config, self.device.type)
        if self.config.bf16 and not autocast and not _BF16_CPU_WARNED:
            _BF16_CPU_WARNED = True
            warnings.warn(
                "TrainConfig.bf16 autocasts on CUDA only; training on "
                f"{self.device.type} stays in the model's dtype (float32); set "
                "precision='bf16' (train.precision: bf16) for bf16 autocast on the CPU too",
                stacklevel=3,
            )
        return autocast

    def fit(self, resume: bool = False, until: int | None = None) -> dict[str, Any]:
        """Train to ``config.steps`` (or stop after step ``until``); returns a summary dict.

        ``resume=True`` continues from the latest checkpoint in ``out_dir`` (from scratch, with a
        warning, when there is none). Without it, a folder that already holds checkpoints is
        refused rather than overwritten. A checkpoint is always written at the stopping step.
        The summary: ``step``, ``loss`` (mean over the last log interval), ``skipped_steps``,
        ``seconds``, ``steps_per_s``, ``checkpoint``, ``resumed_from``, ``out_dir``, and for a
        multi-phase model ``phase_losses`` (each phase's mean loss over the last interval).
        """
        cfg = self.config
        end = cfg.steps if until is None else until
        if not isinstance(end, int) or isinstance(end, bool) or not 1 <= end <= cfg.steps:
            raise ValueError(f"until must be an int in [1, steps = {cfg.steps}], got {until!r}")
        resumed_from = self.open(resume)
        self._opened.clear()
        autocast = self._autocast()
        keep_until = self.step if (resumed_from or self.step) else None  # rows log.csv keeps
        if self.info.distributed and self.info.is_main and self.progress:
            print(ddp_message(self.info, cfg.batch_size), file=sys.stderr, flush=True)
        log = TrainLog(self.out_dir, self.hooks.phases, self.info.is_main, self.progress,
                       self.step, end, keep_until, self.hooks.diagnose, cfg.tensorboard)
        reader = self._read(self.batches.iterate(self.micro_batches))
        start_step, t_fit = self.step, time.perf_counter()
        first_bad = None
        try:
            while self.step < end:
                t0 = time.perf_counter()
                result = self._train_step(reader, autocast)
                seconds = time.perf_counter() - t0
                self.step += 1
                first_bad = self._guard(result, first_bad)
                log.add(seconds, result)
                if self.step % cfg.log_every == 0 or self.step == end:
                    log.report(self.step, self.optimizer.param_groups[0]["lr"], self.skipped_steps)
                if (cfg.ckpt_every and self.step % cfg.ckpt_every == 0) or self.step == end:
                    self.save()
                    if self.step != end:
                        log.plot()
                if cfg.sample_every and self.step % cfg.sample_every == 0:
                    self._sample()
        finally:
            log.close()
        barrier()
        return self._summary(log, time.perf_counter() - t_fit, self.step - start_step, resumed_from)

    def _summary(
        self, log: TrainLog, seconds: float, done: int, resumed_from: str | None
    ) -> dict[str, Any]:
        """The dict :meth:`fit` returns (see there)."""
        summary = {
            "step": self.step,
            "loss": log.last_loss,
            "skipped_steps": self.skipped_steps,
            "seconds": seconds,
            "steps_per_s": done / seconds if seconds > 0 and done else math.nan,
            "checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
            "resumed_from": resumed_from,
            "out_dir": str(self.out_dir),
        }
        if self.hooks.phases:
            summary["phase_losses"] = log.last_phase
        return summary
