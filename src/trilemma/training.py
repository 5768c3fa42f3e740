"""Train a run folder from a config: what ``trilemma train`` does, callable from Python.

:func:`train_run` validates what may change on ``--resume``, builds the data, the method (with
its setup hook, e.g. LSGM's ``init_from``) and the trainer, writes the run folder through
:mod:`trilemma.runs`, trains, and writes the final EMA weights. Under ``torchrun`` every rank
calls it; rank 0 alone writes files.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .methods.base import Method
from .nets import count_parameters
from .plots import save_samples
from .runs import FINAL_WEIGHTS, RUN_CONFIG, read_json, write_final_weights, write_run_files
from .setup import (
    Config,
    build_dataset,
    build_model,
    build_train_config,
    data_shape_of,
    get_setup,
    make_generator,
)
from .train import Trainer, latest_checkpoint
from .train.distributed import DistInfo

#: sections that must not change when a run is resumed
FIXED_ON_RESUME = ("process", "model", "data", "seed")


class RunError(ValueError):
    """A run folder that cannot be trained as asked (message says why and what to do)."""


@dataclass
class TrainOutcome:
    """What :func:`train_run` reports: the trainer's summary, or an interruption."""

    out: Path
    summary: dict[str, Any] | None
    interrupted_at: int | None = None


def config_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys where two nested dicts differ, with ``old -> new``."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in list(old) + [k for k in new if k not in old]:
            out += config_diff(old.get(k), new.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


def check_resume(out: Path, resolved: dict[str, Any], resume: bool) -> Path | None:
    """The latest checkpoint to resume from (None: start at step 0); refuses to overwrite a
    run without ``resume`` and to resume one whose model, data or process changed."""
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} exists and is not a directory")
    ckpt = latest_checkpoint(out) if out.is_dir() else None
    if ckpt is not None and not resume:
        raise RunError(f"{out} already holds checkpoints (latest {ckpt.name}); pass --resume to "
                       "continue, or choose another --out")
    if ckpt is not None and (out / RUN_CONFIG).is_file():
        saved = read_json(out / RUN_CONFIG)
        changed = [d for key in FIXED_ON_RESUME
                   for d in config_diff(saved.get(key), resolved.get(key), key)]
        if changed:
            raise RunError(
                f"--resume: the run in {out} was trained with another config; changed: "
                + "; ".join(changed) + ". Only train.* and sample.* may change on resume; "
                "start a new run with another --out")
    return ckpt


def sample_title(config: Config, sampler: str, nfe: int, step: int | None = None) -> str:
    """Title of a sample grid: process / data: sampler, NFE[, step]."""
    head = f"{config.process['name']} / {config.data.get('toy', config.data['name'])}"
    return f"{head}: {sampler}, NFE {nfe}" + (f", step {step}" if step is not None else "")


def _sample_fn(config: Config, device: str, data: torch.Tensor
               ) -> Callable[[Method, int, Path], None]:
    """The trainer's periodic sample grid with the config's ``sample`` section."""
    smp = config.sample
    reference = data[:2000] if data.dim() == 2 else None

    def sample_fn(m: Method, step: int, run_dir: Path) -> None:
        gen = make_generator(config.seed, device)
        res = m.sample(smp["n"], smp["sampler"], smp["nfe"], generator=gen, **smp["options"])
        save_samples(res.samples, Path(run_dir) / "samples" / f"step_{step:06d}.png",
                     title=sample_title(config, smp["sampler"], res.nfe, step),
                     reference=reference)

    return sample_fn


def _prepare(model: Method, config: Config, out: Path, dist: DistInfo, resume: bool) -> None:
    """The method's setup hook (e.g. ``init_from``) then its own ``prepare_training``."""
    resolved = config.to_dict()
    hook = get_setup(config.model.get("method")).prepare
    try:
        if hook is not None:
            hook(model, config, out, resume)
        model.prepare_training(run_dir=out, config=resolved, is_main=dist.is_main,
                               resume=resume)
    except ValueError as err:
        raise RunError(str(err)) from None


def train_run(config: Config, out: str | Path, *, resume: bool = False, device: str = "cpu",
              dist: DistInfo | None = None, progress: bool = True) -> TrainOutcome:
    """Train ``config`` into the run folder ``out`` (see the module docstring)."""
    out = Path(out)
    dist = dist or DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device(device),
                            backend=None)
    resolved = config.to_dict()
    ckpt = check_resume(out, resolved, resume)
    if resume and ckpt is None and dist.is_main:
        print(f"trilemma: note: {out} holds no checkpoint; starting from step 0",
              file=sys.stderr)
    torch.manual_seed(config.seed)
    dataset = build_dataset(config)
    shape = data_shape_of(dataset)
    model = build_model(config, shape)
    _prepare(model, config, out, dist, ckpt is not None)
    n_params = count_parameters(model)
    data = dataset.data if hasattr(dataset, "data") else dataset
    try:
        trainer = Trainer(model, data, build_train_config(config), out, device=device,
                          sample_fn=_sample_fn(config, device, data), progress=progress,
                          metadata={"config": resolved, "data_shape": list(shape)})
    except (ValueError, ImportError) as err:  # ImportError: an optional package is missing
        raise RunError(f"train: {str(err).replace('TrainConfig.', 'train.')}") from None
    if not dist.is_main:  # other ranks train in lock-step; rank 0 writes every file
        return TrainOutcome(out, trainer.fit(resume=resume))
    write_run_files(out, config_yaml=config.to_yaml(), config=resolved,
                    info={"data_shape": list(shape), "num_params": n_params,
                          "trilemma_version": __version__, "device": device})
    if progress:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        what = config.model.get("method") or (config.model.get("net") or {}).get("name")
        print(f"run {out}: {config.process['name']} + {what} "
              f"({n_params:,} parameters) on {config.data['name']} {tuple(shape)}, "
              f"device {device}", file=sys.stderr)
    try:
        summary = trainer.fit(resume=resume)
    except KeyboardInterrupt:
        return TrainOutcome(out, None, interrupted_at=trainer.step)
    meta = {"config": resolved, "data_shape": list(shape), "step": summary["step"],
            "weights": "ema", "num_params": n_params, "trilemma_version": __version__}
    with trainer.ema.swap_in(model):
        write_final_weights(out, model, meta)
    return TrainOutcome(out, summary)


def describe_outcome(outcome: TrainOutcome) -> list[str]:
    """The lines ``trilemma train`` prints at the end of a run."""
    s = outcome.summary or {}
    loss, sps = s.get("loss"), s.get("steps_per_s")
    loss_text = f"{loss:.4g}" if isinstance(loss, float) and math.isfinite(loss) else "n/a"
    sps_text = (f"{sps:.2f} steps/s" if isinstance(sps, float) and math.isfinite(sps)
                else "no steps")
    return [f"trained {outcome.out} to step {s.get('step')} in {s.get('seconds', 0.0):.1f} s "
            f"({sps_text}); last loss {loss_text}",
            f"checkpoint: {s.get('checkpoint')}",
            f"final EMA weights: {outcome.out / FINAL_WEIGHTS}"]
