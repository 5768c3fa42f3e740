"""Networks: shapes, zero init, conditioning, time dependence, gradients, seeding, learning."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trilemma.nets import (
    MLP,
    GaussianFourierEmbedding,
    SinusoidalEmbedding,
    UNet,
    build_net,
    count_parameters,
    num_groups,
    time_embedding,
)

SMALL = dict(base_channels=16, num_res_blocks=1, dropout=0.0)


# ----------------------------------------------------------------------------- embeddings
def test_sinusoidal_matches_closed_form():
    emb = SinusoidalEmbedding(8, scale=1000.0, max_period=10000.0)
    t = torch.tensor([0.0, 0.25, 0.7])
    out = emb(t)
    assert out.shape == (3, 8) and out.dtype == torch.float32
    for i in range(4):
        freq = math.exp(-math.log(10000.0) * i / 4)
        torch.testing.assert_close(out[:, i], torch.cos(1000 * t * freq), atol=1e-5, rtol=0)
        torch.testing.assert_close(out[:, 4 + i], torch.sin(1000 * t * freq), atol=1e-5, rtol=0)


def test_fourier_buffer_fixed_by_seed_and_saved():
    a, b, c = GaussianFourierEmbedding(16, seed=0), GaussianFourierEmbedding(16, seed=0), \
        GaussianFourierEmbedding(16, seed=1)
    assert "weight" in a.state_dict() and not any(True for _ in a.parameters())
    torch.testing.assert_close(a.weight, b.weight, rtol=0, atol=0)
    assert not torch.equal(a.weight, c.weight)
    t = torch.tensor([0.3])
    w = a.weight
    expect = torch.cat([torch.sin(2 * math.pi * 0.3 * w), torch.cos(2 * math.pi * 0.3 * w)])
    torch.testing.assert_close(a(t)[0], expect, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["fourier", "sinusoidal"])
def test_embedding_distinguishes_times_and_odd_dims(kind):
    emb = time_embedding(kind, 33)
    t = torch.tensor([0.5, 0.501, 0.9])
    out = emb(t)
    assert out.shape == (3, 33)
    assert torch.all(out[:, -1] == 0)  # odd dim: one zero pad column
    # unit-norm-ish features: distinct times must be clearly apart (>> float32 noise)
    assert (out[0] - out[1]).norm() > 0.05
    assert (out[0] - out[2]).norm() > 0.5


def test_embedding_errors():
    with pytest.raises(ValueError, match="time_embed"):
        time_embedding("nope", 8)
    with pytest.raises(ValueError, match="shape"):
        SinusoidalEmbedding(8)(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="dim"):
        GaussianFourierEmbedding(1)


# ----------------------------------------------------------------------------- helpers
def _adam_moves_every_parameter(net: nn.Module, inputs: tuple, steps: int = 3) -> None:
    """With zero-initialised layers gradients reach the inner layers only after a few steps,
    so train a few Adam steps and check every parameter tensor changed (Adam moves any entry
    with a non-zero gradient by ~lr)."""
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    out0 = net(*inputs)
    target = torch.randn(out0.shape, generator=gen)
    for _ in range(steps):
        opt.zero_grad()
        loss = (net(*inputs) - target).pow(2).mean()
        loss.backward()
        opt.step()
    frozen = [n for n, p in net.named_parameters() if torch.equal(p.detach(), before[n])]
    assert not frozen, f"parameters that received no gradient: {frozen}"


# ----------------------------------------------------------------------------- MLP
@pytest.mark.parametrize("time_embed", ["fourier", "sinusoidal"])
@pytest.mark.parametrize("norm", ["layernorm", "none"])
def test_mlp_shapes_and_zero_init(time_embed, norm):
    d = 3
    net = MLP(2 * d, d, hidden=32, depth=2, time_embed=time_embed, norm=norm)  # CLD layout
    out = net(torch.randn(5, 2 * d), torch.rand(5))
    assert out.shape == (5, d) and out.dtype == torch.float32
    assert torch.all(out == 0)
    assert net(torch.randn(5, 2 * d), torch.tensor(0.3)).shape == (5, d)  # scalar t broadcast


def test_mlp_time_and_class_conditioning():
    torch.manual_seed(0)
    net = MLP(2, 2, hidden=32, depth=2, num_classes=4, zero_init=False).eval()
    x = torch.randn(6, 2)
    t = torch.full((6,), 0.3)
    y0 = net(x, t, torch.zeros(6, dtype=torch.long))
    y1 = net(x, t, torch.ones(6, dtype=torch.long))
    assert (y0 - y1).abs().max() > 1e-3
    assert (net(x, t + 0.1, torch.zeros(6, dtype=torch.long)) - y0).abs().max() > 1e-3
    torch.testing.assert_close(net(x, t), net(x, t, torch.full((6,), 4)), rtol=0, atol=0)
    with pytest.raises(ValueError, match="labels must lie"):
        net(x, t, torch.full((6,), 5))
    with pytest.raises(ValueError, match="labels must lie"):
        net(x, t, torch.full((6,), -1))
    with pytest.raises(ValueError, match="num_classes=None"):
        MLP(2, 2)(x, t, torch.zeros(6, dtype=torch.long))


def test_mlp_input_errors():
    net = MLP(2, 2, hidden=8, depth=1)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 2\)"):
        net(torch.randn(4, 3), torch.rand(4))
    with pytest.raises(ValueError, match=r"t must have shape \(4,\)"):
        net(torch.randn(4, 2), torch.rand(3))
    with pytest.raises(ValueError, match="norm"):
        MLP(2, 2, norm="batch")
    with pytest.raises(ValueError, match="hidden"):
        MLP(2, 2, hidden=0)


def test_mlp_gradients_reach_every_parameter():
    net = MLP(4, 2, hidden=16, depth=2, num_classes=3, dropout=0.1)
    labels = torch.tensor([0, 1, 2, 3, 0, 3])
    _adam_moves_every_parameter(net, (torch.randn(6, 4), torch.rand(6), labels))


def test_mlp_overfits_fixed_target():
    """A few hundred Adam steps drive the MSE on a fixed random target (variance 1) to < 1%."""
    gen = torch.Generator().manual_seed(0)
    x, t = torch.randn(64, 2, generator=gen), torch.rand(64, generator=gen)
    target = torch.randn(64, 2, generator=gen)
    net = build_net({"name": "mlp", "in_dim": 2, "out_dim": 2, "hidden": 64, "depth": 2,
                     "seed": 0})
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(300):
        opt.zero_grad()
        loss = (net(x, t) - target).pow(2).mean()
        loss.backward()
        opt.step()
    assert loss.item() < 0.01 * target.var().item()


# ----------------------------------------------------------------------------- U-Net
@pytest.mark.parametrize(
    "size,mults,cin,cout",
    [(8, (1, 2, 2), 1, 1), (16, (1, 2, 2), 3, 3), (28, (1, 2, 2), 1, 1),
     (28, (1, 2, 2, 2), 2, 1), (32, (1, 2, 2, 2), 6, 3)],
)
def test_unet_shapes_and_zero_init(size, mults, cin, cout):
    net = UNet(cin, cout, channel_mults=mults, image_size=size, **SMALL)
    out = net(torch.randn(2, cin, size, size), torch.rand(2))
    assert out.shape == (2, cout, size, size) and out.dtype == torch.float32
    assert torch.all(out == 0)
    # with random inits the odd-size path (28 -> 14 -> 7 -> 4 -> 7 ...) is really used
    net = UNet(cin, cout, channel_mults=mults, image_size=size, zero_init=False, **SMALL)
    out = net(torch.randn(2, cin, size, size), torch.rand(2))
    assert out.shape == (2, cout, size, size) and torch.isfinite(out).all()
    assert out.abs().mean() > 1e-3


def test_unet_resolutions_and_attention_placement():
    net = UNet(1, 1, channel_mults=(1, 2, 2, 2), image_size=28, attn_resolutions=(14, 4), **SMALL)
    assert net.resolutions == [28, 14, 7, 4] and net.attn_levels == [1, 3]
    assert UNet(1, 1, image_size=8, **SMALL).attn_levels == [2]  # default: lowest resolution
    assert UNet(1, 1, image_size=8, attn_resolutions=(), **SMALL).attn_levels == []
    with pytest.raises(ValueError, match=r"match no level.*\[8, 4, 2\]"):
        UNet(1, 1, image_size=8, attn_resolutions=(16,), **SMALL)


def test_unet_conditioning_time_and_null_class():
    torch.manual_seed(0)
    net = UNet(1, 1, image_size=8, num_classes=10, zero_init=False, **SMALL).eval()
    x = torch.randn(3, 1, 8, 8)
    t = torch.full((3,), 0.4)
    lab = torch.tensor([1, 1, 1])
    y = net(x, t, lab)
    assert (net(x, t, torch.tensor([2, 2, 2])) - y).abs().max() > 1e-3
    assert (net(x, t + 0.05, lab) - y).abs().max() > 1e-3
    torch.testing.assert_close(net(x, t), net(x, t, torch.full((3,), 10)), rtol=0, atol=0)
    assert (net(x, t) - y).abs().max() > 1e-3
    with pytest.raises(ValueError, match="labels must lie"):
        net(x, t, torch.full((3,), 11))
    with pytest.raises(ValueError, match="integer"):
        net(x, t, torch.full((3,), 1.0))


def test_unet_input_errors():
    net = UNet(1, 1, image_size=8, **SMALL)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 1, 8, 8\)"):
        net(torch.randn(2, 1, 16, 16), torch.rand(2))
    with pytest.raises(ValueError, match=r"t must have shape \(2,\)"):
        net(torch.randn(2, 1, 8, 8), torch.rand(2, 1))
    with pytest.raises(ValueError, match="channel_mults"):
        UNet(1, 1, channel_mults=())
    with pytest.raises(ValueError, match="num_heads"):
        UNet(1, 1, image_size=8, num_heads=3, **SMALL)


def test_unet_gradients_reach_every_parameter():
    net = UNet(2, 1, image_size=8, num_classes=3, base_channels=8, num_res_blocks=1,
               dropout=0.1, attn_resolutions=(4,))
    labels = torch.tensor([0, 3, 2, 1])
    _adam_moves_every_parameter(net, (torch.randn(4, 2, 8, 8), torch.rand(4), labels), steps=4)


def test_unet_learns_and_dropout_only_in_train_mode():
    torch.manual_seed(0)
    net = UNet(1, 1, image_size=8, base_channels=16, dropout=0.3)
    gen = torch.Generator().manual_seed(1)
    x, t = torch.randn(8, 1, 8, 8, generator=gen), torch.rand(8, generator=gen)
    target = torch.randn(8, 1, 8, 8, generator=gen)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = (net(x, t) - target).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    net.eval()
    torch.testing.assert_close(net(x, t), net(x, t), rtol=0, atol=0)
    net.train()
    assert not torch.equal(net(x, t), net(x, t))


def test_unet_bf16_autocast_runs():
    net = UNet(1, 1, image_size=8, zero_init=False, **SMALL)
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    ref = net(x, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, t)
    assert torch.isfinite(out).all()
    rel = (out.float() - ref).norm() / ref.norm()
    assert rel < 0.1  # bf16 has ~3 significant digits; the time embedding stays float32


# ----------------------------------------------------------------------------- factory etc.
def test_build_net_seeded_and_leaves_global_rng_alone():
    cfg = {"name": "unet", "in_channels": 1, "out_channels": 1, "image_size": 8,
           "channel_mults": [1, 2], "zero_init": False, "seed": 3, **SMALL}
    state = torch.get_rng_state()
    a, b = build_net(cfg), build_net(cfg)
    assert torch.equal(torch.get_rng_state(), state)
    c = build_net({**cfg, "seed": 4})
    for (n, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), n
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters(),
                                                      strict=True))
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    torch.testing.assert_close(a.eval()(x, t), b.eval()(x, t), rtol=0, atol=0)
    assert cfg["seed"] == 3 and cfg["name"] == "unet"  # config not mutated


def test_build_net_errors():
    with pytest.raises(ValueError, match="unknown net 'resnet'; valid nets: mlp, unet"):
        build_net({"name": "resnet"})
    with pytest.raises(ValueError, match="needs key 'name'"):
        build_net({"in_dim": 2})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['widht'\].*valid keys: in_dim"):
        build_net({"name": "mlp", "in_dim": 2, "out_dim": 2, "widht": 3})
    with pytest.raises(ValueError, match=r"needs key\(s\) \['out_dim'\]"):
        build_net({"name": "mlp", "in_dim": 2})
    assert isinstance(build_net({"name": "mlp", "in_dim": 2, "out_dim": 2}), MLP)


def test_count_parameters_and_groups():
    lin = nn.Linear(3, 4)
    assert count_parameters(lin) == 16
    lin.bias.requires_grad_(False)
    assert count_parameters(lin) == 12 and count_parameters(lin, trainable_only=False) == 16
    assert [num_groups(c) for c in (1, 2, 3, 8, 16, 48, 64, 128, 256)] == \
        [1, 1, 1, 4, 8, 24, 32, 32, 32]
    # DDPM's CIFAR-10 net (ch 128, mults 1,2,2,2, attention at 16) has 35.7 M parameters
    ddpm = UNet(3, 3, base_channels=128, channel_mults=(1, 2, 2, 2), attn_resolutions=(16,),
                image_size=32)
    assert abs(count_parameters(ddpm) / 1e6 - 35.7) < 0.1
