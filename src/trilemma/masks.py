"""Inpainting masks by name: 1 marks a known pixel, 0 one to generate.

A preset names the region to fill in: ``left``, ``right``, ``top``, ``bottom`` (a half),
``center`` (the centre square of half the side), ``random`` or ``random:P`` (P% of the pixels,
default 50, drawn with ``seed``) and ``outpaint`` or ``outpaint:W`` (a border of width W pixels,
default a quarter of the shorter side: outpainting). Masks cover every channel of a pixel.
"""

from __future__ import annotations

import torch
from torch import Tensor

PRESETS = ("left", "right", "top", "bottom", "center", "random", "outpaint")

__all__ = ["PRESETS", "make_mask", "masked_view"]


def _argument(preset: str) -> tuple[str, float | None]:
    name, _, arg = preset.partition(":")
    name = "center" if name == "centre" else name
    if name not in PRESETS:
        raise ValueError(f"unknown mask preset {preset!r}; valid: " + ", ".join(PRESETS)
                         + " (random:P for P% of the pixels, outpaint:W for a W-pixel border)")
    if not arg:
        return name, None
    if name not in ("random", "outpaint"):
        raise ValueError(f"mask preset {name!r} takes no ':' argument, got {preset!r}")
    try:
        value = float(arg)
    except ValueError:
        raise ValueError(f"mask preset {preset!r}: {arg!r} is not a number") from None
    return name, value


def make_mask(preset: str, shape: tuple[int, ...], seed: int = 0) -> Tensor:
    """The float32 mask (1 = known) of an image shape ``(C, H, W)`` for a named preset."""
    if len(shape) != 3 or any(int(s) < 1 for s in shape):
        raise ValueError(f"mask presets need an image shape (C, H, W), got {tuple(shape)}; "
                         "for other data pass the mask as a tensor")
    c, h, w = (int(s) for s in shape)
    name, arg = _argument(preset)
    known = torch.ones(h, w)
    rows, cols = torch.arange(h)[:, None], torch.arange(w)[None, :]
    if name == "left":
        known[:, : w // 2] = 0
    elif name == "right":
        known[:, w // 2:] = 0
    elif name == "top":
        known[: h // 2] = 0
    elif name == "bottom":
        known[h // 2:] = 0
    elif name == "center":
        sh, sw = max(1, h // 2), max(1, w // 2)
        r0, c0 = (h - sh) // 2, (w - sw) // 2
        known[r0:r0 + sh, c0:c0 + sw] = 0
    elif name == "random":
        p = 50.0 if arg is None else arg
        if not 0 < p < 100:
            raise ValueError(f"mask preset random:P needs 0 < P < 100 (percent hidden), got {p}")
        gen = torch.Generator().manual_seed(int(seed))
        hidden = torch.randperm(h * w, generator=gen)[: max(1, round(h * w * p / 100))]
        known.view(-1)[hidden] = 0
    else:
        width = max(1, min(h, w) // 4) if arg is None else int(arg)
        if arg is not None and (width != arg or not 1 <= width < (min(h, w) + 1) // 2):
            raise ValueError(f"mask preset outpaint:W needs a whole W in [1, "
                             f"{(min(h, w) + 1) // 2 - 1}] for {h}x{w} images, got {arg:g}")
        inner = (rows >= width) & (rows < h - width) & (cols >= width) & (cols < w - width)
        known = inner.to(torch.float32)
    return known.expand(c, h, w).clone()


def masked_view(x: Tensor, mask: Tensor, fill: float = 0.0) -> Tensor:
    """``x`` with the unknown pixels set to ``fill`` (for drawing the masked inputs: mid-grey
    on the [-1, 1] scale, distinct from the black background of digits)."""
    return mask * x + (1.0 - mask) * fill
