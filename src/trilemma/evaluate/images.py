"""Scoring image samples: features of a classifier trained on the data set itself compared
with the features of its held-out split.

The Fréchet distance ``FD-<dataset>`` (**not** FID), precision / recall (k = 3), density /
coverage (k = 5) and the classifier Inception score ``IS-<dataset>``, each with a 95% bootstrap
interval ``<key>_ci`` (:mod:`trilemma.metrics.bootstrap`: the samples resampled, the reference
fixed), and ``FD-<dataset>_sd``, the standard deviation of the Fréchet distance over those
resamples (over 20 when intervals are off). Samples are clamped to [-1, 1] first (as writing
them as images would). FID proper only with Inception weights on disk (``inception=PATH`` or
``'auto'``; never downloaded).

Classifier cache: without ``features_path`` a classifier is trained for the run's data set
(fixed seed 0, ``classifier_steps`` steps) and cached in ``cache_dir`` (shared by all runs:
every run of a data set is scored with the same network; its SHA-256 is in every report). The
reference statistics are cached there too, keyed and checked by their provenance.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data import binarize
from ..metrics.bootstrap import (
    DEFAULT_REPEATS,
    fd_replicates,
    is_replicates,
    prdc_replicates,
)
from ..metrics.classes import class_coverage
from ..metrics.features import (
    InceptionFeatures,
    InceptionUnavailableError,
    extract_features,
    inception_score,
    load_classifier,
    train_classifier,
)
from ..metrics.frechet import FrechetReference, frechet_distance, gaussian_stats
from ..metrics.prdc import prdc_incidence
from ..metrics.reference import compare_to_reference, reference_stats
from ..train import CheckpointError
from .common import EvaluationError
from .dataspec import DataSpec
from .scoring import Scorer, quiet_warning

#: classifier trained when none is given: steps and seed (cached per data set and size)
DEFAULT_CLASSIFIER_STEPS = 1500
CLASSIFIER_SEED = 0
#: bootstrap resamples for the Fréchet distance's standard deviation when no intervals are
#: computed (with intervals, ``FD-<dataset>_sd`` is the spread of their replicates)
FD_BOOTSTRAP = 20
#: at most this many bootstrap resamples for FID's interval (2048-d features)
FID_REPEATS = 50


def get_classifier(
    spec: DataSpec,
    features_path: str | os.PathLike | None,
    cache_dir: Path,
    steps: int = DEFAULT_CLASSIFIER_STEPS,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """The feature classifier for ``spec`` (given, cached or trained now) and its record."""

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

    if len(feats) < 2 or repeats < 2:
        return None
    gen = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(repeats):
        idx = torch.randint(0, len(feats), (len(feats),), generator=gen)
        mu, cov = gaussian_stats(feats[idx])
        vals.append(frechet_distance(reference["mu"], reference["cov"], mu, cov))
    return float(np.std(vals, ddof=1))


def image_metrics(
    samples: Tensor,
    clf: Any,
    reference: dict[str, Any],
    inception: Any = None,
    inception_reference: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """FD-<dataset>, PRDC and IS-<dataset> of images (plus FID with Inception) and warnings."""
    out, msgs, _ = measure_images(samples, clf, reference, inception, inception_reference)
    return out, msgs


def _classifier_metrics(x: Tensor, clf: Any, reference: dict[str, Any],
                        counts: np.ndarray | None, fd_ref: FrechetReference | None,
                        class_shares: np.ndarray | None = None
                        ) -> tuple[dict[str, Any], list[str], dict[str, np.ndarray]]:
    """FD-<dataset> (and its bootstrap sd), PRDC and IS-<dataset> on the classifier's features
    and logits, with their replicates for the rows of ``counts``; with the data's
    ``class_shares``, also ``class_kl`` and ``min_class_share`` of the predicted classes."""
    feats, logits = features_and_logits(clf, x)
    comp = compare_to_reference(reference, feats, warn=False)
    name, is_name = comp["metric"], f"IS-{clf.dataset}"
    splits = min(10, len(x))
    reps: dict[str, np.ndarray] = {}
    if counts is not None:
        reps[name] = fd_replicates(fd_ref or FrechetReference(reference["mu"], reference["cov"]),
                                   feats, counts)
        reps.update(prdc_replicates(prdc_incidence(reference["features"], feats), counts))
        reps[is_name] = is_replicates(logits, counts, splits)
    out: dict[str, Any] = {name: comp["fd"], f"{name}_sd": (
        float(np.std(reps[name], ddof=1)) if name in reps else fd_bootstrap_sd(reference, feats))}
    for key in ("precision", "recall", "density", "coverage"):
        out[key] = comp[key]
    msgs = list(comp["warnings"])
    out[is_name], out[f"{is_name}_std"] = inception_score(logits, splits=splits)
    out["is_splits"] = splits
    msg = quiet_warning(is_name, len(x))
    if msg:
        msgs.append(msg)
    out["n_reference"] = comp["n_ref"]
    out["n_reference_prdc"] = comp.get("prdc_n_real")
    if class_shares is not None and logits.shape[1] == len(class_shares):
        vals, class_reps = class_coverage(logits.argmax(dim=1).numpy(), class_shares, counts)
        out.update(vals)
        reps.update(class_reps)
    return out, msgs, reps


def measure_images(
    samples: Tensor,
    clf: Any,
    reference: dict[str, Any],
    inception: Any = None,
    inception_reference: dict[str, Any] | None = None,
    counts: np.ndarray | None = None,
    fd_refs: tuple[FrechetReference | None, FrechetReference | None] = (None, None),
    class_shares: np.ndarray | None = None,
) -> tuple[dict[str, Any], list[str], dict[str, np.ndarray]]:
    """:func:`image_metrics` plus the bootstrap replicates of FD-<dataset>, PRDC and IS (and of
    FID, from the first :data:`FID_REPEATS` rows of ``counts``: each costs a 2048-d
    eigendecomposition). ``fd_refs``: the classifier's and Inception's reference Gaussians
    with their square roots computed once (:class:`FrechetReference`). ``class_shares``: the
    data's class shares, for ``class_kl`` / ``min_class_share`` (:mod:`..metrics.classes`)."""
    x = samples.clamp(-1.0, 1.0)
    out, msgs, reps = _classifier_metrics(x, clf, reference, counts, fd_refs[0], class_shares)
    if inception is not None and inception_reference is not None:
        f_inc = extract_features(inception, x, batch_size=50)
        comp_i = compare_to_reference(inception_reference, f_inc, with_prdc=False, warn=False)
        out[comp_i["metric"]] = comp_i["fd"]
        msgs.extend(comp_i["warnings"])
        if counts is not None:
            ref_i = fd_refs[1] or FrechetReference(inception_reference["mu"],
                                                   inception_reference["cov"])
            reps[comp_i["metric"]] = fd_replicates(ref_i, f_inc, counts[:FID_REPEATS])
    return out, msgs, reps


class ImageScorer(Scorer):
    """FD-<dataset>, PRDC and IS-<dataset> (plus FID with Inception) against the held-out split
    (module docstring)."""

    def __init__(
        self,
        spec: DataSpec,
        *,
        features_path: str | os.PathLike | None = None,
        inception: str | os.PathLike | None = None,
        reference_split: str = "test",
        cache_dir: Path,
        classifier_steps: int = DEFAULT_CLASSIFIER_STEPS,
        device: str | torch.device = "cpu",
        progress: bool = False,
        repeats: int = DEFAULT_REPEATS,
    ) -> None:
        super().__init__(spec, repeats)
        if features_path is not None and spec.problem and inception is None:
            raise EvaluationError(f"--features: {spec.problem}")
        if spec.problem:
            raise EvaluationError(spec.problem)

        self.reference_split = reference_split
        self.clf, self.extractor = get_classifier(spec, features_path, cache_dir,
                                                  classifier_steps, device, progress)
        self.ref = reference_stats(self.clf, spec.name, reference_split, None, cache_dir,
                                   data_root=spec.data_root, image_size=spec.image_size,
                                   progress=progress, binarize=spec.binarize)
        self.reference = dict(self.ref["provenance"])
        self.reference["cache"] = self.ref["cache"]
        self.reference["path"] = self.ref["path"]
        self.fd_ref = FrechetReference(self.ref["mu"], self.ref["cov"])
        self.class_shares = spec.class_shares(reference_split)
        self.inception = self.inception_ref = self.fid_ref = None
        if inception is not None:
            self._set_up_inception(inception, cache_dir, device, progress)
            self.fid_ref = FrechetReference(self.inception_ref["mu"], self.inception_ref["cov"])
        self.warnings.append(
            f"{self.extractor['metric_name']} is the Fréchet distance of features of a "
            f"classifier trained on {spec.name} (SHA-256 {self.extractor['sha256'][:12]}...), "
            "not FID: compare it only with numbers from the same classifier at the same n")

    def _set_up_inception(self, inception: str | os.PathLike, cache_dir: Path,
                          device: str | torch.device, progress: bool) -> None:

        spec = self.spec
        try:
            self.inception = InceptionFeatures(None if str(inception) == "auto" else inception,
                                               device=device)
        except InceptionUnavailableError as err:
            raise EvaluationError(f"--inception: {err}") from None
        self.inception_ref = reference_stats(self.inception, spec.name, self.reference_split,
                                             None, cache_dir, data_root=spec.data_root,
                                             progress=progress, binarize=spec.binarize)
        self.extractor["inception"] = {"path": str(self.inception.path),
                                       "sha256": self.inception.fingerprint}

    def measure(self, x: Tensor, counts: np.ndarray | None
                ) -> tuple[dict[str, Any], list[str], dict[str, np.ndarray]]:
        """:func:`measure_images` against the reference."""
        return measure_images(x, self.clf, self.ref, self.inception, self.inception_ref,
                              counts, (self.fd_ref, self.fid_ref), self.class_shares)

    def class_hits(self, x: Tensor, labels: Tensor) -> Tensor:
        """Whether the data's classifier assigns each image (clamped to [-1, 1]) its asked
        class."""
        _, logits = features_and_logits(self.clf, x.clamp(-1.0, 1.0))
        return (logits.argmax(dim=1) == labels.to(logits.device)).double()

    def baseline(self, n: int, seed: int) -> dict[str, Any]:
        """``n`` images of the other split (train, or test for a train reference), binarised
        as the run's data, picked by a permutation seeded with ``seed``."""
        spec = self.spec
        other = "train" if self.reference_split != "train" else "test"
        xr = spec.split_images(other)
        if spec.binarize:

            xr = binarize(xr, spec.binarize, generator=torch.Generator().manual_seed(0))
        perm = torch.randperm(len(xr), generator=torch.Generator().manual_seed(seed))
        xr = xr[perm[:n]]
        m, w, _ = self.score(xr)
        if self.reference_split == "all":
            w = [*w, f"baseline: the {other} split is part of the reference split 'all', so "
                 "the real-data row scores better than held-out data would"]
        bin_note = f", binarised ({spec.binarize})" if spec.binarize else ""
        return {"label": f"real data ({spec.name} {other} split{bin_note})", "n": len(xr),
                "metrics": m, "warnings": w}

