"""The benchmark computation: trilemma's samplers on the exact score, scored and timed.

:func:`run_benchmark` plans every (mixture, process, sampler, NFE) run, draws one exact
reference set and SW2 noise floor per mixture, samples, scores each run with
:func:`trilemma.metrics.oracle_report` and optionally times each sampler's per-step overhead.
"""

from __future__ import annotations

import math
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..metrics.bootstrap import bootstrap_counts
from ..metrics.mixture import SlicedReference, oracle_report, sw2_noise_floor
from ..oracle import GaussianMixture, get_mixture
from ..processes import get_process
from ..processes.base import LinearProcess
from ..samplers import SAMPLERS, sample
from ..train.progress import progress_bar
from .config import MIXTURES, BenchConfig
from .peer import (
    DIFFUSERS_SCHEDULERS,
    diffusers_overhead_run,
    diffusers_version,
    run_diffusers,
)
from .summary import Replicates, headline


# ---------------------------------------------------------------------- helpers
def _samplers_for(process: LinearProcess, names: tuple[str, ...] | None) -> list[str]:
    """Registered samplers that support ``process`` (in registry order), optionally filtered."""
    if names is not None:
        unknown = sorted(set(names) - set(SAMPLERS))
        if unknown:
            raise ValueError(f"unknown sampler(s) {unknown}; valid: {', '.join(SAMPLERS)}")
    return [n for n, spec in SAMPLERS.items()
            if spec.supports(process) and (names is None or n in names)]


def _clean(report: dict) -> dict:
    """A JSON-friendly metric record (drops the per-component lists, NaN -> None)."""
    out = {}
    for key, val in report.items():
        if key in ("counts", "found_weights"):
            continue
        if isinstance(val, float) and not math.isfinite(val):
            val = None
        out[key] = val
    return out


def _evaluate(mixture: GaussianMixture, samples: Tensor, reference: SlicedReference) -> dict:
    return _clean(oracle_report(mixture, samples, reference_samples=reference))


# ---------------------------------------------------------------------- trilemma runs
def run_trilemma(
    mixture: GaussianMixture,
    process: LinearProcess,
    sampler: str,
    nfe: int | None,
    n: int,
    seed: int,
    **opts: Any,
) -> tuple[Tensor, dict]:
    """One sampler run on the exact score; returns ``(samples, info)`` (NFE, steps, seconds)."""
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    res = sample(sampler, mixture.score_fn(process), process, (n, mixture.dim), nfe,
                 generator=gen, **opts)
    secs = time.perf_counter() - t0
    info = {"nfe": int(res.nfe), "steps": res.info.get("steps"), "seconds": secs,
            "adaptive": SAMPLERS[sampler].adaptive}
    return res.samples, info


# ---------------------------------------------------------------------- per-step overhead
def trilemma_overhead_run(sampler: str, process: LinearProcess, batch: int, dim: int,
                          n_steps: int) -> tuple[Callable[[], None], int]:
    """A closure running ``sampler`` for ``n_steps`` with a cached score, and its NFE.

    The score returns a fixed tensor, so timing the closure measures the sampler's own work
    (coefficients, state updates, finiteness checks, prior draw, grid) per score call.
    """
    spec = SAMPLERS[sampler]
    cached = 0.1 * torch.randn(batch, dim * process.k, generator=torch.Generator().manual_seed(0))
    noise_block = process.noise_part(cached)

    def score(u: Tensor, t: Tensor) -> Tensor:
        return noise_block

    nfe = spec.nfe_for(n_steps, denoise=True)

    def run() -> None:
        sample(sampler, score, process, (batch, dim), nfe, generator=torch.Generator())

    return run, nfe


def measure_overhead(cfg: BenchConfig) -> list[dict]:
    """Per-call overhead (us) of every fixed-step VP sampler and diffusers scheduler.

    Batch ``overhead_batch x 2``, ``overhead_steps`` steps; all candidates are timed in
    interleaved rounds (so machine load hits them alike) and the median per candidate is kept.
    """
    process = get_process("vp")
    cands: list[tuple[str, str, Callable[[], None], int]] = []
    for sname, spec in SAMPLERS.items():
        if spec.adaptive or not spec.supports(process):
            continue
        run, calls = trilemma_overhead_run(sname, process, cfg.overhead_batch, 2,
                                           cfg.overhead_steps)
        cands.append(("trilemma", sname, run, calls))
    if cfg.diffusers and diffusers_version() is not None:
        for label in DIFFUSERS_SCHEDULERS:
            run, calls = diffusers_overhead_run(label, cfg.overhead_batch, 2, cfg.overhead_steps)
            cands.append(("diffusers", label, run, calls))
    times: dict[int, list[float]] = {i: [] for i in range(len(cands))}
    for _, _, run, _ in cands:
        run()  # warm-up
    for _ in range(cfg.overhead_repeats):
        for i, (_, _, run, _) in enumerate(cands):
            t0 = time.perf_counter()
            run()
            times[i].append(time.perf_counter() - t0)
    return [{"kind": kind, "sampler": name, "calls": calls,
             "us_per_step": 1e6 * statistics.median(times[i]) / calls}
            for i, (kind, name, _, calls) in enumerate(cands)]


# ---------------------------------------------------------------------- the benchmark
def _has_headline_set(cfg: BenchConfig) -> bool:
    return (cfg.headline_n is not None and "grid25" in cfg.mixtures and "vp" in cfg.processes
            and bool(cfg.headline_seeds))


def _plan(cfg: BenchConfig) -> list[tuple]:
    """Every run as ``(set, kind, mixture, process, sampler, nfe, seed)`` (set: main/headline)."""
    plan = []
    for mname in cfg.mixtures:
        for pname in cfg.processes:
            process = get_process(pname)
            names = _samplers_for(process, cfg.samplers)
            for sname in names:
                if SAMPLERS[sname].adaptive:
                    plan.append(("main", "trilemma", mname, pname, sname, cfg.ode_cap, cfg.seed))
                else:
                    plan.extend(("main", "trilemma", mname, pname, sname, nfe, cfg.seed)
                                for nfe in cfg.nfes)
            if cfg.diffusers and pname == "vp" and mname in cfg.diffusers_mixtures:
                plan.extend(("main", "diffusers", mname, pname, label, nfe, cfg.seed)
                            for label in DIFFUSERS_SCHEDULERS for nfe in cfg.nfes)
    if _has_headline_set(cfg):
        names = [n for n in _samplers_for(get_process("vp"), cfg.samplers)
                 if not SAMPLERS[n].adaptive]
        labels = list(DIFFUSERS_SCHEDULERS) if cfg.diffusers else []
        for seed in cfg.headline_seeds:
            for nfe in cfg.headline_nfes:
                plan.extend(("headline", "trilemma", "grid25", "vp", sname, nfe, seed)
                            for sname in names)
                plan.extend(("headline", "diffusers", "grid25", "vp", label, nfe, seed)
                            for label in labels)
    return plan


def _floor(mix: GaussianMixture, n: int, cfg: BenchConfig, gen: torch.Generator) -> tuple:
    """Reference set (``reference_factor * n`` exact samples) and the SW2 noise floor for ``n``."""
    m = cfg.reference_factor * n
    ref_samples, _ = mix.sample(m, gen, dtype=torch.float64)
    # the same projection directions for every run against this reference (paired comparisons)
    reference = SlicedReference(ref_samples, cfg.n_projections,
                                torch.Generator().manual_seed(cfg.seed + 7))
    floor = sw2_noise_floor(mix, n, gen, repeats=cfg.floor_repeats,
                            n_projections=cfg.n_projections, m=m)
    exact, _ = mix.sample(n, gen)
    exact_report = _evaluate(mix, exact, reference)
    return reference, {"sw2_mean": floor["mean"], "sw2_std": floor["std"],
                       "sw2_values": floor["values"], "n": n, "n_reference": m,
                       "exact_report": exact_report}


def main_reference(cfg: BenchConfig, mixture: str) -> tuple[SlicedReference, dict]:
    """The main set's reference and SW2 noise floor for ``mixture``, drawn exactly as
    :func:`run_benchmark` draws them, so other scripts' runs pair with its tables."""
    i = cfg.mixtures.index(mixture)
    gen = torch.Generator().manual_seed(cfg.seed + 1000 + i)
    return _floor(get_mixture(mixture), cfg.n_samples[mixture], cfg, gen)


def score_samples(mixture: GaussianMixture, samples: Tensor, reference: SlicedReference
                  ) -> dict:
    """The benchmark's metric record of one run's samples (SW2, quality, modes, spread, ...)."""
    return _evaluate(mixture, samples, reference)


def _checked(cfg: BenchConfig) -> BenchConfig:
    """``cfg`` validated; without diffusers installed, with the peer switched off."""
    unknown = sorted(set(cfg.mixtures) - set(MIXTURES) - {"two_mode_1d"})
    if unknown:
        raise ValueError(f"unknown mixture(s) {unknown}; valid: {', '.join(MIXTURES)}")
    missing = [m for m in cfg.mixtures if m not in cfg.n_samples]
    if missing:
        raise ValueError(f"n_samples has no sample count for mixture(s) {missing}")
    if cfg.diffusers and diffusers_version() is None:
        cfg = BenchConfig(**{**asdict(cfg), "diffusers": False})
    return cfg


def _environment() -> dict:
    """Versions and threads the timings were taken with."""
    return {"torch": torch.__version__, "diffusers": diffusers_version(),
            "python": platform.python_version(), "threads": torch.get_num_threads(),
            "machine": platform.machine()}


def _references(cfg: BenchConfig, mixtures: dict[str, GaussianMixture],
                results: dict) -> tuple[dict[tuple[str, str], SlicedReference], dict]:
    """Reference set and sample count per ``(set, mixture)``; the floors go into ``results``."""
    references: dict[tuple[str, str], SlicedReference] = {}
    sizes = {("main", m): cfg.n_samples[m] for m in cfg.mixtures}
    for i, mname in enumerate(cfg.mixtures):
        gen = torch.Generator().manual_seed(cfg.seed + 1000 + i)
        references[("main", mname)], results["floors"][mname] = _floor(
            mixtures[mname], cfg.n_samples[mname], cfg, gen)
    if _has_headline_set(cfg):
        gen = torch.Generator().manual_seed(cfg.seed + 2000)
        sizes[("headline", "grid25")] = cfg.headline_n
        references[("headline", "grid25")], results["headline_floor"] = _floor(
            mixtures["grid25"], cfg.headline_n, cfg, gen)
    return references, sizes


def _run_one(step: tuple, mix: GaussianMixture, n: int, reference: SlicedReference
             ) -> tuple[dict, Tensor | None]:
    """One planned run (see :func:`_plan`) as a record, and its samples (None when the sampler
    failed; the failure is kept as ``error``)."""
    set_name, kind, mname, pname, sname, nfe, seed = step
    process = get_process(pname)
    record = {"set": set_name, "kind": kind, "mixture": mname, "process": pname,
              "sampler": sname, "nfe_budget": nfe, "seed": seed, "n": n}
    samples = None
    try:
        if kind == "trilemma":
            samples, info = run_trilemma(mix, process, sname, nfe, n, seed)
        else:
            samples, info = run_diffusers(mix, process, sname, nfe, n, seed)
        record.update(info)
        record.update(_evaluate(mix, samples, reference))
    except (FloatingPointError, ValueError, RuntimeError) as err:
        record["error"] = f"{type(err).__name__}: {err}"
        samples = None
    return record, samples


def _headline_source(cfg: BenchConfig) -> tuple[str, bool]:
    """The set the headline reads (headline, else main) and whether it rests on one seed
    (then its comparisons need SW2 bootstrap replicates of the runs' samples)."""
    if _has_headline_set(cfg):
        return "headline", len(cfg.headline_seeds) == 1
    return "main", True


def _replicates(kept: dict[tuple, tuple[Tensor, SlicedReference]], repeats: int) -> Replicates:
    """SW2 bootstrap replicates of the kept runs ``(kind, sampler, nfe, seed)``, computed when
    first asked for (the headline compares only a few candidates) and cached."""
    cache: dict[tuple, np.ndarray | None] = {}

    def reps(kind: str, sampler: str, nfe: int | None, seed: int) -> np.ndarray | None:
        key = (kind, sampler, nfe, seed)
        if key not in cache:
            got = kept.get(key)
            cache[key] = None if got is None or repeats < 2 else got[1].sw2_replicates(
                got[0], bootstrap_counts(len(got[0]), repeats))
        return cache[key]

    return reps


def run_benchmark(cfg: BenchConfig | None = None, progress: bool = False) -> dict:
    """Run the benchmark described by ``cfg``; returns a JSON-serialisable results dict."""
    cfg = _checked(cfg or BenchConfig())
    t_start = time.perf_counter()
    plan = _plan(cfg)
    results: dict[str, Any] = {"config": asdict(cfg), "environment": _environment(),
                               "floors": {}, "headline_floor": None, "runs": [],
                               "overhead": []}
    mixtures = {m: get_mixture(m) for m in cfg.mixtures}
    references, sizes = _references(cfg, mixtures, results)
    source, one_seed = _headline_source(cfg)
    kept: dict[tuple, tuple[Tensor, SlicedReference]] = {}
    bar = progress_bar(plan, desc="oracle benchmark", disable=not progress)
    for step in bar:
        set_name, kind, mname, pname, sname, nfe, seed = step
        bar.set_postfix_str(f"{set_name}/{mname}/{pname}/{sname}/{nfe}")
        rec, samples = _run_one(step, mixtures[mname], sizes[(set_name, mname)],
                                references[(set_name, mname)])
        results["runs"].append(rec)
        if (one_seed and samples is not None and (set_name, mname, pname) == (source, "grid25",
                                                                              "vp")
                and nfe in cfg.headline_nfes):
            kept[(kind, sname, nfe, seed)] = (samples, references[(set_name, mname)])
    if cfg.overhead:
        results["overhead"] = measure_overhead(cfg)
    results["headline"] = headline(results, reps=_replicates(kept, cfg.bootstrap))
    results["seconds_total"] = time.perf_counter() - t_start
    return results
