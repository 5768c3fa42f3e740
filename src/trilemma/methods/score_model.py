"""A score-based model in data space: process + network + parametrisation + objective.

This is what a user trains and samples: ``loss(batch)`` for the trainer, ``score_fn()`` and
``sample(n, sampler, nfe)`` for generation, with any sampler of :mod:`trilemma.samplers`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..classifier_guidance import GuidedScore
from ..likelihood import log_likelihood
from ..nets import count_parameters
from ..objectives import DSM_WEIGHTINGS, HSM_WEIGHTINGS, cld_dsm_loss, dsm_loss, hsm_loss
from ..objectives.dsm import check_t_sampling, likelihood_importance
from ..parametrization import Parametrization
from ..processes.base import LinearProcess, ScoreFn
from ..processes.cld import CLD
from ..processes.flow import RectifiedFlow
from ..samplers import sample as run_sampler
from ..samplers.base import SampleResult
from .base import Method, auto_divergence
from .labels import check_conditioning, conditional_score, drop_labels
from .noise_classifier import NoiseClassifier, guide_with_classifier

OBJECTIVES = {"dsm": DSM_WEIGHTINGS, "hsm": HSM_WEIGHTINGS, "cld_dsm": HSM_WEIGHTINGS}


class ScoreModel(Method):
    """A diffusion model in data space (method ``score``).

    Args:
        process: the forward SDE.
        net: any network ``net(u, t[, labels])``; for CLD it sees ``(x, v)`` (2C channels) and
            outputs C channels.
        data_shape: shape of one data sample (without batch), e.g. ``(2,)`` or ``(1, 8, 8)``.
        prediction: ``eps``/``x0``/``v``/``score``/``edm``; ``mixed``/``score`` for CLD;
            ``velocity`` (the default) for the rectified flow.
        objective: ``dsm`` (VP/sub-VP/VE), ``hsm`` or ``cld_dsm`` (CLD).
        weighting: see :mod:`trilemma.objectives` (``edm``: EDM's ``lambda(sigma)``, DSM only;
            ``velocity``, the rectified flow's objective and its default).
        sigma_data: the data's scale (RMS) for the input scaling and the ``edm`` prediction and
            weighting.
        t_sampling: DSM's training times: ``uniform`` or ``lognormal`` (EDM's
            ``ln sigma ~ N(p_mean, p_std^2)``, with the ``quality`` or ``edm`` weighting).
        label_dropout: with a class-conditional net (``net.num_classes`` set) and labelled
            batches, the probability of training a sample as unconditional (the null class), so
            one network serves classifier-free guidance.
    """

    name = "score"

    def __init__(
        self,
        process: LinearProcess,
        net: nn.Module,
        data_shape: tuple[int, ...],
        prediction: str | None = None,
        objective: str | None = None,
        weighting: str | None = None,
        sigma_data: float = 0.5,
        label_dropout: float = 0.1,
        t_sampling: str = "uniform",
        p_mean: float = -1.2,
        p_std: float = 1.2,
    ) -> None:
        super().__init__()
        if not 0.0 <= label_dropout < 1.0:
            raise ValueError(f"label_dropout must lie in [0, 1), got {label_dropout}")
        is_cld = isinstance(process, CLD)
        objective = objective or ("hsm" if is_cld else "dsm")
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
        if is_cld != (objective != "dsm"):
            fits = "hsm, cld_dsm" if is_cld else "dsm"
            raise ValueError(
                f"objective {objective!r} does not fit process {process.name!r}; use {fits}"
            )
        weighting = weighting or ("velocity" if isinstance(process, RectifiedFlow)
                                  else OBJECTIVES[objective][0])
        if weighting not in OBJECTIVES[objective]:
            raise ValueError(
                f"weighting {weighting!r} does not fit objective {objective!r}; "
                f"valid: {', '.join(OBJECTIVES[objective])}"
            )
        if objective == "dsm":
            check_t_sampling(t_sampling, weighting)
        elif t_sampling != "uniform":
            raise ValueError(f"t_sampling {t_sampling!r} needs a scalar process and DSM; "
                             f"{objective} draws t uniformly")
        self.t_sampling, self.p_mean, self.p_std = t_sampling, float(p_mean), float(p_std)
        self.process = process
        self.model = Parametrization(net, process, prediction, sigma_data)
        self.data_shape = tuple(int(s) for s in data_shape)
        self.objective = objective
        self.weighting = weighting
        self.num_classes: int | None = getattr(net, "num_classes", None)
        self.label_dropout = float(label_dropout)
        self._importance = likelihood_importance(process) if weighting == "likelihood_is" else None

    def forward(self, u: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        """The noise-block score at states ``u``, times ``t``."""
        return self.model(u, t, labels)

    def _labels(self, batch: Tensor | tuple, generator: torch.Generator | None) -> Tensor | None:
        """Training labels of a batch with label dropout applied (None when unconditional)."""
        if self.num_classes is None or not isinstance(batch, (tuple, list)) or len(batch) < 2:
            return None
        return drop_labels(batch[1], self.num_classes, self.label_dropout, generator)

    def loss(self, batch: Tensor | tuple, generator: torch.Generator | None = None) -> Tensor:
        """Per-sample training loss of a data batch (a tensor, or ``(x, labels)``)."""
        x0 = batch[0] if isinstance(batch, (tuple, list)) else batch
        if tuple(x0.shape[1:]) != self.data_shape:
            raise ValueError(
                f"batch has sample shape {tuple(x0.shape[1:])}, the model expects {self.data_shape}"
            )
        kw: dict[str, Any] = {
            "weighting": self.weighting,
            "generator": generator,
            "labels": self._labels(batch, generator),
        }
        if self.objective == "dsm":
            return dsm_loss(self.model, self.process, x0, importance=self._importance,
                            t_sampling=self.t_sampling, p_mean=self.p_mean, p_std=self.p_std,
                            sigma_data=self.model.sigma_data, **kw)
        if self.objective == "hsm":
            return hsm_loss(self.model, self.process, x0, **kw)
        return cld_dsm_loss(self.model, self.process, x0, **kw)

    def score_fn(self, labels: Tensor | None = None, guidance: float = 0.0) -> ScoreFn:
        """A no-grad score function for the samplers.

        With ``labels`` the score is class-conditional; ``guidance = w > 0`` applies
        classifier-free guidance ``(1 + w) s(u | c) - w s(u)`` (one batched call on the class
        and the null class: 2 network evaluations per score evaluation). ``labels`` must have
        one entry per sample of the states the function is called on. States of another
        floating dtype than the network's (e.g. a float64 sampler or grid tuner on a float32
        model) are cast to the network's dtype and the score back to theirs.
        """
        score = conditional_score(self.model, labels, guidance, self.num_classes)
        param = next(self.parameters(), None)
        if param is None:
            return score
        dtype = param.dtype

        def fn(u: Tensor, t: Tensor) -> Tensor:
            if u.dtype == dtype or not u.is_floating_point():
                return score(u, t)
            return score(u.to(dtype), t).to(u.dtype)

        return fn

    def net_calls(self, labels: Tensor | None = None, guidance: float = 0.0) -> int:
        """Network evaluations per score evaluation: 2 with guidance (class and null), else 1."""
        return 2 if labels is not None and guidance else 1

    @torch.no_grad()
    def sample(
        self,
        n: int,
        sampler: str = "em",
        nfe: int = 100,
        generator: torch.Generator | None = None,
        labels: Tensor | None = None,
        guidance: float = 0.0,
        classifier: NoiseClassifier | None = None,
        classifier_scale: float | None = None,
        **opts: Any,
    ) -> SampleResult:
        """Draw ``n`` samples with a named sampler within an NFE budget (returns SampleResult).

        ``labels`` (shape ``(n,)``, classes ``0 .. num_classes - 1``) select class-conditional
        sampling, ``guidance = w`` classifier-free guidance. ``classifier`` (a
        :class:`~trilemma.methods.NoiseClassifier` of the same process and data) with ``labels``
        guides by its gradient, ``classifier_scale`` (default 1) times
        (:mod:`trilemma.classifier_guidance`); the labels then condition this model too when it
        is class-conditional. ``nfe`` budgets score evaluations; the result's ``nfe`` counts
        network evaluations (twice the score evaluations with ``w > 0``;
        ``info['score_evals']`` keeps the sampler's count), ``info['classifier_calls']`` the
        classifier's forward+backward passes.
        """
        param = next(self.parameters())
        if classifier is not None or classifier_scale is not None:  # classifier guidance
            if classifier is None:
                raise ValueError("classifier_scale: given without a classifier")
            own = check_conditioning(labels if self.num_classes else None, guidance, n,
                                     self.num_classes)
            score = guide_with_classifier(self.score_fn(own, guidance), classifier,
                                          classifier_scale, labels, n, self.process,
                                          self.data_shape, param.device, self.num_classes)
        else:
            own = check_conditioning(labels, guidance, n, self.num_classes)
            score = self.score_fn(own, guidance)
        was_training = self.training
        self.eval()
        try:
            res = run_sampler(
                sampler,
                score,
                self.process,
                self.state_shape(n),
                nfe,
                generator=generator,
                device=param.device,
                dtype=param.dtype,
                **opts,
            )
        finally:
            self.train(was_training)
        calls = self.net_calls(own, guidance)
        res.info.update(score_evals=res.nfe, net_calls_per_eval=calls)
        res.nfe = res.nfe * calls
        if isinstance(score, GuidedScore):
            res.info["classifier_calls"] = score.classifier_calls
        return res

    def nll(self, x: Tensor, *, generator: torch.Generator | None = None,
            divergence: str = "auto", **ode: Any) -> dict[str, Any]:
        """``-log p(x)`` in nats per sample by the probability-flow ODE
        (:func:`trilemma.likelihood.log_likelihood`; an upper bound for CLD, whose initial
        velocity is integrated out by its ELBO)."""
        div = auto_divergence(int(x[0].numel()), divergence)
        was_training = self.training
        self.eval()
        try:
            res = log_likelihood(lambda u, t: self.model(u, t), self.process, x,
                                 divergence=div, generator=generator, **ode)
        finally:
            self.train(was_training)
        bound = res.v0_entropy is not None
        return {
            "nll": -res.log_p.to(torch.float64), "nfe": int(res.nfe), "bound": bound,
            "divergence": div,
            "meaning": ("upper bound on bits/dim (CLD: ELBO over the initial velocity)" if bound
                        else "bits/dim of the density at t_min (probability-flow ODE)"),
        }

    def parameter_counts(self) -> dict[str, int]:
        """Total and score-network parameter counts."""
        return {"total": count_parameters(self), "net": count_parameters(self.model.net)}
