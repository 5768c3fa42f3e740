"""The public entry points: :func:`load` a trained run, :func:`train` one from a config.

``trilemma.load`` and ``trilemma.train`` (re-exported by the package) are what the CLI's
``sample``/``info`` and ``train`` commands call, so a run trained from Python writes the same
complete run folder (``config.yaml``/``config.json``, ``run.json``, ``log.csv``, checkpoints,
``model.safetensors``) that ``trilemma sample``, ``info``, ``evaluate`` and ``export`` read::

    import trilemma

    model = trilemma.train({"process": {"name": "vp"},
                            "model": {"net": {"name": "mlp", "hidden": 64, "depth": 2}},
                            "data": {"name": "toy", "toy": "grid25"},
                            "train": {"steps": 500, "batch_size": 256}}, out="runs/py_vp")
    same = trilemma.load("runs/py_vp")            # later, or in another process
    result = same.sample(1000, "dpm2m", nfe=20)   # result.samples, result.nfe

``trilemma.train`` is also the name of the trainer subpackage (``from trilemma.train import
Trainer``); that module is callable and forwards to :func:`train` (see
:mod:`trilemma.train` and docs/GUIDE.md, "The Python API").
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .methods.base import Method
from .setup import Config, apply_overrides, load_run, read_yaml, resolve_device
from .train.distributed import cleanup_distributed, init_distributed
from .training import TrainOutcome, train_run

ConfigLike = Config | Mapping[str, Any] | str | os.PathLike

__all__ = ["ConfigLike", "load", "resolve_config", "train"]


def resolve_config(config: ConfigLike, overrides: Sequence[str] = ()) -> Config:
    """A validated :class:`~trilemma.setup.Config` from a Config, a nested dict (the YAML's
    content) or the path of a YAML file, with ``a.b=value`` overrides applied (as ``--set``).

    Raises :class:`~trilemma.errors.ConfigError` naming every problem.
    """
    if isinstance(config, Config):
        raw: Mapping[str, Any] = config.to_dict()
    elif isinstance(config, (str, os.PathLike)):
        raw = read_yaml(config)
    elif isinstance(config, Mapping):
        raw = config
    else:
        raise TypeError("config must be a trilemma Config, a dict or the path of a YAML file, "
                        f"got {type(config).__name__}")
    return Config.from_dict(apply_overrides(raw, list(overrides)))


def load(path: str | os.PathLike, device: str = "cpu") -> Method:
    """The trained model behind a run folder, a ``checkpoints/step_*`` folder or a
    ``model.safetensors`` file, with its EMA weights, in eval mode on ``device`` (``'cpu'``,
    ``'cuda'``, ``'cuda:N'`` or ``'auto'``).

    The model is a :class:`~trilemma.methods.base.Method`: ``model.sample(n, sampler, nfe,
    generator=...)`` returns a ``SampleResult`` (``.samples``, ``.nfe``), ``model.nll(x)`` the
    negative log-likelihood where the method has one, ``model.samplers()`` the samplers that
    fit. Two attributes say where it came from: ``model.run_config`` (the run's resolved
    :class:`~trilemma.setup.Config`; ``run_config.sample`` holds its default sampler, NFE and
    options) and ``model.saved_run`` (weights file, step, run folder).
    """
    model, config, saved = load_run(path, resolve_device(device))
    model.run_config = config
    model.saved_run = saved
    return model


def train(config: ConfigLike, out: str | os.PathLike, *, resume: bool = False,
          device: str | None = None, overrides: Sequence[str] = (), progress: bool = True
          ) -> Method | None:
    """Train ``config`` into the run folder ``out``: what ``trilemma train CONFIG --out OUT``
    does, with the same files, checks and messages.

    Args:
        config: a :class:`~trilemma.setup.Config`, a nested dict in the YAML layout (missing
            keys take their defaults) or the path of a YAML file.
        out: the run folder; one that already holds checkpoints needs ``resume=True``.
        resume: continue from the latest checkpoint in ``out`` (only ``train.*`` and
            ``sample.*`` may change).
        device: ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or ``'auto'`` (default: the config's
            ``device``, itself ``'auto'`` by default).
        overrides: ``'train.lr=1e-3'``-style overrides, as the CLI's ``--set``.
        progress: the progress bar (plain lines when stderr is not a terminal) and the
            run's one-line description on stderr.

    Returns the trained model as :func:`load` returns it (EMA weights, eval mode), with the
    trainer's summary in ``model.train_summary``. Under ``torchrun`` every rank calls it and
    trains (DDP); rank 0 writes the files and returns the model, the other ranks return None.
    Raises :class:`~trilemma.training.RunError` for a run folder that cannot be trained as
    asked and ``KeyboardInterrupt`` when interrupted (the last checkpoint is kept).
    """
    cfg = resolve_config(config, [*overrides, *([f"device={device}"] if device else [])])
    dist = init_distributed()  # under torchrun: one process per rank; a no-op otherwise
    try:
        dev = resolve_device(cfg.device) if dist.world_size == 1 else str(dist.device)
        outcome: TrainOutcome = train_run(cfg, Path(out), resume=resume, device=dev, dist=dist,
                                          progress=progress)
    finally:
        cleanup_distributed()
    if not dist.is_main:
        return None
    if outcome.interrupted_at is not None:
        raise KeyboardInterrupt(f"training interrupted at step {outcome.interrupted_at}; "
                                f"continue with resume=True")
    model = load(outcome.out, dev)
    model.train_summary = outcome.summary
    return model
