"""The results dict of ``trilemma evaluate`` (``results.json``): rows, run records, the
envelope with settings and environment, and merging results of several runs or reports."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import __version__
from ..plots import save_samples as save_picture
from ..sample_files import save_npz
from .common import FORMAT, EvaluationError, dedupe, safe_name
from .requests import SamplerRequest

#: settings that must agree for reports to be combined: the metrics compare only at equal values
COMBINE_KEYS = ("n", "seed", "batch_size", "reference_split", "metrics")


def environment(device: str | torch.device) -> dict[str, Any]:
    """Where the timings were taken: torch, device name, threads, CPU model."""

    dev = torch.device(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    env = {"trilemma": __version__, "torch": torch.__version__,
           "python": platform.python_version(), "platform": platform.platform(),
           "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "device": str(dev)}
    if dev.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(dev)
    return env


def row_head(run_label: str, method: str, req: SamplerRequest, n: int, seed: int,
             batch_size: int) -> dict[str, Any]:
    """The fields every row of a (run, sampler, budget) starts with."""
    head = {"run": run_label, "method": method, "sampler": req.name, "label": req.label,
            "options": dict(req.options), "nfe_budget": req.nfe, "adaptive": req.adaptive,
            "n": n, "seed": seed, "batch_size": min(batch_size, n)}
    if req.guidance is not None:  # a class-conditional row: class-balanced, guidance w
        head["guidance"] = req.guidance
    return head


def save_row_files(row: dict[str, Any], samples: Tensor, out: Path, *, grid_n: int = 64,
                   reference: Tensor | None = None, save_samples: bool = True) -> None:
    """Write a row's sample grid (``out/grids``) and samples (``out/samples``, ``.npz``) and
    record their paths in the row (``grid``/``grid_error``, ``samples_file``)."""

    # a sampler whose NFE the model fixes (ddgan: T) is named by the NFE it used
    tag = row["nfe_budget"] or ("adaptive" if row["adaptive"] else row.get("nfe", "adaptive"))
    stem = f"{safe_name(row['run'])}__{safe_name(row['label'])}_nfe{tag}"
    pic = samples[:grid_n] if samples.dim() == 4 else samples
    title = f"{row['run']}: {row['label']}, NFE {row['nfe']}"
    try:
        save_picture(pic, out / "grids" / f"{stem}.png", title=title, reference=reference)
        row["grid"] = f"grids/{stem}.png"
    except ValueError as err:
        row["grid_error"] = str(err)
    if save_samples:
        (out / "samples").mkdir(parents=True, exist_ok=True)
        save_npz(out / "samples" / f"{stem}.npz", samples, compressed=True,  # as scored
                 nfe=np.float64(row["nfe"]), seed=np.int64(row["seed"]))
        row["samples_file"] = f"samples/{stem}.npz"


def run_record(run_path: str | os.PathLike, label: str, method: str, saved: Any, config: Any,
               **parts: Any) -> dict[str, Any]:
    """One run's record: what was evaluated (weights, config) and ``parts`` (``data``,
    ``extractor``, ``reference``, ``baseline``, ``nll``, ``rows``, ``skipped``, ``warnings``
    (deduplicated here), ``notes``, and optionally ``comparisons``: the paired differences
    of :func:`~trilemma.evaluate.compare.paired_comparisons`)."""
    record = {"run": str(run_path), "label": label, "method": method,
              "weights": str(saved.weights), "weights_kind": saved.kind, "step": saved.step,
              "process": config.process.get("name"), "config": config.to_dict(),
              "config_summary": config.summary()}
    for key in ("data", "extractor", "reference", "baseline", "nll", "rows", "skipped"):
        record[key] = parts[key]
    if parts.get("comparisons") is not None:
        record["comparisons"] = parts["comparisons"]
    record["warnings"] = dedupe(parts["warnings"])
    record["notes"] = parts["notes"]
    return record


def results_dict(record: dict[str, Any], reqs: Sequence[SamplerRequest], *, n: int, seed: int,
            batch_size: int, device: str, reference_split: str, nll_n: int, metrics: bool,
            classifier_steps: int, cache_dir: Path,
            extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The results dict of one run (``format``, ``created``, ``settings``, ``environment``,
    ``runs: [record]``); ``extra`` settings (precision, bootstrap) join ``settings``."""
    return {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": {"n": n, "seed": seed, "batch_size": batch_size, "device": device,
                     "reference_split": reference_split, "nll_n": nll_n, "metrics": metrics,
                     "classifier_steps": classifier_steps, "cache_dir": str(cache_dir),
                     "samplers": [{"sampler": r.name, "nfe": r.nfe, "options": r.options}
                                  for r in reqs],
                     "timing": "first batch untimed (warm-up); wall seconds of the other "
                               "batches / their samples", **(extra or {})},
        "environment": environment(device),
        "runs": [record],
    }


def merge_results(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One results dict holding the runs of several :func:`evaluate_run` results."""
    if not results:
        raise ValueError("merge_results needs at least one result")
    merged = dict(results[0])
    merged["runs"] = [r for res in results for r in res["runs"]]
    labels = [r["label"] for r in merged["runs"]]
    seen: dict[str, int] = {}
    for r in merged["runs"]:  # unique labels (two runs with the same folder name)
        if labels.count(r["label"]) > 1:
            seen[r["label"]] = seen.get(r["label"], 0) + 1
            r["label"] = f"{r['label']}#{seen[r['label']]}"
            for row in r["rows"]:
                row["run"] = r["label"]
    return merged


def load_results(report_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``results.json`` of a ``trilemma evaluate`` output folder, checked."""
    import json

    path = Path(report_dir) / "results.json"
    if not path.is_file():
        raise EvaluationError(f"report {str(report_dir)!r} has no results.json (is it the --out "
                              "folder of trilemma evaluate?)")
    try:
        res = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise EvaluationError(f"{str(path)!r} is not readable JSON ({err}); re-run trilemma "
                              "evaluate for that report") from None
    if not isinstance(res, dict) or res.get("format") != FORMAT or not isinstance(
            res.get("runs"), list):
        raise EvaluationError(f"{str(path)!r} is not a trilemma evaluation (format "
                              f"{res.get('format') if isinstance(res, dict) else None!r}, "
                              f"expected {FORMAT!r})")
    _check_structure(res, path)
    return res


def _check_structure(res: dict[str, Any], path: Path) -> None:
    """The parts of a results dict that merging and the report index: settings, runs with a
    label, a method and rows; every file a row names relative and inside the report folder."""
    if not isinstance(res.get("settings"), dict):
        raise EvaluationError(f"{str(path)!r}: 'settings' must be a JSON object")
    for i, run in enumerate(res["runs"]):
        ok = (isinstance(run, dict) and isinstance(run.get("label"), str)
              and isinstance(run.get("method"), str) and isinstance(run.get("rows"), list)
              and all(isinstance(row, dict) for row in run["rows"]))
        if not ok:
            raise EvaluationError(f"{str(path)!r}: runs[{i}] must hold a label, a method and "
                                  "a list of rows")
        for row in run["rows"]:
            for key in ("grid", "samples_file"):
                if row.get(key) is not None:
                    inside(path.parent, row[key], f"{str(path)!r}: runs[{i}] {key}")


def inside(folder: Path, rel: Any, what: str) -> Path:
    """``folder / rel`` when ``rel`` is a relative path that resolves (links followed) inside
    ``folder``; else :class:`EvaluationError`: a results file names no file elsewhere."""
    if not isinstance(rel, str) or not rel:
        raise EvaluationError(f"{what}: expected a relative file name, got {rel!r}")
    target = folder / rel
    if Path(rel).is_absolute() or not target.resolve().is_relative_to(folder.resolve()):
        raise EvaluationError(f"{what} {rel!r} points outside its report folder "
                              f"{str(folder)!r}; refused")
    return target


def _check_comparable(loaded: Sequence[tuple[Path, dict[str, Any]]]) -> None:
    """Raise :class:`EvaluationError` naming the first setting of :data:`COMBINE_KEYS` on
    which a report differs from the first."""
    first_dir, first = loaded[0]
    for d, res in loaded[1:]:
        for key in COMBINE_KEYS:
            a, b = first["settings"].get(key), res["settings"].get(key)
            if a != b:
                raise EvaluationError(
                    f"report {str(d)!r} was evaluated with {key} = {b!r} but {str(first_dir)!r} "
                    f"with {key} = {a!r}: its numbers are not comparable; re-run trilemma "
                    f"evaluate with the same --{key.replace('_', '-')}")


def _copy_row_files(loaded: Sequence[tuple[Path, dict[str, Any]]],
                    runs: Sequence[dict[str, Any]], out: Path) -> None:
    """Copy each row's grid and samples file into ``out`` (renamed on a clash) and point the
    row at the copy; drop references to files that are missing."""
    import shutil

    copied: dict[str, Path] = {}
    sources = (d for d, res in loaded for _ in res["runs"])
    for src, run in zip(sources, runs, strict=True):
        for row in run["rows"]:
            for key in ("grid", "samples_file"):
                rel = row.get(key)
                if not rel or not inside(src, rel, f"{key} of {run['label']}").is_file():
                    row.pop(key, None)
                    continue
                target = Path(rel)
                if target.as_posix() in copied and copied[target.as_posix()] != src / rel:
                    target = target.with_name(f"{safe_name(run['label'])}__{target.name}")
                copied[target.as_posix()] = src / rel
                dest = inside(out, target.as_posix(), f"copy of {key} of {run['label']}")
                if dest.resolve() != (src / rel).resolve():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src / rel, dest)
                row[key] = target.as_posix()


def combine_reports(
    report_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike
) -> dict[str, Any]:
    """Merge several evaluate output folders into one results dict whose files live in
    ``out_dir`` (sample grids and ``.npz`` samples are copied there).

    Runs evaluated separately (in parallel processes, on other machines) land on one page. The
    settings in :data:`COMBINE_KEYS` must agree: FD, PRDC and IS are comparable only at equal
    n, seed and reference; a mismatch raises :class:`EvaluationError` naming the setting.
    """
    if not report_dirs:
        raise EvaluationError("give at least one report folder to combine")
    loaded = [(Path(d), load_results(d)) for d in report_dirs]
    _check_comparable(loaded)
    merged = merge_results([res for _, res in loaded])
    _copy_row_files(loaded, merged["runs"], Path(out_dir))
    merged["settings"] = dict(loaded[0][1]["settings"])
    merged["settings"]["samplers"] = [s for _, res in loaded for s in res["settings"]["samplers"]]
    merged["combined_from"] = [{"report": str(d), "command": res.get("command"),
                                "created": res.get("created")} for d, res in loaded]
    merged["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return merged
