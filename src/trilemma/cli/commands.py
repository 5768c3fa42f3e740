"""The ``trilemma`` commands: each parses nothing itself and calls the library (see
:mod:`trilemma.cli.parser` for the arguments)."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import bench
from ..evaluate import (
    EvaluationError,
    SamplerRequest,
    check_fits_some_run,
    combine_reports,
    default_cache_dir,
    evaluate_run,
    merge_results,
    parse_options,
    parse_samplers,
    timed_sample,
)
from ..metrics.features import save_classifier, train_classifier
from ..plots import save_samples
from ..report import markdown_table, write_report
from ..runs import blocking_file, locate_run
from ..sample_files import save_npz
from ..setup import (
    Config,
    ConfigError,
    apply_overrides,
    load_run,
    make_generator,
    net_kwargs,
    parse_override,
    read_yaml,
    resolve_device,
    resolve_teleport,
)
from ..train import list_checkpoints
from ..train.distributed import cleanup_distributed, init_distributed
from ..train.validation import nonfinite
from ..training import RunError, describe_outcome, sample_title, train_run
from .conditioning import parse_guidance, sample_conditioning
from .guidance import sample_guidance
from .parser import PROG
from .tools import is_dir_target, write_png_folder


class CLIError(Exception):
    """A user error: printed as ``trilemma: error: <message>``, exit status 2."""


# --------------------------------------------------------------------------- helpers
def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise CLIError(f"{name} must be a positive integer, got {value}")


def _set_threads(n: int | None) -> None:
    if n is not None:
        _positive("--threads", n)
        torch.set_num_threads(n)


def _device(name: str) -> str:
    try:
        return resolve_device(name)
    except ConfigError as err:
        raise CLIError(str(err)) from None


def _out_dir(path: str) -> Path:
    """``--out`` as a folder to write: refused when it or a folder above it is a file."""
    out = Path(path)
    above = blocking_file(out)
    if above is not None:
        raise CLIError(f"--out {out}: {above} is a file, not a folder")
    return out


def _command_line(args: argparse.Namespace) -> str | None:
    argv = getattr(args, "argv", None)
    return None if argv is None else "trilemma " + " ".join(shlex.quote(a) for a in argv)


# --------------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    """``trilemma train``: build everything from the config and run the trainer.

    Under ``torchrun`` every rank runs it (DDP, gloo on CPU, NCCL on GPU); rank 0 writes.
    """
    _set_threads(args.threads)
    dist = init_distributed()  # under torchrun: one process per rank; a no-op otherwise
    ok = False
    try:
        overrides = list(args.overrides)
        if args.device is not None:
            overrides.append(f"device={args.device}")
        config = Config.from_dict(apply_overrides(read_yaml(args.config), overrides))
        device = _device(config.device) if dist.world_size == 1 else str(dist.device)
        out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
        try:
            outcome = train_run(config, out, resume=args.resume, device=device, dist=dist,
                                progress=not args.quiet)
        except RunError as err:
            raise CLIError(str(err)) from None
        ok = True
    finally:
        cleanup_distributed(sync=ok)  # ranks part together after a run, at once after an error
    if not dist.is_main:
        return 0
    if outcome.interrupted_at is not None:
        last = list_checkpoints(out)
        print(f"{PROG}: interrupted at step {outcome.interrupted_at}; latest checkpoint: "
              f"{last[-1].name if last else 'none'} (continue with --resume)", file=sys.stderr)
        return 130
    print("\n".join(describe_outcome(outcome)))
    return 0


# --------------------------------------------------------------------------- sample
def cmd_sample(args: argparse.Namespace) -> int:
    """``trilemma sample``: rebuild the model, sample, write a PNG or an NPZ."""
    _set_threads(args.threads)
    out = Path(args.out)
    to_dir = is_dir_target(args.out)
    if not to_dir and out.suffix.lower() not in (".png", ".npz"):
        raise CLIError(f"--out must end in .png or .npz, or be a folder (DIR/: one PNG per "
                       f"sample), got {args.out!r}")
    above = blocking_file(out if to_dir else out.parent)
    if above is not None:
        raise CLIError(f"--out {out}: {above} is a file, not a folder")
    _positive("--n", args.n)
    _positive("--nfe", args.nfe)
    _positive("--batch", args.batch)
    device = _device(args.device)
    model, config, saved = load_run(args.run, device)
    sampler = args.sampler or config.sample["sampler"]
    nfe = args.nfe or config.sample["nfe"]
    try:
        if args.classifier is None:
            n, labels, guidance = sample_conditioning(args, model, config.sample["n"])
        else:  # the labels go to the classifier (and to a class-conditional model with them)
            n, labels = args.n or config.sample["n"], None
            guidance = 0.0 if args.guidance is None else float(args.guidance)
    except ValueError as err:
        raise CLIError(str(err)) from None
    # the config's sampler options go with the config's sampler only
    options = dict(config.sample["options"]) if sampler == config.sample["sampler"] else {}
    for text in args.options:
        try:
            key, value = parse_override(text)
        except ConfigError as err:
            raise CLIError(str(err).replace("override", "--opt", 1)) from None
        options[".".join(key)] = value
    try:
        model.check_sampler(sampler, nfe, options)
    except ValueError as err:
        flag = {"sampler": "--sampler", "nfe": "--nfe", "options": "--opt"}
        key, _, msg = str(err).partition(": ")
        raise CLIError(f"{flag.get(key, key)}: {msg}") from None
    guide, guided_labels = sample_guidance(args, model, n, device)
    labels = labels if guided_labels is None else guided_labels
    try:
        options = resolve_teleport(options, config)  # --opt teleport=data
    except (ValueError, OSError) as err:
        raise CLIError(f"--opt teleport=data: {err}") from None
    try:
        drawn = timed_sample(model, n, sampler, nfe, batch=args.batch or n,
                             generator=make_generator(args.seed, device),
                             options={**options, **guide}, device=device, warmup=False,
                             memory=False, precision=args.precision, labels=labels,
                             guidance=guidance)
    except ValueError as err:  # the sampler refuses an option value (eta=-3, order=7, ...)
        where = f"--opt (sampler {sampler})" if options else f"--sampler {sampler}"
        raise CLIError(f"{where}: {err}") from None
    samples, nfe_used, seconds = drawn.samples, drawn.nfe_max, drawn.seconds
    out.parent.mkdir(parents=True, exist_ok=True)
    if to_dir:
        write_png_folder(out, samples)
    elif out.suffix.lower() == ".npz":
        save_npz(out, samples, nfe=np.int64(nfe_used), seconds=np.float64(seconds),
                 seconds_per_sample=np.float64(seconds / n), sampler=np.str_(sampler),
                 seed=np.int64(args.seed), step=np.int64(saved.step if saved.step else -1),
                 **({} if labels is None else {"labels": labels.numpy(),
                                              "guidance": np.float64(guidance)}))
    else:
        title = sample_title(config, sampler, nfe_used, saved.step)
        save_samples(samples, out, title=title + _conditioning_note(labels, guidance, guide))
    bad = int((~torch.isfinite(samples.flatten(1))).any(dim=1).sum())
    print(f"{n} samples{_conditioning_note(labels, guidance, guide)} from {saved.weights} (step "
          f"{saved.step}) with {sampler}: NFE {nfe_used}, "
          f"{seconds:.3f} s, {seconds / n * 1e3:.4f} ms per sample -> {out}")
    if guide and guide["classifier_scale"] != 0:
        print(f"classifier guidance (class {args.label}, scale "
              f"{1.0 if guide['classifier_scale'] is None else guide['classifier_scale']:g}): "
              f"one classifier forward+backward per score-network call (not counted in NFE)")
    if bad:
        print(f"{PROG}: warning: {bad} of {n} samples are not finite", file=sys.stderr)
    return 0


def _conditioning_note(labels: torch.Tensor | None, guidance: float,
                       guide: dict[str, Any] | None = None) -> str:
    """``, class 3, w = 2`` (classifier-free) or ``, class 3, classifier scale 2`` for a title;
    empty for unconditional samples."""
    if labels is None:
        return ""
    uniq = labels.unique()
    what = f"class {int(uniq[0])}" if len(uniq) == 1 else f"{len(uniq)} classes"
    if guide:
        scale = guide.get("classifier_scale")
        what += f", classifier scale {1.0 if scale is None else scale:g}"
        return f", {what}" + (f", w = {guidance:g}" if guidance else "")
    return f", {what}, w = {guidance:g}"


# --------------------------------------------------------------------------- info
def cmd_info(args: argparse.Namespace) -> int:
    """``trilemma info``: step, process, net and parameter count, config summary."""
    model, config, saved = load_run(args.run, "cpu", finite=False)
    shape = saved.data_shape or tuple(model.data_shape)
    net = net_kwargs(config, shape)
    net_name = net.pop("name")
    counts = model.parameter_counts()
    total = counts.pop("total")
    print(f"weights    {saved.weights} ({'EMA' if 'ema' in saved.weights.name else 'raw'}"
          f"{', ' + saved.kind})")
    bad = nonfinite(model.state_dict())
    if bad:
        print(f"{PROG}: warning: {saved.weights} holds non-finite weights ({bad[1]} NaN/inf "
              f"values in {bad[0]!r}, {bad[2]} tensor(s) affected)", file=sys.stderr)
    print(f"step       {saved.step}")
    print(f"process    {config.process['name']}")
    print(f"net        {net_name}  " + " ".join(f"{k}={v}" for k, v in net.items()))
    print(f"parameters {total:,}" + "".join(f" ({k} {v:,})" for k, v in counts.items()))
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
    _set_threads(args.threads)
    for flag, val in (("--n", args.n), ("--batch", args.batch),
                      ("--classifier-steps", args.classifier_steps)):
        _positive(flag, val)
    if args.seed < 0:
        raise CLIError(f"--seed must be >= 0, got {args.seed}")
    if args.nll < 0:
        raise CLIError(f"--nll must be >= 0, got {args.nll}")
    if args.classifier_scale is not None and args.classifier is None:
        raise CLIError("--classifier-scale: give the classifier too (--classifier "
                       "CLASSIFIER_RUN)")
    device = _device(args.device)
    try:
        guidance = parse_guidance(args.guidance)
    except ValueError as err:
        raise CLIError(str(err)) from None
    out = _out_dir(args.out)
    try:
        options = parse_options(args.options)
        requests = parse_samplers(args.samplers) if args.samplers else None
        labels = _run_labels(args.runs, args.label)
        configs = [Config.from_dict(locate_run(r).config, check_paths=False) for r in args.runs]
        if requests is not None and len(args.runs) > 1:
            check_fits_some_run(args.runs, requests, options)
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
                skip_unfit=len(args.runs) > 1, precision=args.precision,
                bootstrap=args.bootstrap, guidance=guidance, classifier=args.classifier,
                classifier_scales=args.classifier_scale or "1"))
    except EvaluationError as err:
        raise CLIError(str(err)) from None
    merged = merge_results(results)
    if _command_line(args):
        merged["command"] = _command_line(args)
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
          f"quality_vs_time.png, diversity_vs_nfe.png{', guidance.png' if guidance else ''} "
          f"in {out})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``trilemma report``: merge evaluate outputs and write one report."""
    out = _out_dir(args.out)
    try:
        merged = combine_reports(args.reports, out)
    except EvaluationError as err:
        raise CLIError(str(err)) from None
    if _command_line(args):
        merged["command"] = _command_line(args)
    paths = write_report(merged, out)
    print(markdown_table(merged))
    print(f"report: {paths['html']} (also results.json, results.csv and the plots in {out})")
    return 0


# --------------------------------------------------------------------------- bench
def cmd_bench(args: argparse.Namespace) -> int:
    """``trilemma bench``: the oracle sampler benchmark and its HTML report."""
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
        print(f"{PROG}: note: diffusers is not installed (pip install diffusers; make bench "
              "installs it): skipping the diffusers peer", file=sys.stderr)
    try:
        results = bench.run_benchmark(cfg, progress=not args.quiet)
    except ValueError as err:
        raise CLIError(f"bench: {err}") from None
    paths = bench.write_outputs(results, args.out)
    paths = bench.write_bench_report(results, args.out, paths)
    print(bench.report_markdown(results))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


# --------------------------------------------------------------------------- features
def cmd_features(args: argparse.Namespace) -> int:
    """``trilemma features train``: train, save and describe a feature classifier."""
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
    save_classifier(out, model)
    meta = model.metadata
    print(f"classifier {model.name} ({args.steps} steps, seed {args.seed}): test accuracy "
          f"{meta['test_accuracy']:.4f} on {meta['test_n']} images, train accuracy "
          f"{meta['train_accuracy']:.4f}")
    print(f"SHA-256 {model.fingerprint}")
    print(f"saved to {out} (use: trilemma evaluate RUN --features {out})")
    return 0


