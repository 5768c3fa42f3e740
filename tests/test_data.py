"""Data: toy distributions, digits, image folders, IDX, CIFAR-10, binarisation, loaders, factory."""

from __future__ import annotations

import gzip
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from trilemma import oracle
from trilemma.data import (
    ArrayDataset,
    binarize,
    load_cifar10,
    load_dataset,
    load_digits,
    load_idx,
    load_idx_images,
    load_idx_labels,
    load_image_folder,
    load_mnist,
    make_loader,
    read_idx,
    set_epoch,
    toy_dataset,
    toy_names,
)

try:  # optional dependencies (tell the lead to list them in pyproject.toml)
    from PIL import Image
except ImportError:  # pragma: no cover
    Image = None
try:
    import sklearn
except ImportError:  # pragma: no cover
    sklearn = None

needs_pil = pytest.mark.skipif(Image is None, reason="Pillow not installed")
needs_sklearn = pytest.mark.skipif(sklearn is None, reason="scikit-learn not installed")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- toys
def test_every_toy_is_float32_finite_and_seeded():
    for name in toy_names():
        a = toy_dataset(name, 500, _gen(0))
        d = oracle.get_mixture(name).dim if name in oracle.MIXTURES else 2
        assert a.shape == (500, d) and a.dtype == torch.float32, name
        assert torch.isfinite(a).all(), name
        assert torch.equal(a, toy_dataset(name, 500, _gen(0))), name
        assert not torch.equal(a, toy_dataset(name, 500, _gen(1))), name
        assert a.abs().max() < 4, name


def test_toy_errors():
    with pytest.raises(ValueError, match="unknown toy 'spiral'; valid toys: grid25, .*rings"):
        toy_dataset("spiral", 10)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        toy_dataset("rings", 0)


def test_oracle_toy_matches_mixture_moments_and_labels():
    n = 20000
    x, lab = toy_dataset("imbalanced2d", n, _gen(0), return_labels=True)
    mix = oracle.imbalanced2d()
    mean = (mix.weights[:, None] * mix.means).sum(0)
    second = (mix.weights[:, None] * (mix.means**2 + mix.stds**2)).sum(0)
    sd = (second - mean**2).sqrt()
    # 5 sigma Monte-Carlo tolerance on the mean of n draws
    assert torch.all((x.double().mean(0) - mean).abs() < 5 * sd / math.sqrt(n))
    frac = torch.bincount(lab, minlength=4).double() / n
    w = mix.weights
    assert torch.all((frac - w).abs() < 5 * (w * (1 - w) / n).sqrt())


def test_checkerboard_cells():
    n = 8000
    x = toy_dataset("checkerboard", n, _gen(0)).double()
    assert x.min() >= -2 and x.max() <= 2
    col, row = torch.floor(x[:, 0] + 2), torch.floor(x[:, 1] + 2)
    assert torch.all((col + row) % 2 == 0)  # only dark cells
    counts = torch.bincount((row * 4 + col).long(), minlength=16).double() / n
    dark = counts[counts > 0]
    assert len(dark) == 8
    assert torch.all((dark - 1 / 8).abs() < 5 * math.sqrt((1 / 8) * (7 / 8) / n))


def test_rings_radii_and_mass():
    n = 20000
    x = toy_dataset("rings", n, _gen(0)).double()
    r = x.norm(dim=1)
    radii = torch.tensor([0.5, 1.0, 1.5, 2.0], dtype=torch.float64)
    nearest = (r[:, None] - radii).abs().argmin(1)
    assert (r - radii[nearest]).abs().max() < 0.25  # noise std 0.04 -> 6 sigma
    frac = torch.bincount(nearest, minlength=4).double() / n
    p = radii / radii.sum()
    assert torch.all((frac - p).abs() < 5 * (p * (1 - p) / n).sqrt())


def test_swiss_roll_and_moons_geometry():
    from trilemma.data import swiss_roll, two_moons

    x = swiss_roll(2000, _gen(0), noise=0.0).double()
    r = x.norm(dim=1)
    assert r.min() >= 1.5 * math.pi / 7 - 1e-6 and r.max() <= 4.5 * math.pi / 7 + 1e-6
    # the direction of a point is set by its radius: x / r = (cos 7r, sin 7r)
    theta = 7 * r
    torch.testing.assert_close(x / r[:, None], torch.stack([theta.cos(), theta.sin()], 1),
                               rtol=0, atol=1e-4)
    m = two_moons(4000, _gen(0), noise=0.0).double() / 1.5 + torch.tensor([0.5, 0.25])
    d_upper = (m.norm(dim=1) - 1).abs()
    d_lower = ((m - torch.tensor([1.0, 0.5])).norm(dim=1) - 1).abs()
    on_upper = d_upper < 1e-5
    assert torch.all(on_upper | (d_lower < 1e-5))
    assert abs(on_upper.double().mean() - 0.5) < 5 * 0.5 / math.sqrt(4000)


# ----------------------------------------------------------------------------- digits
@needs_sklearn
def test_digits_scaling_split_and_sizes():
    tr, ytr = load_digits("train")
    te, yte = load_digits("test")
    al, yal = load_digits("all")
    assert tr.shape == (1438, 1, 8, 8) and te.shape == (359, 1, 8, 8) and al.shape[0] == 1797
    assert tr.dtype == torch.float32 and ytr.dtype == torch.int64
    assert tr.min() == -1 and tr.max() == 1
    # values are exactly k / 8 - 1 for k = 0..16
    k = (al + 1) * 8
    assert torch.equal(k, k.round())
    # the split is a partition of the full set (compare sorted rows)
    def rows(x, y):
        return sorted(map(tuple, torch.cat([x.flatten(1), y[:, None].float()], 1).tolist()))
    assert rows(torch.cat([tr, te]), torch.cat([ytr, yte])) == rows(al, yal)
    assert torch.equal(load_digits("train")[0], tr)
    assert not torch.equal(load_digits("train", seed=1)[0], tr)
    assert set(yte.tolist()) == set(range(10))


@needs_sklearn
def test_digits_upsampling():
    small, _ = load_digits("test")
    near, _ = load_digits("test", size=16, mode="nearest")
    assert near.shape == (359, 1, 16, 16)
    torch.testing.assert_close(near[:, :, ::2, ::2], small, rtol=0, atol=0)
    torch.testing.assert_close(near[:, :, 1::2, 1::2], small, rtol=0, atol=0)
    bil, _ = load_digits("test", size=16)
    assert bil.shape == (359, 1, 16, 16) and bil.min() >= -1 and bil.max() <= 1
    # bilinear 2x with align_corners=False: interior pixel (2i+1) = 0.75 x[i] + 0.25 x[i+1]
    rowmix = 0.75 * small[..., 1:2, :] + 0.25 * small[..., 2:3, :]
    colmix = 0.75 * rowmix[..., 1] + 0.25 * rowmix[..., 2]
    torch.testing.assert_close(bil[..., 3, 3], colmix[..., 0], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="mode must be"):
        load_digits(mode="bicubic")
    with pytest.raises(ValueError, match="split must be"):
        load_digits("val")


# ----------------------------------------------------------------------------- image folders
def _png(path: Path, arr: np.ndarray, mode: str | None = None) -> None:
    Image.fromarray(arr, mode=mode).save(path) if mode else Image.fromarray(arr).save(path)


@needs_pil
def test_image_folder_crop_resize_and_scale(tmp_path):
    # 10 tall, 20 wide: shorter side already 10 -> no resize, centre crop = columns 5..14
    arr = np.zeros((10, 20, 3), dtype=np.uint8)
    arr[:, :, 0] = (np.arange(20) * 10)[None, :]
    arr[:, :, 1] = 200
    _png(tmp_path / "a.png", arr)
    # a 40 x 20 constant image: resized then cropped, stays constant
    _png(tmp_path / "b.png", np.full((40, 20, 3), 51, dtype=np.uint8))
    (tmp_path / "notes.txt").write_text("ignored")
    x = load_image_folder(tmp_path, 10)
    assert x.shape == (2, 3, 10, 10) and x.dtype == torch.float32
    expect_r = torch.tensor(np.arange(5, 15) * 10, dtype=torch.float32) / 127.5 - 1
    torch.testing.assert_close(x[0, 0], expect_r[None].expand(10, 10), rtol=0, atol=1e-6)
    torch.testing.assert_close(x[0, 1], torch.full((10, 10), 200 / 127.5 - 1), rtol=0, atol=1e-6)
    torch.testing.assert_close(x[1], torch.full((3, 10, 10), 51 / 127.5 - 1), rtol=0, atol=1e-5)
    g = load_image_folder(tmp_path, 8, mode="grayscale")
    assert g.shape == (2, 1, 8, 8) and g.min() >= -1 and g.max() <= 1


@needs_pil
def test_image_folder_grayscale_jpeg_and_16bit(tmp_path):
    _png(tmp_path / "g.png", np.full((12, 12), 255, dtype=np.uint8))
    Image.fromarray(np.full((12, 12), 128, dtype=np.uint8)).save(tmp_path / "j.jpg", quality=95)
    Image.fromarray(np.full((12, 12), 65535 // 4, dtype=np.uint16)).save(tmp_path / "w.png")
    x = load_image_folder(tmp_path, 6)
    assert x.shape == (3, 1, 6, 6)
    assert torch.allclose(x[0], torch.ones(1, 6, 6))
    assert (x[1] - (128 / 127.5 - 1)).abs().max() < 0.03  # JPEG is lossy
    assert (x[2] - (2 * (65535 // 4) / 65535 - 1)).abs().max() < 1e-3


@needs_pil
def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "missing", 8)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("no images")
    with pytest.raises(ValueError, match="holds no image files"):
        load_image_folder(empty, 8)
    # truncated PNG: the error names the file
    bad = tmp_path / "bad"
    bad.mkdir()
    _png(bad / "ok.png", np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    raw = (bad / "ok.png").read_bytes()
    (bad / "cut.png").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="cut.png"):
        load_image_folder(bad, 8, mode="rgb")
    with pytest.raises(ValueError, match="cut.png"):
        load_image_folder(bad, 8)
    (bad / "cut.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="cut.png"):
        load_image_folder(bad, 8)
    # inconsistent channels: an error naming both kinds unless a mode is given
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    _png(mixed / "gray.png", np.zeros((8, 8), dtype=np.uint8))
    _png(mixed / "rgb.png", np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="inconsistent channels.*gray.png.*rgb.png"):
        load_image_folder(mixed, 8)
    assert load_image_folder(mixed, 8, mode="rgb").shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="mode must be"):
        load_image_folder(mixed, 8, mode="cmyk")


# ----------------------------------------------------------------------------- IDX
def _idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    head = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def _write_mnist(folder: Path, n: int, prefix: str, sep: str, gz: bool) -> tuple:
    rng = np.random.default_rng(n)
    imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labs = rng.integers(0, 10, n, dtype=np.uint8)
    for kind, arr, magic, dim in (("images", imgs, 2051, 3), ("labels", labs, 2049, 1)):
        data = _idx_bytes(arr, magic)
        name = f"{prefix}-{kind}{sep}idx{dim}-ubyte"
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return imgs, labs


def test_idx_roundtrip_plain_and_gzip(tmp_path):
    imgs = np.arange(5 * 4 * 3, dtype=np.uint8).reshape(5, 4, 3) * 4
    labs = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    (tmp_path / "img").write_bytes(_idx_bytes(imgs, 2051))
    (tmp_path / "lab.gz").write_bytes(gzip.compress(_idx_bytes(labs, 2049)))
    x, y = load_idx(tmp_path / "img", tmp_path / "lab.gz")
    assert x.shape == (5, 1, 4, 3) and x.dtype == torch.float32 and y.dtype == torch.int64
    torch.testing.assert_close(x[:, 0], torch.tensor(imgs, dtype=torch.float32) / 127.5 - 1)
    assert y.tolist() == [3, 1, 4, 1, 5]
    assert read_idx(tmp_path / "img").shape == (5, 4, 3)


def test_idx_errors_name_the_file(tmp_path):
    imgs = np.zeros((3, 4, 4), dtype=np.uint8)
    good = _idx_bytes(imgs, 2051)
    (tmp_path / "labels-as-images").write_bytes(_idx_bytes(np.zeros(3, np.uint8), 2049))
    with pytest.raises(ValueError, match=r"labels-as-images: magic number 2049.*expected 2051"):
        load_idx_images(tmp_path / "labels-as-images")
    with pytest.raises(ValueError, match=r"imgs: magic number 2051.*expected 2049"):
        (tmp_path / "imgs").write_bytes(good)
        load_idx_labels(tmp_path / "imgs")
    (tmp_path / "short").write_bytes(good[:-1])
    with pytest.raises(ValueError, match=r"short: 63 bytes.*implies 64.*truncated"):
        load_idx_images(tmp_path / "short")
    (tmp_path / "long").write_bytes(good + b"\0")
    with pytest.raises(ValueError, match="long: 65 bytes"):
        load_idx_images(tmp_path / "long")
    (tmp_path / "tiny").write_bytes(b"\0\0")
    with pytest.raises(ValueError, match="tiny is too short"):
        load_idx_images(tmp_path / "tiny")
    (tmp_path / "badgz.gz").write_bytes(gzip.compress(good)[:-10])
    with pytest.raises(ValueError, match="badgz.gz is not a valid gzip file"):
        load_idx_images(tmp_path / "badgz.gz")
    with pytest.raises(FileNotFoundError, match="nope"):
        load_idx_images(tmp_path / "nope")
    (tmp_path / "lab4").write_bytes(_idx_bytes(np.zeros(4, np.uint8), 2049))
    with pytest.raises(ValueError, match="3 images but .*lab4 holds 4 labels"):
        load_idx(tmp_path / "imgs", tmp_path / "lab4")


@pytest.mark.parametrize("sep,gz", [("-", False), (".", True)])
def test_load_mnist_folder_layouts(tmp_path, sep, gz):
    imgs, labs = _write_mnist(tmp_path, 7, "t10k", sep, gz)
    x, y = load_mnist(tmp_path, "test")
    assert x.shape == (7, 1, 28, 28)
    torch.testing.assert_close(x[:, 0], torch.tensor(imgs, dtype=torch.float32) / 127.5 - 1)
    assert y.tolist() == labs.tolist()
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path, "train")


_REAL_MNIST = Path(os.environ.get(
    "TRILEMMA_MNIST", Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
))


@pytest.mark.skipif(not _REAL_MNIST.is_dir(), reason="real MNIST files not present")
def test_real_mnist_t10k():
    x, y = load_mnist(_REAL_MNIST, "test")
    assert x.shape == (10000, 1, 28, 28) and y.shape == (10000,)
    assert x.min() == -1 and x.max() == 1
    assert torch.bincount(y, minlength=10).tolist()[:3] == [980, 1135, 1032]


# ----------------------------------------------------------------------------- CIFAR-10
def _cifar_records(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, bytes]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    pix = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    raw = b"".join(bytes([lab]) + p.tobytes() for lab, p in zip(labels, pix, strict=True))
    return labels, pix, raw


def test_cifar10_layout_and_order(tmp_path):
    root = tmp_path / "cifar-10-batches-bin"
    root.mkdir()
    parts = [_cifar_records(n, s) for n, s in ((3, 1), (2, 2))]
    for i, (_, _, raw) in enumerate(parts, start=1):
        (root / f"data_batch_{i}.bin").write_bytes(raw)
    tl, tp, traw = _cifar_records(4, 3)
    (root / "test_batch.bin").write_bytes(traw)
    x, y = load_cifar10(tmp_path, "train")  # parent folder works too
    assert x.shape == (5, 3, 32, 32) and x.dtype == torch.float32
    pix = np.concatenate([p for _, p, _ in parts])
    torch.testing.assert_close(x, torch.tensor(pix, dtype=torch.float32) / 127.5 - 1)
    assert y.tolist() == np.concatenate([lab for lab, _, _ in parts]).tolist()
    # channel planes: the first 1024 pixel bytes of a record are red
    raw0 = (root / "data_batch_1.bin").read_bytes()
    red = np.frombuffer(raw0[1:1025], dtype=np.uint8).reshape(32, 32)
    torch.testing.assert_close(x[0, 0], torch.tensor(red, dtype=torch.float32) / 127.5 - 1)
    xt, yt = load_cifar10(root, "test")
    assert xt.shape == (4, 3, 32, 32) and yt.tolist() == tl.tolist()


def test_cifar10_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_batch"):
        load_cifar10(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="test_batch.bin"):
        load_cifar10(tmp_path, "test")
    _, _, raw = _cifar_records(2, 0)
    (tmp_path / "data_batch_1.bin").write_bytes(raw[:-5])
    with pytest.raises(ValueError, match=r"data_batch_1.bin: 6141 bytes.*3073"):
        load_cifar10(tmp_path)
    (tmp_path / "data_batch_1.bin").write_bytes(bytes([12]) + raw[1:])
    with pytest.raises(ValueError, match="label byte 12"):
        load_cifar10(tmp_path)


# ----------------------------------------------------------------------------- binarisation
def test_binarize_threshold_and_stochastic():
    x = torch.tensor([-1.0, -0.2, 0.0, 0.01, 1.0])
    assert binarize(x).tolist() == [-1, -1, -1, 1, 1]
    assert binarize(x, zero_one=True).tolist() == [0, 0, 0, 1, 1]
    n, p = 200_000, 0.3
    xs = torch.full((n,), 2 * p - 1)
    b = binarize(xs, "stochastic", _gen(0), zero_one=True)
    assert set(b.unique().tolist()) <= {0.0, 1.0}
    assert abs(b.mean().item() - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert torch.equal(b, binarize(xs, "stochastic", _gen(0), zero_one=True))
    with pytest.raises(ValueError, match="mode must be"):
        binarize(x, "otsu")


# ----------------------------------------------------------------------------- loaders
def test_loader_covers_each_epoch_reproducibly():
    data = torch.arange(10.0)[:, None]
    ds = ArrayDataset(data, torch.arange(10) % 3)
    loader = make_loader(ds, 4, generator=_gen(0))
    assert len(loader) == 3
    epochs = []
    for _ in range(2):
        batches = list(loader)
        assert [len(b[0]) for b in batches] == [4, 4, 2]
        xs = torch.cat([b[0] for b in batches])[:, 0]
        ys = torch.cat([b[1] for b in batches])
        assert sorted(xs.tolist()) == list(range(10))
        assert torch.equal(ys, xs.long() % 3)  # labels travel with their samples
        epochs.append(xs)
    assert not torch.equal(epochs[0], epochs[1])
    again = make_loader(ds, 4, generator=_gen(0))
    assert torch.equal(torch.cat([b[0] for b in again])[:, 0], epochs[0])
    dl = make_loader(ds, 4, shuffle=False, drop_last=True)
    assert [b[0][:, 0].tolist() for b in dl] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_loader_distributed_shards():
    ds = ArrayDataset(torch.arange(11.0)[:, None])
    def shard(rank, epoch=None):
        loader = make_loader(ds, 3, distributed=True, num_replicas=2, rank=rank, seed=5)
        if epoch is not None:
            set_epoch(loader, epoch)
        return [torch.cat([b[0] for b in loader])[:, 0].tolist() for _ in range(2)]
    r0, r1 = shard(0), shard(1)
    for e in range(2):
        assert len(r0[e]) == len(r1[e]) == 6  # 11 padded to 12
        assert set(r0[e]) | set(r1[e]) == set(range(11))
    assert r0[0] != r0[1]  # reshuffled per epoch
    assert shard(0, epoch=1)[0] == r0[1]  # set_epoch reproduces epoch 1


def test_loader_plain_dataset_and_errors():
    ds = torch.utils.data.TensorDataset(torch.arange(6.0))
    batches = list(make_loader(ds, 4, shuffle=False))
    assert [b[0].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5]]
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(ds, 0)
    with pytest.raises(ValueError, match="labels must have shape"):
        ArrayDataset(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))


# ----------------------------------------------------------------------------- factory
@needs_pil
@needs_sklearn
def test_load_dataset_every_name(tmp_path):
    toy = load_dataset({"name": "toy", "toy": "grid25", "n": 100, "labels": True})
    assert toy.data.shape == (100, 2) and toy.num_classes == 25
    dig = load_dataset({"name": "digits", "split": "test", "size": 16, "limit": 10})
    assert dig.data.shape == (10, 1, 16, 16) and dig.num_classes == 10
    _png(tmp_path / "a.png", np.zeros((9, 9, 3), dtype=np.uint8))
    fol = load_dataset({"name": "folder", "path": str(tmp_path), "size": 4})
    assert fol.data.shape == (1, 3, 4, 4) and fol.labels is None
    mn = tmp_path / "mnist"
    mn.mkdir()
    _write_mnist(mn, 3, "train", "-", True)
    a = load_dataset({"name": "idx", "root": str(mn)})
    b = load_dataset({"name": "idx", "images": str(mn / "train-images-idx3-ubyte.gz"),
                      "labels": str(mn / "train-labels-idx1-ubyte.gz")})
    assert a.data.shape == (3, 1, 28, 28) and torch.equal(a.data, b.data)
    c = load_dataset({"name": "idx", "root": str(mn), "binarize": "threshold"})
    assert set(c.data.unique().tolist()) <= {-1.0, 1.0}
    (tmp_path / "test_batch.bin").write_bytes(_cifar_records(2, 0)[2])
    cif = load_dataset({"name": "cifar10", "root": str(tmp_path), "split": "test"})
    assert cif.data.shape == (2, 3, 32, 32)


def test_load_dataset_errors():
    with pytest.raises(ValueError, match="unknown dataset 'svhn'; valid datasets: toy, digits"):
        load_dataset({"name": "svhn"})
    with pytest.raises(ValueError, match="needs key 'name'"):
        load_dataset({"toy": "rings"})
    with pytest.raises(ValueError, match=r"dataset 'folder' needs key\(s\) \['path', 'size'\]"):
        load_dataset({"name": "folder"})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['sise'\].*valid keys"):
        load_dataset({"name": "digits", "sise": 16})
    with pytest.raises(ValueError, match="either key 'images'"):
        load_dataset({"name": "idx"})
    with pytest.raises(ValueError, match="limit must be"):
        load_dataset({"name": "toy", "toy": "rings", "n": 10, "limit": 0})
