"""LSGM: a score-based prior in a VAE's latent space, trained end to end (REFERENCE §7).

``LSGM(process, vae, net)`` is what the trainer trains (``loss(batch, generator)``: per-sample
values) and what ``trilemma sample`` samples (``sample(n, sampler, nfe)``: decoded data). The
math lives in :mod:`trilemma.objectives.lsgm`; this module wires the parts together:

- **Prior** (:class:`LatentPrior`): the noise-block score of the latent SDE, with LSGM's
  Normal-mixed score ``s = (1 - a) s_N + a s_net``, ``a = sigmoid(logit)`` per latent channel (logit
  ``-6`` at start). ``s_N`` is the exact score of the diffused ``N(0, I)`` latent
  (:func:`~trilemma.objectives.lsgm.normal_score`), so ``a = 0`` is exactly the Normal prior.
  For VP this is LSGM's ``eps = sigma (1 - a) z_t + a eps'``; for CLD ``s_net`` is the CLD
  paper's ``-v/Sigma_vv - l_t net`` and ``s_N`` the exact velocity score of Normal latents.
  ``prediction='plain'`` drops the Normal part (``s = s_net``): the ablation.
- **Stages**: ``vae`` (the VAE with a Normal prior, analytic KL with warm-up, prior frozen),
  ``joint`` (end to end with the SGM prior, KL/CE coefficient annealed e.g. 0.7 -> 1) and
  ``prior`` (VAE frozen, the prior alone: the stage-wise baseline).
- **Weightings**: the encoder always gets the likelihood weighting ``ll`` (the bound); the prior
  gets ``ll``, ``un`` or ``re``, on its own t-samples (default) or on the encoder's samples
  reweighted by ``w_prior / r_ll`` (``shared_t=True``: one network pass).
- **Classes**: a class-conditional prior net (``data.labels: true``) makes the *prior*
  class-conditional (label dropout trains its null class); the VAE stays unconditional, and
  ``sample(labels=, guidance=)`` guides the latent's mixed score, then decodes.

:meth:`LSGM.loss` returns per-sample NELBO values (nats, coefficient 1, what ``log.csv``
shows) whose *gradient* is the training objective's (annealed coefficient on entropy + cross
entropy; prior trained by the prior weighting, encoder by ``ll``); parts in ``last_parts``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..likelihood import bits_per_dim, log_likelihood
from ..nets import count_parameters
from ..objectives.lsgm import (
    PRIOR_WEIGHTINGS,
    T_SAMPLINGS,
    LatentTimes,
    ce_constant,
    check_latent_process,
    eps_residual,
    gaussian_entropy,
    normal_cross_entropy,
    weight,
)
from ..processes.base import LinearProcess, ScoreFn
from ..samplers import sample as run_sampler
from ..samplers.base import SampleResult
from .base import Method, auto_divergence
from .labels import check_conditioning, conditional_score, drop_labels
from .lsgm_prior import PREDICTION_ALIASES, PREDICTIONS, LatentPrior, scale_grad  # noqa: F401
from .lsgm_weights import load_lsgm_weights
from .parts_log import PartsLog

STAGES = ("vae", "joint", "prior")
DECODE_MODES = ("sample", "mean")
PARTS = ("nelbo", "recon", "neg_entropy", "ce", "kl", "prior_loss", "kl_coef", "alpha_mean")
_LOG_2PI = math.log(2.0 * math.pi)


class LSGM(Method):
    """A VAE with a score-based latent prior (LSGM, method ``lsgm``), for trainer and samplers.

    Args:
        process: latent SDE: ``vp``, ``vp_cosine``, ``geometric_vp`` or ``cld``.
        vae: a :class:`~trilemma.nets.vae.VAE` (encoder + decoder).
        net: the prior's network, sized for the latent (for CLD: ``2 C`` in, ``C`` out).
        stage: ``vae`` (Normal prior), ``joint`` (end to end) or ``prior`` (VAE frozen).
        prediction: ``normal_mix`` (LSGM's mixed score: Normal + network; older name ``mixed``)
            or ``plain`` (network score only).
        weighting: the prior's weighting ``ll``/``un``/``re`` (the encoder always uses ``ll``).
        t_sampling: ``importance`` (LSGM's samplers, see
            :class:`~trilemma.objectives.lsgm.LatentTimes`) or ``uniform``.
        shared_t: one t-sample for encoder and prior (the prior's term reweighted by
            ``w_prior / r_ll``) instead of separate samples; ``ll`` always shares (same loss).
        logit_init: initial mixing logit.
        mixing_lr_scale: multiplies the mixing logit's effective learning rate (see
            :class:`LatentPrior`).
        kl_start: the KL/CE coefficient at the start of annealing (None: ``1e-4`` for the
            ``vae`` stage, ``0.7`` for ``joint``); it rises linearly to 1.
        kl_anneal_steps: training ``loss`` calls (micro-batches) to reach 1; 0 = no annealing.
        decode: ``sample`` (draw from the decoder) or ``mean`` (its mean) when sampling.
        label_dropout: with a class-conditional prior net (``net.num_classes``) and labelled
            batches, the probability of training the prior on a sample as unconditional (the
            null class), so one prior serves classifier-free guidance; the VAE ignores labels.
    """

    name = "lsgm"
    teleport_space: ClassVar[str] = "latent"  # the data's moments do not fit the latents

    def __init__(
        self,
        process: LinearProcess,
        vae: nn.Module,
        net: nn.Module,
        stage: str = "joint",
        prediction: str = "normal_mix",
        weighting: str = "ll",
        t_sampling: str = "importance",
        shared_t: bool = False,
        logit_init: float = -6.0,
        mixing_lr_scale: float = 1.0,
        kl_start: float | None = None,
        kl_anneal_steps: int = 0,
        decode: str = "sample",
        label_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        check_latent_process(process)
        for name, val, choices in (("stage", stage, STAGES), ("weighting", weighting,
                                                               PRIOR_WEIGHTINGS),
                                   ("t_sampling", t_sampling, T_SAMPLINGS),
                                   ("decode", decode, DECODE_MODES)):
            if val not in choices:
                raise ValueError(f"{name} must be one of {list(choices)}, got {val!r}")
        if not (isinstance(label_dropout, (int, float)) and 0.0 <= label_dropout < 1.0):
            raise ValueError(f"label_dropout must lie in [0, 1), got {label_dropout!r}")
        if not isinstance(shared_t, bool):
            raise ValueError(f"shared_t must be a boolean, got {shared_t!r}")
        if kl_start is not None and not (isinstance(kl_start, (int, float))
                                         and 0.0 <= kl_start <= 1.0):
            raise ValueError(f"kl_start must be a number in [0, 1] or None, got {kl_start!r}")
        if isinstance(kl_anneal_steps, bool) or not isinstance(kl_anneal_steps, int) \
                or kl_anneal_steps < 0:
            raise ValueError(f"kl_anneal_steps must be an integer >= 0, got {kl_anneal_steps!r}")
        for attr in ("encode", "log_likelihood", "decode", "latent_shape", "data_shape"):
            if not hasattr(vae, attr):
                raise TypeError(f"vae must be a trilemma.nets.vae.VAE (has no {attr!r})")
        self.process = process
        self.vae = vae
        self.prior = LatentPrior(process, net, vae.latent_shape, prediction, logit_init,
                                 mixing_lr_scale)
        self.data_shape = tuple(vae.data_shape)
        self.latent_shape = tuple(vae.latent_shape)
        self.stage = stage
        self.prediction = prediction
        self.weighting = weighting
        self.t_sampling = t_sampling
        self.shared_t = shared_t or weighting == "ll"
        self.kl_start = (float(kl_start) if kl_start is not None
                         else {"vae": 1e-4, "joint": 0.7, "prior": 1.0}[stage])
        self.kl_anneal_steps = int(kl_anneal_steps)
        self.decode_mode = decode
        # the classes sampling takes: none in the vae stage (its prior is N(0, I))
        self.num_classes: int | None = None if stage == "vae" else self.prior.num_classes
        self.label_dropout = float(label_dropout)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.times_ll = LatentTimes(process, "ll", t_sampling)
        self.times_prior = LatentTimes(process, weighting, t_sampling)
        self.last_parts: dict[str, float] = {}
        self._parts_log: PartsLog | None = None
        frozen = {"vae": self.prior, "prior": self.vae}.get(stage)
        if frozen is not None:
            for p in frozen.parameters():
                p.requires_grad_(False)

    # ------------------------------------------------------------------ bookkeeping
    def train(self, mode: bool = True) -> LSGM:
        """Train mode, except a frozen VAE (``stage='prior'``) stays in eval mode."""
        super().train(mode)
        if self.stage == "prior":
            self.vae.eval()
        return self

    def kl_coef(self) -> float:
        """The KL/CE coefficient now (linear from ``kl_start`` to 1 over ``kl_anneal_steps``)."""
        if self.kl_anneal_steps == 0 or self.stage == "prior":
            return 1.0
        frac = min(1.0, int(self.calls) / self.kl_anneal_steps)
        return self.kl_start + (1.0 - self.kl_start) * frac

    def attach_parts_log(self, path: str | os.PathLike, every: int = 50) -> None:
        """Append the mean loss parts every ``every`` training calls to the CSV ``path``."""
        self._parts_log = PartsLog(path, PARTS, every)

    def _record(self, parts: dict[str, float]) -> None:
        self.last_parts = parts
        if self._parts_log is not None:
            self._parts_log.record(int(self.calls), parts)

    # ------------------------------------------------------------------ the objective
    def _frozen_prior(self, u: Tensor, t: Tensor, labels: Tensor | None) -> Tensor:
        """The prior's score with its parameters detached (gradients reach ``u`` only)."""
        state = {k: v.detach() for k, v in self.prior.named_parameters()}
        state.update(dict(self.prior.named_buffers()))
        return torch.func.functional_call(self.prior, state, (u, t, labels))

    def _labels(self, batch: Tensor | tuple | list,
                generator: torch.Generator | None) -> Tensor | None:
        """The prior's training labels with label dropout (None when unconditional)."""
        if self.num_classes is None or not isinstance(batch, (tuple, list)) or len(batch) < 2:
            return None
        return drop_labels(batch[1], self.num_classes, self.label_dropout, generator)

    def _x(self, batch: Tensor | tuple | list) -> Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not isinstance(x, Tensor) or tuple(x.shape[1:]) != self.data_shape:
            got = tuple(x.shape[1:]) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"batch has sample shape {got}, the model expects {self.data_shape}")
        return x

    def loss(self, batch: Tensor | tuple | list,
             generator: torch.Generator | None = None) -> Tensor:
        """Per-sample NELBO (nats) carrying the training objective's gradient (module doc)."""
        x = self._x(batch)
        if self.training:
            self.calls += 1
        coef = self.kl_coef()
        labels = self._labels(batch, generator)
        parts = self.loss_parts(x, generator, coef, labels)
        obj, nelbo = parts.pop("objective"), parts["nelbo"]
        with torch.no_grad():
            a = self.prior.mixing()
            summary = {k: float(v.detach().mean()) for k, v in parts.items()}
            summary.update(kl_coef=coef, alpha_mean=float(a.mean()) if a is not None else 0.0)
        if self.training:
            self._record(summary)
        else:
            self.last_parts = summary
        return nelbo.detach() + (obj - obj.detach())

    def loss_parts(self, x: Tensor, generator: torch.Generator | None = None,
                   coef: float = 1.0, labels: Tensor | None = None) -> dict[str, Tensor]:
        """All per-sample pieces: ``recon``, ``neg_entropy``, ``ce``, ``kl``, ``nelbo``,
        ``prior_loss`` and ``objective`` (the differentiable training objective); ``labels``
        (null class where dropped) condition the prior only."""
        stage = self.stage
        frozen_vae = stage == "prior"
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen_vae):
            mu, log_std = self.vae.encode(x)
            z0 = self.vae.reparameterize(mu, log_std, generator)
            recon = -self.vae.log_likelihood(x, z0)
            neg_ent = -gaussian_entropy(log_std)
            var = torch.exp(2.0 * log_std)
        n = x.shape[0]
        if stage == "vae":
            ce = normal_cross_entropy(mu, var)
            zero = torch.zeros_like(ce)
            obj = recon + coef * (neg_ent + ce)
            return {"recon": recon, "neg_entropy": neg_ent, "ce": ce, "kl": neg_ent + ce,
                    "nelbo": recon + neg_ent + ce, "prior_loss": zero, "objective": obj}
        p = self.process
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen_vae):
            const = ce_constant(p, mu, var).to(x.dtype)
        z_enc = z0.detach() if frozen_vae else z0
        if self.shared_t:
            t, ratio_ll = self.times_ll.sample(n, generator, device=x.device)
            t64 = t.to(torch.float64)
            if self.weighting == "ll":
                ratio_p, scale = ratio_ll, torch.full_like(ratio_ll, coef)
            else:
                w_ll = weight(p, "ll", t64)
                w_p = weight(p, self.weighting, t64)
                ratio_p = (ratio_ll.to(torch.float64) * w_p / w_ll).to(ratio_ll.dtype)
                scale = (coef * w_ll / w_p).to(ratio_ll.dtype)
            tt = t.to(x.dtype)
            u, noise = p.perturb(z_enc, tt, generator)
            u_in = u if frozen_vae else scale_grad(u, scale.to(u.device))
            res = eps_residual(p, self.prior(u_in, tt, labels), noise, t)
            ce_dsm = ratio_ll.to(x.dtype) * res.detach()
            prior_loss = ratio_p.to(x.dtype) * res
            ce = ce_dsm + const
            # prior_loss: theta-gradient with the prior weighting, z-gradient (through the
            # scaled u) with coef * w_ll / r_ll: exactly the encoder's share of coef * CE
            obj = recon + coef * (neg_ent + const) + prior_loss
        else:
            t1, r1 = self.times_ll.sample(n, generator, device=x.device)
            u1, n1 = p.perturb(z_enc, t1.to(x.dtype), generator)
            if frozen_vae:
                with torch.no_grad():
                    s1 = self.prior(u1, t1.to(x.dtype), labels)
            else:
                s1 = self._frozen_prior(u1, t1.to(x.dtype), labels)
            ce = r1.to(x.dtype) * eps_residual(p, s1, n1, t1) + const
            t2, r2 = self.times_prior.sample(n, generator, device=x.device)
            u2, n2 = p.perturb(z0.detach(), t2.to(x.dtype), generator)
            s2 = self.prior(u2, t2.to(x.dtype), labels)
            prior_loss = r2.to(x.dtype) * eps_residual(p, s2, n2, t2)
            obj = recon + coef * (neg_ent + ce) + prior_loss
        return {"recon": recon, "neg_entropy": neg_ent, "ce": ce, "kl": neg_ent + ce,
                "nelbo": recon + neg_ent + ce, "prior_loss": prior_loss, "objective": obj}

    # ------------------------------------------------------------------ sampling
    def forward(self, u: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        """The latent prior's noise-block score."""
        return self.prior(u, t, labels)

    def score_fn(self, labels: Tensor | None = None, guidance: float = 0.0) -> ScoreFn:
        """A no-grad latent score function for the samplers; with ``labels`` class-conditional,
        ``guidance = w > 0`` classifier-free guidance ``(1 + w) s(u | c) - w s(u)`` of the
        mixed score (2 network evaluations per score evaluation)."""
        return conditional_score(self.prior, labels, guidance, self.num_classes, "this LSGM")

    def net_calls(self, labels: Tensor | None = None, guidance: float = 0.0) -> int:
        """Network evaluations per score evaluation: 2 with guidance (class and null), else 1."""
        return 2 if labels is not None and guidance else 1

    def state_shape(self, n: int) -> tuple[int, ...]:
        """Shape of ``n`` latents (the sampler lifts it to a state)."""
        return (n, *self.latent_shape)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        sampler: str = "em",
        nfe: int = 100,
        generator: torch.Generator | None = None,
        labels: Tensor | None = None,
        guidance: float = 0.0,
        decode: str | None = None,
        **opts: Any,
    ) -> SampleResult:
        """``n`` samples in data space: latents by a sampler of the latent SDE, then decoded.

        ``nfe`` budgets the prior's score calls (the decoder runs once more per sample); the
        result's ``nfe`` counts network evaluations (twice the score evaluations with ``labels``
        and ``guidance = w > 0``: classifier-free guidance of a class-conditional prior;
        ``info['score_evals']`` keeps the sampler's count). In the ``vae`` stage the prior is
        ``N(0, I)``: latents are drawn directly (NFE 0; labels refused). The latents are in
        ``result.info['latents']``.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if labels is not None and self.stage == "vae":
            raise ValueError("labels: an LSGM in the vae stage samples its N(0, I) prior, which "
                             "has no classes; sample a joint or prior stage run")
        labels = check_conditioning(labels, guidance, n, self.num_classes, who="this LSGM")
        mode = decode or self.decode_mode
        if mode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {list(DECODE_MODES)}, got {mode!r}")
        param = next(self.parameters())
        was_training = self.training
        self.eval()
        try:
            if self.stage == "vae":
                dev = generator.device if generator is not None else param.device
                z = torch.randn(self.state_shape(n), generator=generator, device=dev,
                                dtype=param.dtype).to(param.device)
                res = SampleResult(samples=z, state=z, nfe=0, info={"prior": "normal"})
            else:
                res = run_sampler(sampler, self.score_fn(labels, guidance), self.process,
                                  self.state_shape(n), nfe, generator=generator,
                                  device=param.device, dtype=param.dtype, **opts)
            z = res.samples
            x = self.vae.decode(z, sample=mode == "sample", generator=generator)
        finally:
            self.train(was_training)
        calls = self.net_calls(labels, guidance)
        info = {**res.info, "latents": z, "decode": mode, "score_evals": res.nfe,
                "net_calls_per_eval": calls}
        return SampleResult(samples=x, state=res.state, nfe=res.nfe * calls,
                            trajectory=res.trajectory, times=res.times, info=info)

    # ------------------------------------------------------------------ likelihood
    def nll(self, x: Tensor, *, generator: torch.Generator | None = None, n_latents: int = 1,
            t_min: float | None = None, levels: int | None = None, **ode: Any
            ) -> dict[str, Any]:
        """NELBO (an upper bound on ``-log p(x)``, nats per sample) with the prior's exact
        probability-flow log-density (:func:`trilemma.likelihood.log_likelihood`; a bound for
        CLD) at ``z0 ~ q(z0|x)``, averaged over ``n_latents`` draws.

        ``t_min`` (default ``process.train_eps``) is where the ODE starts: the prior is the
        density of the latent SDE's marginal there, a normalised density, so the ELBO is exact
        for that generative model. ``ode``: options of ``log_likelihood`` (``rtol``, ``atol``,
        ``divergence``, ``method``, ...). Returns per-sample ``nelbo``, ``recon``, ``log_q``,
        ``log_prior`` (float64), ``bits_per_dim`` (``levels`` as in
        :func:`trilemma.likelihood.bits_per_dim`; None = plain nats / (d ln 2)) and ``nfe``.
        """
        x = self._x(x)
        ode["divergence"] = auto_divergence(math.prod(self.latent_shape),
                                            ode.get("divergence", "auto"))
        if isinstance(n_latents, bool) or not isinstance(n_latents, int) or n_latents < 1:
            raise ValueError(f"n_latents must be a positive integer, got {n_latents!r}")
        was_training = self.training
        self.eval()
        totals = {"nelbo": 0.0, "recon": 0.0, "log_q": 0.0, "log_prior": 0.0}
        nfe = 0
        try:
            with torch.no_grad():
                mu, log_std = self.vae.encode(x)
            for _ in range(n_latents):
                with torch.no_grad():
                    z0 = self.vae.reparameterize(mu, log_std, generator)
                    recon = -self.vae.log_likelihood(x, z0).to(torch.float64)
                    eps = (z0 - mu) * torch.exp(-log_std)
                    log_q = (-0.5 * eps.pow(2) - log_std - 0.5 * _LOG_2PI).flatten(1).sum(1)
                    log_q = log_q.to(torch.float64)
                if self.stage == "vae":
                    zf = z0.flatten(1).to(torch.float64)
                    log_prior = -0.5 * zf.pow(2).sum(1) - 0.5 * zf.shape[1] * _LOG_2PI
                else:
                    t0 = self.process.train_eps if t_min is None else t_min
                    res = log_likelihood(self.prior, self.process, z0, t_min=t0,
                                         generator=generator, **ode)
                    log_prior, nfe = res.log_p.to(torch.float64), nfe + res.nfe
                for key, val in (("recon", recon), ("log_q", log_q), ("log_prior", log_prior),
                                 ("nelbo", recon + log_q - log_prior)):
                    totals[key] = totals[key] + val / n_latents
        finally:
            self.train(was_training)
        d = math.prod(self.data_shape)
        return {**totals, "bits_per_dim": bits_per_dim(totals["nelbo"].neg(), d, levels=levels),
                "nfe": nfe, "dim": d, "nll": totals["nelbo"], "bound": True,
                "divergence": ode["divergence"],
                "meaning": "upper bound on bits/dim (LSGM: negative ELBO of the VAE with the "
                           "score-based prior)"}

    @property
    def likelihood_decoder(self) -> str | None:
        """The VAE's decoder: its NELBO is a pmf for ``bernoulli``/``categorical``."""
        return getattr(self.vae, "decoder", "gaussian")

    def parameter_counts(self) -> dict[str, int]:
        """Total, prior-network and VAE parameter counts."""
        return {"total": count_parameters(self), "net": count_parameters(self.prior.net),
                "VAE": count_parameters(self.vae, False)}

    # ------------------------------------------------------------------ stage-wise weights
    def load_pretrained(self, path: str | os.PathLike, prior: bool | None = None) -> list[str]:
        """Load a previous LSGM run's (EMA) weights: the VAE always, the prior when it fits
        (:func:`~trilemma.methods.lsgm_weights.load_lsgm_weights`). Used for
        ``model.init_from`` (stage 1 -> stage 2)."""
        return load_lsgm_weights(self, path, prior)

    def prepare_training(self, *, run_dir: str | os.PathLike, config: Mapping[str, Any],
                         is_main: bool = True, resume: bool = False) -> None:
        """Hook of ``trilemma train``: append the loss parts to ``RUN_DIR/lsgm_parts.csv``
        every ``train.log_every`` calls (``model.init_from`` is loaded by the setup layer)."""
        if is_main:
            every = int((config.get("train") or {}).get("log_every", 50))
            self.attach_parts_log(Path(run_dir) / "lsgm_parts.csv", every)


__all__ = [
    "DECODE_MODES",
    "LSGM",
    "PARTS",
    "PREDICTIONS",
    "STAGES",
    "LatentPrior",
    "scale_grad",
]
