"""Timed, batched sampling: what ``trilemma evaluate`` and ``trilemma sample`` share.

:func:`timed_sample` draws ``n`` samples from one seeded stream in batches, with
``torch.cuda.synchronize`` around each batch on CUDA, and records the NFE each batch used (as
the method counted it), wall seconds and peak memory. With ``warmup=True`` (evaluate) the first
batch is an untimed warm-up whose samples are kept (they come from the same stream) and whose
peak memory is measured; when ``n`` fits in one batch one extra batch is drawn from the seed
plus one (discarded) to be timed. With ``warmup=False`` (``trilemma sample``) every batch is
timed. ``precision="bf16"`` runs the sampler under bfloat16 autocast on the model's device (CPU
or CUDA): the network's matrix products and convolutions in bf16, the sampler's own state
updates in float32 (autocast leaves elementwise arithmetic alone); samples are returned as
float32 either way.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from ..train.progress import progress_bar
from .memory import PeakMemory

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..methods.base import Method


#: sampling precisions (:func:`timed_sample`'s ``precision``)
PRECISIONS = ("fp32", "bf16")


def precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` for ``precision="bf16"``, nothing for ``"fp32"``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class TimedSamples:
    """Samples and how they were drawn (see the module docstring)."""

    samples: Tensor  # (n, ...) float32 on the CPU
    nfes: list[int]  # network calls of every drawn batch (a discarded timing batch included)
    steps: int | None  # the sampler's steps when it reports them
    seconds: float  # wall seconds of the timed batches
    timed_samples: int  # samples in the timed batches
    batch_sizes: list[int] = field(default_factory=list)  # of the kept batches
    warmup_seconds: float | None = None  # the untimed first batch (None without warm-up)
    peak_memory_bytes: int | None = None
    memory_method: str = ""
    precision: str = "fp32"

    @property
    def nfe(self) -> int | float:
        """NFE per batch: the common value, or the mean when batches differ (adaptive ODE)."""
        return self.nfes[0] if len(set(self.nfes)) == 1 else float(np.mean(self.nfes))

    @property
    def nfe_max(self) -> int:
        """The most network calls any batch used."""
        return max(self.nfes)

    @property
    def seconds_per_sample(self) -> float:
        """Wall seconds per timed sample."""
        return self.seconds / self.timed_samples

    def record(self) -> dict[str, Any]:
        """The speed fields of an evaluation row (``results.json`` keys)."""
        peak = self.peak_memory_bytes
        return {
            "nfe": self.nfe, "nfe_min": min(self.nfes), "nfe_max": self.nfe_max,
            "steps": self.steps, "seconds_per_sample": self.seconds_per_sample,
            "samples_per_second": self.timed_samples / self.seconds if self.seconds > 0
            else None,
            "timed_samples": self.timed_samples, "timed_seconds": self.seconds,
            "warmup_seconds": self.warmup_seconds,
            "warmup_batch": self.batch_sizes[0] if self.warmup_seconds is not None else None,
            "peak_memory_mb": None if peak is None else peak / 2**20,
            "memory_method": self.memory_method, "sampling_precision": self.precision,
        }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _model_device(model: torch.nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def timed_sample(
    model: Method,
    n: int,
    sampler: str,
    nfe: int | None,
    *,
    batch: int | None = None,
    generator: torch.Generator | None = None,
    options: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    warmup: bool = True,
    memory: bool = True,
    progress: bool = False,
    desc: str | None = None,
    precision: str = "fp32",
    labels: Tensor | None = None,
) -> TimedSamples:
    """Draw ``n`` samples with ``model.sample(size, sampler, nfe, generator=, **options)`` in
    batches of ``batch`` (None: one batch), timed and synchronised (module docstring).

    ``device``: where to synchronise and measure memory (default: the model's). ``memory``:
    measure peak memory over the first batch. ``precision``: ``"fp32"`` or ``"bf16"``
    (autocast, module docstring). ``labels``: ``(n,)`` classes, each batch passed its slice
    as ``labels=`` (guided sampling). Sampler errors propagate unchanged.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    batch = n if batch is None else batch
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    dev = torch.device(device) if device is not None else _model_device(model)
    precision_context(precision, dev)  # checks the name before any sampling
    opts = dict(options or {})
    sizes = [min(batch, n - s) for s in range(0, n, batch)]
    out = TimedSamples(samples=torch.empty(0), nfes=[], steps=None, seconds=0.0,
                       timed_samples=0, batch_sizes=sizes, precision=precision)
    chunks: list[Tensor] = []

    def draw(size: int, gen: torch.Generator | None, start: int = 0) -> tuple[Tensor, float]:
        kw = dict(opts) if labels is None else {**opts, "labels": labels[start:start + size]}
        _sync(dev)
        t0 = time.perf_counter()
        with torch.no_grad(), precision_context(precision, dev):
            res = model.sample(size, sampler, nfe, generator=gen, **kw)
        _sync(dev)
        seconds = time.perf_counter() - t0
        out.nfes.append(int(res.nfe))
        if isinstance(res.info, dict):
            out.steps = res.info.get("steps", out.steps)
        return res.samples, seconds

    bar = progress_bar(total=n, desc=desc or f"{sampler} NFE {nfe}", disable=not progress,
                       leave=False, unit="sample")
    try:
        for i, size in enumerate(sizes):
            mem = PeakMemory(dev) if i == 0 and memory else contextlib.nullcontext()
            with mem:
                x, seconds = draw(size, generator, sum(sizes[:i]))
            if isinstance(mem, PeakMemory):
                out.peak_memory_bytes, out.memory_method = mem.peak_bytes, mem.method
            chunks.append(x.detach().float().cpu())
            bar.update(size)
            if i == 0 and warmup:
                out.warmup_seconds = seconds
            else:
                out.seconds += seconds
                out.timed_samples += size
        if warmup and len(sizes) == 1:  # n fits in one batch: time one more (discarded) batch
            _, out.seconds = draw(sizes[0], _next_generator(generator))
            out.timed_samples = sizes[0]
    finally:
        bar.close()
    out.samples = torch.cat(chunks)
    return out


def _next_generator(generator: torch.Generator | None) -> torch.Generator | None:
    """A generator on the same device seeded with ``generator``'s initial seed plus one."""
    if generator is None:
        return None
    return torch.Generator(device=generator.device).manual_seed(generator.initial_seed() + 1)
