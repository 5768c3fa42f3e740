"""The run folder: the one module that writes and reads what ``trilemma train`` leaves behind.

A run folder holds::

    config.yaml          the resolved config, for people
    config.json          the resolved config, for programs (rebuilds the model)
    run.json             data shape, parameter count, trilemma version, device
    checkpoints/step_*/  resumable checkpoints (trilemma.train.checkpoint)
    model.safetensors    the final EMA weights, with the config in their metadata
    model.json           that metadata, readable without safetensors
    log.csv, samples/    the trainer's log and sample grids

:func:`locate_run` finds the weights, config and data shape behind a run folder, a checkpoint
folder or a weights file; it returns plain dictionaries (validating them is the setup layer's
job), so any layer may read a run without importing the config system.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from .errors import ConfigError
from .train.checkpoint import latest_checkpoint, load_weights, save_weights

RUN_CONFIG = "config.json"
RUN_CONFIG_YAML = "config.yaml"
RUN_INFO = "run.json"
FINAL_WEIGHTS = "model.safetensors"
FINAL_META = "model.json"


@dataclass
class SavedRun:
    """Where a run's weights, config and data shape live (see :func:`locate_run`)."""

    run_dir: Path | None
    weights: Path
    kind: str  # 'checkpoint' (a step_* folder) or 'weights' (a single safetensors file)
    step: int | None
    config: dict[str, Any]
    data_shape: tuple[int, ...] | None


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON atomically (temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically (temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """A JSON file's content; a clear :class:`ConfigError` naming the file when unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError([f"cannot read {path}: {err}"]) from None


def write_run_files(out: Path, *, config_yaml: str, config: Mapping[str, Any],
                    info: Mapping[str, Any]) -> None:
    """Create the run folder and write its config (YAML and JSON) and ``run.json``."""
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / RUN_CONFIG_YAML, config_yaml)
    write_json(out / RUN_CONFIG, dict(config))
    write_json(out / RUN_INFO, dict(info))


def write_final_weights(out: Path, model: nn.Module, meta: Mapping[str, Any]) -> Path:
    """Write the final weights (``model.safetensors``, metadata inside) and ``model.json``."""
    path = out / FINAL_WEIGHTS
    save_weights(path, model, dict(meta))
    write_json(out / FINAL_META, dict(meta))
    return path


def _run_files(run_dir: Path) -> tuple[dict[str, Any] | None, tuple[int, ...] | None]:
    cfg = read_json(run_dir / RUN_CONFIG) if (run_dir / RUN_CONFIG).is_file() else None
    info = read_json(run_dir / RUN_INFO) if (run_dir / RUN_INFO).is_file() else {}
    shape = info.get("data_shape") if isinstance(info, dict) else None
    return cfg, (tuple(int(s) for s in shape) if shape else None)


def _locate_weights_file(p: Path, given: str) -> SavedRun:
    if p.suffix != ".safetensors":
        raise FileNotFoundError(
            f"{given} is a file but not a .safetensors weights file; give a run directory, a "
            "checkpoint folder (checkpoints/step_*) or a model.safetensors"
        )
    _, meta = load_weights(p)
    cfg = meta.get("config")
    shape = meta.get("data_shape")
    run_cfg, run_shape = _run_files(p.parent)
    cfg = cfg or run_cfg
    if cfg is None:
        raise FileNotFoundError(f"{p} carries no config in its metadata and there is no "
                                f"{RUN_CONFIG} beside it")
    return SavedRun(p.parent, p, "weights", meta.get("step"), cfg,
                    tuple(shape) if shape else run_shape)


def locate_run(path: str | os.PathLike) -> SavedRun:
    """Find the weights, config and data shape behind a run folder, a ``step_*`` checkpoint
    folder or a final ``model.safetensors`` file.

    A run folder resolves to its latest checkpoint, else to its final weights. Raises
    ``FileNotFoundError`` with what was looked for when there is nothing to load.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"no such run directory or checkpoint: {os.fspath(path)}")
    if p.is_file():
        return _locate_weights_file(p, os.fspath(path))
    if (p / "state.json").is_file():
        ckpt, run_dir = p, p.parent.parent
    else:
        ckpt, run_dir = latest_checkpoint(p), p
        if ckpt is None:
            if (p / FINAL_WEIGHTS).is_file():
                return _locate_weights_file(p / FINAL_WEIGHTS, os.fspath(p / FINAL_WEIGHTS))
            raise FileNotFoundError(
                f"{os.fspath(path)} holds no checkpoint (no checkpoints/step_*/ folder and no "
                f"{FINAL_WEIGHTS}); train first with `trilemma train CONFIG --out {p}`"
            )
    cfg, shape = _run_files(run_dir)
    state = read_json(ckpt / "state.json")
    meta = state.get("metadata") if isinstance(state, dict) else None
    if cfg is None and isinstance(meta, dict):  # a checkpoint folder copied out of its run
        cfg = meta.get("config")
        shape = tuple(int(s) for s in meta["data_shape"]) if meta.get("data_shape") else None
    if cfg is None:
        raise FileNotFoundError(f"no {RUN_CONFIG} in the run directory {run_dir} and no config "
                                f"in {ckpt / 'state.json'} (needed to rebuild the model); a "
                                "model trained with the Python Trainer has none: train from a "
                                "config with trilemma.train(config, out=...) to get a run "
                                "folder the CLI reads")
    step = state.get("step") if isinstance(state, dict) else None
    weights = ckpt / "ema.safetensors"
    if not weights.is_file():
        weights = ckpt / "model.safetensors"
    return SavedRun(run_dir, weights, "checkpoint", step, cfg, shape)
