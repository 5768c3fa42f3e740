"""Progressive distillation (Salimans and Ho 2022; REFERENCE §10.3): a score model whose
deterministic DDIM sampler at ``N`` steps matches its teacher's at ``2N``, halved round by round.

Grid: the process's own DDIM grid, uniform in log-SNR from ``T`` to ``eps``
(:func:`trilemma.samplers.grids.log_snr_grid`, the ``ddim`` sampler's default). Its ``N``-step
grid is every other point of its ``2N``-step grid, so teacher and student share one grid and the
trained student's ``ddim`` sampler at ``N`` steps walks exactly the levels it was trained on.

A round with ``N`` student steps draws ``i ~ U{0..N-1}``, ``t = g_N[i]``, ``t'' = g_N[i+1]``,
``t' = g_2N[2i+1]``, ``z_t = alpha_t x0 + sigma_t eps``, takes two DDIM (eta = 0) steps of the
frozen teacher ``z_t -> z_t' -> z_t''`` (``z_s = alpha_s x^ + (sigma_s / sigma_t)(z_t - alpha_t
x^)``, ``x^`` Tweedie's estimate at the step's start) and fits the student's ``x^_theta(z_t)`` to

    x~ = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t),

the one ``x^`` whose single DDIM step ``t -> t''`` lands on the teacher's ``z_t''`` (the paper's
Algorithm 2), with loss ``w(t) mean |x^_theta - x~|^2``, ``w = max(SNR_t, 1)`` (truncated SNR) or
``SNR_t + 1``, ``SNR = alpha^2 / sigma^2``.

Rounds: ``start_steps = 2 N_1`` is the teacher's step count in round 1; each round halves ``N``
until ``final_steps``. :meth:`ProgressiveModel.after_optimizer_step` ends a round after
``steps_per_round`` optimizer steps: the frozen teacher copy takes the student's raw weights
(the student goes on from them, as the paper re-initialises it from the new teacher). Raw, not
EMA: the method sees its own weights only (the trainer's EMA is outside it) and the raw weights
are what fitted this round's targets; the trainer's EMA (horizon ``1 / (1 - ema_decay)`` steps,
well under a round) follows them into the next round. The round and the teacher copy live in
the state dict, so a checkpoint resumes exactly.

The first round's teacher is the exact mixture score (``oracle:NAME``, the student then starts
from a fresh network) or a trained score-model run (its weights copied into the student and the
teacher copy by :meth:`ProgressiveModel.prepare_training`; the run is not needed afterwards).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..processes.base import LinearProcess, ScalarProcess, per_sample, randn_like
from ..samplers.base import SampleResult
from ..samplers.grids import log_snr_grid
from ..samplers.registry import check_sampler as check_core_sampler
from .consistency_teacher import Teacher
from .score_model import ScoreModel

#: the x0-error weightings of the paper: max(SNR, 1) and SNR + 1
WEIGHTINGS = ("truncated_snr", "snr_plus_one")
#: the sampler the student is distilled for (no Tweedie call at the end: N steps = N NFE)
DDIM = "ddim"


def is_power_of_two(n: Any) -> bool:
    """Whether ``n`` is an integer 2^k, k >= 0."""
    return isinstance(n, int) and not isinstance(n, bool) and n >= 1 and n & (n - 1) == 0


def ddim_jump(proc: ScalarProcess, z: Tensor, x0: Tensor, t: Tensor, s: Tensor) -> Tensor:
    """The deterministic DDIM step ``z_s = alpha_s x0 + (sigma_s / sigma_t)(z_t - alpha_t x0)``
    from per-sample times ``t`` to ``s`` (float64 ``(B,)``) given the estimate ``x0``."""
    a_t, s_t, a_s, s_s = proc.alpha(t), proc.sigma(t), proc.alpha(s), proc.sigma(s)
    ratio = s_s / s_t
    return per_sample(a_s, z) * x0 + per_sample(ratio, z) * (z - per_sample(a_t, z) * x0)


def two_step_target(proc: ScalarProcess, z: Tensor, t: Tensor, t_mid: Tensor, t_end: Tensor,
                    teacher_x0: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """The paper's ``x~``: two teacher DDIM steps ``t -> t_mid -> t_end`` (``teacher_x0(z, t)``
    gives Tweedie's estimate), then the ``x0`` whose one DDIM step ``t -> t_end`` lands there."""
    z_mid = ddim_jump(proc, z, teacher_x0(z, t), t, t_mid)
    z_end = ddim_jump(proc, z_mid, teacher_x0(z_mid, t_mid), t_mid, t_end)
    ratio = proc.sigma(t_end) / proc.sigma(t)
    denom = proc.alpha(t_end) - ratio * proc.alpha(t)
    return (z_end - per_sample(ratio, z) * z) / per_sample(denom, z)


def x0_weight(proc: ScalarProcess, t: Tensor, weighting: str) -> Tensor:
    """``max(SNR_t, 1)`` or ``SNR_t + 1`` (float64 ``(B,)``), ``SNR = alpha^2 / sigma^2``."""
    snr = torch.exp(2.0 * proc.log_snr(t))
    return snr.clamp_min(1.0) if weighting == "truncated_snr" else snr + 1.0


class ProgressiveModel(ScoreModel):
    """A score model distilled progressively from a frozen teacher (method ``progressive``).

    Args:
        process: the teacher's scalar process.
        net: the student network (a run teacher's weights are copied into it for training).
        teacher: the first round's :class:`~trilemma.methods.consistency_teacher.Teacher`: the
            oracle (``module`` None) or a trained score model. Not part of the state dict.
        data_shape: shape of one data sample.
        start_steps: the teacher's DDIM steps in the first round (a power of two).
        final_steps: the student's DDIM steps after the last round (a smaller power of two).
        steps_per_round: optimizer steps per halving.
        weighting: ``truncated_snr`` or ``snr_plus_one`` (:data:`WEIGHTINGS`).
        prediction, sigma_data: the network's parametrisation (:class:`ScoreModel`).
    """

    name = "progressive"

    def __init__(self, process: LinearProcess, net: nn.Module, teacher: Teacher,
                 data_shape: tuple[int, ...], start_steps: int = 64, final_steps: int = 1,
                 steps_per_round: int = 500, weighting: str = "truncated_snr",
                 prediction: str | None = "v", sigma_data: float = 0.5) -> None:
        if not isinstance(process, ScalarProcess) or process.name == "rectified_flow":
            raise ValueError(f"progressive distillation needs a diffusion with a scalar kernel "
                             f"(vp, subvp, ve, ...); got {getattr(process, 'name', process)!r}")
        if not isinstance(teacher, Teacher):
            raise TypeError(f"teacher must be a Teacher, got {type(teacher).__name__}")
        if not is_power_of_two(start_steps) or start_steps < 2:
            raise ValueError(f"start_steps must be a power of two >= 2, got {start_steps!r}")
        if not is_power_of_two(final_steps) or final_steps >= start_steps:
            raise ValueError(f"final_steps must be a power of two below start_steps "
                             f"({start_steps}), got {final_steps!r}")
        if isinstance(steps_per_round, bool) or not isinstance(steps_per_round, int) \
                or steps_per_round < 1:
            raise ValueError(f"steps_per_round must be a positive integer, got "
                             f"{steps_per_round!r}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got "
                             f"{weighting!r}")
        super().__init__(process, net, data_shape, prediction=prediction, objective="dsm",
                         sigma_data=sigma_data, label_dropout=0.0)
        self.teacher = teacher  # a plain attribute: not a submodule, not in the state dict
        #: the first round's teacher is the exact score (a run's weights go to the copy instead)
        self.oracle_first = teacher.module is None and not callable(getattr(teacher, "load",
                                                                            None))
        self.teacher_model = copy.deepcopy(self.model).requires_grad_(False)
        self.start_steps, self.final_steps = int(start_steps), int(final_steps)
        self.steps_per_round, self.loss_weighting = int(steps_per_round), weighting
        self.num_rounds = int(round(math.log2(start_steps // final_steps)))
        self.register_buffer("pd_round", torch.zeros((), dtype=torch.long))

    # -- the round schedule -----------------------------------------------------------------------

    @property
    def current_round(self) -> int:
        """0-based index of the round being trained (``num_rounds - 1`` once the last began)."""
        return int(self.pd_round)

    @property
    def student_steps(self) -> int:
        """``N``: the student's DDIM steps in the current round (``final_steps`` at the end)."""
        return self.start_steps >> (self.current_round + 1)

    @property
    def display_name(self) -> str:
        return f"progressive N={self.student_steps} ({self.teacher.ref})"

    def after_optimizer_step(self, step: int) -> None:
        """After ``steps_per_round`` optimizer steps of a round (``step`` is 0-based) the teacher
        copy takes the student's raw weights and ``N`` halves; after the last round nothing. (A
        skipped non-finite step at a round's end delays the change by one step, never loses
        it.)"""
        want = min((step + 1) // self.steps_per_round, self.num_rounds - 1)
        if want <= self.current_round:
            return
        with torch.no_grad():
            self.teacher_model.load_state_dict(self.model.state_dict())
            self.pd_round.fill_(want)

    @torch.no_grad()
    def prepare_training(self, *, run_dir: str | os.PathLike, config: Mapping[str, Any],
                         is_main: bool = True, resume: bool = False) -> None:
        """Check that ``train.steps`` covers every round; on a fresh start from a teacher network
        (a run, loaded now if deferred) copy its weights into the student and the teacher copy
        (on ``--resume`` the checkpoint holds both, so the teacher run is not read)."""
        steps = (config.get("train") or {}).get("steps")
        need = self.num_rounds * self.steps_per_round
        if isinstance(steps, int) and steps < need:
            raise ValueError(f"train.steps: {self.num_rounds} rounds of {self.steps_per_round} "
                             f"steps (model.steps_per_round) need train.steps >= {need}, got "
                             f"{steps}")
        if resume or self.oracle_first:
            return
        load = getattr(self.teacher, "load", None)
        module = load().module if callable(load) else self.teacher.module
        state = getattr(module, "model", module).state_dict()
        try:
            self.model.load_state_dict(state)
            self.teacher_model.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"model.net: the student starts from the teacher's weights, so its "
                             f"network must be the teacher run's: {err}") from None

    # -- training ---------------------------------------------------------------------------------

    def _teacher_x0(self, z: Tensor, t: Tensor) -> Tensor:
        """Tweedie's ``x^`` of this round's teacher: the first round's oracle, else the copy."""
        if self.current_round == 0 and self.oracle_first:
            score = self.teacher.score_fn(z, t.to(z.dtype))
        else:
            score = self.teacher_model(z, t.to(z.dtype))
        return self.process.score_to_x0(z, t, score)

    def student_x0(self, z: Tensor, t: Tensor) -> Tensor:
        """The student's Tweedie estimate ``x^_theta(z_t)`` at per-sample times ``t``."""
        return self.process.score_to_x0(z, t, self.model(z, t.to(z.dtype)))

    def round_times(self, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(t, t', t'')`` of the current round at student step ``index`` (float64 ``(B,)``)."""
        n = self.student_steps
        fine = log_snr_grid(self.process, 2 * n).to(index.device)
        i = 2 * index
        return fine[i], fine[i + 1], fine[i + 2]

    def loss(self, batch: Tensor | tuple | list, generator: torch.Generator | None = None,
             **kwargs: Any) -> Tensor:
        """Per-sample distillation loss of a data batch (module docstring)."""
        x0 = self.batch_data(batch)
        gen_dev = generator.device if generator is not None else "cpu"
        index = torch.randint(0, self.student_steps, (x0.shape[0],), generator=generator,
                              device=gen_dev).to(x0.device)
        t, t_mid, t_end = self.round_times(index)
        a, s = self.process.alpha(t), self.process.sigma(t)
        z = per_sample(a, x0) * x0 + per_sample(s, x0) * randn_like(x0, generator)
        with torch.no_grad():
            target = two_step_target(self.process, z, t, t_mid, t_end, self._teacher_x0)
        err = (self.student_x0(z, t) - target).flatten(1).pow(2).mean(1)
        return x0_weight(self.process, t, self.loss_weighting).to(err.dtype) * err

    # -- sampling ---------------------------------------------------------------------------------

    def check_sampler(self, sampler: str, nfe: int | None = None,
                      options: Mapping[str, Any] | None = None) -> None:
        """As a score model's, but ``ddim`` ends without Tweedie's call (``N`` steps, ``N``
        NFE), so it takes ``nfe >= 1``."""
        if sampler != DDIM:
            return super().check_sampler(sampler, nfe, options)
        if nfe is not None and (isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1):
            raise ValueError(f"nfe: the number of DDIM steps, an integer >= 1; got {nfe!r}")
        check_core_sampler(sampler, self.process.name, None, options)

    @torch.no_grad()
    def sample(self, n: int, sampler: str = DDIM, nfe: int | None = None,
               generator: torch.Generator | None = None, **opts: Any) -> SampleResult:
        """A score model's sampling; ``ddim`` defaults to ``N`` steps without the final Tweedie
        call (the distilled grid ends at ``eps`` with the student's own step) and ``nfe``
        defaults to the current ``N``."""
        nfe = self.student_steps if nfe is None else nfe
        if sampler == DDIM:
            self.check_sampler(sampler, nfe, {k: v for k, v in opts.items()
                                              if k not in ("trajectory", "progress", "denoise")})
            opts.setdefault("denoise", False)
        return super().sample(n, sampler, nfe, generator=generator, **opts)

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters (the student's) and the frozen teacher copy's."""
        counts = super().parameter_counts()
        counts["teacher_copy"] = sum(p.numel() for p in self.teacher_model.parameters())
        return counts
