"""Sample-quality metrics: Frechet distance, precision/recall/density/coverage, classifier and
Inception features with cached reference statistics, and oracle metrics for mixtures."""

from __future__ import annotations

from .features import (
    FD_DIGITS,
    FID_NAME,
    DigitsClassifier,
    InceptionFeatures,
    InceptionUnavailableError,
    dataset_images,
    extract_features,
    find_fid_inception,
    inception_score,
    load_classifier,
    save_classifier,
    train_classifier,
    weights_sha256,
)
from .frechet import (
    frechet_distance,
    frechet_distance_features,
    gaussian_stats,
    trace_sqrt_product,
)
from .mixture import (
    SlicedReference,
    far_outlier_share,
    far_radius,
    mode_metrics,
    oracle_report,
    quality_radius,
    random_directions,
    sliced_wasserstein2,
    sw2_noise_floor,
    sw2_to_standard_normal,
    truncated_var_factor,
)
from .prdc import density_coverage, knn_radii, prdc, precision_recall
from .reference import (
    ReferenceCacheWarning,
    SampleSizeWarning,
    compare_to_reference,
    min_samples_needed,
    min_samples_warning,
    reference_stats,
)

__all__ = [
    "FD_DIGITS",
    "FID_NAME",
    "DigitsClassifier",
    "InceptionFeatures",
    "InceptionUnavailableError",
    "ReferenceCacheWarning",
    "SampleSizeWarning",
    "compare_to_reference",
    "dataset_images",
    "density_coverage",
    "extract_features",
    "find_fid_inception",
    "frechet_distance",
    "frechet_distance_features",
    "gaussian_stats",
    "inception_score",
    "knn_radii",
    "load_classifier",
    "min_samples_needed",
    "min_samples_warning",
    "prdc",
    "precision_recall",
    "reference_stats",
    "save_classifier",
    "trace_sqrt_product",
    "train_classifier",
    "weights_sha256",
    "SlicedReference",
    "far_outlier_share",
    "far_radius",
    "mode_metrics",
    "oracle_report",
    "quality_radius",
    "random_directions",
    "sliced_wasserstein2",
    "sw2_noise_floor",
    "sw2_to_standard_normal",
    "truncated_var_factor",
]
