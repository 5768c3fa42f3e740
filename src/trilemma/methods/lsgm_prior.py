"""LSGM's latent prior: the latent SDE's noise-block score with LSGM's Normal mixing
(``s = (1 - a) s_N + a s_net``; see :mod:`trilemma.methods.lsgm`), and the gradient-scaling
helper the mixing logit's learning rate uses."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..objectives.lsgm import check_latent_process, normal_score
from ..processes.base import LinearProcess
from ..processes.cld import CLD

PREDICTIONS = ("normal_mix", "plain")
#: older names of the options above, still accepted
PREDICTION_ALIASES = {"mixed": "normal_mix"}


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the incoming gradient by a per-sample scale."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: Tensor) -> Tensor:  # noqa: D102
        ctx.save_for_backward(scale)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # noqa: D102
        (scale,) = ctx.saved_tensors
        return grad * scale.reshape((-1,) + (1,) * (grad.dim() - 1)).to(grad.dtype), None


def scale_grad(x: Tensor, scale: Tensor) -> Tensor:
    """``x`` unchanged, its gradient scaled per sample by ``scale`` (shape ``(B,)``)."""
    return _ScaleGrad.apply(x, scale.detach())


# ------------------------------------------------------------------------------- the prior
class LatentPrior(nn.Module):
    """Score model of the latent SDE with LSGM's Normal-mixture (geometric-mixture) option.

    Args:
        process: the latent SDE (VP family or CLD).
        net: ``net(u, t[, labels]) -> latent-shaped`` (for CLD it sees ``(z, v)``: ``2 C``
            channels); with ``net.num_classes`` the prior is class-conditional.
        latent_shape: shape of one latent ``(D,)`` or ``(C, H, W)``.
        prediction: ``normal_mix`` (Normal + network, mixing weight per channel; ``mixed`` is
            its old name and still accepted) or ``plain`` (the network's score alone).
        logit_init: initial mixing logit (``-6``: ``a = 0.0025``).
        mixing_lr_scale: the logit is stored divided by this factor, which multiplies its
            effective Adam learning rate (Adam moves a parameter by about ``lr`` per step, so
            from -6 the mixing weight needs ~``6 / lr`` steps to reach 1/2; short runs raise it).
    """

    #: the options, and the old names they accept
    OPTIONS = ("normal_mix", "plain")
    ALIASES = PREDICTION_ALIASES

    def __init__(
        self,
        process: LinearProcess,
        net: nn.Module,
        latent_shape: tuple[int, ...],
        prediction: str = "normal_mix",
        logit_init: float = -6.0,
        mixing_lr_scale: float = 1.0,
    ) -> None:
        super().__init__()
        check_latent_process(process)
        prediction = self.ALIASES.get(prediction, prediction)
        if prediction not in self.OPTIONS:
            raise ValueError(f"prediction must be one of {list(self.OPTIONS)} (or the old name "
                             f"'mixed'), got {prediction!r}")
        if not (isinstance(logit_init, (int, float)) and math.isfinite(logit_init)):
            raise ValueError(f"logit_init must be a finite number, got {logit_init!r}")
        if not (isinstance(mixing_lr_scale, (int, float)) and math.isfinite(mixing_lr_scale)
                and mixing_lr_scale > 0):
            raise ValueError(f"mixing_lr_scale must be a positive number, got {mixing_lr_scale!r}")
        self.process = process
        self.net = net
        #: classes of a class-conditional net (a learned null class ``num_classes`` besides)
        self.num_classes: int | None = getattr(net, "num_classes", None)
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.prediction = prediction
        # what the network predicts: eps for the VP family, CLD's mixed score for CLD
        self.net_prediction = "mixed" if isinstance(process, CLD) else "eps"
        self.mixing_lr_scale = float(mixing_lr_scale)
        if prediction == "normal_mix":
            init = float(logit_init) / self.mixing_lr_scale
            self.mixing_logit = nn.Parameter(torch.full((self.latent_shape[0],), init))
        else:
            self.register_parameter("mixing_logit", None)

    def mixing(self) -> Tensor | None:
        """``a = sigmoid(logit)`` per latent channel (None for ``plain``)."""
        if self.mixing_logit is None:
            return None
        return torch.sigmoid(self.mixing_lr_scale * self.mixing_logit)

    def _mixing_view(self, like: Tensor) -> Tensor:
        a = self.mixing().to(like.dtype)
        return a.reshape((1, -1) + (1,) * (like.dim() - 2))

    def net_output(self, u: Tensor, t: Tensor, labels: Tensor | None = None,
                   guidance: float = 0.0) -> Tensor:
        """The network's output; ``labels`` condition a class-conditional net (None: its null
        class), and ``guidance = w > 0`` gives ``(1 + w) F(c) - w F(null)`` from one batched
        call on the class and the null class. The score is affine in ``F`` (and the Normal
        part does not depend on it), so this is the guided score with the analytic parts once."""
        if labels is None:
            return self.net(u, t)
        if not guidance:
            return self.net(u, t, labels)
        null = torch.full_like(labels, int(self.num_classes))
        both = self.net(torch.cat([u, u]), torch.cat([t, t]), torch.cat([labels, null]))
        cond, uncond = both.chunk(2)
        return cond + guidance * (cond - uncond)

    def net_score(self, u: Tensor, t: Tensor, labels: Tensor | None = None,
                  guidance: float = 0.0) -> Tensor:
        """The network's score ``s_net`` by the process's conversion: ``-eps'/sigma`` (VP),
        ``-v/Sigma_vv - l eps'`` (CLD); the network sees ``u`` unscaled."""
        out = self.net_output(u, t, labels, guidance)
        return self.process.prediction_to_score(self.net_prediction, out, u, t)

    def forward(self, u: Tensor, t: Tensor, labels: Tensor | None = None,
                guidance: float = 0.0) -> Tensor:
        """Noise-block score at states ``u``, times ``t`` (shape ``(B,)``); ``labels``/
        ``guidance`` as in :meth:`net_output` (class-conditional nets only)."""
        if not isinstance(t, Tensor) or t.dim() == 0:
            t = torch.full((u.shape[0],), float(t), device=u.device, dtype=u.dtype)
        s_net = self.net_score(u, t, labels, guidance)
        if self.mixing_logit is None:
            return s_net
        a = self._mixing_view(s_net)
        return (1.0 - a) * normal_score(self.process, u, t) + a * s_net


# ------------------------------------------------------------------------------- LSGM
