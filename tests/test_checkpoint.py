"""Checkpoints: exact round trips, atomic writes, pruning, clear errors, single-file weights."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from torch import nn

import trilemma
import trilemma.train.checkpoint as ck
from trilemma.train import (
    EMA,
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    save_weights,
)


class Net(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.fc = nn.Linear(3, width)
        self.out = nn.Linear(width, 2)
        self.register_buffer("scale", torch.arange(3.0))


def trained(seed: int = 0, width: int = 4):
    """A model, its EMA, AdamW and a warm-up scheduler after three steps."""
    torch.manual_seed(seed)
    m = Net(width)
    ema = EMA(m, 0.9)
    opt = torch.optim.AdamW(m.parameters(), lr=0.1, betas=(0.8, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 5))
    for _ in range(3):
        m.out(m.fc(torch.randn(5, 3))).square().mean().backward()
        opt.step()
        opt.zero_grad()
        sched.step()
        ema.update(m)
    return m, ema, opt, sched


def save(tmp_path, step=3, keep_last=0, seed=0):
    m, ema, opt, sched = trained(seed)
    g = torch.Generator().manual_seed(42)
    torch.randn(3, generator=g)
    path = save_checkpoint(
        tmp_path,
        step,
        m,
        ema,
        opt,
        sched,
        state={"note": [1, (2, 3)]},
        rng={"noise": g.get_state()},
        keep_last=keep_last,
    )
    return path, (m, ema, opt, sched, g)


def test_flatten_round_trip():
    obj = {"a": {0: torch.ones(2), 7: {"x": (1.5, None, "s")}}, "b": [torch.zeros(()), True]}
    js, tensors = ck.flatten_state(obj)
    json.dumps(js)  # plain JSON
    assert set(tensors) == {"a.0", "b.0"}
    back = ck.unflatten_state(json.loads(json.dumps(js)), tensors)
    assert back["a"][7]["x"] == (1.5, None, "s") and isinstance(back["a"][7]["x"], tuple)
    assert torch.equal(back["a"][0], torch.ones(2)) and back["b"][1] is True
    with pytest.raises(TypeError, match="set.*'c'"):
        ck.flatten_state({"c": {1, 2}})


def test_round_trip_is_exact(tmp_path):
    path, (m, ema, opt, sched, g) = save(tmp_path)
    assert path == tmp_path / "checkpoints" / "step_000003"
    assert {p.name for p in path.iterdir()} == {
        "model.safetensors",
        "ema.safetensors",
        "optimizer.safetensors",
        "optimizer.json",
        "rng.safetensors",
        "state.json",
    }
    m2, ema2, opt2, sched2 = trained(seed=1)  # different values everywhere
    info = load_checkpoint(path, m2, ema2, opt2, sched2)
    for a, b in zip(m.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for k in ema.shadow:
        assert torch.equal(ema.shadow[k], ema2.shadow[k])
    assert ema2.num_updates == 3
    sa, sb = opt.state_dict(), opt2.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert isinstance(sb["param_groups"][0]["betas"], tuple)
    for i in sa["state"]:
        for k in sa["state"][i]:
            assert torch.equal(sa["state"][i][k], sb["state"][i][k])
    assert sched2.state_dict() == sched.state_dict() and sched2.last_epoch == 3
    # generator state: bytes in rng.safetensors, the same as ints in state.json
    assert info["step"] == 3 and info["trilemma_version"] == trilemma.__version__
    assert info["note"] == [1, (2, 3)]
    assert torch.equal(info["rng_tensors"]["noise"], g.get_state())
    assert info["rng"]["noise"] == g.get_state().tolist()
    g2 = torch.Generator()
    g2.set_state(info["rng_tensors"]["noise"])
    assert torch.equal(torch.randn(4, generator=g2), torch.randn(4, generator=g))
    # optimizer steps continue identically
    for opt_, m_ in ((opt, m), (opt2, m2)):
        m_.out(m_.fc(torch.ones(2, 3))).sum().backward()
        opt_.step()
    assert torch.equal(m.fc.weight, m2.fc.weight)
    # a run folder resolves to its latest checkpoint
    assert load_checkpoint(tmp_path, Net())["path"] == str(path)


def test_files_are_safetensors_not_pickle(tmp_path):
    path, _ = save(tmp_path)
    for f in path.glob("*.safetensors"):
        raw = f.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8 : 8 + n])
        assert "__metadata__" in header
        assert raw[:1] != b"\x80"  # a pickle stream would start with PROTO


def test_keep_last_latest_and_atomicity(tmp_path, monkeypatch):
    assert latest_checkpoint(tmp_path) is None and list_checkpoints(tmp_path) == []
    for step in (5, 10, 15, 20):
        save(tmp_path, step=step, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000015", "step_000020"]
    # debris of interrupted writes is never mistaken for a checkpoint
    (tmp_path / "checkpoints" / ".tmp_step_000025_x").mkdir()
    (tmp_path / "checkpoints" / "step_000030").mkdir()  # no state.json: incomplete
    assert latest_checkpoint(tmp_path).name == "step_000020"
    ck.clean_temporary(tmp_path)
    assert not (tmp_path / "checkpoints" / ".tmp_step_000025_x").exists()

    # a failure while writing leaves no step folder and no temporary folder behind
    def boom(path, obj):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "_write_json", boom)
    with pytest.raises(OSError, match="disk full"):
        save(tmp_path, step=25, keep_last=2)
    monkeypatch.undo()
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_000015", "step_000020", "step_000030"]
    # rewriting an existing step replaces it
    save(tmp_path, step=20, seed=7)
    m = Net()
    load_checkpoint(tmp_path / "checkpoints" / "step_000020", m)
    assert torch.equal(m.fc.weight, trained(7)[0].fc.weight)


def test_clear_errors(tmp_path):
    path, _ = save(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope", Net())
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither a checkpoint"):
        load_checkpoint(tmp_path / "empty", Net())
    # shape mismatch: the parameter and both shapes are named; nothing is modified
    wide = Net(width=5)
    before = wide.fc.weight.clone()
    with pytest.raises(CheckpointError, match=r"'fc\.weight'.*\(4, 3\).*\(5, 3\)"):
        load_checkpoint(path, wide)
    assert torch.equal(wide.fc.weight, before)
    with pytest.raises(CheckpointError, match=r"missing keys \['extra'\]"):
        m = Net()
        m.register_buffer("extra", torch.zeros(1))
        load_checkpoint(path, m)
    m, ema, opt, _ = trained()
    m5, _, opt5, _ = trained(width=5)
    with pytest.raises(
        CheckpointError, match=r"optimizer state 'exp_avg' of parameter 'fc\.weight'"
    ):
        ck._check_optimizer(opt.state_dict(), opt5, m5, path / "optimizer.safetensors")
    # a missing file is named
    (path / "ema.safetensors").unlink()
    load_checkpoint(path, Net())  # not needed without an EMA
    with pytest.raises(FileNotFoundError, match="ema.safetensors"):
        load_checkpoint(path, Net(), ema=EMA(Net()))
    # truncated and garbage files are named
    f = path / "model.safetensors"
    raw = f.read_bytes()
    f.write_bytes(raw[: len(raw) - 10])
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*corrupt or truncated"):
        load_checkpoint(path, Net())
    f.write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*corrupt or truncated"):
        load_checkpoint(path, Net())
    (path / "state.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="state.json.*corrupt JSON"):
        load_checkpoint(path, Net())


def test_save_and_load_weights(tmp_path):
    torch.manual_seed(0)
    m = Net()
    meta = {"process": "vp", "shape": [1, 8, 8], "nested": {"lr": 1e-3}}
    p = save_weights(tmp_path / "sub" / "w.safetensors", m, meta)
    tensors, back = load_weights(p)
    assert back == meta
    assert all(torch.equal(tensors[k], v) for k, v in m.state_dict().items())
    fresh = Net()
    load_weights(p, fresh)
    assert torch.equal(fresh.out.weight, m.out.weight)
    with pytest.raises(CheckpointError, match=r"'fc\.weight'.*\(4, 3\).*\(6, 3\)"):
        load_weights(p, Net(width=6))
    with pytest.raises(TypeError, match="JSON"):
        save_weights(tmp_path / "x.safetensors", m, {"bad": object()})
    with pytest.raises(FileNotFoundError, match="missing"):
        load_weights(tmp_path / "none.safetensors")
    # a plain dict of tensors works too, and tied (shared) tensors are stored
    shared = torch.ones(3)
    save_weights(tmp_path / "t.safetensors", {"a": shared, "b": shared}, {})
    t, meta2 = load_weights(tmp_path / "t.safetensors")
    assert torch.equal(t["a"], t["b"]) and meta2 == {}
    assert not list(tmp_path.glob(".tmp_*"))
