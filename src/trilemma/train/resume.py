"""The checkpoint side of the trainer: open a run folder, save, restore, and apply this run's
settings to a restored optimizer (:class:`Checkpointing`, a base of
:class:`~trilemma.train.trainer.Trainer`, whose attributes it uses: ``model``, ``ema``,
``optimizer``, ``scheduler``, ``phases``, ``noise``, ``batches``, ``config``, ``info``,
``device``, ``out_dir``, ``metadata`` and the counters).

Restoring believes nothing unchecked (:mod:`~trilemma.train.validation`); a restored run
trains with *this* run's learning rates, betas and weight decay (the checkpoint's optimizer
and scheduler hold the old ones), and the warning lists what changed.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .checkpoint import (
    CheckpointError,
    checkpoint_dir,
    clean_temporary,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from .config import changed_fields, lr_factor
from .distributed import all_gather_tensor, barrier, rank_seed

logger = logging.getLogger("trilemma.train")


class Checkpointing:
    """Open, save and restore for :class:`~trilemma.train.trainer.Trainer` (see the module
    docstring)."""

    _opened: list[str | None]

    def _weights_finite(self) -> bool:
        """Whether the model's and the EMA's tensors are all finite (the same on every rank)."""
        return all(
            not t.is_floating_point() or bool(t.isfinite().all())
            for sd in (self.model.state_dict(), self.ema.state_dict()) for t in sd.values()
        )

    def save(self) -> Path | None:
        """Checkpoint now (a collective under DDP: every rank calls it; rank 0 writes).

        Weights that are not finite are not written (a warning says so): they would only
        push finite checkpoints out of ``keep_last``. A failing write raises
        :class:`CheckpointError` naming the folder; the earlier checkpoints stay."""
        if not self._weights_finite():
            logger.warning("step %d: the weights are not finite; no checkpoint written (the "
                           "last is %s)", self.step, self.last_checkpoint or "none")
            return None
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
        try:
            path = save_checkpoint(self.out_dir, self.step, self.model, self.ema,
                                   self.optimizer, self.scheduler, state, rng,
                                   self.config.keep_last)
        except OSError as err:
            raise CheckpointError(
                f"cannot write the checkpoint {checkpoint_dir(self.out_dir, self.step)} "
                f"({err}); the last checkpoint is kept: {self.last_checkpoint or 'none'}"
            ) from None
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
        if self.scheduler.last_epoch != self.step:  # one scheduler step per optimizer step
            raise CheckpointError(
                f"{ckpt / 'state.json'}: field 'scheduler.last_epoch' must be the step, "
                f"{self.step}, got {self.scheduler.last_epoch}"
            )
        if self.step > self.config.steps:
            raise CheckpointError(
                f"{ckpt} is at step {self.step}, past TrainConfig.steps = {self.config.steps}; "
                "raise steps to continue it"
            )
        self._restore_rng(ckpt, info)
        self._apply_settings()
        saved = info.get("config") or {}
        now = self.config.to_dict()
        changed = changed_fields(saved, now)
        if changed:
            warnings.warn(
                f"resuming {ckpt} with changed config field(s), applied from step "
                f"{self.step + 1}: "
                + ", ".join(f"{k} {saved[k]!r} -> {now[k]!r}" for k in changed),
                stacklevel=5,
            )
        logger.info("resumed from %s at step %d (lr %.6g)", ckpt, self.step,
                    self.optimizer.param_groups[0]["lr"])

    def _apply_settings(self) -> None:
        """After a restore, this run's settings replace the checkpoint's: every group's rate
        (the scheduler's base rate, decayed to the step), betas and weight decay. Unchanged
        settings give exactly the rates the scheduler would have computed."""
        cfg = self.config
        factor = lr_factor(self.scheduler.last_epoch, cfg)
        for group, phase in zip(self.optimizer.param_groups, self.phases, strict=True):
            group["initial_lr"] = phase.lr
            group["lr"] = phase.lr * factor
            group["betas"] = tuple(cfg.betas)
            group["weight_decay"] = cfg.weight_decay
        self.scheduler.base_lrs = [phase.lr for phase in self.phases]
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _restore_rng(self, ckpt: Path, info: Mapping[str, Any]) -> None:
        """This rank's noise and torch RNG states from the checkpoint; when it was written by
        another number of ranks, re-seed the noise instead (the data order still continues)."""
        rt, r = info["rng_tensors"], self.info.rank
        if info.get("world_size") == self.info.world_size and f"noise_rank{r}" in rt:
            try:
                self.noise.set_state(rt[f"noise_rank{r}"])
                if f"torch_cpu_rank{r}" in rt:
                    torch.set_rng_state(rt[f"torch_cpu_rank{r}"])
                if self.device.type == "cuda" and f"torch_cuda_rank{r}" in rt:
                    torch.cuda.set_rng_state(rt[f"torch_cuda_rank{r}"], self.device)
            except (RuntimeError, TypeError) as err:
                raise CheckpointError(f"{ckpt / 'rng.safetensors'}: not a generator state of "
                                      f"this torch ({err})") from None
            return
        warnings.warn(
            f"checkpoint {ckpt} was written by {info.get('world_size')} rank(s), this run has "
            f"{self.info.world_size}: data order continues exactly, the noise streams are "
            "re-seeded",
            stacklevel=6,
        )
        self.noise.manual_seed(rank_seed(self.config.seed, r, f"noise@{self.step}"))

    def open(self, resume: bool = False) -> str | None:
        """Prepare ``out_dir`` and, with ``resume``, restore its latest checkpoint now (every
        rank; :meth:`fit` does it when not called before): lets a caller check a checkpoint
        before writing anything. Returns the checkpoint resumed from, if any."""
        if not self._opened:
            self._opened.append(self._open_run(resume))
        return self._opened[0]

    def _open_run(self, resume: bool) -> str | None:
        """Prepare ``out_dir`` and resume from its latest checkpoint when asked (refusing to
        overwrite one otherwise); returns the checkpoint resumed from, if any."""
        if self.info.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            clean_temporary(self.out_dir)
        barrier()
        ckpt = latest_checkpoint(self.out_dir)
        if resume and ckpt is not None:
            self._restore(ckpt)
            return str(ckpt)
        if resume:
            warnings.warn(
                f"resume=True but {self.out_dir} holds no checkpoint: starting at step 0",
                stacklevel=4,
            )
        elif ckpt is not None and self.step == 0:
            raise FileExistsError(
                f"{self.out_dir} already holds checkpoints (latest {ckpt.name}); pass "
                "resume=True to continue, or choose a new out_dir"
            )
        return None
