"""Inpainting and outpainting with a trained score model: :func:`inpaint` (``trilemma.inpaint``).

The math and the sampler loop live in :mod:`trilemma.samplers.inpaint` (replacement plus
RePaint resampling, REFERENCE.md §9.3); this module takes a model, images and a mask (a tensor or
a preset name of :mod:`trilemma.masks`) and returns the completions::

    model = trilemma.load("runs/digits_vp")
    res = trilemma.inpaint(model, images, "right", sampler="em", nfe=200, resample=1)
    res.samples          # (B * n, C, H, W): known pixels equal the images exactly
    res.nfe              # every score call, resampling included
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .masks import make_mask
from .methods.base import Method
from .samplers.base import SampleResult
from .samplers.inpaint import inpaint as run_inpaint

__all__ = ["inpaint", "prepare_inputs"]


def prepare_inputs(model: Method, image: Tensor, mask: Tensor | str, n: int = 1,
                   seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(x0, mask)``: the images batched and repeated ``n`` times each (image-major), the mask
    built from a preset (with ``seed``) or checked, both on the model's device and dtype."""
    shape = tuple(model.data_shape)
    if not isinstance(image, Tensor):
        raise TypeError(f"image must be a torch.Tensor, got {type(image).__name__}")
    if tuple(image.shape) == shape:
        image = image[None]
    if tuple(image.shape[1:]) != shape:
        raise ValueError(f"image has shape {tuple(image.shape)}; the model's data have shape "
                         f"{shape} (one image) or (B, {', '.join(map(str, shape))})")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (completions per image) must be a positive integer, got {n!r}")
    if isinstance(mask, str):
        mask = make_mask(mask, shape, seed)
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a tensor or a preset name, got {type(mask).__name__}")
    if tuple(mask.shape) == shape:
        mask = mask[None]
    if mask.dim() != image.dim() or mask.shape[0] not in (1, image.shape[0]):
        raise ValueError(f"mask has shape {tuple(mask.shape)}; it needs the data shape {shape} "
                         f"or one mask per image, ({image.shape[0]}, ...)")
    param = next(model.parameters())
    x0 = image.to(param.device, param.dtype).repeat_interleave(n, dim=0)
    mask = mask.to(param.device, param.dtype)
    if mask.shape[0] > 1:
        mask = mask.repeat_interleave(n, dim=0)
    return x0, mask


@torch.no_grad()
def inpaint(
    model: Method,
    image: Tensor,
    mask: Tensor | str,
    sampler: str = "em",
    nfe: int = 200,
    resample: int = 0,
    jump: int = 1,
    n: int = 1,
    generator: torch.Generator | None = None,
    seed: int = 0,
    **opts: Any,
) -> SampleResult:
    """Complete ``image`` where ``mask`` is 0, ``n`` times per image.

    Args:
        model: a trained data-space score model (``trilemma.load`` of a ``score`` run).
        image: one image of the model's data shape, or a batch ``(B, ...)``.
        mask: 1 = known, of the data shape (or one per image), or a preset name
            (:data:`trilemma.masks.PRESETS`: ``right``, ``center``, ``random:50``, ``outpaint``).
        sampler: ``em``, ``pc``, ``euler``/``heun``/``rk4`` (every process), ``ddim`` (VP,
            sub-VP, VE) or ``sscs`` (CLD); the deterministic ones (DDIM with ``eta = 0``, the
            ODE steps) are heuristics, see docs/GUIDE.md.
        nfe: total budget of score calls, resampling and the denoising call included.
        resample, jump: RePaint's resampling count and jump length (grid steps).
        seed: the seed of a ``random`` mask preset (the noise comes from ``generator``).
        opts: sampler options (``eta`` for DDIM, ``n_corrector`` for PC, ``grid``, ``denoise``).

    Returns the :class:`~trilemma.samplers.SampleResult`; ``samples`` equal ``image`` on the
    known pixels, ``info['mask']`` is the mask used.
    """
    process = getattr(model, "process", None)
    if model.name != "score" or process is None:
        raise ValueError(f"inpainting needs a data-space score model (method 'score'), got "
                         f"method {model.name!r}")
    x0, mask_t = prepare_inputs(model, image, mask, n, seed)
    was_training = model.training
    model.eval()
    try:
        res = run_inpaint(sampler, model.score_fn(), process, x0, mask_t, nfe,
                          resample=resample, jump=jump, generator=generator, **opts)
    finally:
        model.train(was_training)
    res.info["mask"] = mask_t
    return res
