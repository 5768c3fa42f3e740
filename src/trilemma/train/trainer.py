"""The training loop: AdamW, LR warm-up then constant/cosine, clipping, EMA, accumulation,
non-finite step skipping, CSV log, periodic samples, atomic checkpoints and exact resume.

What is trained is any ``nn.Module`` with ``loss(batch, generator=None) -> Tensor`` returning
per-sample losses of shape ``(B,)``. The batch is passed to ``loss`` exactly as the data yields
it, moved to the device: a tensor, or a tuple ``(x, labels)`` (the model decides whether it
uses the labels; :class:`trilemma.methods.ScoreModel` takes ``batch[0]``).

Multi-phase models (GANs such as :class:`trilemma.methods.ddgan.DDGAN`) declare
``train_phases`` and ``param_groups()`` and take ``loss(batch, generator, phase, step)``; every
optimizer step then runs the phases in turn, each updating its own parameter group of the one
optimizer (see :class:`Trainer`), with the same checkpoints, resume, DDP and NaN guard.

Data and determinism:

- ``data`` a **tensor**, a **tuple of tensors** (e.g. ``(x, y)``, same first dimension), a
  ``TensorDataset`` or any map-style ``Dataset``: the trainer makes the batches itself
  (``config.batch_size`` globally, shuffled per epoch from ``(seed, epoch)`` as
  ``DistributedSampler`` does, incomplete batches dropped). The data position is a pure
  function of the number of micro-batches consumed, so resuming is exact and needs no
  replay; under DDP each rank takes its ``B / world`` share of the same global batch.
- ``data`` any other **re-iterable** (a ``DataLoader``, a list of batches): iterated as it
  is, one pass per epoch (``set_epoch`` is called on a ``DistributedSampler``); on resume the
  consumed batches are replayed and dropped, exact only if the iterable repeats itself (e.g.
  a DataLoader with a seeded ``generator=`` built afresh). ``config.batch_size`` is unused.
- The loss noise comes from a ``torch.Generator`` seeded by ``(seed, rank)`` and saved in
  every checkpoint, together with the global torch RNG state (dropout) of every rank. Python's
  ``random`` and numpy's global RNG are not used by the trainer and are not saved.

So on CPU, ``N`` steps + crash + ``N`` resumed steps give bit-identical weights to ``2 N``
straight steps (tests/test_trainer.py checks it).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .batches import Batches, batch_len, to_device
from .checkpoint import clean_temporary, latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig, changed_fields, lr_factor
from .distributed import (
    all_gather_tensor,
    all_reduce_mean,
    barrier,
    dist_info,
    rank_seed,
    wrap_model,
)
from .ema import EMA

logger = logging.getLogger("trilemma.train")

SampleFn = Callable[[nn.Module, int, Path], Any]

_BF16_CPU_WARNED = False


class TrainingDivergedError(RuntimeError):
    """Raised after ``max_bad_steps`` consecutive non-finite steps."""


class _CsvLog:
    """``log.csv``: one row every ``log_every`` steps; on resume rows past the step are cut.

    Multi-phase models add ``extra`` columns (``loss_<phase>``, ``grad_norm_<phase>``).
    """

    FIELDS = ("step", "loss", "lr", "grad_norm", "steps_per_s", "skipped")

    def __init__(self, path: Path, keep_until: int | None, extra: tuple[str, ...] = ()) -> None:
        self.fields = self.FIELDS + tuple(extra)
        rows: list[list[str]] = []
        if keep_until is not None and path.is_file():
            with open(path, newline="") as f:
                reader = csv.reader(f)
                header = next(reader, None)
                if header == list(self.fields):
                    for row in reader:
                        try:
                            if row and int(row[0]) <= keep_until:
                                rows.append(row)
                        except ValueError:
                            continue
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(self.fields)
            w.writerows(rows)
        os.replace(tmp, path)
        self._file = open(path, "a", newline="")  # closed in close()
        self._writer = csv.writer(self._file)

    def write(
        self,
        step: int,
        loss: float,
        lr: float,
        grad_norm: float,
        steps_per_s: float,
        skipped: int,
        extra: tuple[float, ...] = (),
    ) -> None:
        """Append one row and flush."""
        self._writer.writerow(
            [step, f"{loss:.8g}", f"{lr:.8g}", f"{grad_norm:.6g}", f"{steps_per_s:.4g}", skipped]
            + [f"{v:.8g}" for v in extra]
        )
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        self._file.close()


class _PhaseAdapter(nn.Module):
    """``forward(batch, generator, phase, step)`` -> ``module.loss(...)`` for multi-phase models.

    The DDP entry point of a model with ``train_phases`` (as :class:`LossAdapter` is for the
    others); the wrapped model stays reachable as ``.module``.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(
        self, batch: Any, generator: torch.Generator | None = None, phase: str = "", step: int = 0
    ) -> Tensor:
        """Per-sample losses of ``phase`` on ``batch`` at optimizer step ``step``."""
        return self.module.loss(batch, generator=generator, phase=phase, step=step)


def _model_phases(model: nn.Module) -> tuple[str, ...] | None:
    """The model's ``train_phases`` (checked), or None for an ordinary one-loss model."""
    phases = getattr(model, "train_phases", None)
    if phases is None:
        return None
    if (
        isinstance(phases, str)
        or not isinstance(phases, (tuple, list))
        or not phases
        or not all(isinstance(p, str) and p for p in phases)
        or len(set(phases)) != len(phases)
    ):
        raise TypeError(
            f"{type(model).__name__}.train_phases must be a tuple of distinct phase names, got "
            f"{phases!r}"
        )
    if not callable(getattr(model, "param_groups", None)):
        raise TypeError(
            f"{type(model).__name__} declares train_phases but has no param_groups() method "
            "returning {phase: parameters}"
        )
    return tuple(phases)


def _phase_groups(model: nn.Module, phases: tuple[str, ...]) -> dict[str, list[nn.Parameter]]:
    """``model.param_groups()`` checked: one disjoint group per phase covering every trainable
    parameter; frozen parameters are dropped."""
    raw = model.param_groups()
    name = type(model).__name__
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


def _wrap_phases(model: nn.Module, device: torch.device) -> nn.Module:
    """``DDP(_PhaseAdapter(model), find_unused_parameters=True)`` when distributed, else the
    adapter: each phase leaves the other phases' parameters unused."""
    adapter = _PhaseAdapter(model)
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


class Trainer:
    """Train ``model`` (anything with per-sample ``loss(batch, generator)``) on ``data``.

    Args:
        model: the module; moved to ``device``. Under ``torch.distributed`` (see
            :func:`~trilemma.train.distributed.init_distributed`) it is wrapped in DDP through a
            :class:`~trilemma.train.distributed.LossAdapter`; rank 0's weights are broadcast.
        data: see the module docstring (tensor, tuple of tensors, Dataset, or re-iterable).
        config: a :class:`TrainConfig` (or a dict for :meth:`TrainConfig.from_dict`).
        out_dir: run folder: ``log.csv`` and ``checkpoints/step_*/`` (rank 0 writes).
        device: where to train (``'cpu'``, ``'cuda:0'``; under DDP the rank's device).
        sample_fn: ``sample_fn(model_with_ema_weights, step, out_dir)`` every
            ``config.sample_every`` steps on rank 0, in eval mode under ``torch.no_grad()``
            with the global RNG forked (so sampling never changes the training stream).
        progress: tqdm bar (loss, lr, steps/s) on rank 0.
        find_unused_parameters: passed to DDP (needed when some parameters get no gradient).

    Multi-phase models (GANs) declare ``train_phases`` (e.g. ``('d', 'g')``), a
    ``param_groups() -> {phase: parameters}`` method (disjoint groups covering every trainable
    parameter) and ``loss(batch, generator, phase, step) -> (B,)``. The optimizer then holds one
    parameter group per phase (``config.group_lr`` sets their rates; one AdamW, so checkpoints
    hold every group's state) and each optimizer step runs the phases in order on the same
    micro-batches: zero the gradients, forward/backward ``phase``'s loss, drop gradients that
    reached other groups, clip and step ``phase``'s group alone. A phase with a non-finite loss
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
        if isinstance(config, Mapping):
            config = TrainConfig.from_dict(config)
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig or a dict, got {type(config).__name__}")
        config.validate()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if sample_fn is not None and not callable(sample_fn):
            raise TypeError("sample_fn must be callable(model, step, out_dir) or None")
        self.config = config
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
        self.sample_fn = sample_fn
        self.progress = progress
        self.model = model.to(self.device)
        self.phases = _model_phases(self.model)
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        if not self._params:
            raise ValueError("model has no trainable parameters (requires_grad=True)")
        if self.phases is None:
            if config.group_lr:
                raise ValueError(
                    f"TrainConfig.group_lr names groups {sorted(config.group_lr)}, but "
                    f"{type(model).__name__} has a single parameter group (no train_phases)"
                )
            self.engine = wrap_model(self.model, self.device, find_unused_parameters)
            self.optimizer = torch.optim.AdamW(
                self._params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
            )
            self._groups: dict[str, list[nn.Parameter]] = {}
        else:
            self._groups = _phase_groups(self.model, self.phases)
            group_lr = dict(config.group_lr or {})
            unknown = sorted(set(group_lr) - set(self.phases))
            if unknown:
                raise ValueError(
                    f"TrainConfig.group_lr names unknown group(s) {unknown}; "
                    f"{type(model).__name__} has groups {list(self.phases)}"
                )
            self.engine = _wrap_phases(self.model, self.device)
            self.optimizer = torch.optim.AdamW(
                [
                    {"params": ps, "lr": group_lr.get(name, config.lr), "name": name}
                    for name, ps in self._groups.items()
                ],
                lr=config.lr,
                betas=config.betas,
                weight_decay=config.weight_decay,
            )
        self._phase_results: dict[str, tuple[float, float, bool]] = {}

        def factor(step: int) -> float:
            return lr_factor(step, config)

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.ema = EMA(self.model, config.ema_decay, config.ema_warmup)
        self.noise = torch.Generator(device=self.device)
        self.noise.manual_seed(rank_seed(config.seed, self.info.rank, "noise"))
        self.batches = Batches(
            data,
            config.batch_size // world,
            self.info.rank,
            world,
            rank_seed(config.seed, 0, "data"),
            config.num_workers,
        )
        self.step = 0
        self.micro_batches = 0
        self.skipped_steps = 0
        self.bad_streak = 0
        self.last_checkpoint: Path | None = None

    # -- checkpoints ----------------------------------------------------------------------------

    def save(self) -> Path | None:
        """Checkpoint now (a collective under DDP: every rank calls it; rank 0 writes)."""
        states = {
            "noise": all_gather_tensor(self.noise.get_state()),
            "torch_cpu": all_gather_tensor(torch.get_rng_state()),
        }
        if self.device.type == "cuda":
            states["torch_cuda"] = all_gather_tensor(torch.cuda.get_rng_state(self.device))
        if not self.info.is_main:
            return None
        rng = {f"{k}_rank{r}": s.cpu() for k, v in states.items() for r, s in enumerate(v)}
        state = {
            "config": self.config.to_dict(),
            "micro_batches": self.micro_batches,
            "epoch": self.batches.epoch_of(self.micro_batches),
            "skipped_steps": self.skipped_steps,
            "bad_steps": self.bad_streak,
            "world_size": self.info.world_size,
            "metadata": self.metadata,
        }
        path = save_checkpoint(
            self.out_dir,
            self.step,
            self.model,
            self.ema,
            self.optimizer,
            self.scheduler,
            state,
            rng,
            self.config.keep_last,
        )
        self.last_checkpoint = path
        return path

    def _restore(self, ckpt: Path) -> None:
        """Load weights, EMA, optimizer, scheduler, counters and RNG states from ``ckpt``."""
        info = load_checkpoint(ckpt, self.model, self.ema, self.optimizer, self.scheduler)
        self.step = int(info["step"])
        self.micro_batches = int(info.get("micro_batches", self.step * self.config.grad_accum))
        self.skipped_steps = int(info.get("skipped_steps", 0))
        self.bad_streak = int(info.get("bad_steps", 0))
        self.last_checkpoint = ckpt
        rt, r = info["rng_tensors"], self.info.rank
        if info.get("world_size") == self.info.world_size and f"noise_rank{r}" in rt:
            self.noise.set_state(rt[f"noise_rank{r}"])
            if f"torch_cpu_rank{r}" in rt:
                torch.set_rng_state(rt[f"torch_cpu_rank{r}"])
            if self.device.type == "cuda" and f"torch_cuda_rank{r}" in rt:
                torch.cuda.set_rng_state(rt[f"torch_cuda_rank{r}"], self.device)
        else:
            warnings.warn(
                f"checkpoint {ckpt} was written by {info.get('world_size')} rank(s), this run has "
                f"{self.info.world_size}: data order continues exactly, the noise streams are "
                "re-seeded",
                stacklevel=3,
            )
            self.noise.manual_seed(rank_seed(self.config.seed, r, f"noise@{self.step}"))
        saved = info.get("config") or {}
        now = self.config.to_dict()
        changed = changed_fields(saved, now)
        if changed:
            warnings.warn(
                f"resuming {ckpt} with changed config field(s): "
                + ", ".join(f"{k} {saved[k]!r} -> {now[k]!r}" for k in changed),
                stacklevel=3,
            )
        logger.info("resumed from %s at step %d", ckpt, self.step)

    # -- one optimizer step ---------------------------------------------------------------------

    def _grad_norm(self, params: list[nn.Parameter] | None = None) -> float:
        """Clip (if configured) and return the total gradient 2-norm before clipping."""
        params = self._params if params is None else params
        clip = self.config.grad_clip
        if clip is not None:
            return float(torch.nn.utils.clip_grad_norm_(params, clip))
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return 0.0
        return float(
            torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])
            )
        )

    def _check_per_sample(self, per: Any, batch: Any) -> None:
        """Raise unless the loss is a ``(B,)`` tensor of per-sample losses."""
        n = batch_len(batch)
        if not isinstance(per, Tensor) or per.dim() != 1 or (n is not None and per.shape[0] != n):
            shape = tuple(per.shape) if isinstance(per, Tensor) else type(per).__name__
            raise ValueError(
                f"{type(self.model).__name__}.loss must return per-sample losses of "
                f"shape (B,) = ({n},), got {shape}"
            )

    def _train_step_phases(
        self, stream: Iterator[Any], autocast: bool
    ) -> tuple[float, float, bool]:
        """One optimizer step of a multi-phase model: every phase in order on the same
        micro-batches, each stepping its own parameter group (see the class docstring)."""
        cfg = self.config
        assert self.phases is not None
        self.model.train()
        batches = []
        for _ in range(cfg.grad_accum):
            batches.append(to_device(next(stream), self.device))
            self.micro_batches += 1
        ddp = isinstance(self.engine, DistributedDataParallel)
        results: dict[str, tuple[float, float, bool]] = {}
        for phase in self.phases:
            self.optimizer.zero_grad(set_to_none=True)
            total = torch.zeros((), dtype=torch.float64, device=self.device)
            for k, batch in enumerate(batches):
                last = k == len(batches) - 1
                sync = nullcontext() if (not ddp or last) else self.engine.no_sync()
                amp = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else nullcontext()
                with sync:
                    with amp:
                        per = self.engine(batch, generator=self.noise, phase=phase, step=self.step)
                    self._check_per_sample(per, batch)
                    loss = per.mean() if per.dtype in (torch.float32, torch.float64) else (
                        per.float().mean()
                    )
                    (loss / cfg.grad_accum).backward()
                total += loss.detach().to(torch.float64)
            loss_val = float(all_reduce_mean(total / cfg.grad_accum))
            own = self._groups[phase]
            mine = {id(p) for p in own}
            for p in self._params:  # gradients that reached other groups (e.g. D in G's loss)
                if id(p) not in mine:
                    p.grad = None
            gnorm = self._grad_norm(own)
            ok = math.isfinite(loss_val) and math.isfinite(gnorm)
            if ok:
                self.optimizer.step()
            results[phase] = (loss_val, gnorm, ok)
        self.optimizer.zero_grad(set_to_none=True)
        all_ok = all(r[2] for r in results.values())
        if all_ok:
            self.ema.update(self.model)
        self.scheduler.step()
        self._phase_results = results
        loss_sum = sum(r[0] for r in results.values())
        gnorm_total = math.sqrt(sum(r[1] ** 2 for r in results.values()))
        return loss_sum, gnorm_total, all_ok

    def _train_step(self, stream: Iterator[Any], autocast: bool) -> tuple[float, float, bool]:
        """Forward/backward over ``grad_accum`` micro-batches, then step or skip."""
        if self.phases is not None:
            return self._train_step_phases(stream, autocast)
        cfg = self.config
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        ddp = isinstance(self.engine, DistributedDataParallel)
        for k in range(cfg.grad_accum):
            batch = to_device(next(stream), self.device)
            self.micro_batches += 1
            sync = nullcontext() if (not ddp or k == cfg.grad_accum - 1) else self.engine.no_sync()
            with sync:
                amp = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else nullcontext()
                with amp:
                    per = self.engine(batch, generator=self.noise)
                n = batch_len(batch)
                if (
                    not isinstance(per, Tensor)
                    or per.dim() != 1
                    or (n is not None and per.shape[0] != n)
                ):
                    shape = tuple(per.shape) if isinstance(per, Tensor) else type(per).__name__
                    raise ValueError(
                        f"{type(self.model).__name__}.loss must return per-sample losses of "
                        f"shape (B,) = ({n},), got {shape}"
                    )
                loss = (
                    per.mean()
                    if per.dtype in (torch.float32, torch.float64)
                    else per.float().mean()
                )
                (loss / cfg.grad_accum).backward()
            total += loss.detach().to(torch.float64)
        loss_val = float(all_reduce_mean(total / cfg.grad_accum))
        gnorm = self._grad_norm()
        ok = math.isfinite(loss_val) and math.isfinite(gnorm)
        if ok:
            self.optimizer.step()
            self.ema.update(self.model)
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return loss_val, gnorm, ok

    def _sample(self) -> None:
        """Call ``sample_fn`` with the EMA weights swapped in (rank 0 only)."""
        if self.sample_fn is None or not self.info.is_main:
            return
        devices = [self.device.index] if self.device.type == "cuda" else []
        was_training = self.model.training
        with torch.random.fork_rng(devices=devices), self.ema.swap_in(self.model), torch.no_grad():
            self.model.eval()
            try:
                self.sample_fn(self.model, self.step, self.out_dir)
            finally:
                self.model.train(was_training)

    # -- the loop -------------------------------------------------------------------------------

    def fit(self, resume: bool = False, until: int | None = None) -> dict[str, Any]:
        """Train to ``config.steps`` (or stop after step ``until``); returns a summary dict.

        ``resume=True`` continues from the latest checkpoint in ``out_dir`` (from scratch, with a
        warning, when there is none). Without it, a folder that already holds checkpoints is
        refused rather than overwritten. A checkpoint is always written at the stopping step.
        The summary: ``step``, ``loss`` (mean over the last log interval), ``skipped_steps``,
        ``seconds``, ``steps_per_s``, ``checkpoint``, ``resumed_from``, ``out_dir``.
        """
        global _BF16_CPU_WARNED
        cfg = self.config
        end = cfg.steps if until is None else until
        if not isinstance(end, int) or isinstance(end, bool) or not 1 <= end <= cfg.steps:
            raise ValueError(f"until must be an int in [1, steps = {cfg.steps}], got {until!r}")
        main = self.info.is_main
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            clean_temporary(self.out_dir)
        barrier()
        resumed_from = None
        ckpt = latest_checkpoint(self.out_dir)
        if resume and ckpt is not None:
            self._restore(ckpt)
            resumed_from = str(ckpt)
        elif resume:
            warnings.warn(
                f"resume=True but {self.out_dir} holds no checkpoint: starting at step 0",
                stacklevel=2,
            )
        elif ckpt is not None and self.step == 0:
            raise FileExistsError(
                f"{self.out_dir} already holds checkpoints (latest {ckpt.name}); pass "
                "resume=True to continue, or choose a new out_dir"
            )
        autocast = cfg.bf16 and self.device.type == "cuda"
        if cfg.bf16 and not autocast and not _BF16_CPU_WARNED:
            _BF16_CPU_WARNED = True
            warnings.warn(
                "TrainConfig.bf16 autocasts on CUDA only; training on "
                f"{self.device.type} stays in the model's dtype (float32)",
                stacklevel=2,
            )

        phases = self.phases or ()
        extra_fields = tuple(f"loss_{p}" for p in phases) + tuple(f"grad_norm_{p}" for p in phases)
        log = (
            _CsvLog(
                self.out_dir / "log.csv",
                self.step if (resumed_from or self.step) else None,
                extra_fields,
            )
            if main
            else None
        )
        pbar = tqdm(
            total=end,
            initial=self.step,
            disable=not (self.progress and main),
            desc="train",
            dynamic_ncols=True,
            unit="step",
        )
        stream = self.batches.iterate(self.micro_batches)
        start_step, t_fit = self.step, time.perf_counter()
        losses: list[float] = []
        norms: list[float] = []
        phase_vals: dict[str, list[tuple[float, float]]] = {p: [] for p in phases}
        last_phase: dict[str, float] = {}
        train_time, interval_steps, last_loss = 0.0, 0, math.nan
        diagnose = getattr(self.model, "diagnose", None) if main else None
        history: list[tuple[int, dict[str, float]]] = []
        warned: set[str] = set()
        first_bad = None
        try:
            while self.step < end:
                t0 = time.perf_counter()
                loss, gnorm, ok = self._train_step(stream, autocast)
                train_time += time.perf_counter() - t0
                interval_steps += 1
                self.step += 1
                if ok:
                    self.bad_streak, first_bad = 0, None
                    losses.append(loss)
                    norms.append(gnorm)
                    for p in phases:
                        phase_vals[p].append(self._phase_results[p][:2])
                else:
                    self.skipped_steps += 1
                    self.bad_streak += 1
                    first_bad = first_bad or self.step
                    logger.warning(
                        "step %d: non-finite loss (%g) or gradient norm (%g); step skipped",
                        self.step,
                        loss,
                        gnorm,
                    )
                    if self.bad_streak >= cfg.max_bad_steps:
                        where = self.last_checkpoint or "none written yet"
                        raise TrainingDivergedError(
                            f"training stopped: {self.bad_streak} non-finite steps in a row "
                            f"(steps {first_bad}..{self.step}, max_bad_steps = "
                            f"{cfg.max_bad_steps}; last loss {loss:g}, gradient norm {gnorm:g}). "
                            f"The last good checkpoint is kept: {where}. Lower the lr, set "
                            "grad_clip, or check the data and the model."
                        )
                pbar.update(1)
                if self.step % cfg.log_every == 0 or self.step == end:
                    last_loss = sum(losses) / len(losses) if losses else math.nan
                    lr = self.optimizer.param_groups[0]["lr"]
                    sps = interval_steps / train_time if train_time > 0 else math.nan
                    last_phase = {
                        p: sum(v[0] for v in vals) / len(vals) if vals else math.nan
                        for p, vals in phase_vals.items()
                    }
                    if log is not None:
                        mean_norm = sum(norms) / len(norms) if norms else math.nan
                        extra = tuple(last_phase.values()) + tuple(
                            sum(v[1] for v in vals) / len(vals) if vals else math.nan
                            for vals in phase_vals.values()
                        )
                        log.write(
                            self.step, last_loss, lr, mean_norm, sps, self.skipped_steps, extra
                        )
                    shown = (
                        {f"loss_{p}": f"{v:.4g}" for p, v in last_phase.items()}
                        if phases
                        else {"loss": f"{last_loss:.4g}"}
                    )
                    pbar.set_postfix(
                        **shown,
                        lr=f"{lr:.3g}",
                        skipped=self.skipped_steps,
                        refresh=False,
                    )
                    if callable(diagnose):
                        history.append((self.step, dict(last_phase) or {"loss": last_loss}))
                        message = diagnose(history)
                        if message and message not in warned:
                            warned.add(message)
                            logger.warning("step %d: %s", self.step, message)
                    losses, norms, train_time, interval_steps = [], [], 0.0, 0
                    phase_vals = {p: [] for p in phases}
                if (cfg.ckpt_every and self.step % cfg.ckpt_every == 0) or self.step == end:
                    self.save()
                if cfg.sample_every and self.step % cfg.sample_every == 0:
                    self._sample()
        finally:
            pbar.close()
            if log is not None:
                log.close()
        barrier()
        seconds = time.perf_counter() - t_fit
        done = self.step - start_step
        summary = {
            "step": self.step,
            "loss": last_loss,
            "skipped_steps": self.skipped_steps,
            "seconds": seconds,
            "steps_per_s": done / seconds if seconds > 0 and done else math.nan,
            "checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
            "resumed_from": resumed_from,
            "out_dir": str(self.out_dir),
        }
        if phases:  # multi-phase models: the mean loss of each phase over the last interval
            summary["phase_losses"] = last_phase
        return summary
