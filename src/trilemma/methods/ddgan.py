"""Denoising diffusion GANs (Xiao et al. 2022; REFERENCE §8): a few large denoising steps, each a
conditional GAN.

The forward chain is DDPM's with ``T`` (1..8) steps cut from the VP SDE
(``beta_min = 0.1``, ``beta_max = 20``):

- ``t_i = (i / T)(1 - t_min) + t_min`` for ``i = 0..T`` (:attr:`DDGANSchedule.times`);
- ``beta_i = 1 - abar(t_i) / abar(t_{i-1})``, ``abar(t) = alpha_VP(t)^2
  = exp(-t^2 (beta_max - beta_min) / 2 - t beta_min)``; for ``T = 4``:
  ``beta = 0.478, 0.849, 0.956, 0.987``;
- ``abar_i = prod_{j <= i} (1 - beta_j)`` (``abar_0 = 1``: ``x_0`` is the data):
  ``q(x_i | x_0) = N(sqrt(abar_i) x_0, (1 - abar_i) I)``,
  ``q(x_i | x_{i-1}) = N(sqrt(1 - beta_i) x_{i-1}, beta_i I)``;
- the posterior ``q(x_{i-1} | x_i, x_0) = N(c0_i x_0 + ct_i x_i, v_i I)`` with
  ``c0_i = beta_i sqrt(abar_{i-1}) / (1 - abar_i)``, ``ct_i = (1 - abar_{i-1}) sqrt(1 - beta_i) /
  (1 - abar_i)``, ``v_i = beta_i (1 - abar_{i-1}) / (1 - abar_i)``; ``v_1 = 0`` and ``c0_1 = 1``
  (the last step returns the predicted ``x_0``, no noise).

The model: ``p(x_{i-1} | x_i) = int p(z) q(x_{i-1} | x_i, x_0 = G(x_i, z, t_i)) dz``
(``z ~ N(0, I)``), trained against ``D(x_{i-1}, x_i, t_i)`` with the non-saturating loss, R1
on the real ``x_{i-1}`` (optionally lazy) and ``i ~ U{1..T}`` per sample
(:mod:`trilemma.objectives.adversarial`).
Sampling: ``x_T ~ N(0, I)`` and ``T`` generator calls (NFE = T). Ablations: ``T = 1`` (a plain
GAN on the data), ``use_z=False`` (a unimodal denoiser: all randomness from the posterior
noise), ``prediction='xprev'`` (G outputs ``x_{i-1}`` itself, no posterior sampling).

Training protocol (see :class:`trilemma.train.Trainer`): :attr:`DDGAN.train_phases` is
``('d', 'g')``; each optimizer step runs ``loss(batch, generator, phase='d', step)`` (updates
the discriminator's parameter group) then ``phase='g'`` (the generator's), on the same data
batch with fresh ``t``, noise and ``z`` (as the paper's code).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..nets import count_parameters
from ..objectives.adversarial import discriminator_loss, generator_loss, r1_penalty, r1_weight
from ..processes.base import per_sample, randn_like
from ..processes.scalar import VP
from ..samplers.base import SampleResult
from .base import Method

PREDICTIONS = ("x0", "xprev")
TIME_KINDS = ("raw", "fourier", "sinusoidal")
SAMPLERS = ("ddgan",)
CHANCE_LOSS_D = 2 * math.log(2)  # non-saturating D loss when D(x) = 1/2 everywhere
CHANCE_TOL = 0.01
CHANCE_STEPS = 1000  # D at chance for this many steps (after the first ones) gets a warning


class DDGANSchedule(nn.Module):
    """The discretised VP chain of ``num_steps`` steps (module docstring); float64 tables.

    The tables are non-persistent buffers (they follow ``.to(device)``, stay out of the state
    dict). Step indices ``t`` are integer tensors in ``1..T`` (``0..T`` for the marginals).
    """

    def __init__(
        self, num_steps: int, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3
    ) -> None:
        super().__init__()
        if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
            raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}")
        if not (isinstance(t_min, (int, float)) and 0 < t_min < 1):
            raise ValueError(f"t_min must lie in (0, 1), got {t_min!r}")
        self.num_steps = num_steps
        self.process = VP(beta_min, beta_max)
        self.beta_min, self.beta_max, self.t_min = float(beta_min), float(beta_max), float(t_min)
        f64 = torch.float64
        times = torch.arange(num_steps + 1, dtype=f64) / num_steps * (1 - t_min) + t_min
        abar_sde = self.process.alpha(times).to(f64) ** 2
        betas = 1.0 - abar_sde[1:] / abar_sde[:-1]
        alphas = 1.0 - betas
        abar = torch.cat([torch.ones(1, dtype=f64), torch.cumprod(alphas, 0)])
        pad = torch.full((1,), math.nan, dtype=f64)  # index 0 has no step
        tables = {
            "times": times,
            "betas": torch.cat([pad, betas]),
            "alphas": torch.cat([pad, alphas]),
            "alpha_bars": abar,
            "post_coef_x0": torch.cat([pad, betas * abar[:-1].sqrt() / (1 - abar[1:])]),
            "post_coef_xt": torch.cat([pad, (1 - abar[:-1]) * alphas.sqrt() / (1 - abar[1:])]),
            "post_var": torch.cat([pad, betas * (1 - abar[:-1]) / (1 - abar[1:])]),
        }
        for name, value in tables.items():
            self.register_buffer(name, value, persistent=False)

    # tables are float64 buffers: annotate for type checkers
    times: Tensor
    betas: Tensor
    alphas: Tensor
    alpha_bars: Tensor
    post_coef_x0: Tensor
    post_coef_xt: Tensor
    post_var: Tensor

    def _index(self, t: Tensor | int, x: Tensor, lo: int = 1) -> Tensor:
        """Step indices as a long tensor ``(B,)`` on the tables' device, range-checked."""
        if not isinstance(t, Tensor):
            t = torch.tensor(int(t))
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],) or t.dtype.is_floating_point:
            raise ValueError(f"t must be an integer tensor of shape ({x.shape[0]},) or an int, "
                             f"got {tuple(t.shape)} {t.dtype}")
        t = t.to(device=self.times.device, dtype=torch.long)
        if t.numel() and (int(t.min()) < lo or int(t.max()) > self.num_steps):
            raise ValueError(f"t must lie in {lo}..{self.num_steps}, got range "
                             f"[{int(t.min())}, {int(t.max())}]")
        return t

    def time(self, t: Tensor | int, like: Tensor) -> Tensor:
        """Continuous VP time ``t_i`` of step index ``t`` (the networks' time input)."""
        idx = self._index(t, like, lo=0)
        return self.times[idx].to(device=like.device, dtype=like.dtype)

    def sample_steps(self, n: int, generator: torch.Generator | None, device: Any) -> Tensor:
        """``n`` step indices uniform on ``1..T`` (long, on ``device``)."""
        gen_dev = generator.device if generator is not None else "cpu"
        t = torch.randint(1, self.num_steps + 1, (n,), generator=generator, device=gen_dev)
        return t.to(device)

    def marginal(self, x0: Tensor, t: Tensor | int, generator: torch.Generator | None = None
                 ) -> Tensor:
        """A draw of ``x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)``, ``t in 0..T``."""
        idx = self._index(t, x0, lo=0)
        abar = self.alpha_bars[idx]
        noise = randn_like(x0, generator)
        return per_sample(abar.sqrt(), x0) * x0 + per_sample((1 - abar).sqrt(), x0) * noise

    def step(self, x_prev: Tensor, t: Tensor | int, generator: torch.Generator | None = None
             ) -> Tensor:
        """A draw of ``x_t ~ q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)``."""
        idx = self._index(t, x_prev)
        return (per_sample(self.alphas[idx].sqrt(), x_prev) * x_prev
                + per_sample(self.betas[idx].sqrt(), x_prev) * randn_like(x_prev, generator))

    def pairs(self, x0: Tensor, t: Tensor, generator: torch.Generator | None = None
              ) -> tuple[Tensor, Tensor]:
        """A joint draw ``(x_{t-1}, x_t)`` given ``x_0``: ``q(x_{t-1} | x_0)`` then one step."""
        x_prev = self.marginal(x0, t - 1, generator)
        return x_prev, self.step(x_prev, t, generator)

    def posterior(self, x_t: Tensor, x0: Tensor, t: Tensor | int) -> tuple[Tensor, Tensor]:
        """Mean and variance ``(B,)`` of ``q(x_{t-1} | x_t, x_0)`` (variance 0 at ``t = 1``)."""
        idx = self._index(t, x_t)
        mean = (per_sample(self.post_coef_x0[idx], x0) * x0
                + per_sample(self.post_coef_xt[idx], x_t) * x_t)
        return mean, self.post_var[idx].to(device=x_t.device, dtype=x_t.dtype)

    def posterior_sample(self, x_t: Tensor, x0: Tensor, t: Tensor | int,
                         generator: torch.Generator | None = None) -> Tensor:
        """A reparameterised draw of ``x_{t-1} ~ q(x_{t-1} | x_t, x_0)`` (differentiable in x_0)."""
        mean, var = self.posterior(x_t, x0, t)
        return mean + per_sample(var.sqrt(), mean) * randn_like(mean, generator)

    def extra_repr(self) -> str:
        betas = ", ".join(f"{float(b):.3f}" for b in self.betas[1:])
        return f"num_steps={self.num_steps}, betas=[{betas}]"


@contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """Parameters of ``module`` do not require grad inside (gradients still flow to inputs)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class DDGAN(Method):
    """A denoising diffusion GAN (method ``ddgan``): generator, discriminator, schedule and
    losses.

    Args:
        generator: ``G(x_t, t, z)`` -> ``x_0`` (or ``x_{t-1}``), e.g.
            :class:`~trilemma.nets.discriminator.MLPGenerator` / ``ZUNet``; its ``z_dim`` attribute
            gives the latent width (0 = no latent).
        discriminator: ``D(x_prev, x_t, t) -> (B,)`` logits.
        data_shape: shape of one sample, e.g. ``(2,)`` or ``(1, 8, 8)``.
        num_steps: ``T`` denoising steps (= NFE of sampling); 1 is a plain GAN.
        beta_min, beta_max, t_min: the VP schedule being discretised.
        use_z: draw ``z ~ N(0, I)`` for the generator; ``False`` (ablation) needs a generator
            with ``z_dim = 0``.
        prediction: ``'x0'`` (DDGAN) or ``'xprev'`` (ablation: G outputs ``x_{t-1}``).
        r1_gamma: R1 weight ``gamma`` (0 disables it); default DDGAN's CIFAR-10 0.02.
        lazy_reg: compute R1 every ``lazy_reg`` optimizer steps (1 = every step; default 15,
            DDGAN's CIFAR-10 setting).
        r1_rescale: multiply the lazy penalty by ``lazy_reg`` (StyleGAN2); ``False`` = DDGAN.
    """

    name = "ddgan"
    train_phases = ("d", "g")

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        data_shape: tuple[int, ...],
        num_steps: int = 4,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        t_min: float = 1e-3,
        use_z: bool = True,
        prediction: str = "x0",
        r1_gamma: float = 0.02,
        lazy_reg: int = 15,
        r1_rescale: bool = False,
    ) -> None:
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {', '.join(PREDICTIONS)}, got "
                             f"{prediction!r}")
        if not isinstance(use_z, bool):
            raise ValueError(f"use_z must be a bool, got {use_z!r}")
        z_dim = getattr(generator, "z_dim", None)
        if not isinstance(z_dim, int):
            raise ValueError("generator must have an integer attribute z_dim (0 = no latent)")
        if use_z and z_dim < 1:
            raise ValueError("use_z=True needs a generator with z_dim >= 1")
        if not use_z and z_dim != 0:
            raise ValueError(f"use_z=False needs a generator with z_dim = 0, got z_dim={z_dim}")
        if not isinstance(r1_gamma, (int, float)) or isinstance(r1_gamma, bool) or not (
                math.isfinite(r1_gamma) and r1_gamma >= 0):
            raise ValueError(f"r1_gamma must be a finite number >= 0, got {r1_gamma!r}")
        if not isinstance(lazy_reg, int) or isinstance(lazy_reg, bool) or lazy_reg < 1:
            raise ValueError(f"lazy_reg must be an integer >= 1, got {lazy_reg!r}")
        self.G = generator
        self.D = discriminator
        self.schedule = DDGANSchedule(num_steps, beta_min, beta_max, t_min)
        self.data_shape = tuple(int(s) for s in data_shape)
        self.num_steps = num_steps
        self.use_z, self.z_dim = use_z, z_dim
        self.prediction = prediction
        self.r1_gamma, self.lazy_reg, self.r1_rescale = float(r1_gamma), lazy_reg, bool(r1_rescale)

    @property
    def display_name(self) -> str:
        """Display name in reports, e.g. ``DDGAN T=4``."""
        return f"DDGAN T={self.num_steps}" + ("" if self.use_z else " no-z")

    def samplers(self) -> list[str]:
        """A DDGAN samples with its own chain only."""
        return list(SAMPLERS)

    def parameter_counts(self) -> dict[str, int]:
        """Total, generator and discriminator parameter counts."""
        return {"total": count_parameters(self), "G": count_parameters(self.G),
                "D": count_parameters(self.D)}

    # -- the trainer's multi-phase protocol ------------------------------------------------------

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters per training phase: ``{'d': discriminator, 'g': generator}``."""
        return {"d": list(self.D.parameters()), "g": list(self.G.parameters())}

    def latent(self, n: int, like: Tensor, generator: torch.Generator | None) -> Tensor | None:
        """``z ~ N(0, I)`` of shape ``(n, z_dim)`` (None without a latent)."""
        if not self.use_z:
            return None
        return randn_like(like.new_empty(n, self.z_dim), generator)

    def generate_step(self, x_t: Tensor, t: Tensor, generator: torch.Generator | None = None
                      ) -> tuple[Tensor, Tensor]:
        """One denoising step (1 generator call): ``(x_{t-1}, predicted x_0 or x_{t-1})``."""
        z = self.latent(x_t.shape[0], x_t, generator)
        out = self.G(x_t, self.schedule.time(t, x_t), z)
        if self.prediction == "xprev":
            return out, out
        return self.schedule.posterior_sample(x_t, out, t, generator), out

    def loss(
        self,
        batch: Tensor | tuple,
        generator: torch.Generator | None = None,
        phase: str | None = None,
        step: int = 0,
    ) -> Tensor:
        """Per-sample loss of ``phase`` ('d': discriminator + R1, 'g': generator) on a batch.

        ``step`` (the optimizer step, 0-based) decides whether lazy R1 is on.
        """
        if phase not in self.train_phases:
            raise ValueError(f"phase must be one of {', '.join(self.train_phases)}, got {phase!r}")
        x0 = self.batch_data(batch)
        t = self.schedule.sample_steps(x0.shape[0], generator, x0.device)
        x_prev, x_t = self.schedule.pairs(x0, t, generator)
        time = self.schedule.time(t, x_t)
        if phase == "d":
            weight = r1_weight(step, self.lazy_reg, self.r1_rescale) if self.r1_gamma else 0.0
            if weight:
                x_prev = x_prev.detach().requires_grad_(True)
            with torch.no_grad():
                fake_prev, _ = self.generate_step(x_t, t, generator)
            # one discriminator call on [real; fake] (fewer, larger matrix products)
            logits = self.D(torch.cat([x_prev, fake_prev]), torch.cat([x_t, x_t]),
                            torch.cat([time, time]))
            real, fake = logits[: x0.shape[0]], logits[x0.shape[0]:]
            loss = discriminator_loss(real, fake)
            if weight:
                loss = loss + weight * r1_penalty(real, x_prev, self.r1_gamma)
            return loss
        fake_prev, _ = self.generate_step(x_t, t, generator)
        with _frozen(self.D):
            fake = self.D(fake_prev, x_t, time)
        return generator_loss(fake)

    # -- training diagnostics ----------------------------------------------------------------------

    def diagnose(self, history: Sequence[tuple[int, Mapping[str, float]]]) -> str | None:
        """A warning when the discriminator has sat at chance for the last ``CHANCE_STEPS`` steps.

        ``history`` is the trainer's ``(step, {'d': loss_d, 'g': loss_g})`` per log interval.
        ``loss_d = 2 log 2`` (D outputs 1/2 on real and fake) long after the start means D no
        longer tells real from fake, so G gets no signal: a stall seen on digits with a small D
        and equal learning rates (docs/GUIDE.md, DDGAN).
        """
        if not history or history[-1][0] < CHANCE_STEPS:
            return None
        last = history[-1][0]
        window = [h.get("d", math.nan) for s, h in history if s > last - CHANCE_STEPS]
        if len(window) < 3 or not all(abs(v - CHANCE_LOSS_D) < CHANCE_TOL for v in window):
            return None
        return (
            f"the discriminator is at chance: loss_d stayed within {CHANCE_TOL} of 2 log 2 = "
            f"{CHANCE_LOSS_D:.4f} for the last {CHANCE_STEPS} steps, so it no longer teaches the "
            "generator. Give it a larger learning rate (train.group_lr.d, e.g. 10x the "
            "generator's) or more capacity (model.disc.base_channels)"
        )

    # -- sampling ---------------------------------------------------------------------------------

    def check_sampler(self, sampler: str, nfe: int | None = None,
                      options: dict[str, Any] | None = None) -> None:
        """Raise ``ValueError('sampler: ...' / 'nfe: ...' / 'options: ...')`` for bad arguments."""
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler: a DDGAN samples with its own chain; use one of: "
                             f"{', '.join(SAMPLERS)} (got {sampler!r})")
        if nfe is not None and nfe != self.num_steps:
            raise ValueError(f"nfe: this DDGAN has T = {self.num_steps} steps, so NFE = "
                             f"{self.num_steps}; got {nfe}")
        bad = sorted(set(options or {}) - {"trajectory", "progress"})
        if bad:
            raise ValueError(f"options: unknown option(s) {bad} for sampler 'ddgan'; its options: "
                             "trajectory, progress")

    @torch.no_grad()
    def sample(
        self,
        n: int,
        sampler: str = "ddgan",
        nfe: int | None = None,
        generator: torch.Generator | None = None,
        trajectory: bool = False,
        progress: bool = False,
        **opts: Any,
    ) -> SampleResult:
        """``n`` samples with ``T`` generator calls: ``x_T ~ N(0, I)``, then for ``t = T..1``
        ``x_0' = G(x_t, z, t)``, ``x_{t-1} ~ q(x_{t-1} | x_t, x_0')``. ``nfe`` must be ``T`` or
        None; ``trajectory=True`` keeps every state."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        self.check_sampler(sampler, nfe, opts)
        param = next(self.G.parameters())
        was_training = self.training
        self.eval()
        try:
            x = randn_like(param.new_empty(self.state_shape(n)), generator)
            traj = [x] if trajectory else None
            steps = range(self.num_steps, 0, -1)
            for i in tqdm(steps, disable=not progress, desc="ddgan", leave=False):
                t = torch.full((n,), i, dtype=torch.long, device=x.device)
                x, _ = self.generate_step(x, t, generator)
                if not torch.isfinite(x).all():
                    raise FloatingPointError(f"non-finite sample state after step {i} "
                                             f"(t = {float(self.schedule.times[i]):.4g})")
                if traj is not None:
                    traj.append(x)
        finally:
            self.train(was_training)
        return SampleResult(
            samples=x, state=x, nfe=self.num_steps, trajectory=traj,
            times=self.schedule.times.flip(0).to(x.device),
            info={"sampler": "ddgan", "num_steps": self.num_steps, "use_z": self.use_z,
                  "prediction": self.prediction},
        )
