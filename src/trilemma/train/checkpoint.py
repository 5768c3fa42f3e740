"""Checkpoints as safetensors + JSON folders, written atomically; no pickle anywhere.

Layout of one checkpoint, ``out_dir/checkpoints/step_000123/``:

- ``model.safetensors``: the model's ``state_dict()``;
- ``ema.safetensors``: the EMA shadow (same keys: loads into a fresh model), update count in
  its metadata;
- ``optimizer.safetensors`` + ``optimizer.json``: the optimizer state dict, its tensors in the
  first (keyed by path, e.g. ``state.0.exp_avg``) and everything else in the second, with
  ``{"__tensor__": key}`` placeholders (tuples and non-string dict keys are tagged, so the
  structure comes back exactly);
- ``rng.safetensors``: generator states (``torch.Generator.get_state()`` uint8 tensors);
- ``state.json``: step, scheduler state, the same RNG states as lists of ints, versions and
  whatever the trainer adds (resolved config, bad-step counters, data position).

A checkpoint is written into a hidden temporary folder, every file fsynced, then renamed into
place, so a crash never leaves a half-written ``step_*`` folder; :func:`latest_checkpoint`
ignores hidden folders.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import __version__
from .storage import (
    CheckpointError,
    _atomic_dir,
    _check_state_dict,
    _read_json,
    _read_safetensors,
    _write_json,
    _write_safetensors,
    flatten_state,
    load_weights,
    save_weights,
    unflatten_state,
)
from .validation import check_finite, check_optimizer_groups, check_scheduler, check_state

FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
_STEP_RE = re.compile(r"^step_(\d+)$")

__all__ = ["CHECKPOINT_DIR", "FORMAT_VERSION", "CheckpointError", "checkpoint_dir",
           "clean_temporary", "flatten_state", "latest_checkpoint", "list_checkpoints",
           "load_checkpoint", "load_weights", "save_checkpoint", "save_weights",
           "unflatten_state"]


# ---------------------------------------------------------------------------------------------
# checkpoints


def checkpoint_dir(out_dir: str | os.PathLike, step: int) -> Path:
    """``out_dir/checkpoints/step_{step:06d}``."""
    return Path(out_dir) / CHECKPOINT_DIR / f"step_{int(step):06d}"


def list_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``out_dir/checkpoints``, oldest step first."""
    root = Path(out_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_dir() and (p / "state.json").is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The checkpoint with the highest step under ``out_dir/checkpoints``, or None."""
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def _incomplete(folder: Path) -> bool:
    """A ``step_*`` folder without ``state.json`` or without a file its ``state.json`` lists:
    what a deletion interrupted by a kill leaves (a written checkpoint is renamed into place
    whole)."""
    state = folder / "state.json"
    if not state.is_file():
        return True
    try:
        files = _read_json(state).get("files", [])
    except (CheckpointError, OSError, AttributeError, UnicodeDecodeError):
        return False  # unreadable: leave it for the user, loading it names the problem
    return isinstance(files, list) and any(
        isinstance(f, str) and "/" not in f and not (folder / f).is_file() for f in files)


def clean_temporary(out_dir: str | os.PathLike) -> None:
    """Remove leftovers of interrupted writes and deletions: hidden ``.tmp_*`` / ``.old_*``
    folders, and incomplete ``step_*`` folders older than the latest complete checkpoint."""
    root = Path(out_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return
    for p in root.iterdir():
        if p.is_dir() and (p.name.startswith(".tmp_") or p.name.startswith(".old_")):
            shutil.rmtree(p, ignore_errors=True)
    steps = sorted((int(m.group(1)), p) for p in root.iterdir()
                   if (m := _STEP_RE.match(p.name)) and p.is_dir())
    complete = [n for n, p in steps if not _incomplete(p)]
    for n, p in steps:
        if complete and n < complete[-1] and _incomplete(p):
            shutil.rmtree(p, ignore_errors=True)


def _remove_checkpoint(folder: Path) -> None:
    """Delete a checkpoint folder: renamed aside (hidden) first, so a kill during the deletion
    leaves no half-deleted ``step_*`` folder, only a ``.old_*`` one that the next run clears."""
    aside = folder.with_name(f".old_{folder.name}")
    try:
        os.replace(folder, aside)
    except OSError:
        aside = folder
    shutil.rmtree(aside, ignore_errors=True)


def _json_ready(obj: Any, what: str) -> Any:
    """Check that ``obj`` is plain JSON (no tensors); name ``what`` on failure."""
    enc, tensors = flatten_state(obj)
    if tensors:
        raise TypeError(f"{what} holds tensors ({', '.join(list(tensors)[:3])}); not storable")
    return enc


def save_checkpoint(
    out_dir: str | os.PathLike,
    step: int,
    model: nn.Module,
    ema: Any | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    state: Mapping[str, Any] | None = None,
    rng: Mapping[str, Tensor] | None = None,
    keep_last: int = 0,
) -> Path:
    """Write ``out_dir/checkpoints/step_{step}`` atomically; keep the newest ``keep_last``.

    ``ema`` is an :class:`~trilemma.train.ema.EMA`; ``state`` extra JSON for ``state.json``;
    ``rng`` generator states (uint8 tensors) stored in ``rng.safetensors`` and, as lists of
    ints, in ``state.json``. ``keep_last = 0`` keeps every checkpoint.
    """
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    if not isinstance(keep_last, int) or keep_last < 0:
        raise ValueError(f"keep_last must be an int >= 0 (0 keeps all), got {keep_last!r}")
    version = __version__
    meta = {"format": "pt", "trilemma_version": version, "step": str(step)}
    rng = dict(rng or {})
    for k, v in rng.items():
        if not isinstance(v, Tensor) or v.dtype != torch.uint8:
            raise TypeError(f"rng[{k!r}] must be a uint8 tensor (Generator.get_state())")
    info: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "step": step,
        "trilemma_version": version,
        "torch_version": torch.__version__,
        "files": ["model.safetensors", "state.json"],
    }
    opt_json = opt_tensors = None
    if optimizer is not None:
        opt_json, opt_tensors = flatten_state(optimizer.state_dict())
        info["files"] += ["optimizer.safetensors", "optimizer.json"]
    if ema is not None:
        info["files"].append("ema.safetensors")
        info["ema"] = {"num_updates": ema.num_updates, "decay": ema.decay, "warmup": ema.warmup}
    if scheduler is not None:
        info["scheduler"] = _json_ready(scheduler.state_dict(), "scheduler.state_dict()")
    if rng:
        info["files"].append("rng.safetensors")
        info["rng"] = {k: v.flatten().tolist() for k, v in rng.items()}
    for k, v in (state or {}).items():
        if k in info:
            raise ValueError(f"state key {k!r} is reserved by the checkpoint format")
        info[k] = _json_ready(v, f"state[{k!r}]")

    def write(tmp: Path) -> None:
        _write_safetensors(tmp / "model.safetensors", model.state_dict(), meta)
        if ema is not None:
            ema_meta = {**meta, "num_updates": str(ema.num_updates), "decay": repr(ema.decay)}
            _write_safetensors(tmp / "ema.safetensors", ema.state_dict(), ema_meta)
        if optimizer is not None:
            _write_safetensors(tmp / "optimizer.safetensors", opt_tensors, meta)
            _write_json(tmp / "optimizer.json", opt_json)
        if rng:
            _write_safetensors(tmp / "rng.safetensors", rng, meta)
        _write_json(tmp / "state.json", info)  # last: its presence marks completeness

    final = _atomic_dir(checkpoint_dir(out_dir, step), write)
    if keep_last:
        for old in list_checkpoints(out_dir)[:-keep_last]:
            if old != final:
                _remove_checkpoint(old)
    return final

def _unflatten(obj: Any, tensors: Mapping[str, Tensor], file: Path) -> Any:
    """:func:`unflatten_state`, with a malformed structure reported against ``file``."""
    try:
        return unflatten_state(obj, tensors)
    except (TypeError, ValueError, RecursionError) as err:
        raise CheckpointError(f"{file}: malformed tagged structure ({err})") from None


def _count(value: Any, file: Path) -> int | None:
    """The EMA's update count from its metadata (a string), checked."""
    if value is None:
        return None
    try:
        num = int(value)
        if num < 0:
            raise ValueError(num)
    except (TypeError, ValueError):
        raise CheckpointError(f"{file}: metadata 'num_updates' must be an integer >= 0, got "
                              f"{value!r}") from None
    return num


def _read_optimizer(ckpt: Path, optimizer: torch.optim.Optimizer, model: nn.Module) -> Any:
    """The optimizer state of ``ckpt`` (``optimizer.json`` + ``.safetensors``), checked
    against ``optimizer``: groups, shapes, finite moments."""
    opt_file = ckpt / "optimizer.safetensors"
    tensors, _ = _read_safetensors(opt_file)
    opt_sd = _unflatten(_read_json(ckpt / "optimizer.json"), tensors, ckpt / "optimizer.json")
    if isinstance(opt_sd, dict):
        check_optimizer_groups(opt_sd.get("param_groups"), optimizer.state_dict()["param_groups"],
                               ckpt / "optimizer.json")
    _check_optimizer(opt_sd, optimizer, model, opt_file)
    check_finite(tensors, opt_file, "optimizer state")
    return opt_sd


def _resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A step folder, or a run folder (-> its latest checkpoint); clear errors otherwise."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint directory {str(p)!r} does not exist")
    if not p.is_dir():
        raise NotADirectoryError(f"checkpoint path {str(p)!r} is not a directory")
    if (p / "state.json").is_file() or (p / "model.safetensors").is_file():
        return p
    latest = latest_checkpoint(p)
    if latest is not None:
        return latest
    raise FileNotFoundError(
        f"{str(p)!r} is neither a checkpoint folder (no state.json) nor a run folder with "
        f"checkpoints under {CHECKPOINT_DIR}/"
    )


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    ema: Any | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
) -> dict[str, Any]:
    """Load a checkpoint into ``model`` (and the optional EMA, optimizer, scheduler).

    ``path`` is a ``step_*`` folder or a run folder (its latest checkpoint is used). Returns
    the parsed ``state.json`` plus ``"path"`` and ``"rng_tensors"`` (the generator states as
    uint8 tensors). Raises FileNotFoundError for a missing folder or file, CheckpointError for
    a corrupt file, missing/unexpected keys or a shape mismatch (naming file, key, shapes).
    Nothing is modified unless every file has been read and checked.
    """
    ckpt = _resolve_checkpoint(path)
    state_file = ckpt / "state.json"
    info = _unflatten(_read_json(state_file), {}, state_file)
    folder = _STEP_RE.match(ckpt.name)
    check_state(info, state_file, int(folder.group(1)) if folder else None, FORMAT_VERSION)

    model_file = ckpt / "model.safetensors"
    model_sd, _ = _read_safetensors(model_file)
    _check_state_dict(model_sd, model.state_dict(), model_file, "model")
    check_finite(model_sd, model_file, "model weights")

    ema_sd = ema_meta = None
    if ema is not None:
        ema_file = ckpt / "ema.safetensors"
        ema_sd, ema_meta = _read_safetensors(ema_file)
        _check_state_dict(ema_sd, ema.state_dict(), ema_file, "EMA")
        check_finite(ema_sd, ema_file, "EMA weights")

    opt_sd = _read_optimizer(ckpt, optimizer, model) if optimizer is not None else None

    rng_tensors: dict[str, Tensor] = {}
    if (ckpt / "rng.safetensors").is_file() or "rng.safetensors" in info.get("files", []):
        rng_tensors, _ = _read_safetensors(ckpt / "rng.safetensors")

    if scheduler is not None:
        if "scheduler" not in info:
            raise CheckpointError(f"{state_file}: field 'scheduler' is missing")
        check_scheduler(info["scheduler"], scheduler.state_dict(),
                        len(scheduler.optimizer.param_groups), state_file)
    num = (ema_meta or {}).get("num_updates", info.get("ema", {}).get("num_updates"))
    num = _count(num, ckpt / "ema.safetensors") if ema is not None else None

    # everything read and checked: now modify
    model.load_state_dict(model_sd, strict=True)
    if ema is not None:
        ema.load_state_dict(ema_sd, num_updates=num)
    if optimizer is not None:
        try:
            optimizer.load_state_dict(opt_sd)
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(
                f"{str(ckpt / 'optimizer.safetensors')!r} does not fit the optimizer: {e}"
            ) from e
    if scheduler is not None:
        scheduler.load_state_dict(info["scheduler"])
    info["path"] = str(ckpt)
    info["rng_tensors"] = rng_tensors
    return info


def _finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_optimizer(
    sd: Any, optimizer: torch.optim.Optimizer, model: nn.Module, file: Path
) -> None:
    """Group/parameter counts and per-parameter state shapes, naming the parameter."""
    if not isinstance(sd, dict) or "state" not in sd or "param_groups" not in sd:
        raise CheckpointError(f"{str(file)!r}: not an optimizer state (no state/param_groups)")
    groups = optimizer.param_groups
    if len(sd["param_groups"]) != len(groups):
        raise CheckpointError(
            f"{str(file)!r}: checkpoint has {len(sd['param_groups'])} parameter groups, the "
            f"optimizer has {len(groups)}"
        )
    state = sd["state"]
    if not isinstance(state, dict) or not all(
        isinstance(st, dict)
        and all(isinstance(v, Tensor) or _finite_number(v) for v in st.values())
        for st in state.values()
    ):
        raise CheckpointError(f"{str(file)!r}: 'state' must map each parameter to its tensors "
                              "and finite numbers")
    names = {id(p): n for n, p in model.named_parameters()}
    params = []
    for i, (g_saved, g) in enumerate(zip(sd["param_groups"], groups, strict=True)):
        if len(g_saved["params"]) != len(g["params"]):
            raise CheckpointError(
                f"{str(file)!r}: parameter group {i} has {len(g_saved['params'])} parameters in "
                f"the checkpoint, {len(g['params'])} in the optimizer"
            )
        params += list(zip(g_saved["params"], g["params"], strict=True))
    for saved_id, p in params:
        st = sd["state"].get(saved_id, {})
        for key, t in st.items():
            if isinstance(t, Tensor) and t.dim() > 0 and tuple(t.shape) != tuple(p.shape):
                raise CheckpointError(
                    f"{str(file)!r}: shape mismatch for optimizer state {key!r} of parameter "
                    f"{names.get(id(p), '?')!r}: checkpoint has {tuple(t.shape)}, the parameter "
                    f"has {tuple(p.shape)}"
                )

