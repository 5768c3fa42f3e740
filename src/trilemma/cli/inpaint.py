"""``trilemma inpaint``: complete images of a trained run where a mask hides them.

Images and masks come from PNG or ``.npz`` files (checked against the run's data shape and
range, every error naming the flag and the fix); the mask may also be a preset of
:mod:`trilemma.masks`. The output is a PNG grid (rows: masked inputs, completions, originals) or
an ``.npz`` with the completions, inputs, mask and the true NFE.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..inpainting import inpaint
from ..masks import make_mask, masked_view
from ..plots import save_image_grid
from ..samplers.inpaint import REFUSED, STEPS, is_sound
from ..setup import ConfigError, load_run, make_generator, parse_override
from .commands import CLIError, _device, _positive, _set_threads

__all__ = ["cmd_inpaint", "read_image", "read_mask"]

def _to_unit(arr: np.ndarray, flag: str) -> Tensor:
    """uint8 to [-1, 1]; floats checked to lie in [-1, 1]."""
    if arr.dtype == np.uint8:
        return torch.from_numpy(arr.astype(np.float32) / 127.5 - 1.0)
    if not np.issubdtype(arr.dtype, np.floating):
        raise CLIError(f"{flag}: array of dtype {arr.dtype}; give float images in [-1, 1] or "
                       "uint8 in 0..255")
    if not np.isfinite(arr).all():
        raise CLIError(f"{flag}: the array has non-finite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1.0 - 1e-4 or hi > 1.0 + 1e-4:
        raise CLIError(f"{flag}: values span [{lo:g}, {hi:g}]; images must lie in [-1, 1] "
                       "(map 8-bit data with x / 127.5 - 1)")
    return torch.from_numpy(arr.astype(np.float32))


def _read_array(path: Path, flag: str, keys: tuple[str, ...]) -> np.ndarray:
    """The image/mask array of a PNG or npz file."""
    if not path.is_file():
        raise CLIError(f"{flag}: no such file {str(path)!r}")
    suffix = path.suffix.lower()
    if suffix == ".png":
        from PIL import Image

        with Image.open(path) as img:
            if img.mode not in ("L", "RGB", "1", "LA", "RGBA", "P"):
                raise CLIError(f"{flag}: PNG mode {img.mode}; save it as 8-bit grey or RGB")
            arr = np.asarray(img.convert("RGB" if img.mode in ("RGB", "RGBA", "P") else "L"))
        return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    if suffix != ".npz":
        raise CLIError(f"{flag}: {str(path)!r} is neither .png nor .npz")
    with np.load(path) as data:
        names = list(data.files)
        key = next((k for k in keys if k in names), names[0] if len(names) == 1 else None)
        if key is None:
            raise CLIError(f"{flag}: {str(path)!r} holds {names}; save one array, or name it "
                           f"{keys[0]!r}")
        return np.asarray(data[key])


def _fit_shape(arr: np.ndarray, shape: tuple[int, ...], flag: str) -> np.ndarray:
    """``(B, C, H, W)`` from ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` of the run's shape."""
    c, h, w = shape
    if arr.ndim == 2 and c == 1:
        arr = arr[None]
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim == 4 and arr.shape[1] == 3 and c == 1:
        raise CLIError(f"{flag}: RGB image for a model of grey images; convert it to grey "
                       "(one channel)")
    if arr.ndim != 4 or tuple(arr.shape[1:]) != (c, h, w):
        raise CLIError(f"{flag}: shape {tuple(arr.shape)}; the run's images are {c}x{h}x{w} "
                       f"(C x H x W): resize or convert it to {h}x{w} with {c} channel(s)")
    return arr


def read_image(path: str | Path, shape: tuple[int, ...], flag: str = "--image") -> Tensor:
    """Images ``(B, C, H, W)`` in [-1, 1] from a PNG or npz file, checked against ``shape``."""
    arr = _read_array(Path(path), flag, ("images", "x", "samples"))
    return _to_unit(_fit_shape(arr, shape, flag), flag)


def read_mask(text: str, shape: tuple[int, ...], seed: int = 0,
              flag: str = "--mask") -> Tensor:
    """A mask (1 = known) from a preset name or a PNG/npz file, of shape ``(B or 1, C, H, W)``."""
    path = Path(text)
    if path.suffix.lower() not in (".png", ".npz") and not path.exists():
        try:
            return make_mask(text, shape, seed)[None]
        except ValueError as err:
            raise CLIError(f"{flag}: {err}; or give a PNG/.npz mask file") from None
    arr = _read_array(path, flag, ("mask",))
    if path.suffix.lower() == ".png":
        arr = (arr > 127).astype(np.float32)  # white = known
    elif not np.isin(arr, (0, 1)).all():
        raise CLIError(f"{flag}: npz masks hold only 0 (to fill) and 1 (known)")
    c = shape[0]
    if arr.ndim >= 3 and arr.shape[-3] == 1 and c > 1:
        arr = np.repeat(arr, c, axis=-3)
    return torch.from_numpy(_fit_shape(arr.astype(np.float32), shape, flag))


def _options(texts: list[str]) -> dict:
    options = {}
    for text in texts:
        try:
            key, value = parse_override(text)
        except ConfigError as err:
            raise CLIError(str(err).replace("override", "--opt", 1)) from None
        options[".".join(key)] = value
    return options


def cmd_inpaint(args: argparse.Namespace) -> int:
    """``trilemma inpaint``: read image and mask, complete, write the grid or the npz."""
    _set_threads(args.threads)
    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".npz"):
        raise CLIError(f"--out must end in .png or .npz, got {args.out!r}")
    for flag in ("--nfe", "--n"):
        _positive(flag, getattr(args, flag[2:]))
    if args.resample < 0:
        raise CLIError(f"--resample must be 0 or more, got {args.resample}")
    _positive("--jump", args.jump)
    device = _device(args.device)
    model, _config, saved = load_run(args.run, device)
    if model.name != "score" or len(model.data_shape) != 3:
        raise CLIError(f"{args.run}: inpainting needs a score run on images (method 'score', "
                       f"data (C, H, W)), this run is method {model.name!r} with data shape "
                       f"{tuple(model.data_shape)}")
    shape = tuple(model.data_shape)
    image = read_image(args.image, shape)
    mask = read_mask(args.mask, shape, args.seed)
    if mask.shape[0] not in (1, image.shape[0]):
        raise CLIError(f"--mask: {mask.shape[0]} masks for {image.shape[0]} images; give one "
                       "mask, or one per image")
    if args.sampler not in STEPS and args.sampler not in REFUSED:
        raise CLIError(f"--sampler: unknown sampler {args.sampler!r}; use one of: "
                       + ", ".join(STEPS))
    options = _options(args.options)
    try:
        res = inpaint(model, image, mask, sampler=args.sampler, nfe=args.nfe,
                      resample=args.resample, jump=args.jump, n=args.n,
                      generator=make_generator(args.seed, device), **options)
    except ValueError as err:
        key, _, msg = str(err).partition(": ")
        flag = {"sampler": "--sampler", "nfe": "--nfe", "options": "--opt", "jump": "--jump"}
        where = "--opt" if options else f"--sampler {args.sampler}"
        raise CLIError(f"{flag[key]}: {msg}" if key in flag else f"{where}: {err}") from None
    _write(out, res, image, args)
    known = res.info["mask"]
    x0 = image.to(res.samples.device).repeat_interleave(args.n, dim=0)
    known = known.expand_as(x0)
    mse = float(((res.samples - x0) ** 2 * known).sum() / known.sum().clamp_min(1))
    kind = "sound" if is_sound(args.sampler, options) else "heuristic (deterministic sampler)"
    print(f"{image.shape[0]} image(s) x {args.n} completion(s) from {saved.weights} (step "
          f"{saved.step}) with {args.sampler}, resample {args.resample}, jump {args.jump} "
          f"[{kind}]: NFE {res.nfe} ({res.info['reverse_steps']} reverse steps on a "
          f"{res.info['steps']}-step grid); known-pixel MSE {mse:.3g} -> {out}")
    return 0


def _write(out: Path, res: Any, image: Tensor, args: argparse.Namespace) -> None:
    """The PNG grid (one column per completion) or the npz."""
    mask = res.info["mask"].cpu()
    x0 = image.repeat_interleave(args.n, dim=0)
    samples = res.samples.detach().cpu().clamp(-1, 1)
    masked = masked_view(x0, mask)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".npz":
        np.savez(out, samples=samples.numpy(), masked=masked.numpy(), originals=x0.numpy(),
                 mask=mask.expand_as(x0).numpy(), nfe=np.int64(res.nfe),
                 sampler=np.str_(args.sampler), resample=np.int64(args.resample),
                 jump=np.int64(args.jump), seed=np.int64(args.seed))
        return
    cols = min(samples.shape[0], 16)
    rows = torch.cat([masked[:cols], samples[:cols], x0[:cols]])
    save_image_grid(rows, out, nrow=cols)
