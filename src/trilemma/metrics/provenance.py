"""Names and fingerprints that tie a reported number to what produced it.

A Fréchet distance is called ``FID`` only on the standard Inception-v3 features and
``FD-<dataset>`` on a classifier's; the SHA-256 helpers fingerprint weights, weight files and
reference data so a reported number always names the exact network and images behind it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

import torch
from torch import Tensor, nn

#: what a Fréchet distance on digits-classifier features is called in reports (never "FID")
FD_DIGITS = "FD-digits"
#: the name FID is reserved for the standard Inception-v3 features
FID_NAME = "FID"

PathLike = str | os.PathLike


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


def data_sha256(x: Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes (provenance of reference data)."""
    c = x.detach().to("cpu").contiguous()
    h = hashlib.sha256(f"{c.dtype}|{tuple(c.shape)}".encode())
    if c.numel():
        h.update(c.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
