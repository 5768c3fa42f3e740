"""Your own data and network: an image folder with a held-out split and mirrored copies,
attention resolutions fitted to the image size, a ``package.module:Class`` network from the
config (its ``.sample`` output unwrapped), and the sample outputs (one PNG per sample, an npz
of the samples as scored)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import trilemma
from trilemma.cli import main
from trilemma.data import load_dataset
from trilemma.data.images import load_digits
from trilemma.nets import ExternalNet, build_net

PLUGINS = Path(__file__).resolve().parent / "plugins"


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory):
    """30 grayscale 8 x 8 digits written as PNG files."""
    folder = tmp_path_factory.mktemp("pngs")
    x, _ = load_digits("all")
    for i in range(30):
        arr = ((x[i, 0].numpy() + 1) * 127.5).round().astype(np.uint8)
        Image.fromarray(arr).save(folder / f"digit_{i:03d}.png")
    return folder


def folder_config(folder: Path, **data) -> dict:
    return {
        "device": "cpu",
        "process": {"name": "vp"},
        "model": {"net": {"name": "unet", "base_channels": 8, "channel_mults": [1, 2],
                          "num_res_blocks": 1, "attn_resolutions": [4]}},
        "data": {"name": "folder", "path": str(folder), "size": 16, "split": "train",
                 "test_fraction": 0.2, **data},
        "train": {"steps": 2, "batch_size": 8, "log_every": 1},
        "sample": {"sampler": "ddim", "nfe": 3, "n": 4},
    }


def test_folder_split_is_held_out_and_hflip_mirrors(png_folder):
    base = {"name": "folder", "path": str(png_folder), "size": 8, "test_fraction": 0.2}
    train = load_dataset({**base, "split": "train"}).data
    test = load_dataset({**base, "split": "test"}).data
    everything = load_dataset(base).data
    assert (len(train), len(test), len(everything)) == (24, 6, 30)
    rows = {tuple(r.flatten().tolist()) for r in everything}
    assert {tuple(r.flatten().tolist()) for r in torch.cat([train, test])} == rows
    flipped = load_dataset({**base, "split": "train", "hflip": True}).data
    assert len(flipped) == 48 and torch.equal(flipped[24:], train.flip(-1))
    with pytest.raises(ValueError, match="both splits need at least one image"):
        load_dataset({**base, "split": "test", "test_fraction": 0.01})


def test_attention_resolutions_fit_the_image_size(png_folder):
    cfg = trilemma.resolve_config(folder_config(png_folder))  # [4] on 16 x 16: levels 16, 8
    with pytest.warns(UserWarning, match=r"attn_resolutions \[4\] match no level.*using \[8\]"):
        model = trilemma.setup.build_model(cfg, (1, 16, 16))
    assert model.model.net.attn_levels == [1]


def test_own_network_from_the_config(png_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(PLUGINS))
    net = build_net({"name": "mynets:TinyConv", "in_channels": 1, "out_channels": 1,
                     "time_scale": 999.0})
    assert isinstance(net, ExternalNet)
    out = net(torch.zeros(2, 1, 8, 8), torch.tensor([0.5, 1.0]))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 1, 8, 8)  # .sample unwrapped
    torch.testing.assert_close(net.net.last_t, torch.tensor([499.5, 999.0]))

    cfg = folder_config(png_folder)
    cfg["model"]["net"] = {"name": "mynets:TinyConv", "width": 4}  # in/out channels derived
    path = tmp_path / "own.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert main(["train", str(path), "--out", str(run), "--quiet"]) == 0
    assert main(["sample", str(run), "--n", "3", "--out", str(tmp_path / "pngs") + "/"]) == 0
    files = sorted((tmp_path / "pngs").glob("sample_*.png"))
    assert len(files) == 3 and Image.open(files[0]).size == (16, 16)
    assert main(["sample", str(run), "--n", "3", "--out", str(tmp_path / "s.npz")]) == 0
    z = np.load(tmp_path / "s.npz")
    assert bool(z["clamped"]) and z["samples"].min() >= -1 and z["samples"].max() <= 1
    np.testing.assert_array_equal(z["samples"], np.clip(z["raw_samples"], -1, 1))
    cfg["model"]["net"]["widht"] = 3
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path), "--out", str(tmp_path / "bad")]) == 2
    assert "model.net.widht" in capsys.readouterr().err


class _FakeInception(torch.nn.Module):
    """Stands in for the TorchScript FID Inception file a user supplies (never downloaded):
    any (B, 3, 299, 299) -> (B, 2048) network exercises the same path."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3 * 8 * 8, 2048)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.nn.functional.adaptive_avg_pool2d(x, 8).flatten(1))


def test_evaluate_scores_a_folder_against_its_held_out_split(png_folder, tmp_path, capsys):
    import json

    torch.manual_seed(0)
    fake = tmp_path / "inception.pt"
    torch.jit.script(_FakeInception()).save(str(fake))
    run = tmp_path / "run"
    trilemma.train(folder_config(png_folder), out=run, progress=False)
    args = ["evaluate", str(run), "--samplers", "ddim:3", "--n", "12", "--batch", "12",
            "--quiet"]
    assert main([*args, "--out", str(tmp_path / "none")]) == 2
    assert "--inception PATH" in capsys.readouterr().err  # a folder has no labels
    assert main([*args, "--inception", str(fake), "--out", str(tmp_path / "ev")]) == 0
    res = json.loads((tmp_path / "ev" / "results.json").read_text())["runs"][0]
    assert res["reference"]["dataset"] == "folder" and res["reference"]["n"] == 6  # held out
    assert res["rows"][0]["metrics"]["FID"] > 0 and "recall" in res["rows"][0]["metrics"]
    assert res["baseline"]["label"] == "real data (folder train split)"
    assert (tmp_path / "ev" / "report.html").is_file()
    assert main([*args, "--no-metrics", "--out", str(tmp_path / "plain")]) == 0
