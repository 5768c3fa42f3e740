"""diffusers interop (skipped without diffusers; `make bench` installs it): a UNet2DModel as a
trilemma network from a config, and a VP run exported as a pipeline folder whose DDIM samples
match trilemma's DDIM on the same noise."""

from __future__ import annotations

import pytest
import torch

import trilemma
from trilemma.cli import main
from trilemma.diffusers_export import discrete_betas, matching_grid
from trilemma.processes import VP
from trilemma.samplers import sample_ddim

diffusers = pytest.importorskip("diffusers")

CONFIG = {
    "seed": 0,
    "device": "cpu",
    # beta_max 1 (alpha_T = 0.76): an untrained network's samples then stay mostly inside the
    # pipeline's clamp to [0, 1], so the comparison sees real values, not 0s and 1s
    "process": {"name": "vp", "beta_min": 0.1, "beta_max": 1.0},
    "model": {
        "net": {"name": "diffusers_unet", "block_out_channels": [8, 16], "layers_per_block": 1,
                "down_block_types": ["DownBlock2D", "DownBlock2D"],
                "up_block_types": ["UpBlock2D", "UpBlock2D"], "norm_num_groups": 4},
        "prediction": "eps",
        "sigma_data": 1.0,
    },
    "data": {"name": "digits", "size": 8},
    "train": {"steps": 2, "batch_size": 16, "lr": 1e-3, "log_every": 1},
    "sample": {"sampler": "ddim", "nfe": 10, "n": 4},
}


def test_discrete_schedule_matches_the_vp_process():
    vp = VP(0.1, 20.0)
    betas = discrete_betas(vp, 1000)
    abar = torch.cumprod(1 - betas, 0)
    t = torch.tensor([1e-3, 0.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(abar[[0, 499, 999]], vp.alpha(t) ** 2, rtol=1e-12, atol=0)


def test_exported_pipeline_samples_like_trilemma_ddim(tmp_path, capsys):
    model = trilemma.train(CONFIG, out=tmp_path / "run", progress=False)
    assert isinstance(model.model.net, trilemma.nets.DiffusersUNet)
    folder = tmp_path / "pipeline"
    assert main(["export", str(tmp_path / "run"), "--diffusers", str(folder)]) == 0
    pipe = diffusers.DiffusionPipeline.from_pretrained(str(folder))
    assert type(pipe).__name__ == "DDIMPipeline"
    out = pipe(batch_size=4, generator=torch.Generator().manual_seed(0),
               num_inference_steps=10, eta=0.0, output_type="np").images   # (4, 8, 8, 1)

    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    grid = matching_grid(pipe.scheduler.timesteps, 1000)
    ours = sample_ddim(model.score_fn(), model.process, noise, grid).samples
    ours = (ours / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert abs(ours - out).max() < 1e-4
    assert ((ours > 0.01) & (ours < 0.99)).mean() > 0.3  # not just clamped 0s and 1s


def test_export_refuses_runs_it_cannot_match(tmp_path, capsys):
    cfg = {**CONFIG, "model": {**CONFIG["model"], "sigma_data": 0.5},
           "train": {**CONFIG["train"], "steps": 1}}
    trilemma.train(cfg, out=tmp_path / "run", progress=False)
    assert main(["export", str(tmp_path / "run"), "--diffusers", str(tmp_path / "p")]) == 2
    assert "sigma_data: 1.0" in capsys.readouterr().err
