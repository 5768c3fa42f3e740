"""The data set's own classifier, whose features give ``FD-<dataset>`` (never FID).

:class:`DigitsClassifier` is a small CNN trained on the data set itself (scikit-learn digits,
MNIST, ...); a Fréchet distance on its penultimate-layer features is reported as
``FD-<dataset>`` (``FD-digits`` for scikit-learn digits, see
:attr:`DigitsClassifier.metric_name`). :func:`train_classifier` trains and saves one
(safetensors + JSON metadata with the weights' SHA-256); :func:`load_classifier` checks the
hash before use, so a reported number always names the exact network it came from.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import __version__
from ..train.checkpoint import CheckpointError, load_weights, save_weights
from ..train.progress import progress_bar
from .datasets import dataset_images
from .provenance import PathLike, weights_sha256

CLASSIFIER_KIND = "trilemma.DigitsClassifier"
CLASSIFIER_FORMAT = 1


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


# ------------------------------------------------------------------------------- training
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


def _check_training_args(steps: int, batch_size: int, lr: float) -> None:
    """Reject step counts, batch sizes and learning rates training cannot use."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")


def _rng_devices(dev: torch.device) -> list[int]:
    """CUDA devices whose RNG a forked RNG state must restore (none on the CPU)."""
    return [dev.index or 0] if dev.type == "cuda" else []


def _fit(
    model: DigitsClassifier, x: Tensor, y: Tensor, *, steps: int, batch_size: int, lr: float,
    weight_decay: float, shift: int, generator: torch.Generator, desc: str, progress: bool,
) -> float:
    """Adam with cosine decay over ``steps`` shuffled mini-batches; returns the last loss.

    Shuffles, shifts and dropout masks all come from ``generator``; the global RNG is untouched.
    """
    dev = next(model.parameters()).device
    rng_devices = _rng_devices(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, steps) / steps)))
    n = len(x)
    perm, pos = torch.randperm(n, generator=generator), 0
    model.train()
    bar = progress_bar(range(steps), desc=desc, disable=not progress)
    loss_val = float("nan")
    for _ in bar:
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=generator), 0
        idx = perm[pos : pos + batch_size]
        pos += batch_size
        xb = random_shift(x[idx], shift, generator).to(dev)
        yb = y[idx].to(dev)
        with torch.random.fork_rng(devices=rng_devices):  # dropout masks from the seed too
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
            loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_val = float(loss.detach())
        if progress:
            bar.set_postfix(loss=f"{loss_val:.4f}")
    return loss_val


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
    _check_training_args(steps, batch_size, lr)
    x_tr, y_tr = dataset_images(dataset_name, "train", image_size, data_root)
    x_te, y_te = dataset_images(dataset_name, "test", image_size, data_root)
    size, channels = int(x_tr.shape[-1]), int(x_tr.shape[1])
    num_classes = int(max(int(y_tr.max()), int(y_te.max())) + 1)
    shift = (1 if size <= 16 else 2) if max_shift is None else int(max_shift)
    if not augment:
        shift = 0
    dev = torch.device(device) if device is not None else torch.device("cpu")
    torch_gen = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=_rng_devices(dev)):  # init from the seed only
        torch.manual_seed(int(seed))
        model = DigitsClassifier(size, channels, num_classes, width, feature_dim,
                                 dataset_name, dropout).to(dev)
    t0 = time.perf_counter()
    loss_val = _fit(model, x_tr, y_tr, steps=steps, batch_size=batch_size, lr=lr,
                    weight_decay=weight_decay, shift=shift, generator=torch_gen,
                    desc=f"classifier {dataset_name}", progress=progress)
    train_seconds = time.perf_counter() - t0
    model.eval()
    acc = classifier_accuracy(model, x_te, y_te)
    sub = torch.randperm(len(x_tr), generator=torch.Generator().manual_seed(0))[:5000]
    train_acc = classifier_accuracy(model, x_tr[sub], y_tr[sub])  # at most 5000: cheap
    model.metadata = {
        "kind": CLASSIFIER_KIND, "format_version": CLASSIFIER_FORMAT, "dataset": dataset_name,
        "image_size": size, "channels": channels, "feature_dim": feature_dim,
        "config": model.config(), "test_accuracy": acc, "test_n": len(x_te),
        "train_accuracy": train_acc, "final_loss": loss_val, "steps": steps,
        "batch_size": batch_size, "lr": lr, "seed": int(seed), "max_shift": shift,
        "train_seconds": round(train_seconds, 3), "weights_sha256": model.fingerprint,
        "trilemma_version": __version__, "torch_version": torch.__version__,
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
                trilemma_version=__version__)
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
