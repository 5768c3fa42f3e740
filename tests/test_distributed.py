"""Distributed helpers, and a real 2-process torchrun (gloo, CPU) run against one process."""

from __future__ import annotations

import csv
import importlib.util
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist
from torch import nn

from trilemma.train import (
    LossAdapter,
    Trainer,
    init_distributed,
    load_weights,
    rank_seed,
    shard_batches,
)
from trilemma.train.checkpoint import _read_safetensors


@pytest.mark.parametrize("n, b, world", [(52, 4, 2), (50, 3, 3), (9, 2, 2), (64, 8, 1)])
def test_rank_batches_tile_the_single_process_batch(n, b, world):
    for epoch in range(3):
        single = shard_batches(n, b * world, epoch, seed=5)
        ranks = [shard_batches(n, b, epoch, seed=5, rank=r, world_size=world) for r in range(world)]
        assert len(single) == n // (b * world)
        assert all(len(rb) == len(single) for rb in ranks)
        for k, batch in enumerate(single):
            parts = [rb[k] for rb in ranks]
            assert all(len(p) == b for p in parts)
            assert sorted(sum(parts, [])) == sorted(batch)  # the same samples, split disjointly
        flat = sum(single, [])
        assert len(set(flat)) == len(flat)  # no repeats within an epoch
    assert shard_batches(n, b * world, 0, seed=5) != shard_batches(n, b * world, 1, seed=5)


def test_rank_seed_is_deterministic_and_distinct():
    seeds = {rank_seed(s, r, tag) for s in range(3) for r in range(4) for tag in ("noise", "data")}
    assert len(seeds) == 24 and all(0 <= s < 2**62 for s in seeds)
    assert rank_seed(1, 2) == rank_seed(1, 2)


def test_loss_adapter_routes_forward_to_loss():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(()))

        def loss(self, batch, generator=None):
            return self.w * batch + torch.rand(batch.shape, generator=generator)

    m = M()
    a = LossAdapter(m)
    x = torch.arange(3.0)
    assert torch.equal(
        a(x, generator=torch.Generator().manual_seed(0)),
        m.loss(x, torch.Generator().manual_seed(0)),
    )
    assert list(a.parameters()) == [m.w]

    class NoGen(nn.Module):
        def loss(self, batch):
            return batch

    assert torch.equal(LossAdapter(NoGen())(x, generator=torch.Generator()), x)
    with pytest.raises(TypeError, match="loss"):
        LossAdapter(nn.Linear(1, 1))


def test_init_distributed_without_torchrun(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    info = init_distributed()
    assert (info.rank, info.world_size, info.is_main, info.distributed) == (0, 1, True, False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="RANK"):
        init_distributed()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK must be an integer"):
        init_distributed()


SCRIPT = textwrap.dedent(
    '''
    """DDP worker: N steps, a 'crash' (fresh Trainer, other init), N resumed steps."""
    import sys
    from pathlib import Path

    import torch
    from torch import nn

    from trilemma.train import (
        TrainConfig, Trainer, cleanup_distributed, init_distributed, save_weights,
    )


    class Reg(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).double()

        def loss(self, batch, generator=None):
            x, y = batch
            return (self.net(x).squeeze(-1) - y) ** 2


    def data():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(52, 3, generator=g, dtype=torch.float64)
        return x, torch.sin(x.sum(1))


    def config():
        return TrainConfig(steps=12, batch_size=8, grad_accum=2, lr=2e-2, warmup_steps=2,
                           schedule="cosine", grad_clip=1.0, ema_decay=0.9, ckpt_every=6,
                           log_every=3, keep_last=2, seed=3)


    def model(seed):
        torch.manual_seed(seed)
        return Reg()


    if __name__ == "__main__":
        torch.set_num_threads(1)
        out = Path(sys.argv[1])
        info = init_distributed()
        # every rank starts from another init: DDP must broadcast rank 0's weights
        # progress=True: rank 0 says that it runs under DDP (and draws plain progress lines)
        Trainer(model(100 + info.rank), data(), config(), out / "run", progress=True).fit(until=6)
        tr = Trainer(model(200 + info.rank), data(), config(), out / "run", progress=False)
        res = tr.fit(resume=True)
        meta = {"rank": info.rank, "world": info.world_size, "step": res["step"]}
        save_weights(out / f"model{info.rank}.safetensors", tr.model, meta)
        save_weights(out / f"ema{info.rank}.safetensors", tr.ema.state_dict(), meta)
        cleanup_distributed()
    '''
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed gloo"
)
def test_torchrun_two_processes_match_one_process(tmp_path):
    script = tmp_path / "ddp_worker.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        str(script),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    said = proc.stdout + proc.stderr
    ddp = "DDP with 2 ranks (backend gloo, device cpu); global batch 8 = 4 per rank"
    assert said.count(ddp) == 1
    assert "\r" not in said  # not a terminal: plain progress lines

    m0, meta0 = load_weights(tmp_path / "model0.safetensors")
    m1, meta1 = load_weights(tmp_path / "model1.safetensors")
    e0, _ = load_weights(tmp_path / "ema0.safetensors")
    e1, _ = load_weights(tmp_path / "ema1.safetensors")
    assert meta0 == {"rank": 0, "world": 2, "step": 12} and meta1["rank"] == 1
    for k in m0:  # DDP keeps the ranks bit-identical
        assert torch.equal(m0[k], m1[k]) and torch.equal(e0[k], e1[k])

    # one process, global batch 8 (= 2 ranks x 4), same data order, 12 straight steps
    spec = importlib.util.spec_from_file_location("ddp_worker", script)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    ref = Trainer(
        worker.model(100), worker.data(), worker.config(), tmp_path / "single", progress=False
    )
    ref.fit()
    for k, v in ref.model.state_dict().items():
        torch.testing.assert_close(m0[k], v, rtol=0, atol=1e-10)
        torch.testing.assert_close(e0[k], ref.ema.shadow[k], rtol=0, atol=1e-10)
    # the weights moved: the comparison is not trivially true
    assert (m0["net.0.weight"] - worker.model(100).net[0].weight).abs().max() > 1e-2

    # rank 0 alone wrote the log (one header) and the checkpoints; each rank's noise stream
    # is seeded by (seed, rank) and saved (this loss draws no noise: states are the seeds')
    rows = list(csv.reader(open(tmp_path / "run" / "log.csv")))
    assert rows[0][0] == "step" and [int(r[0]) for r in rows[1:]] == [3, 6, 9, 12]
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts == ["step_000006", "step_000012"]
    rng, _ = _read_safetensors(tmp_path / "run" / "checkpoints" / "step_000012" / "rng.safetensors")
    for r in range(2):
        seeded = torch.Generator().manual_seed(rank_seed(3, r, "noise")).get_state()
        assert torch.equal(rng[f"noise_rank{r}"], seeded)
    assert not torch.equal(rng["noise_rank0"], rng["noise_rank1"])
