"""The run folder: the one module that writes and reads what ``trilemma train`` leaves behind.

A run folder holds::

    config.yaml          the resolved config, for people
    config.json          the resolved config, for programs (rebuilds the model)
    run.json             data shape, parameter count, trilemma version, device
    checkpoints/step_*/  resumable checkpoints (trilemma.train.checkpoint)
    model.safetensors    the final EMA weights, with the config in their metadata
    model.json           that metadata, readable without safetensors
    log.csv, samples/    the trainer's log and sample grids
    train.lock           while a process trains the run: its pid, host and start time

:func:`lock_run` takes the run's lock: one writer at a time (readers need none: every file
is written atomically, so a reader sees the last complete checkpoint).

:func:`locate_run` finds the weights, config and data shape behind a run folder, a checkpoint
folder or a weights file; it returns plain dictionaries (validating them is the setup layer's
job), so any layer may read a run without importing the config system.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from .errors import ConfigError, RunError
from .train.checkpoint import FORMAT_VERSION, latest_checkpoint, load_weights, save_weights
from .train.validation import check_state

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: the lock falls back to the recorded pid
    fcntl = None  # type: ignore[assignment]

RUN_CONFIG = "config.json"
RUN_CONFIG_YAML = "config.yaml"
RUN_INFO = "run.json"
FINAL_WEIGHTS = "model.safetensors"
FINAL_META = "model.json"
LOCK_FILE = "train.lock"


@dataclass
class SavedRun:
    """Where a run's weights, config and data shape live (see :func:`locate_run`)."""

    run_dir: Path | None
    weights: Path
    kind: str  # 'checkpoint' (a step_* folder) or 'weights' (a single safetensors file)
    step: int | None
    config: dict[str, Any]
    data_shape: tuple[int, ...] | None


# --------------------------------------------------------------------------- the lock
@dataclass
class RunLock:
    """The lock of a run folder being trained (see :func:`lock_run`); ``stale`` is the record
    of an earlier owner that died holding it, when there was one."""

    path: Path
    fd: int
    stale: dict[str, Any] | None = None

    def release(self) -> None:
        """Give the run back: remove the lock file, then unlock (idempotent)."""
        if self.fd < 0:
            return
        try:
            self.path.unlink(missing_ok=True)  # first: a waiting writer sees a new file
        finally:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_lock(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record else None


def _owner(record: dict[str, Any] | None) -> str:
    if record is None:
        return "another process (its lock file is being written or unreadable)"
    return (f"pid {record.get('pid')} on host {record.get('host')} "
            f"(since {record.get('started')})")


def _alive(record: dict[str, Any] | None) -> bool:
    """Whether the recorded owner may still run: on another host it cannot be told."""
    if record is None:
        return False
    if record.get("host") != socket.gethostname():
        return True
    pid = record.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _try_lock(fd: int, path: Path) -> bool:
    """An exclusive ``flock`` on ``fd`` (released by the kernel when its owner dies); where
    the platform or file system has none, the recorded owner's pid decides."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError as err:
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
    return not _alive(_read_lock(path))


def _acquire(path: Path) -> RunLock:
    for _ in range(20):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _try_lock(fd, path):
                raise RunError(
                    f"{path.parent} is being trained by {_owner(_read_lock(path))}; a second "
                    f"writer is refused (lock file {path}). Wait for it to finish or choose "
                    "another --out; delete the lock file only if that process is gone")
            try:
                current = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                current = False
            if not current:  # released (unlinked) meanwhile: lock the new file instead
                os.close(fd)
                continue
            stale = _read_lock(path)
            record = {"pid": os.getpid(), "host": socket.gethostname(),
                      "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(record) + "\n").encode())
            return RunLock(path, fd, stale)
        except BaseException:
            os.close(fd)
            raise
    raise RunError(f"cannot lock {path}: the lock file keeps being replaced")


def lock_run(out: str | os.PathLike) -> RunLock:
    """Create the run folder ``out`` if needed and take its lock, or raise :class:`RunError`
    naming the process that holds it.

    The lock is an advisory ``flock`` on ``out/train.lock``, which records the owner's pid,
    host and start time; the kernel drops it when the owner dies, so a lock left by a killed
    run is stale and taken over (its record is :attr:`RunLock.stale`). Release it with
    :meth:`RunLock.release` or use it as a context manager.
    """
    out = Path(out)
    above = blocking_file(out)
    if above is not None:
        raise RunError(f"--out {out}: {above} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        return _acquire(out / LOCK_FILE)
    except PermissionError as err:
        raise RunError(f"no permission to write the run folder {out} ({err})") from None
    except OSError as err:
        raise RunError(f"cannot create the run folder {out} ({err})") from None


def blocking_file(path: str | os.PathLike) -> Path | None:
    """The file at ``path`` or above it that keeps ``path`` from being (or holding) a folder,
    e.g. ``afile`` for ``afile/run``; None when there is none."""
    p = Path(path).absolute()
    for candidate in (p, *p.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


# --------------------------------------------------------------------------- files
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


def _shape(value: Any, where: Path | str) -> tuple[int, ...] | None:
    """A stored data shape checked: None, or a non-empty list of positive integers."""
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(
            isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in value):
        raise ConfigError([f"{where}: field 'data_shape' must be a list of positive integers, "
                           f"got {value!r}"])
    return tuple(value)


def _step(value: Any, where: Path | str) -> int | None:
    """A stored step checked: None or an integer >= 0."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                              or value < 0):
        raise ConfigError([f"{where}: field 'step' must be an integer >= 0, got {value!r}"])
    return value


def _run_files(run_dir: Path) -> tuple[dict[str, Any] | None, tuple[int, ...] | None]:
    cfg = read_json(run_dir / RUN_CONFIG) if (run_dir / RUN_CONFIG).is_file() else None
    info = read_json(run_dir / RUN_INFO) if (run_dir / RUN_INFO).is_file() else {}
    if not isinstance(info, dict):
        raise ConfigError([f"{run_dir / RUN_INFO}: expected a JSON object"])
    return cfg, _shape(info.get("data_shape"), run_dir / RUN_INFO)


def _locate_weights_file(p: Path, given: str) -> SavedRun:
    if p.suffix != ".safetensors":
        raise FileNotFoundError(
            f"{given} is a file but not a .safetensors weights file; give a run directory, a "
            "checkpoint folder (checkpoints/step_*) or a model.safetensors"
        )
    _, meta = load_weights(p)
    if not isinstance(meta, dict):
        raise ConfigError([f"{p}: its metadata is not a JSON object"])
    cfg = meta.get("config")
    shape = _shape(meta.get("data_shape"), f"{p} (metadata)")
    run_cfg, run_shape = _run_files(p.parent)
    cfg = cfg or run_cfg
    if cfg is None:
        raise FileNotFoundError(f"{p} carries no config in its metadata and there is no "
                                f"{RUN_CONFIG} beside it")
    return SavedRun(p.parent, p, "weights", _step(meta.get("step"), f"{p} (metadata)"), cfg,
                    shape or run_shape)


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
    folder = re.match(r"^step_(\d+)$", ckpt.name)
    check_state(state, ckpt / "state.json", int(folder.group(1)) if folder else None,
                FORMAT_VERSION)
    meta = state.get("metadata")
    if cfg is None and isinstance(meta, dict):  # a checkpoint folder copied out of its run
        cfg = meta.get("config")
        shape = _shape(meta.get("data_shape"), ckpt / "state.json")
    if cfg is None:
        raise FileNotFoundError(f"no {RUN_CONFIG} in the run directory {run_dir} and no config "
                                f"in {ckpt / 'state.json'} (needed to rebuild the model); a "
                                "model trained with the Python Trainer has none: train from a "
                                "config with trilemma.train(config, out=...) to get a run "
                                "folder the CLI reads")
    step = state["step"]
    weights = ckpt / "ema.safetensors"
    if not weights.is_file():
        weights = ckpt / "model.safetensors"
    return SavedRun(run_dir, weights, "checkpoint", step, cfg, shape)
