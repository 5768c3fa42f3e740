"""Tensor storage without pickle: nested state <-> (JSON, tensors), safetensors and JSON files
written atomically (temporary file or folder, fsync, rename), and single-file weights with
JSON metadata (:func:`save_weights` / :func:`load_weights`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from .. import __version__

_TENSOR_TAG = "__tensor__"
_TUPLE_TAG = "__tuple__"
_ITEMS_TAG = "__items__"


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be used (corrupt file, wrong keys or shapes)."""


# ---------------------------------------------------------------------------------------------
# nested state <-> (JSON, tensors)


def flatten_state(obj: Any, prefix: str = "") -> tuple[Any, dict[str, Tensor]]:
    """Split a nested state (dicts, lists, tuples, scalars, tensors) into JSON and tensors.

    Tensors are replaced by ``{"__tensor__": key}`` with ``key`` the dotted path; tuples by
    ``{"__tuple__": [...]}``; dicts with non-string keys by ``{"__items__": [[k, v], ...]}``.
    """
    tensors: dict[str, Tensor] = {}

    def enc(x: Any, path: str) -> Any:
        if isinstance(x, Tensor):
            key = path or "tensor"
            if key in tensors:
                raise ValueError(f"duplicate tensor key {key!r} while flattening state")
            tensors[key] = x
            return {_TENSOR_TAG: key}
        if isinstance(x, Mapping):
            if all(isinstance(k, str) for k in x):
                bad = [k for k in x if k in (_TENSOR_TAG, _TUPLE_TAG, _ITEMS_TAG)]
                if bad:
                    raise ValueError(f"state at {path!r} uses the reserved key {bad[0]!r}")
                return {k: enc(v, f"{path}.{k}" if path else k) for k, v in x.items()}
            return {
                _ITEMS_TAG: [
                    [enc(k, f"{path}.key{i}"), enc(v, f"{path}.{k}" if path else str(k))]
                    for i, (k, v) in enumerate(x.items())
                ]
            }
        if isinstance(x, tuple):
            return {
                _TUPLE_TAG: [enc(v, f"{path}.{i}" if path else str(i)) for i, v in enumerate(x)]
            }
        if isinstance(x, list):
            return [enc(v, f"{path}.{i}" if path else str(i)) for i, v in enumerate(x)]
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise TypeError(
            f"cannot store {type(x).__name__} at {path or '<root>'!r} in a checkpoint "
            "(only tensors, numbers, strings, None, lists, tuples and dicts)"
        )

    return enc(obj, prefix), tensors


def unflatten_state(obj: Any, tensors: Mapping[str, Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(obj, dict):
        if len(obj) == 1 and _TENSOR_TAG in obj:
            key = obj[_TENSOR_TAG]
            if key not in tensors:
                raise CheckpointError(f"tensor {key!r} referenced by the JSON is missing")
            return tensors[key]
        if len(obj) == 1 and _TUPLE_TAG in obj:
            return tuple(unflatten_state(v, tensors) for v in obj[_TUPLE_TAG])
        if len(obj) == 1 and _ITEMS_TAG in obj:
            return {
                unflatten_state(k, tensors): unflatten_state(v, tensors) for k, v in obj[_ITEMS_TAG]
            }
        return {k: unflatten_state(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unflatten_state(v, tensors) for v in obj]
    return obj

# ---------------------------------------------------------------------------------------------
# low-level file I/O


def _fsync_path(path: Path) -> None:
    """fsync a file or directory (directories: best effort; not all platforms allow it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _cpu_tensors(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Detached contiguous CPU copies; storage shared between entries is split (safetensors)."""
    out: dict[str, Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for k, t in tensors.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"value for {k!r} must be a tensor, got {type(t).__name__}")
        c = t.detach().to("cpu").contiguous()
        key = (c.untyped_storage().data_ptr(), c.untyped_storage().nbytes())
        if c.numel() and key in seen:
            c = c.clone()
        elif c.numel():
            seen.add(key)
        out[k] = c
    return out


def _write_safetensors(path: Path, tensors: Mapping[str, Tensor], metadata: dict[str, str]) -> None:
    """Write one safetensors file (metadata str -> str) with ordinary permissions."""
    save_file(_cpu_tensors(tensors), str(path), metadata=metadata)
    ordinary_mode(path)  # safetensors creates its files 0600


def _write_json(path: Path, obj: Any) -> None:
    """Write pretty JSON (NaN/inf allowed, as Python's json writes them)."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=False)
        f.write("\n")


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read a safetensors file onto the CPU; clear errors for missing or corrupt files."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {str(path)!r} is missing")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises SafetensorError and others for bad files
        raise CheckpointError(
            f"cannot read {str(path)!r}: corrupt or truncated safetensors file ({e})"
        ) from e
    return tensors, meta


def _read_json(path: Path) -> Any:
    """Read a JSON file with clear errors."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {str(path)!r} is missing")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"cannot read {str(path)!r}: corrupt JSON ({e})") from e


def _umask() -> int:
    """The process's umask (from /proc on Linux; elsewhere by setting and restoring it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def ordinary_mode(path: Path) -> None:
    """Give a file made by ``tempfile`` (mode 0600, folders 0700) the mode an ordinary
    ``open()`` or ``mkdir`` would have: 0666 (0777 for folders) less the umask."""
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_umask())


def _atomic_dir(final: Path, write: Callable[[Path], None]) -> Path:
    """Write a folder through a hidden temporary sibling, fsync it, rename it into place."""
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp_{final.name}_", dir=parent))
    try:
        ordinary_mode(tmp)
        write(tmp)
        for f in tmp.iterdir():
            _fsync_path(f)
        _fsync_path(tmp)
        if final.exists():  # overwriting the same step: move the old one aside first
            old = Path(tempfile.mkdtemp(prefix=f".old_{final.name}_", dir=parent))
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_path(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final

def _check_state_dict(
    loaded: Mapping[str, Tensor], expected: Mapping[str, Tensor], file: Path, what: str
) -> None:
    """Same keys and shapes, else a CheckpointError naming the file, keys and shapes."""
    missing = [k for k in expected if k not in loaded]
    unexpected = [k for k in loaded if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{str(file)!r} does not fit the {what}: "
            f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
            f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    for k, t in expected.items():
        if tuple(loaded[k].shape) != tuple(t.shape):
            raise CheckpointError(
                f"{str(file)!r}: shape mismatch for {what} parameter {k!r}: checkpoint has "
                f"{tuple(loaded[k].shape)}, the {what} has {tuple(t.shape)}"
            )

# ---------------------------------------------------------------------------------------------
# single-file weights


def save_weights(
    path: str | os.PathLike,
    module: nn.Module | Mapping[str, Tensor],
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Export weights to one safetensors file with JSON metadata (written atomically).

    ``metadata`` (any JSON-serialisable dict) is stored JSON-encoded under the key
    ``"trilemma"`` (safetensors metadata is str -> str); :func:`load_weights` decodes it.
    """
    path = Path(path)
    sd = module.state_dict() if isinstance(module, nn.Module) else dict(module)
    try:
        meta_json = json.dumps(dict(metadata or {}), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"metadata must be JSON-serialisable: {e}") from e
    meta = {"format": "pt", "trilemma_version": __version__, "trilemma": meta_json}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp_{path.name}_", dir=path.parent)
    os.close(fd)
    try:
        _write_safetensors(Path(tmp), sd, meta)
        _fsync_path(Path(tmp))
        os.replace(tmp, path)
        _fsync_path(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_weights(
    path: str | os.PathLike, module: nn.Module | None = None
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a :func:`save_weights` file: ``(tensors, metadata)``; load into ``module`` if given.

    Loading into a module checks keys and shapes first (CheckpointError naming them).
    """
    path = Path(path)
    tensors, meta = _read_safetensors(path)
    raw = meta.get("trilemma", "{}")
    try:
        metadata = json.loads(raw)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{str(path)!r}: metadata is not valid JSON ({e})") from e
    if module is not None:
        _check_state_dict(tensors, module.state_dict(), path, "module")
        module.load_state_dict(tensors, strict=True)
    return tensors, metadata
