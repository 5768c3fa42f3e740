"""The ``trilemma`` command line: ``train``, ``sample`` and ``info``.

::

    trilemma train configs/toy_vp.yaml --out runs/toy_vp [--resume] [--set train.lr=1e-3]
    trilemma sample runs/toy_vp --sampler dpm2m --nfe 20 --n 2000 --seed 0 --out toy.png
    trilemma info runs/toy_vp

User errors (bad config, missing run, sampler that does not fit the process) print
``trilemma: error: ...`` and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .config import (
    Config,
    ConfigError,
    apply_overrides,
    check_sampler,
    parse_override,
    read_yaml,
    resolve_device,
)

PROG = "trilemma"


class CLIError(Exception):
    """A user error: printed as ``trilemma: error: <message>``, exit status 2."""


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``trilemma`` command."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Score-based diffusion models: train, sample, inspect."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("train", help="train a model from a YAML config",
                       description="Train a model from a YAML config; checkpoints, sample grids "
                       "and the final EMA weights go to the run directory.")
    p.add_argument("config", metavar="CONFIG", help="YAML config file (see configs/)")
    p.add_argument("--out", metavar="RUN_DIR",
                   help="run directory (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint in RUN_DIR")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=1e-3 (repeatable; the "
                   "value is parsed as YAML)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (overrides the config)")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar or log lines")

    p = sub.add_parser("sample", help="draw samples from a trained model",
                       description="Rebuild a trained model (EMA weights) and sample it.")
    p.add_argument("run", metavar="RUN_DIR_OR_CHECKPOINT",
                   help="a run directory, a checkpoints/step_* folder or a model.safetensors")
    from .samplers import SAMPLERS

    groups: dict[str, list[str]] = {}
    for name, spec in SAMPLERS.items():
        groups.setdefault(spec.processes, []).append(name)
    kinds = {"any": "any process", "scalar": "VP/sub-VP/VE only", "cld": "CLD only"}
    listing = "; ".join(f"{kinds.get(k, k)}: {', '.join(v)}" for k, v in groups.items())
    p.add_argument("--sampler", help="sampler name (default: the config's sample.sampler). "
                   + listing)
    p.add_argument("--nfe", type=int, help="budget of score evaluations (default: the config's)")
    p.add_argument("--n", type=int, help="number of samples (default: the config's sample.n)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="output: .png (grid or scatter plot) or .npz (samples, nfe, seconds)")
    p.add_argument("--opt", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="sampler option, e.g. --opt eta=0.5 (repeatable)")
    p.add_argument("--batch", type=int, metavar="B",
                   help="samples per sampler call (default: all at once)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")

    p = sub.add_parser("info", help="describe a run or checkpoint",
                       description="Print step, process, net, parameter count and config.")
    p.add_argument("run", metavar="CHECKPOINT_OR_RUN_DIR")
    return parser


# --------------------------------------------------------------------------- helpers
def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise CLIError(f"{name} must be a positive integer, got {value}")


def _set_threads(n: int | None) -> None:
    import torch

    if n is not None:
        _positive("--threads", n)
        torch.set_num_threads(n)


def _device(name: str) -> str:
    try:
        return resolve_device(name)
    except ConfigError as err:
        raise CLIError(str(err)) from None


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys where two nested dicts differ, with old -> new."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in list(old) + [k for k in new if k not in old]:
            out += _diff(old.get(k), new.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _sample_title(config: Config, sampler: str, nfe: int, step: int | None = None) -> str:
    head = f"{config.process['name']} / {config.data.get('toy', config.data['name'])}"
    return f"{head}: {sampler}, NFE {nfe}" + (f", step {step}" if step is not None else "")


# --------------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    """``trilemma train``: build everything from the config and run the trainer.

    Under ``torchrun`` every rank runs it (DDP, gloo on CPU, NCCL on GPU); rank 0 writes.
    """
    from .train.distributed import cleanup_distributed, init_distributed

    _set_threads(args.threads)
    dist = init_distributed()  # under torchrun: one process per rank; a no-op otherwise
    try:
        return _train(args, dist)
    finally:
        cleanup_distributed()


def _train(args: argparse.Namespace, dist: Any) -> int:
    """The body of ``trilemma train`` (every rank runs it; rank 0 alone writes files)."""
    import torch

    from .build import (
        FINAL_WEIGHTS,
        RUN_CONFIG,
        RUN_INFO,
        build_dataset,
        build_model,
        build_train_config,
        data_shape_of,
        make_generator,
    )
    from .nets import count_parameters
    from .plots import save_samples
    from .train import Trainer, latest_checkpoint, save_weights

    overrides = list(args.overrides)
    if args.device is not None:
        overrides.append(f"device={args.device}")
    config = Config.from_dict(apply_overrides(read_yaml(args.config), overrides))
    device = _device(config.device) if dist.world_size == 1 else str(dist.device)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} exists and is not a directory")
    ckpt = latest_checkpoint(out) if out.is_dir() else None
    resolved = config.to_dict()
    if ckpt is not None and not args.resume:
        raise CLIError(f"{out} already holds checkpoints (latest {ckpt.name}); pass --resume to "
                       "continue, or choose another --out")
    if ckpt is not None and (out / RUN_CONFIG).is_file():
        saved = json.loads((out / RUN_CONFIG).read_text())
        changed = [d for key in ("process", "model", "data", "seed")
                   for d in _diff(saved.get(key), resolved.get(key), key)]
        if changed:
            raise CLIError(
                f"--resume: the run in {out} was trained with another config; changed: "
                + "; ".join(changed) + ". Only train.* and sample.* may change on resume; "
                "start a new run with another --out"
            )
    if args.resume and ckpt is None:
        print(f"{PROG}: note: {out} holds no checkpoint; starting from step 0", file=sys.stderr)

    torch.manual_seed(config.seed)
    dataset = build_dataset(config)
    shape = data_shape_of(dataset)
    model = build_model(config, shape)
    n_params = count_parameters(model)
    train_config = build_train_config(config)

    data = dataset.data if hasattr(dataset, "data") else dataset
    smp = config.sample
    reference = data[:2000] if data.dim() == 2 else None

    def sample_fn(m: Any, step: int, run_dir: Path) -> None:
        gen = make_generator(config.seed, device)
        res = m.sample(smp["n"], smp["sampler"], smp["nfe"], generator=gen, **smp["options"])
        save_samples(res.samples, Path(run_dir) / "samples" / f"step_{step:06d}.png",
                     title=_sample_title(config, smp["sampler"], res.nfe, step),
                     reference=reference)

    try:
        trainer = Trainer(model, data, train_config, out, device=device, sample_fn=sample_fn,
                          progress=not args.quiet,
                          metadata={"config": resolved, "data_shape": list(shape)})
    except ValueError as err:
        raise CLIError(f"train: {str(err).replace('TrainConfig.', 'train.')}") from None
    if not dist.is_main:  # other ranks train in lock-step; rank 0 writes every file
        trainer.fit(resume=args.resume)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    _write_text(out / "config.yaml", config.to_yaml())
    _write_json(out / RUN_CONFIG, resolved)
    _write_json(out / RUN_INFO, {"data_shape": list(shape), "num_params": n_params,
                                 "trilemma_version": __version__, "device": device})
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        print(f"run {out}: {config.process['name']} + {config.model['net']['name']} "
              f"({n_params:,} parameters) on {config.data['name']} {tuple(shape)}, "
              f"device {device}", file=sys.stderr)

    try:
        summary = trainer.fit(resume=args.resume)
    except KeyboardInterrupt:
        last = latest_checkpoint(out)
        print(f"{PROG}: interrupted at step {trainer.step}; latest checkpoint: "
              f"{last.name if last else 'none'} (continue with --resume)", file=sys.stderr)
        return 130
    meta = {"config": resolved, "data_shape": list(shape), "step": summary["step"],
            "weights": "ema", "num_params": n_params, "trilemma_version": __version__}
    with trainer.ema.swap_in(model):
        save_weights(out / FINAL_WEIGHTS, model, meta)
    _write_json(out / "model.json", meta)
    loss = summary["loss"]
    loss_text = f"{loss:.4g}" if isinstance(loss, float) and math.isfinite(loss) else "n/a"
    sps = summary["steps_per_s"]
    sps_text = f"{sps:.2f} steps/s" if isinstance(sps, float) and math.isfinite(sps) else "no steps"
    print(f"trained {out} to step {summary['step']} in {summary['seconds']:.1f} s "
          f"({sps_text}); last loss {loss_text}")
    print(f"checkpoint: {summary['checkpoint']}")
    print(f"final EMA weights: {out / FINAL_WEIGHTS}")
    return 0


# --------------------------------------------------------------------------- sample
def cmd_sample(args: argparse.Namespace) -> int:
    """``trilemma sample``: rebuild the model, sample, write a PNG or an NPZ."""
    import numpy as np
    import torch

    from .build import load_run, make_generator
    from .plots import save_samples

    _set_threads(args.threads)
    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".npz"):
        raise CLIError(f"--out must end in .png or .npz, got {args.out!r}")
    _positive("--n", args.n)
    _positive("--nfe", args.nfe)
    _positive("--batch", args.batch)
    device = _device(args.device)
    model, config, saved = load_run(args.run, device)
    process = config.process["name"]
    sampler = args.sampler or config.sample["sampler"]
    nfe = args.nfe or config.sample["nfe"]
    n = args.n or config.sample["n"]
    # the config's sampler options go with the config's sampler only
    options = dict(config.sample["options"]) if sampler == config.sample["sampler"] else {}
    for text in args.options:
        try:
            key, value = parse_override(text)
        except ConfigError as err:
            raise CLIError(str(err).replace("override", "--opt", 1)) from None
        options[".".join(key)] = value
    try:
        check_sampler(sampler, process, nfe, options)
    except ValueError as err:
        flag = {"sampler": "--sampler", "nfe": "--nfe", "options": "--opt"}
        key, _, msg = str(err).partition(": ")
        raise CLIError(f"{flag.get(key, key)}: {msg}") from None

    gen = make_generator(args.seed, device)
    batch = args.batch or n
    chunks, nfes = [], []
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        res = model.sample(min(batch, n - start), sampler, nfe, generator=gen, **options)
        chunks.append(res.samples.float().cpu())
        nfes.append(int(res.nfe))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    samples = torch.cat(chunks)
    nfe_used = max(nfes)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".npz":
        np.savez(out, samples=samples.numpy(), nfe=np.int64(nfe_used), seconds=np.float64(seconds),
                 seconds_per_sample=np.float64(seconds / n), sampler=np.str_(sampler),
                 seed=np.int64(args.seed), step=np.int64(saved.step if saved.step else -1))
    else:
        save_samples(samples, out, title=_sample_title(config, sampler, nfe_used, saved.step))
    bad = int((~torch.isfinite(samples.flatten(1))).any(dim=1).sum())
    print(f"{n} samples from {saved.weights} (step {saved.step}) with {sampler}: NFE {nfe_used}, "
          f"{seconds:.3f} s, {seconds / n * 1e3:.4f} ms per sample -> {out}")
    if bad:
        print(f"{PROG}: warning: {bad} of {n} samples are not finite", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- info
def cmd_info(args: argparse.Namespace) -> int:
    """``trilemma info``: step, process, net and parameter count, config summary."""
    from .build import load_run, net_kwargs
    from .nets import count_parameters
    from .train import list_checkpoints

    model, config, saved = load_run(args.run, "cpu")
    shape = saved.data_shape or tuple(model.data_shape)
    net = net_kwargs(config, shape)
    net_name = net.pop("name")
    net_params = count_parameters(model.model.net) if hasattr(model.model, "net") else None
    print(f"weights    {saved.weights} ({'EMA' if 'ema' in saved.weights.name else 'raw'}"
          f"{', ' + saved.kind})")
    print(f"step       {saved.step}")
    print(f"process    {config.process['name']}")
    print(f"net        {net_name}  " + " ".join(f"{k}={v}" for k, v in net.items()))
    print(f"parameters {count_parameters(model):,}"
          + (f" (net {net_params:,})" if net_params is not None else ""))
    print(f"data shape {tuple(shape)}")
    if saved.run_dir is not None:
        steps = [int(p.name.split("_")[-1]) for p in list_checkpoints(saved.run_dir)]
        if steps:
            print(f"checkpoints {', '.join(map(str, steps))}  (in {saved.run_dir})")
    print("config:")
    for line in config.summary().splitlines():
        print("  " + line)
    return 0


# --------------------------------------------------------------------------- main
COMMANDS = {"train": cmd_train, "sample": cmd_sample, "info": cmd_info}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trilemma`` command; returns the exit status."""
    from .train import CheckpointError, TrainingDivergedError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2, already printed)
        return int(exc.code or 0)
    try:
        return COMMANDS[args.command](args)
    except (CLIError, ConfigError, CheckpointError, FileNotFoundError, FileExistsError,
            NotADirectoryError) as err:
        msg = str(err)
        if isinstance(err, ConfigError) and len(err.problems) > 1:
            msg = "the config has problems:\n  " + "\n  ".join(err.problems)
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 2
    except TrainingDivergedError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
