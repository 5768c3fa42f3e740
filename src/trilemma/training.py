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
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .errors import RunError
from .methods.base import Method
from .methods.labels import balanced_labels
from .nets import count_parameters
from .plots import save_samples
from .runs import (
    FINAL_WEIGHTS,
    RUN_CONFIG,
    blocking_file,
    lock_run,
    read_json,
    write_final_weights,
    write_run_files,
)
from .setup import (
    Config,
    build_dataset,
    build_model,
    build_train_config,
    data_shape_of,
    get_setup,
    make_generator,
    memory_budget,
    resolve_from_data,
    resolve_teleport,
)
from .train import CheckpointError, Trainer, latest_checkpoint
from .train.distributed import DistInfo

__all__ = ["FIXED_ON_RESUME", "RunError", "TrainOutcome", "check_resume", "config_diff",
           "describe_outcome", "sample_title", "train_run"]

#: sections that must not change when a run is resumed
FIXED_ON_RESUME = ("process", "model", "data", "seed")


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


def check_resume(out: Path, resolved: dict[str, Any], resume: bool,
                 lenient: tuple[str, ...] = ()) -> Path | None:
    """The latest checkpoint to resume from (None: start at step 0); refuses to overwrite a
    run without ``resume`` and to resume one whose model, data, process or seed changed (a
    dotted key in ``lenient`` whose new value is ``'auto'`` is checked later, once estimated)."""
    above = blocking_file(out)
    if above is not None:
        raise RunError(f"--out {out}: {above} is a file, not a folder")
    ckpt = latest_checkpoint(out) if out.is_dir() else None
    if ckpt is not None and not resume:
        raise RunError(f"{out} already holds checkpoints (latest {ckpt.name}); pass --resume to "
                       "continue, or choose another --out")
    if ckpt is not None and (out / RUN_CONFIG).is_file():
        saved = read_json(out / RUN_CONFIG)
        if not isinstance(saved, dict):
            raise RunError(f"{out / RUN_CONFIG}: expected a mapping of sections, got "
                           f"{type(saved).__name__}")
        changed = [d for key in FIXED_ON_RESUME
                   for d in config_diff(saved.get(key), resolved.get(key), key)
                   if not (d.split(":")[0] in lenient and d.endswith("-> 'auto'"))]
        old_train, new_train = saved.get("train"), resolved.get("train") or {}
        if isinstance(old_train, dict):
            changed += config_diff(old_train.get("seed"), new_train.get("seed"), "train.seed")
        if changed:
            raise RunError(
                f"--resume: the run in {out} was trained with another config; changed: "
                + "; ".join(changed) + ". Only train.* (but train.seed) and sample.* may "
                "change on resume; start a new run with another --out")
    return ckpt


def sample_title(config: Config, sampler: str, nfe: int, step: int | None = None) -> str:
    """Title of a sample grid: process / data: sampler, NFE[, step]."""
    head = f"{config.process['name']} / {config.data.get('toy', config.data['name'])}"
    return f"{head}: {sampler}, NFE {nfe}" + (f", step {step}" if step is not None else "")


def _sample_fn(config: Config, device: str, data: torch.Tensor
               ) -> Callable[[Method, int, Path], None]:
    """The trainer's periodic sample grid with the config's ``sample`` section (a
    class-conditional model draws every class in turn)."""
    smp = config.sample
    reference = data[:2000] if data.dim() == 2 else None
    options = resolve_teleport(smp["options"], config, data)  # teleport: data

    def sample_fn(m: Method, step: int, run_dir: Path) -> None:
        gen = make_generator(config.seed, device)
        cond = ({"labels": balanced_labels(smp["n"], m.num_classes)}  # classes in order
                if m.num_classes is not None else {})
        res = m.sample(smp["n"], smp["sampler"], smp["nfe"], generator=gen, **cond, **options)
        save_samples(res.samples, Path(run_dir) / "samples" / f"step_{step:06d}.png",
                     title=sample_title(config, smp["sampler"], res.nfe, step),
                     reference=reference)

    return sample_fn


def _labelled(data: torch.Tensor, dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, labels)`` for a method that trains on labels; a RunError for unlabelled data."""
    labels = getattr(dataset, "labels", None)
    if labels is None:
        raise RunError("data: this method trains on labelled data, and the data set has no "
                       "labels (toy data: set data.labels: true; folder data has none)")
    return data, labels


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
    """Train ``config`` into the run folder ``out`` (see the module docstring); rank 0 holds
    the run's lock (:func:`trilemma.runs.lock_run`) meanwhile, so a second writer is refused."""
    out = Path(out)
    dist = dist or DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device(device),
                            backend=None)
    if not dist.is_main:
        return _train(config, out, resume, device, dist, progress)
    created = not out.exists()
    lock = lock_run(out)
    try:
        if lock.stale is not None:
            print(f"trilemma: note: removed a stale lock of {out}: pid {lock.stale.get('pid')} "
                  f"on host {lock.stale.get('host')} (since {lock.stale.get('started')}) is "
                  "gone", file=sys.stderr)
        return _train(config, out, resume, device, dist, progress)
    finally:
        lock.release()
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # refused before anything was written: leave no empty folder


def _last_checkpoint_note(out: Path) -> str:
    last = latest_checkpoint(out) if out.is_dir() else None
    return (f"the last checkpoint is kept: {last} (continue with --resume)" if last
            else "no checkpoint was written")


def _train(config: Config, out: Path, resume: bool, device: str, dist: DistInfo,
           progress: bool) -> TrainOutcome:
    """:func:`train_run` once the run is locked (or on a rank other than 0)."""
    ckpt = check_resume(out, config.to_dict(), resume, lenient=("model.sigma_data",))
    torch.manual_seed(config.seed)
    dataset = build_dataset(config)
    if config.model.get("sigma_data") == "auto":  # estimated from the data, stored as a number
        config = resolve_from_data(config, dataset)
        check_resume(out, config.to_dict(), resume)
    resolved = config.to_dict()
    shape = data_shape_of(dataset)
    with memory_budget(device, training=True):
        model = build_model(config, shape)
    _prepare(model, config, out, dist, ckpt is not None)
    n_params = count_parameters(model)
    data = dataset.data if hasattr(dataset, "data") else dataset
    setup = get_setup(config.model.get("method"))
    labelled = setup.labels or config.data.get("labels") is True
    batches = _labelled(data, dataset) if labelled else data
    try:
        trainer = Trainer(model, batches, build_train_config(config), out, device=device,
                          sample_fn=_sample_fn(config, device, data) if setup.sample_grids
                          else None, progress=progress,
                          metadata={"config": resolved, "data_shape": list(shape)})
        with warnings.catch_warnings(record=True) as caught:  # shown as notes, below
            warnings.simplefilter("always")
            trainer.open(resume)  # checks and restores the checkpoint before anything is written
    except (ValueError, ImportError) as err:  # ImportError: an optional package is missing
        raise RunError(f"train: {str(err).replace('TrainConfig.', 'train.')}") from None
    except CheckpointError as err:  # names its file already
        raise RunError(str(err).replace("TrainConfig.", "train.")) from None
    for w in caught if dist.is_main else ():
        print(f"trilemma: note: {w.message}", file=sys.stderr)
    if not dist.is_main:  # other ranks train in lock-step; rank 0 writes every file
        return TrainOutcome(out, trainer.fit(resume=resume))
    try:
        write_run_files(out, config_yaml=config.to_yaml(), config=resolved,
                        info={"data_shape": list(shape), "num_params": n_params,
                              "trilemma_version": __version__, "device": device})
    except OSError as err:
        raise RunError(f"cannot write the run folder {out} ({err})") from None
    if progress:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        what = config.model.get("method") or (config.model.get("net") or {}).get("name")
        print(f"run {out}: {config.process['name']} + {what} "
              f"({n_params:,} parameters) on {config.data['name']} {tuple(shape)}, "
              f"device {device}", file=sys.stderr)
    try:
        summary = trainer.fit(resume=resume)
        meta = {"config": resolved, "data_shape": list(shape), "step": summary["step"],
                "weights": "ema", "num_params": n_params, "trilemma_version": __version__}
        with trainer.ema.swap_in(model):
            write_final_weights(out, model, meta)
    except KeyboardInterrupt:
        return TrainOutcome(out, None, interrupted_at=trainer.step)
    except OSError as err:
        raise RunError(f"cannot write to the run folder {out} ({err}); "
                       + _last_checkpoint_note(out)) from None
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
