"""Training throughput: trilemma's U-Net + ScoreModel against denoising-diffusion-pytorch.

One training step = ``zero_grad``, loss (mean over the batch), ``backward``, ``Adam.step``, in
fp32 on the CPU, for two parameter-matched pairs of models:

- ``8x8x1`` (batch 128): peer ``Unet(dim=32, dim_mults=(1, 2), channels=1)`` against trilemma
  ``UNet(base_channels=30, channel_mults=(1, 2), num_res_blocks=2, attn_resolutions=(4,))``;
- ``32x32x3`` (batch 32): peer ``Unet(dim=32, dim_mults=(1, 2, 2, 2), channels=3)`` against
  trilemma ``UNet(base_channels=30, channel_mults=(1, 2, 2, 2), num_res_blocks=2)``;
- ``28x28x1`` (MNIST-sized, batch 64): peer ``Unet(dim=32, dim_mults=(1, 2, 2), channels=1)``
  against trilemma ``UNet(base_channels=30, channel_mults=(1, 2, 2), num_res_blocks=2,
  attn_resolutions=(7,))`` (1.41 M and 1.43 M parameters).

``--precisions fp32,bf16`` times every pair in float32 and under bfloat16 autocast (the loss
and the forward pass in ``torch.autocast(device, bfloat16)``, the backward and the Adam step
outside it, weights float32: what ``train.precision: bf16`` does); the table then also gives
each model's bf16 / fp32 speed-up. Whether bf16 trains as well as fp32 is measured by
``benchmarks/bf16_loss.py`` (real MNIST, the trilemma Trainer).

The peer trains through ``GaussianDiffusion(unet, image_size, timesteps=1000,
objective='pred_noise', auto_normalize=False)`` (its loss is the batch mean of the epsilon MSE);
trilemma through ``ScoreModel(VP(), unet, prediction='eps', objective='dsm',
weighting='quality').loss(x, generator).mean()`` (the same epsilon MSE in continuous time).
Both see the same random batch in [-1, 1] (``auto_normalize=False`` keeps the peer from mapping
it again), dropout 0 (the peer's default), Adam with lr 1e-4, the same thread count.

Timing: a few warm-up steps each, then single steps in the order A B B A A B B A ... so that
machine noise and ordering effects hit both; the median step time gives steps/s and samples/s,
and the table reports the ratio ours/peer (> 1 means trilemma is faster). The median process
CPU time of a step is recorded too: on a shared machine it is disturbed less by other
processes than the wall clock, so its ratio (peer CPU / ours CPU) is a cross-check. Forward-only
throughput (no grad, eval mode, one network call on a batch: the cost of one sampler step) is
timed the same way. Before timing, each model's machine-independent work per training step is
counted once: GFLOP of convolutions and matmuls (``FlopCounterMode``), aten ops and MB of newly
allocated tensors, which tell whether a speed gap comes from arithmetic or from memory-bound
elementwise ops. Everything lands in ``OUT/train_throughput.json``. ``OMP_WAIT_POLICY``
defaults to ``PASSIVE`` (set before torch is imported; an exported value wins), since
busy-waiting OpenMP threads on a shared machine measure the other tenants, not the models.

The peer is an optional dependency (the ``bench`` extra): install it without touching torch,
``pip install --no-deps denoising-diffusion-pytorch einops ema-pytorch accelerate psutil``.
Its package imports ``torchvision`` at import time, which does not work with every torch build;
when ``import torchvision`` fails we put a stub module in ``sys.modules``: ``Unet`` and
``GaussianDiffusion`` never use torchvision in a training step or a forward pass (only the
peer's ``Dataset`` transforms and ``Trainer`` image saving do, and neither is used here).

Usage::

    python benchmarks/train_throughput.py          # threads 1 and 2 (2-4 min on the 2-core box)
    python benchmarks/train_throughput.py --quick  # threads 1, fewer steps (35-85 s)
    python benchmarks/train_throughput.py --configs 28x28x1 --precisions fp32,bf16 --threads 1,2
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: on a shared machine busy-waiting OpenMP threads can make two
# threads several times slower than one (MACHINE.md); export OMP_WAIT_POLICY=ACTIVE to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_leaves  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from trilemma.methods import ScoreModel  # noqa: E402
from trilemma.nets import UNet  # noqa: E402
from trilemma.processes import VP  # noqa: E402

CONFIGS: dict[str, dict[str, Any]] = {
    "8x8x1": {
        "image_size": 8,
        "channels": 1,
        "batch": 128,
        "peer": {"dim": 32, "dim_mults": (1, 2)},
        "ours": {"base_channels": 30, "channel_mults": (1, 2), "num_res_blocks": 2,
                 "attn_resolutions": (4,)},
    },
    "32x32x3": {
        "image_size": 32,
        "channels": 3,
        "batch": 32,
        "peer": {"dim": 32, "dim_mults": (1, 2, 2, 2)},
        "ours": {"base_channels": 30, "channel_mults": (1, 2, 2, 2), "num_res_blocks": 2},
    },
    "28x28x1": {
        "image_size": 28,
        "channels": 1,
        "batch": 64,
        "peer": {"dim": 32, "dim_mults": (1, 2, 2)},
        "ours": {"base_channels": 30, "channel_mults": (1, 2, 2), "num_res_blocks": 2,
                 "attn_resolutions": (7,)},
    },
}
DEFAULT_CONFIGS = ("8x8x1", "32x32x3")

# (warm-up steps, timed training steps, timed forward passes) per model and thread count
BUDGET = {
    "full": {"8x8x1": (2, 16, 12), "32x32x3": (1, 8, 6), "28x28x1": (1, 10, 8)},
    "quick": {"8x8x1": (1, 5, 4), "32x32x3": (1, 3, 3), "28x28x1": (1, 3, 3)},
}
LR = 1e-4
PARAM_TOLERANCE = 0.10


def import_peer() -> tuple[type, type, str]:
    """Import the peer's ``Unet`` and ``GaussianDiffusion`` (stubbing torchvision if needed)."""
    try:
        import torchvision  # noqa: F401
    except Exception:  # not installed, or built against another torch
        # The peer imports ``transforms`` and ``utils`` from torchvision at module level but
        # uses them only in its Dataset and Trainer, never in Unet/GaussianDiffusion.
        stub = types.ModuleType("torchvision")
        stub.__doc__ = "stub inserted by benchmarks/train_throughput.py (torchvision unusable)"
        for sub in ("transforms", "utils"):
            mod = types.ModuleType(f"torchvision.{sub}")
            setattr(stub, sub, mod)
            sys.modules[f"torchvision.{sub}"] = mod
        sys.modules["torchvision"] = stub
    try:
        from denoising_diffusion_pytorch import GaussianDiffusion, Unet
        from denoising_diffusion_pytorch.version import __version__
    except ImportError as err:
        raise SystemExit(
            f"denoising-diffusion-pytorch is not importable ({err}); install it with\n"
            "  pip install --no-deps denoising-diffusion-pytorch einops ema-pytorch "
            "accelerate psutil"
        ) from err
    return Unet, GaussianDiffusion, __version__


def amp(precision: str) -> Any:
    """bf16 autocast on the CPU for ``precision == "bf16"``, else nothing."""
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def count(module: nn.Module) -> int:
    """Trainable parameter count."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class Contender:
    """One model under test: a training step and a no-grad forward on fixed data."""

    def __init__(
        self, name: str, module: nn.Module, loss_fn: Callable[[Tensor], Tensor],
        forward_fn: Callable[[Tensor], Tensor], params: int, precision: str = "fp32",
    ) -> None:
        self.name, self.module, self.loss_fn, self.forward_fn = name, module, loss_fn, forward_fn
        self.params, self.precision = params, precision
        self.opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=LR)
        self.last_loss = float("nan")

    def train_step(self, x: Tensor) -> tuple[float, float]:
        """zero_grad, batch-mean loss, backward, Adam step; returns (wall, process CPU) time."""
        self.module.train()
        t0, c0 = time.perf_counter(), time.process_time()
        self.opt.zero_grad(set_to_none=True)
        with amp(self.precision):
            loss = self.loss_fn(x)
        loss.float().backward()
        self.opt.step()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        self.last_loss = float(loss.detach())
        return dt, dc

    @torch.no_grad()
    def forward(self, x: Tensor) -> tuple[float, float]:
        """One no-grad network evaluation of the batch (one sampler step): (wall, CPU) time."""
        self.module.eval()
        t0, c0 = time.perf_counter(), time.process_time()
        with amp(self.precision):
            out = self.forward_fn(x)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if out.shape != x.shape:
            raise RuntimeError(f"{self.name}: forward returned {tuple(out.shape)}")
        return dt, dc


def build(cfg: dict[str, Any], Unet: type, GaussianDiffusion: type, seed: int,
          precision: str = "fp32") -> tuple[Contender, Contender]:
    """The parameter-matched (peer, ours) pair of one configuration."""
    size, ch = cfg["image_size"], cfg["channels"]
    torch.manual_seed(seed)
    peer_net = Unet(channels=ch, **cfg["peer"])
    diffusion = GaussianDiffusion(peer_net, image_size=size, timesteps=1000,
                                  objective="pred_noise", auto_normalize=False)
    t_fixed = {}

    def peer_forward(x: Tensor) -> Tensor:
        if "t" not in t_fixed:
            t_fixed["t"] = torch.randint(0, 1000, (x.shape[0],),
                                         generator=torch.Generator().manual_seed(seed))
        return peer_net(x, t_fixed["t"])

    peer = Contender("peer", diffusion, lambda x: diffusion(x), peer_forward, count(peer_net),
                     precision)

    torch.manual_seed(seed)
    our_net = UNet(ch, ch, image_size=size, dropout=0.0, **cfg["ours"])
    model = ScoreModel(VP(), our_net, (ch, size, size), prediction="eps", objective="dsm",
                       weighting="quality")
    gen = torch.Generator().manual_seed(seed)
    t_ours = {}

    def our_forward(x: Tensor) -> Tensor:
        if "t" not in t_ours:
            t_ours["t"] = torch.rand(x.shape[0], generator=torch.Generator().manual_seed(seed))
        return model(x, t_ours["t"])

    ours = Contender("ours", model, lambda x: model.loss(x, gen).mean(), our_forward,
                     count(our_net), precision)
    return peer, ours


Timing = tuple[float, float]


def interleave(fns: list[Callable[[], Timing]], n: int) -> list[list[Timing]]:
    """``n`` timings of each function, in rounds run forwards and backwards in turn
    (A B B A A B ... for two; A B C D D C B A ... for four), so load changes hit all alike."""
    out: list[list[Timing]] = [[] for _ in fns]
    for i in range(n):
        order = range(len(fns)) if i % 2 == 0 else reversed(range(len(fns)))
        for k in order:
            out[k].append(fns[k]())
    return out


def summarize(times: list[Timing], batch: int) -> dict[str, Any]:
    """Median-based rates of a list of (wall, CPU) step times.

    ``per_s`` and ``samples_per_s`` are wall-clock rates (1 / median wall time); ``cpu_s`` is
    the median process CPU time of a step, which other processes' load disturbs less (with
    several threads it also counts OpenMP spin-waiting).
    """
    wall = [w for w, _ in times]
    med = statistics.median(wall)
    q = statistics.quantiles(wall, n=4) if len(wall) >= 4 else [min(wall), med, max(wall)]
    return {"median_s": med, "q1_s": q[0], "q3_s": q[2], "per_s": 1.0 / med,
            "samples_per_s": batch / med, "cpu_s": statistics.median(c for _, c in times),
            "n": len(wall)}


def run_config(name: str, cfg: dict[str, Any], threads: int, budget: tuple[int, int, int],
               peer_api: tuple[type, type, str], seed: int,
               precisions: tuple[str, ...] = ("fp32",)) -> list[dict[str, Any]]:
    """Build, warm up and time one configuration at one thread count: a (peer, ours) pair per
    precision, all of them timed in the same interleaved rounds; one result per precision."""
    torch.set_num_threads(threads)
    pairs = [build(cfg, peer_api[0], peer_api[1], seed, prec) for prec in precisions]
    peer, ours = pairs[0]
    ratio_params = ours.params / peer.params
    if abs(ratio_params - 1.0) > PARAM_TOLERANCE:
        print(f"warning: {name}: parameter counts differ by {100 * (ratio_params - 1):+.1f}% "
              f"(ours {ours.params}, peer {peer.params})", file=sys.stderr)
    batch, size, ch = cfg["batch"], cfg["image_size"], cfg["channels"]
    x = torch.rand(batch, ch, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    warm, n_train, n_fwd = budget
    models = [c for pair in pairs for c in pair]  # peer, ours of each precision in turn
    for _ in range(warm):
        for c in models:
            c.train_step(x)
            c.forward(x)
    train = interleave([lambda c=c: c.train_step(x) for c in models], n_train)
    fwd = interleave([lambda c=c: c.forward(x) for c in models], n_fwd)
    for c in models:
        if not torch.isfinite(torch.tensor(c.last_loss)):
            raise RuntimeError(f"{name}: {c.name} ({c.precision}) loss is not finite")
    results = []
    for i, (prec, (peer, ours)) in enumerate(zip(precisions, pairs, strict=True)):
        tp, to, fp, fo = train[2 * i], train[2 * i + 1], fwd[2 * i], fwd[2 * i + 1]
        res = {
            "config": name, "threads": threads, "batch": batch, "precision": prec,
            "params": {"peer": peer.params, "ours": ours.params, "ratio": ratio_params},
            "train": {"peer": summarize(tp, batch), "ours": summarize(to, batch)},
            "forward": {"peer": summarize(fp, batch), "ours": summarize(fo, batch)},
            "last_loss": {"peer": peer.last_loss, "ours": ours.last_loss},
        }
        for key in ("train", "forward"):
            d = res[key]
            d["ratio"] = d["ours"]["per_s"] / d["peer"]["per_s"]  # wall clock, > 1: ours faster
            d["cpu_ratio"] = d["peer"]["cpu_s"] / d["ours"]["cpu_s"]  # CPU, > 1: ours cheaper
        results.append(res)
    return results


class _AllocCounter(TorchDispatchMode):
    """Counts aten ops and the bytes of the tensors they newly allocate (views excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops += 1
        leaves = tree_leaves((args, kwargs))
        inputs = {a.untyped_storage().data_ptr() for a in leaves if isinstance(a, Tensor)}
        for o in tree_leaves(out):
            if isinstance(o, Tensor) and o.untyped_storage().data_ptr() not in inputs:
                self.bytes += o.numel() * o.element_size()
        return out


def work_counts(c: Contender, x: Tensor) -> dict[str, float]:
    """Machine-independent work of one model: GFLOP of a loss + backward and of a forward
    (convolutions and matmuls, torch's FlopCounterMode), aten ops and MB of newly allocated
    tensors in a loss + backward (a proxy for the memory traffic of elementwise ops)."""
    c.module.train()
    flops = FlopCounterMode(display=False)
    with flops:
        c.loss_fn(x).backward()
    alloc = _AllocCounter()
    with alloc:
        c.loss_fn(x).backward()
    c.module.zero_grad(set_to_none=True)
    c.module.eval()
    fwd = FlopCounterMode(display=False)
    with fwd, torch.no_grad():
        c.forward_fn(x)
    return {"train_gflop": flops.get_total_flops() / 1e9,
            "forward_gflop": fwd.get_total_flops() / 1e9,
            "train_aten_ops": alloc.ops, "train_alloc_mb": alloc.bytes / 1e6}


def git_commit() -> str | None:
    """The current commit of the repository (None outside git)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=Path(__file__).resolve().parent, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def table(results: list[dict[str, Any]]) -> str:
    """A markdown table of the results."""
    lines = [
        "| config | precision | threads | batch | params peer / ours | "
        "train steps/s peer / ours | "
        "train samples/s peer / ours | train ratio ours/peer (wall; CPU) | "
        "forward img/s peer / ours | forward ratio (wall; CPU) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        tr, fw, p = r["train"], r["forward"], r["params"]
        lines.append(
            f"| {r['config']} | {r.get('precision', 'fp32')} | {r['threads']} | {r['batch']} | "
            f"{p['peer'] / 1e6:.3f} M / {p['ours'] / 1e6:.3f} M | "
            f"{tr['peer']['per_s']:.2f} / {tr['ours']['per_s']:.2f} | "
            f"{tr['peer']['samples_per_s']:.0f} / {tr['ours']['samples_per_s']:.0f} | "
            f"{tr['ratio']:.2f}; {tr['cpu_ratio']:.2f} | "
            f"{fw['peer']['samples_per_s']:.0f} / {fw['ours']['samples_per_s']:.0f} | "
            f"{fw['ratio']:.2f}; {fw['cpu_ratio']:.2f} |"
        )
    return "\n".join(lines)


def precision_table(results: list[dict[str, Any]]) -> str:
    """bf16 / fp32 speed-up of each model (training steps/s and forward images/s), per config
    and thread count: the rows of both precisions taken in the same run."""
    lines = ["| config | threads | train steps/s fp32 / bf16 (ours) | train bf16 speed-up "
             "ours; peer | forward img/s fp32 / bf16 (ours) | forward bf16 speed-up ours; peer |",
             "| --- | --- | --- | --- | --- | --- |"]
    by = {(r["config"], r["threads"], r.get("precision", "fp32")): r for r in results}
    for (name, th, prec), r32 in by.items():
        r16 = by.get((name, th, "bf16"))
        if prec != "fp32" or r16 is None:
            continue
        up = {k: {w: r16[k][w]["per_s"] / r32[k][w]["per_s"] for w in ("ours", "peer")}
              for k in ("train", "forward")}
        lines.append(
            f"| {name} | {th} | {r32['train']['ours']['per_s']:.2f} / "
            f"{r16['train']['ours']['per_s']:.2f} | {up['train']['ours']:.2f}; "
            f"{up['train']['peer']:.2f} | {r32['forward']['ours']['samples_per_s']:.0f} / "
            f"{r16['forward']['ours']['samples_per_s']:.0f} | {up['forward']['ours']:.2f}; "
            f"{up['forward']['peer']:.2f} |")
    return "\n".join(lines)


def work_table(work: dict[str, dict[str, dict[str, float]]], results: list[dict[str, Any]]
               ) -> str:
    """A markdown table of the work per training step and the achieved GFLOP/s per thread count."""
    lines = [
        "| config | GFLOP / train step peer / ours | aten ops / train step peer / ours | "
        "MB allocated / train step peer / ours | train GFLOP/s peer / ours (threads) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, w in work.items():
        p, o = w["peer"], w["ours"]
        rates = "; ".join(
            f"{r['train']['peer']['gflop_per_s']:.1f} / {r['train']['ours']['gflop_per_s']:.1f} "
            f"({r['threads']})" for r in results
            if r["config"] == name and r.get("precision", "fp32") == "fp32"
        )
        lines.append(
            f"| {name} | {p['train_gflop']:.2f} / {o['train_gflop']:.2f} | "
            f"{p['train_aten_ops']} / {o['train_aten_ops']} | "
            f"{p['train_alloc_mb']:.0f} / {o['train_alloc_mb']:.0f} | {rates} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command line entry point; returns the JSON record."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one thread, fewer steps (~1 minute)")
    ap.add_argument("--out", default="out/bench", help="output directory (default out/bench)")
    ap.add_argument("--threads", default=None,
                    help="comma-separated thread counts (default 1,2; --quick: 1)")
    ap.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                    help=f"comma-separated subset of {', '.join(CONFIGS)} (default "
                    f"{','.join(DEFAULT_CONFIGS)})")
    ap.add_argument("--precisions", default="fp32",
                    help="comma-separated precisions to time: fp32, bf16 (default fp32)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    mode = "quick" if args.quick else "full"
    threads = [int(s) for s in (args.threads or ("1" if args.quick else "1,2")).split(",")]
    if any(t < 1 for t in threads):
        raise SystemExit(f"--threads must be positive integers, got {args.threads!r}")
    precisions = [s.strip() for s in args.precisions.split(",") if s.strip()]
    if not precisions or any(p not in ("fp32", "bf16") for p in precisions):
        raise SystemExit(f"--precisions: expected fp32 and/or bf16, got {args.precisions!r}")
    names = [s.strip() for s in args.configs.split(",") if s.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown or not names:
        raise SystemExit(f"--configs: unknown {unknown}; valid: {', '.join(CONFIGS)}")

    peer_api = import_peer()
    load_start = os.getloadavg()
    t_start = time.perf_counter()
    work: dict[str, dict[str, dict[str, float]]] = {}
    torch.set_num_threads(threads[0])
    for name in names:
        cfg = CONFIGS[name]
        pair = build(cfg, peer_api[0], peer_api[1], args.seed)
        x = torch.rand(cfg["batch"], cfg["channels"], cfg["image_size"], cfg["image_size"]) * 2 - 1
        work[name] = {c.name: work_counts(c, x) for c in pair}
    results = []
    for th in threads:
        for name in names:
            for r in run_config(name, CONFIGS[name], th, BUDGET[mode][name], peer_api,
                                args.seed, tuple(precisions)):
                results.append(r)
                print(f"{name} {r['precision']} threads={th}: train ours/peer "
                      f"{r['train']['ratio']:.2f} (CPU {r['train']['cpu_ratio']:.2f}) "
                      f"({r['train']['ours']['per_s']:.2f} vs "
                      f"{r['train']['peer']['per_s']:.2f} steps/s), forward "
                      f"{r['forward']['ratio']:.2f}", flush=True)
                for who in ("peer", "ours"):  # achieved conv/matmul throughput
                    w, rt, rf = work[name][who], r["train"][who], r["forward"][who]
                    rt["gflop_per_s"] = w["train_gflop"] * rt["per_s"]
                    rf["gflop_per_s"] = w["forward_gflop"] * rf["per_s"]
    record = {
        "benchmark": "train_throughput",
        "mode": mode,
        "command": " ".join(["python", "benchmarks/train_throughput.py",
                             *(sys.argv[1:] if argv is None else argv)]),
        "peer": {"package": "denoising-diffusion-pytorch", "version": peer_api[2]},
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
                    "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")},
        "commit": git_commit(),
        "lr": LR,
        "precisions": precisions,
        "configs": {n: CONFIGS[n] for n in names},
        "budget": {n: dict(zip(("warmup", "train_steps", "forward_passes"), BUDGET[mode][n],
                               strict=True)) for n in names},
        "work": work,
        "results": results,
        "wall_s": time.perf_counter() - t_start,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "train_throughput.json"
    path.write_text(json.dumps(record, indent=2))
    print()
    print(table(results))
    print()
    if "bf16" in precisions and "fp32" in precisions:
        print(precision_table(results))
        print()
    print(work_table(work, results))
    print(f"\nwall {record['wall_s']:.0f} s; load average {load_start} -> "
          f"{record['machine']['loadavg_end']}; wrote {path}")
    return record


if __name__ == "__main__":
    main()
