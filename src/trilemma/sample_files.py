"""Sample files: ``.npz`` archives that hold the samples as they are scored, and one PNG per
image sample (``trilemma sample --out DIR/``).

Image samples are scored (``trilemma evaluate``) and drawn after clamping to the data range
[-1, 1]; points (toy data) are scored as they are. :func:`save_npz` stores ``samples`` the way
they are scored and says so in the archive: ``clamped`` (bool), ``data_range`` ([-1, 1] for
images, [nan, nan] for points), ``note`` (one sentence) and, for clamped images, the raw sampler
output as ``raw_samples``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .plots import save_image_files

#: the range image data live in (and samples are clamped to before scoring)
IMAGE_RANGE = (-1.0, 1.0)

__all__ = ["IMAGE_RANGE", "as_scored", "save_image_files", "save_npz"]


def as_scored(samples: Tensor) -> tuple[Tensor, bool]:
    """``(samples as the metrics see them, whether they were clamped)``: images ``(N, C, H,
    W)`` clamped to [-1, 1], points unchanged."""
    if samples.dim() == 4:
        return samples.clamp(*IMAGE_RANGE), True
    return samples, False


def save_npz(path: str | os.PathLike, samples: Tensor, *, compressed: bool = False,
             **extra: Any) -> Path:
    """Write ``samples`` as scored (see the module docstring) plus ``extra`` arrays."""
    scored, clamped = as_scored(samples.detach().cpu())
    if clamped:
        note = ("samples: clamped to the data range [-1, 1] as scored and drawn; raw_samples: "
                "the sampler's output before clamping")
        arrays = {"samples": scored.numpy(), "raw_samples": samples.detach().cpu().numpy()}
    else:
        note = "samples: the sampler's output, not clamped (points are scored as they are)"
        arrays = {"samples": scored.numpy()}
    arrays.update(clamped=np.bool_(clamped), note=np.str_(note),
                  data_range=np.array(IMAGE_RANGE if clamped else (np.nan, np.nan)))
    arrays.update(extra)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def count_nonfinite(samples: Tensor) -> int:
    """Number of samples with a non-finite coordinate."""
    return int((~torch.isfinite(samples.flatten(1))).any(dim=1).sum())
