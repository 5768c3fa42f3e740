"""Mode coverage of labelled images (class_kl, min_class_share) against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trilemma.evaluate.dataspec import DataSpec
from trilemma.evaluate.images import measure_images
from trilemma.metrics.bootstrap import bootstrap_counts, with_intervals
from trilemma.metrics.classes import class_coverage, class_histogram, class_kl
from trilemma.metrics.features import dataset_images
from trilemma.metrics.frechet import gaussian_stats


def balanced_labels(n_per: int = 50, k: int = 10) -> np.ndarray:
    return np.repeat(np.arange(k), n_per)


def test_samples_equal_to_the_data_have_zero_kl_and_full_share() -> None:
    labels = np.random.default_rng(0).permutation(np.r_[balanced_labels(), [3, 3, 7]])
    data = class_histogram(labels, 10)
    vals, reps = class_coverage(labels, data, bootstrap_counts(len(labels), 50))
    assert vals["class_kl"] == pytest.approx(0.0, abs=1e-12)
    assert vals["min_class_share"] == pytest.approx(50 / len(labels))
    assert reps["class_kl"].shape == (50,) and (reps["class_kl"] >= 0).all()
    ci = with_intervals(vals, reps)["class_kl_ci"]
    assert ci[0] == 0.0 and 0 < ci[1] < 0.1  # clipped at 0; resampling noise only


def test_one_class_gives_log_k_and_zero_min_share() -> None:
    data = class_histogram(balanced_labels(), 10)
    one = np.full(200, 4)
    vals, reps = class_coverage(one, data, bootstrap_counts(200, 20))
    assert vals["class_kl"] == pytest.approx(math.log(10), rel=1e-12)
    assert vals["min_class_share"] == 0.0
    np.testing.assert_allclose(reps["class_kl"], math.log(10), rtol=1e-12)  # no spread
    assert (reps["min_class_share"] == 0).all()


def test_kl_closed_form_two_classes_and_floor_for_empty_data_class() -> None:
    q, p = np.array([0.75, 0.25]), np.array([0.5, 0.5])
    assert class_kl(q, p) == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    # a class the data lacks: floored (finite, large), not infinite
    assert math.isfinite(class_kl(np.array([0.5, 0.5]), np.array([1.0, 0.0])))
    assert class_kl(np.array([0.5, 0.5]), np.array([1.0, 0.0])) > 5


def test_replicates_are_the_formula_on_the_counted_predictions() -> None:
    rng = np.random.default_rng(1)
    pred = rng.integers(0, 10, 300)
    data = class_histogram(balanced_labels(), 10)
    counts = bootstrap_counts(300, 5)
    _, reps = class_coverage(pred, data, counts)
    for b in range(5):
        q = class_histogram(np.repeat(pred, counts[b]), 10)
        assert reps["class_kl"][b] == pytest.approx(class_kl(q, data))
        assert reps["min_class_share"][b] == pytest.approx(q.min())


class PixelClassifier(torch.nn.Module):
    """A stub of the data set's classifier: the class is the brightest of 10 pixels."""

    dataset = "stub"

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.reshape(len(x), -1)
        return flat[:, :4] + self.w, flat[:, :10] * 5.0


def test_image_scoring_reports_class_metrics_with_intervals() -> None:
    labels = torch.as_tensor(balanced_labels(20))
    x = -torch.ones(len(labels), 1, 4, 4)
    x.view(len(x), -1)[torch.arange(len(x)), labels] = 1.0
    x = x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    feats = x.reshape(len(x), -1)[:, :4].double()
    mu, cov = gaussian_stats(feats)
    ref = {"mu": mu, "cov": cov, "features": feats.float(), "n": len(x)}
    shares = class_histogram(labels.numpy(), 10)
    counts = bootstrap_counts(len(x), 20)
    out, _, reps = measure_images(x, PixelClassifier(), ref, counts=counts, class_shares=shares)
    assert out["class_kl"] == pytest.approx(0.0, abs=1e-12) and "class_kl" in reps
    one = x[labels == 2].repeat(10, 1, 1, 1)
    out, _, _ = measure_images(one, PixelClassifier(), ref, counts=counts, class_shares=shares)
    assert out["class_kl"] == pytest.approx(math.log(10))
    assert out["min_class_share"] == 0.0
    out, _, _ = measure_images(x, PixelClassifier(), ref)  # no shares: no class metrics
    assert "class_kl" not in out


def test_data_spec_class_shares_are_the_true_label_shares() -> None:
    spec = DataSpec(kind="image", name="digits", image_size=8)
    shares = spec.class_shares("test")
    _, labels = dataset_images("digits", "test", 8)
    assert shares is not None and len(shares) == 10
    np.testing.assert_allclose(shares, np.bincount(labels.numpy()) / len(labels))
