"""Pictures of samples: image grids (Pillow) and point clouds (matplotlib), written as PNG.

:func:`save_samples` picks the picture from the shape: images ``(N, C, H, W)`` in [-1, 1] ->
a grid; points ``(N, 2)`` -> a scatter plot; ``(N, 1)`` -> a histogram; ``(N, d > 2)`` -> a
scatter of the first two coordinates.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

PathLike = str | os.PathLike


def _numpy(x: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    return np.asarray(x, dtype=np.float32)


def image_grid(
    images: Tensor | np.ndarray, nrow: int | None = None, padding: int = 1, min_tile: int = 32
) -> np.ndarray:
    """Tile ``(N, C, H, W)`` images in [-1, 1] into one uint8 ``(H', W', C)`` array.

    ``nrow`` images per row (default: about square); tiles smaller than ``min_tile`` pixels
    are enlarged by an integer nearest-neighbour factor so 8 x 8 digits stay visible.
    """
    x = _numpy(images)
    if x.ndim != 4 or x.shape[1] not in (1, 3) or len(x) == 0:
        raise ValueError(f"images must have shape (N, 1 or 3, H, W) with N >= 1, got {x.shape}")
    n, c, h, w = x.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    if isinstance(nrow, bool) or not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"nrow must be a positive integer, got {nrow!r}")
    scale = max(1, math.ceil(min_tile / max(h, w)))
    x = np.nan_to_num(x, nan=0.0)
    x = np.clip((x + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    if scale > 1:
        x = x.repeat(scale, axis=2).repeat(scale, axis=3)
        h, w = h * scale, w * scale
    ncol = nrow
    nrows = math.ceil(n / ncol)
    grid = np.full((nrows * (h + padding) + padding, ncol * (w + padding) + padding, c), 255,
                   dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + q * (w + padding)
        grid[top:top + h, left:left + w] = x[i].transpose(1, 2, 0)
    return grid


def save_image_grid(images: Tensor | np.ndarray, path: PathLike, nrow: int | None = None) -> Path:
    """Write a grid of ``(N, C, H, W)`` images in [-1, 1] as a PNG (see :func:`image_grid`)."""
    from PIL import Image

    grid = image_grid(images, nrow)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
    return path


def save_scatter(
    points: Tensor | np.ndarray,
    path: PathLike,
    title: str | None = None,
    reference: Tensor | np.ndarray | None = None,
    lim: float | None = None,
) -> Path:
    """Scatter plot of ``(N, d)`` points (first two coordinates; a histogram for ``d = 1``).

    ``reference`` points (e.g. training data) are drawn faintly underneath.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    x = _numpy(points)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"points must have shape (N, d) with N >= 1, got {x.shape}")
    ref = None if reference is None else _numpy(reference)
    finite = np.isfinite(x).all(axis=1)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    try:
        if x.shape[1] == 1:
            bins = 100
            if ref is not None:
                ax.hist(ref[:, 0], bins=bins, density=True, color="0.75", label="data")
            ax.hist(x[finite, 0], bins=bins, density=True, histtype="step", color="C0",
                    label="samples")
            ax.legend(loc="upper right", fontsize=8)
        else:
            if ref is not None:
                ax.scatter(ref[:, 0], ref[:, 1], s=1, color="0.8", linewidths=0)
            size = 2.0 if len(x) > 1000 else 5.0
            ax.scatter(x[finite, 0], x[finite, 1], s=size, color="C0", linewidths=0, alpha=0.7)
            ax.set_aspect("equal")
            if lim is None:
                pts = x[finite] if ref is None else np.concatenate([x[finite], ref[:, :2]])
                lim = float(np.quantile(np.abs(pts[:, :2]), 0.995)) * 1.1 if len(pts) else 1.0
                lim = lim if lim > 0 else 1.0
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
        n_bad = int((~finite).sum())
        label = title or ""
        if n_bad:
            label = f"{label}  ({n_bad} non-finite dropped)".strip()
        if label:
            ax.set_title(label, fontsize=9)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def save_samples(
    samples: Tensor | np.ndarray,
    path: PathLike,
    title: str | None = None,
    reference: Tensor | np.ndarray | None = None,
) -> Path:
    """Write samples as a PNG: a grid for images ``(N, C, H, W)``, a scatter for points."""
    x = _numpy(samples)
    if x.ndim == 4:
        return save_image_grid(x, path)
    if x.ndim == 2:
        return save_scatter(x, path, title=title, reference=reference)
    raise ValueError(f"samples must be points (N, d) or images (N, C, H, W), got shape {x.shape}")


def save_image_files(images: Tensor | np.ndarray, folder: PathLike, prefix: str = "sample_"
                     ) -> list[Path]:
    """Write each image of ``(N, C, H, W)`` in [-1, 1] as its own PNG at its own size
    (``folder/sample_00000.png``, ...; grayscale for C = 1, RGB for C = 3), values clamped to
    [-1, 1] and rounded to 8 bits as in :func:`image_grid`."""
    from PIL import Image

    x = _numpy(images)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError("one PNG per sample needs images (N, 1 or 3, H, W), got shape "
                         f"{x.shape}; write a .png plot or an .npz instead")
    x = np.clip((np.nan_to_num(x, nan=0.0) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(len(x) - 1)))
    paths = []
    for i, img in enumerate(x):
        arr = img[0] if img.shape[0] == 1 else np.ascontiguousarray(img.transpose(1, 2, 0))
        path = folder / f"{prefix}{i:0{width}d}.png"
        Image.fromarray(arr).save(path)  # uint8 (H, W): L; (H, W, 3): RGB
        paths.append(path)
    return paths
