"""Adversarial objectives (REFERENCE §8): non-saturating GAN losses and the R1 penalty.

All functions return **per-sample** losses of shape ``(B,)`` (the trainer averages them):

- :func:`discriminator_loss`: ``softplus(-D(real)) + softplus(D(fake))`` = ``-log sigmoid(D(real))
  - log(1 - sigmoid(D(fake)))``, the cross entropy of a logistic discriminator;
- :func:`generator_loss`: the non-saturating ``softplus(-D(fake))`` = ``-log sigmoid(D(fake))``;
- :func:`r1_penalty`: ``(gamma / 2) ||grad_x D(x)||^2`` at the *real* inputs ``x`` (Mescheder et
  al. 2018), differentiable (``create_graph=True``) so its gradient reaches D's weights;
- :func:`r1_weight`: the factor lazy regularisation puts on the penalty at a given step.

Lazy regularisation (StyleGAN2): the penalty is computed only every ``every`` optimizer steps.
StyleGAN2 multiplies it by ``every`` on those steps so that its average strength is unchanged;
DDGAN's CIFAR-10 setting (gamma = 0.02, every 15 steps) does **not** rescale it. Both are offered
by ``rescale``; the default (``False``) is DDGAN's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _logits(name: str, x: Tensor) -> Tensor:
    """Check a discriminator output: a tensor of shape ``(B,)`` or ``(B, 1)``; return ``(B,)``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a tensor of discriminator logits, got {type(x).__name__}")
    if x.dim() == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() != 1:
        raise ValueError(f"{name} must have shape (B,) or (B, 1), got {tuple(x.shape)}")
    return x


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Per-sample non-saturating D loss ``softplus(-D(real)) + softplus(D(fake))``."""
    real = _logits("real_logits", real_logits)
    fake = _logits("fake_logits", fake_logits)
    if real.shape != fake.shape:
        raise ValueError(
            f"real_logits and fake_logits must have the same shape, got {tuple(real.shape)} and "
            f"{tuple(fake.shape)}"
        )
    return F.softplus(-real) + F.softplus(fake)


def generator_loss(fake_logits: Tensor) -> Tensor:
    """Per-sample non-saturating G loss ``softplus(-D(fake))``."""
    return F.softplus(-_logits("fake_logits", fake_logits))


def r1_penalty(real_logits: Tensor, real_inputs: Tensor, gamma: float) -> Tensor:
    """Per-sample R1 penalty ``(gamma / 2) ||d D(x) / d x||^2`` at the real inputs ``x``.

    ``real_inputs`` must require grad and ``real_logits`` must be computed from it. The
    gradient of the summed logits w.r.t. the inputs is per-sample exact when each logit depends
    on its own input only (no batch statistics in D).
    """
    if not isinstance(gamma, (int, float)) or isinstance(gamma, bool) or not gamma >= 0:
        raise ValueError(f"gamma must be a number >= 0, got {gamma!r}")
    real = _logits("real_logits", real_logits)
    if not real_inputs.requires_grad:
        raise ValueError(
            "real_inputs must require grad (call .requires_grad_() before the discriminator)"
        )
    if real_inputs.shape[0] != real.shape[0]:
        raise ValueError(
            f"real_inputs has {real_inputs.shape[0]} samples, real_logits {real.shape[0]}"
        )
    (grad,) = torch.autograd.grad(real.sum(), real_inputs, create_graph=True)
    return 0.5 * gamma * grad.flatten(1).pow(2).sum(dim=1)


def r1_weight(step: int, every: int = 1, rescale: bool = False) -> float:
    """Factor on the R1 penalty at optimizer step ``step`` (0-based) under lazy regularisation.

    ``every`` steps the penalty is on: weight ``every`` when ``rescale`` (StyleGAN2), else 1
    (DDGAN's CIFAR-10 setting); 0 on the other steps.
    """
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise ValueError(f"every must be an integer >= 1, got {every!r}")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"step must be an integer >= 0, got {step!r}")
    if step % every:
        return 0.0
    return float(every) if rescale else 1.0
