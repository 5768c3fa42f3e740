"""Image data sets, all returned as float32 ``(N, C, H, W)`` in ``[-1, 1]`` plus int64 labels.

- :func:`load_digits`: scikit-learn's 8 x 8 digits (ships offline), 0..16 mapped to [-1, 1],
  optionally resized (bilinear by default: a convex combination, so values stay in [-1, 1]).
- :func:`load_image_folder`: PNG/JPEG files (Pillow), shorter side resized with antialiased
  bicubic interpolation, centre-cropped to a square.
- :func:`load_idx_images` / :func:`load_idx_labels` / :func:`load_mnist`: MNIST and
  Fashion-MNIST IDX files, plain or gzipped (detected from the content, not the name).
- :func:`load_cifar10`: CIFAR-10 binary batches (3073-byte records).
- :func:`binarize`: deterministic or stochastic binarisation (for LSGM's binary data).

Every loader reads from a path the user gives; none knows where a data set lives.
"""

from __future__ import annotations

import gzip
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

PathLike = str | os.PathLike

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _to_unit_range(x: np.ndarray | Tensor, max_value: float) -> Tensor:
    """Map integer intensities ``0..max_value`` to float32 ``[-1, 1]``."""
    xt = x.to(torch.float32) if isinstance(x, Tensor) else torch.from_numpy(
        np.array(x, dtype=np.float32)  # a writable copy (IDX buffers are read-only)
    )
    return (xt * (2.0 / max_value) - 1.0).contiguous()


def _split_indices(n: int, split: str, test_fraction: float, seed: int) -> Tensor:
    """Indices of a fixed random train/test split (``split`` in train, test, all)."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if split == "all":
        return torch.arange(n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    n_test = int(round(n * test_fraction))
    return perm[n_test:].sort().values if split == "train" else perm[:n_test].sort().values


# --------------------------------------------------------------------------- scikit-learn digits
def load_digits(
    split: str = "train",
    size: int = 8,
    mode: str = "bilinear",
    test_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """scikit-learn's digits as ``(N, 1, size, size)`` in [-1, 1] and int64 labels.

    ``split``: 'train', 'test' or 'all'; the split is a random permutation fixed by ``seed``
    (default: 1438 train / 359 test). ``size`` != 8 resizes with ``mode`` ('bilinear' or
    'nearest'; bilinear uses ``align_corners=False`` and stays inside [-1, 1]).
    """
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("load_digits needs scikit-learn: pip install scikit-learn") from err
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    bunch = _sk_load_digits()
    images = _to_unit_range(bunch.images, 16.0)[:, None]  # (1797, 1, 8, 8)
    labels = torch.as_tensor(bunch.target, dtype=torch.long)
    idx = _split_indices(len(labels), split, test_fraction, seed)
    images, labels = images[idx], labels[idx]
    if size != 8:
        kw = {"align_corners": False} if mode == "bilinear" else {}
        images = F.interpolate(images, size=(size, size), mode=mode, **kw).clamp(-1, 1)
    return images.contiguous(), labels


# --------------------------------------------------------------------------- image folders
def _pil():
    """Import Pillow lazily (an optional dependency) with a clear message when absent."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("image folders need Pillow: pip install pillow") from err
    return Image, UnidentifiedImageError


def _channel_kind(mode: str) -> int:
    """1 for grayscale PIL modes, 3 for colour ones (alpha is dropped)."""
    return 1 if mode in ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F", "La") else 3


def _parse_channels(mode: str | int | None) -> int | None:
    if mode is None:
        return None
    aliases = {"l": 1, "gray": 1, "grey": 1, "grayscale": 1, "greyscale": 1, "1": 1,
               "rgb": 3, "3": 3}
    key = str(mode).lower()
    if key not in aliases:
        raise ValueError(
            f"mode must be None (infer), 'grayscale'/'L'/1 or 'rgb'/'RGB'/3, got {mode!r}"
        )
    return aliases[key]


def _read_image(path: Path, channels: int) -> Tensor:
    """Decode one file to float32 ``(C, H, W)`` in [0, 1]; a clear error names the file."""
    Image, UnidentifiedImageError = _pil()

    try:
        with Image.open(path) as img:
            img.load()  # Image.open is lazy: decode now so truncated files fail here
            if channels == 1:
                if img.mode.startswith("I;16"):
                    arr = np.asarray(img, dtype=np.float64) / 65535.0
                elif img.mode == "I":  # 32-bit: 16-bit PNGs in older Pillow; guess the range
                    arr = np.asarray(img, dtype=np.float64)
                    arr = arr / (255.0 if arr.max(initial=0) <= 255 else 65535.0)
                elif img.mode == "F":  # float images are taken to be in [0, 1]
                    arr = np.asarray(img, dtype=np.float64)
                else:
                    arr = np.asarray(img.convert("L"), dtype=np.float64) / 255.0
                arr = arr[None]
            else:
                arr = np.asarray(img.convert("RGB"), dtype=np.float64).transpose(2, 0, 1) / 255.0
    except Image.DecompressionBombError as err:
        raise ValueError(f"cannot read image file {path}: {err} Shrink it or remove it from "
                         "the folder") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot read image file {path}: {err}") from err
    return torch.from_numpy(np.clip(arr, 0.0, 1.0).astype(np.float32))


def _resize_crop(img: Tensor, size: int) -> Tensor:
    """Resize the shorter side to ``size`` (antialiased bicubic) and centre-crop a square."""
    _, h, w = img.shape
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        img = F.interpolate(img[None], size=(nh, nw), mode="bicubic", align_corners=False,
                            antialias=True)[0].clamp(0, 1)
    top, left = (nh - size) // 2, (nw - size) // 2
    return img[:, top : top + size, left : left + size]


def list_images(path: PathLike, recursive: bool = False) -> list[Path]:
    """Sorted image files (by extension) in a folder; errors for a missing or empty folder."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"image folder {root} is not a directory")
    pattern = "**/*" if recursive else "*"
    files = sorted(
        p for p in root.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not files:
        raise ValueError(
            f"image folder {root} holds no image files (extensions {', '.join(IMAGE_EXTENSIONS)})"
        )
    return files


@dataclass(frozen=True)
class FolderSource:
    """An image folder and how it is split (the keys of a ``data: {name: folder}`` section that
    fix which files each split holds); ``str()`` names it in provenance records."""

    path: str
    test_fraction: float = 0.1
    seed: int = 0
    mode: str | int | None = None
    recursive: bool = False

    def __str__(self) -> str:
        return (f"{self.path} (test_fraction {self.test_fraction}, seed {self.seed}"
                + (f", mode {self.mode}" if self.mode is not None else "")
                + (", recursive" if self.recursive else "") + ")")

    def load(self, split: str, size: int) -> Tensor:
        """The ``split`` of the folder at ``size`` (see :func:`load_image_folder`)."""
        return load_image_folder(self.path, size, mode=self.mode, recursive=self.recursive,
                                 split=split, test_fraction=self.test_fraction, seed=self.seed)


def split_files(files: Sequence[Path], split: str = "all", test_fraction: float = 0.1,
                seed: int = 0) -> list[Path]:
    """The ``split`` ('train', 'test' or 'all') of a sorted file list: a held-out fraction
    ``test_fraction`` picked by a permutation seeded with ``seed`` (at least one file each)."""
    if split == "all":
        return list(files)
    idx = _split_indices(len(files), split, test_fraction, seed)
    if len(idx) == 0 or len(idx) == len(files):
        raise ValueError(f"{len(files)} image(s) cannot be split with test_fraction "
                         f"{test_fraction}: both splits need at least one image")
    return [files[int(i)] for i in idx]


def load_image_folder(
    path: PathLike, size: int, mode: str | int | None = None, recursive: bool = False,
    split: str = "all", test_fraction: float = 0.1, seed: int = 0,
) -> Tensor:
    """The images of a folder as float32 ``(N, C, size, size)`` in [-1, 1], sorted by name.

    ``mode``: 'grayscale' (C = 1), 'rgb' (C = 3), or None to infer C from the files, which
    must then agree (an error names one file of each kind otherwise). Alpha is dropped.
    ``split``: 'all' (default), or 'train' / 'test' for the files left after / held out by a
    seeded random ``test_fraction`` (see :func:`split_files`).
    """
    Image, UnidentifiedImageError = _pil()

    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    channels = _parse_channels(mode)
    files = split_files(list_images(path, recursive), split, test_fraction, seed)
    if channels is None:
        kinds: dict[int, Path] = {}
        for f in files:
            try:
                with Image.open(f) as img:
                    kinds.setdefault(_channel_kind(img.mode), f)
            except Image.DecompressionBombError as err:
                raise ValueError(f"cannot read image file {f}: {err} Shrink it or remove it "
                                 "from the folder") from None
            except (OSError, UnidentifiedImageError, SyntaxError) as err:
                raise ValueError(f"cannot read image file {f}: {err}") from err
        if len(kinds) > 1:
            raise ValueError(
                f"images in {path} have inconsistent channels: {kinds[1].name} is grayscale but "
                f"{kinds[3].name} is colour; pass mode='grayscale' or mode='rgb' to convert"
            )
        channels = next(iter(kinds))
    out = torch.empty(len(files), channels, size, size, dtype=torch.float32)
    for i, f in enumerate(files):
        out[i] = _resize_crop(_read_image(f, channels), size)
    return out * 2.0 - 1.0


# --------------------------------------------------------------------------- IDX (MNIST)
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: PathLike) -> bytes:
    """File content, gunzipped when it starts with the gzip magic bytes."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"file {p} does not exist")
    raw = p.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise ValueError(f"{p} is not a valid gzip file: {err}") from err
    return raw


def read_idx(path: PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Parse an IDX file (plain or gzipped) into a numpy array, checking magic and length."""
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"{path} is too short ({len(raw)} bytes) to be an IDX file")
    magic = int.from_bytes(raw[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(
            f"{path}: magic number {magic} (0x{magic:08x}), expected {expected_magic} "
            f"(0x{expected_magic:08x}); is this the right file?"
        )
    dtype_code, ndim = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or dtype_code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(f"{path}: magic number 0x{magic:08x} is not a valid IDX header")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path} is truncated: {len(raw)} bytes, header alone needs {header}")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dtype = _IDX_DTYPES[dtype_code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{path}: {len(raw)} bytes, but its header (dims {dims}) implies {expected}; "
            "the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def load_idx_images(path: PathLike) -> Tensor:
    """IDX image file (magic 2051, uint8) as float32 ``(N, 1, H, W)`` in [-1, 1]."""
    arr = read_idx(path, expected_magic=2051)
    if arr.ndim != 3:  # pragma: no cover - magic 2051 fixes ndim = 3
        raise ValueError(f"{path}: expected (N, H, W) images, got dims {arr.shape}")
    return _to_unit_range(arr, 255.0)[:, None]


def load_idx_labels(path: PathLike) -> Tensor:
    """IDX label file (magic 2049, uint8) as int64 ``(N,)``."""
    arr = read_idx(path, expected_magic=2049)
    return torch.from_numpy(arr.astype(np.int64))


def _find(root: Path, names: Sequence[str]) -> Path:
    for n in names:
        for cand in (root / n, root / (n + ".gz")):
            if cand.is_file():
                return cand
    raise FileNotFoundError(
        f"none of {', '.join(names)} (optionally .gz) found in {root}"
    )


def load_mnist(root: PathLike, split: str = "train") -> tuple[Tensor, Tensor]:
    """MNIST or Fashion-MNIST from a folder of the four standard IDX files (plain or .gz).

    Accepts both spellings ``train-images-idx3-ubyte`` and ``train-images.idx3-ubyte``
    (``t10k-`` for ``split='test'``). Returns ``(N, 1, 28, 28)`` in [-1, 1] and int64 labels.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    rootp = Path(root)
    if not rootp.is_dir():
        raise FileNotFoundError(f"MNIST folder {rootp} does not exist")
    prefix = "train" if split == "train" else "t10k"
    img_path = _find(rootp, [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"])
    lab_path = _find(rootp, [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"])
    return load_idx(img_path, lab_path)


def load_idx(images: PathLike, labels: PathLike | None = None) -> tuple[Tensor, Tensor | None]:
    """An IDX image file and (optionally) its label file; the counts must agree."""
    x = load_idx_images(images)
    if labels is None:
        return x, None
    y = load_idx_labels(labels)
    if len(y) != len(x):
        raise ValueError(f"{images} holds {len(x)} images but {labels} holds {len(y)} labels")
    return x, y


# --------------------------------------------------------------------------- CIFAR-10
_CIFAR_RECORD = 1 + 3 * 32 * 32


def _batch_number(p: Path) -> int:
    m = re.search(r"(\d+)", p.stem)
    return int(m.group(1)) if m else 0


def load_cifar10(root: PathLike, split: str = "train") -> tuple[Tensor, Tensor]:
    """CIFAR-10 binary version: ``data_batch_*.bin`` (train) or ``test_batch.bin`` (test).

    ``root`` may be the ``cifar-10-batches-bin`` folder or its parent. Each record is one
    label byte and 3072 pixel bytes (R, G, B planes, row-major). Returns ``(N, 3, 32, 32)``
    in [-1, 1] and int64 labels.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    rootp = Path(root)
    if not rootp.is_dir():
        raise FileNotFoundError(f"CIFAR-10 folder {rootp} does not exist")
    if (rootp / "cifar-10-batches-bin").is_dir():
        rootp = rootp / "cifar-10-batches-bin"
    if split == "train":
        files = sorted(rootp.glob("data_batch_*.bin"), key=_batch_number)
        if not files:
            raise FileNotFoundError(f"no data_batch_*.bin files in {rootp}")
    else:
        files = [rootp / "test_batch.bin"]
        if not files[0].is_file():
            raise FileNotFoundError(f"test_batch.bin not found in {rootp}")
    xs, ys = [], []
    for f in files:
        raw = f.read_bytes()
        if len(raw) == 0 or len(raw) % _CIFAR_RECORD:
            raise ValueError(
                f"{f}: {len(raw)} bytes is not a positive multiple of the {_CIFAR_RECORD}-byte "
                "CIFAR-10 record (1 label byte + 3072 pixel bytes)"
            )
        rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
        labels = rec[:, 0].astype(np.int64)
        if labels.max() > 9:
            raise ValueError(f"{f}: label byte {int(labels.max())} > 9; not a CIFAR-10 batch")
        xs.append(rec[:, 1:].reshape(-1, 3, 32, 32))
        ys.append(labels)
    return _to_unit_range(np.concatenate(xs), 255.0), torch.from_numpy(np.concatenate(ys))


# --------------------------------------------------------------------------- binarisation
def binarize(
    x: Tensor,
    mode: str = "threshold",
    generator: torch.Generator | None = None,
    threshold: float = 0.5,
    zero_one: bool = False,
) -> Tensor:
    """Binarise images in [-1, 1] (intensity ``p = (x + 1) / 2``) to {-1, 1} (or {0, 1}).

    ``mode='threshold'``: ``p > threshold``, deterministic. ``mode='stochastic'``: each pixel
    is 1 with probability ``p``, drawn from ``generator`` (call it per batch for dynamic
    binarisation).
    """
    p = ((x.to(torch.float32) + 1) / 2).clamp(0, 1)
    if mode == "threshold":
        b = (p > threshold).to(torch.float32)
    elif mode == "stochastic":
        dev = generator.device if generator is not None else p.device
        u = torch.rand(p.shape, generator=generator, device=dev, dtype=torch.float32)
        b = (u.to(p.device) < p).to(torch.float32)
    else:
        raise ValueError(f"mode must be 'threshold' or 'stochastic', got {mode!r}")
    return b if zero_one else b * 2 - 1
