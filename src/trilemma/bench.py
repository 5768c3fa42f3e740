"""The oracle sampler benchmark: every sampler on the exact Gaussian-mixture score.

For each mixture (``grid25``, ``imbalanced2d``, ``mixture64d``), each process (vp, ve, subvp, cld)
and each sampler that supports it, draw samples at a list of NFE budgets with the *exact* score
(``GaussianMixture.score_fn``), so every difference is the sampler's discretisation error, and
score them with :func:`trilemma.metrics.oracle_report` against one fixed exact reference set.
All runs of a (mixture, process) share the same prior noise (common random numbers) and the
same SW2 projection directions, so the comparisons between samplers are paired.

Optionally the same oracle drives the diffusers schedulers (an epsilon model at the scheduler's
own discrete noise levels) for a peer comparison on VP, and the per-step overhead of each
sampler's own arithmetic (the score replaced by a cached tensor) is timed against
``scheduler.step``. ``benchmarks/oracle_samplers.py`` and ``python -m trilemma.demo`` are thin
command lines over :func:`run_benchmark` / :func:`write_outputs`.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .metrics.mixture import SlicedReference, oracle_report, sw2_noise_floor
from .oracle import GaussianMixture, get_mixture
from .processes import get_process
from .processes.base import LinearProcess
from .report.format import (
    best_value,
    escape,
    fmt,
    html_cell,
    html_table,
    markdown_to_html,
    md_table,
)
from .report.html import kv, page, plot_images
from .report.plots import MARKERS, finish, no_data, pyplot

NFES = (5, 10, 20, 50, 100, 200)
MIXTURES = ("grid25", "imbalanced2d", "mixture64d")
PROCESSES = ("vp", "ve", "subvp", "cld")
#: diffusers schedulers compared on VP: label -> (class name, constructor options)
DIFFUSERS_SCHEDULERS: dict[str, tuple[str, dict]] = {
    "dpmpp2m": ("DPMSolverMultistepScheduler", {}),
    "dpmpp2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
    # clip_sample=False: DDIM's default clips x0_hat to [-1, 1] (an image-range assumption
    # that would delete grid25's outer modes)
    "ddim": ("DDIMScheduler", {"clip_sample": False}),
    "euler": ("EulerDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
}
#: the beta schedule shared by every diffusers scheduler here (DDPM's linear 1e-4 .. 0.02)
DIFFUSERS_BETAS = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02,
                   "beta_schedule": "linear"}


@dataclass
class BenchConfig:
    """What to run. ``n_samples`` maps mixture -> sample count; the reference set holds
    ``reference_factor`` times as many exact samples; ``samplers`` None means every registered
    sampler that supports the process (the adaptive ``ode`` runs once, capped at ``ode_cap``)."""

    mixtures: tuple[str, ...] = MIXTURES
    processes: tuple[str, ...] = PROCESSES
    samplers: tuple[str, ...] | None = None
    nfes: tuple[int, ...] = NFES
    n_samples: dict[str, int] = field(
        default_factory=lambda: {"grid25": 6000, "imbalanced2d": 6000, "mixture64d": 1000}
    )
    reference_factor: int = 4
    n_projections: int = 256
    floor_repeats: int = 5
    ode_cap: int | None = 2000
    seed: int = 0
    #: the headline comparison (grid25 / VP at ``headline_nfes``, trilemma vs diffusers) is rerun
    #: with ``headline_n`` samples for each prior-noise seed in ``headline_seeds`` (SW2's noise
    #: floor falls only like n^(-1/4)); None: it reuses the main runs (one seed)
    headline_n: int | None = 20000
    headline_seeds: tuple[int, ...] = (0, 1, 2)
    headline_nfes: tuple[int, ...] = (10, 20)
    diffusers: bool = True
    diffusers_mixtures: tuple[str, ...] = ("grid25",)
    overhead: bool = True
    overhead_batch: int = 4096
    overhead_steps: int = 100
    overhead_repeats: int = 7

    @classmethod
    def quick(cls) -> BenchConfig:
        """A small run (~1-2 minutes on one core): fewer NFEs, samples and repeats."""
        return cls(
            nfes=(10, 20, 50),
            n_samples={"grid25": 2000, "imbalanced2d": 2000, "mixture64d": 300},
            reference_factor=4,
            n_projections=128,
            floor_repeats=3,
            ode_cap=500,
            headline_n=None,
            overhead_steps=50,
            overhead_repeats=3,
        )


# ---------------------------------------------------------------------- helpers
def _samplers_for(process: LinearProcess, names: tuple[str, ...] | None) -> list[str]:
    """Registered samplers that support ``process`` (in registry order), optionally filtered."""
    from .samplers import SAMPLERS

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
    from .samplers import SAMPLERS, sample

    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    res = sample(sampler, mixture.score_fn(process), process, (n, mixture.dim), nfe,
                 generator=gen, **opts)
    secs = time.perf_counter() - t0
    info = {"nfe": int(res.nfe), "steps": res.info.get("steps"), "seconds": secs,
            "adaptive": SAMPLERS[sampler].adaptive}
    return res.samples, info


# ---------------------------------------------------------------------- diffusers peer
def diffusers_version() -> str | None:
    """The installed diffusers version, or None when the optional ``bench`` extra is missing."""
    try:
        import diffusers
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None
    return str(diffusers.__version__)


def make_scheduler(label: str) -> Any:
    """A fresh diffusers scheduler for ``label`` (see :data:`DIFFUSERS_SCHEDULERS`)."""
    import diffusers

    if label not in DIFFUSERS_SCHEDULERS:
        raise ValueError(f"unknown diffusers scheduler {label!r}; valid: "
                         f"{', '.join(DIFFUSERS_SCHEDULERS)}")
    cls_name, opts = DIFFUSERS_SCHEDULERS[label]
    cls = getattr(diffusers, cls_name)
    return cls(**DIFFUSERS_BETAS, prediction_type="epsilon", **opts)


class OracleEpsModel:
    """An epsilon-prediction "network" for diffusers built from the exact VP oracle.

    For the timestep it is given, the noise level is the scheduler's own: ``sigma_d =
    sqrt((1 - abar)/abar)`` at integer timesteps, linearly interpolated in ``sigma_d`` at
    fractional ones (as Euler/Heun's ``set_timesteps`` do). The continuous VP time with the
    same log-SNR ``lambda = -log sigma_d`` is found by ``process.t_from_log_snr`` and the
    exact ``eps = -sigma_t * score`` returned. Model inputs are in VP form (Euler/Heun's
    ``scale_model_input`` already divided by ``sqrt(sigma_d^2 + 1)``). ``calls`` counts NFE.
    """

    def __init__(self, mixture: GaussianMixture, process: LinearProcess, scheduler: Any) -> None:
        abar = scheduler.alphas_cumprod.to(torch.float64)
        self.train_sigmas = torch.sqrt((1 - abar) / abar).numpy()
        self.grid = np.arange(len(self.train_sigmas), dtype=np.float64)
        self.process = process
        self.score = mixture.score_fn(process)
        self.calls = 0

    def noise_time(self, timestep: float | Tensor) -> Tensor:
        """The continuous VP time whose log-SNR matches the scheduler's ``timestep``."""
        sig = float(np.interp(float(timestep), self.grid, self.train_sigmas))
        return self.process.t_from_log_snr(torch.tensor(-math.log(sig), dtype=torch.float64))

    def __call__(self, x: Tensor, timestep: float | Tensor) -> Tensor:
        self.calls += 1
        t = self.noise_time(timestep)
        tt = torch.full((x.shape[0],), float(t), dtype=x.dtype)
        sigma = float(self.process.sigma(t))
        return -sigma * self.score(x, tt)


def diffusers_n_steps(label: str, nfe: int) -> int:
    """Inference steps whose model calls fit ``nfe`` (Heun: ``2N - 1`` calls, others ``N``)."""
    return max(1, (nfe + 1) // 2) if label == "heun" else nfe


def run_diffusers(
    mixture: GaussianMixture, process: LinearProcess, label: str, nfe: int, n: int, seed: int
) -> tuple[Tensor, dict]:
    """Sample with a diffusers scheduler driven by the exact oracle (VP only)."""
    if process.name != "vp":
        raise ValueError(f"the diffusers peer runs on the 'vp' process, got {process.name!r}")
    sched = make_scheduler(label)
    model = OracleEpsModel(mixture, process, sched)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    n_steps = diffusers_n_steps(label, nfe)
    sched.set_timesteps(n_steps)
    # same draw as trilemma's VP prior sample (N(0, I) from the same seed)
    x = process.prior_sample((n, mixture.dim), generator=gen, dtype=torch.float32)
    x = x * sched.init_noise_sigma
    for t in sched.timesteps:
        x_in = sched.scale_model_input(x, t)
        eps = model(x_in, t).to(x.dtype)
        x = sched.step(eps, t, x).prev_sample
    secs = time.perf_counter() - t0
    if not bool(torch.isfinite(x).all()):
        raise FloatingPointError(f"diffusers {label} produced non-finite samples at NFE {nfe}")
    return x, {"nfe": model.calls, "steps": n_steps, "seconds": secs, "adaptive": False}


# ---------------------------------------------------------------------- per-step overhead
def trilemma_overhead_run(sampler: str, process: LinearProcess, batch: int, dim: int,
                          n_steps: int) -> tuple[Callable[[], None], int]:
    """A closure running ``sampler`` for ``n_steps`` with a cached score, and its NFE.

    The score returns a fixed tensor, so timing the closure measures the sampler's own work
    (coefficients, state updates, finiteness checks, prior draw, grid) per score call.
    """
    from .samplers import SAMPLERS, sample

    spec = SAMPLERS[sampler]
    cached = 0.1 * torch.randn(batch, dim * process.k, generator=torch.Generator().manual_seed(0))
    noise_block = process.noise_part(cached)

    def score(u: Tensor, t: Tensor) -> Tensor:
        return noise_block

    nfe = spec.nfe_for(n_steps, denoise=True)

    def run() -> None:
        sample(sampler, score, process, (batch, dim), nfe, generator=torch.Generator())

    return run, nfe


def diffusers_overhead_run(label: str, batch: int, dim: int,
                           n_steps: int) -> tuple[Callable[[], None], int]:
    """A closure running a diffusers scheduler's whole loop (``set_timesteps``,
    ``scale_model_input``, ``step``) with a constant model output, and its model calls."""
    eps = 0.1 * torch.randn(batch, dim, generator=torch.Generator().manual_seed(0))
    x0 = torch.randn(batch, dim, generator=torch.Generator().manual_seed(1))
    n_inf = diffusers_n_steps(label, n_steps)

    def run() -> None:
        sched = make_scheduler(label)
        sched.set_timesteps(n_inf)
        x = x0 * sched.init_noise_sigma
        for t in sched.timesteps:
            sched.scale_model_input(x, t)
            x = sched.step(eps, t, x).prev_sample

    sched = make_scheduler(label)
    sched.set_timesteps(n_inf)
    return run, len(sched.timesteps)


def measure_overhead(cfg: BenchConfig) -> list[dict]:
    """Per-call overhead (us) of every fixed-step VP sampler and diffusers scheduler.

    Batch ``overhead_batch x 2``, ``overhead_steps`` steps; all candidates are timed in
    interleaved rounds (so machine load hits them alike) and the median per candidate is kept.
    """
    from .samplers import SAMPLERS

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
    from .samplers import SAMPLERS

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


def run_benchmark(cfg: BenchConfig | None = None, progress: bool = False) -> dict:
    """Run the benchmark described by ``cfg``; returns a JSON-serialisable results dict."""
    cfg = cfg or BenchConfig()
    unknown = sorted(set(cfg.mixtures) - set(MIXTURES) - {"two_mode_1d"})
    if unknown:
        raise ValueError(f"unknown mixture(s) {unknown}; valid: {', '.join(MIXTURES)}")
    missing = [m for m in cfg.mixtures if m not in cfg.n_samples]
    if missing:
        raise ValueError(f"n_samples has no sample count for mixture(s) {missing}")
    if cfg.diffusers and diffusers_version() is None:
        cfg = BenchConfig(**{**asdict(cfg), "diffusers": False})
    t_start = time.perf_counter()
    plan = _plan(cfg)
    results: dict[str, Any] = {
        "config": asdict(cfg),
        "environment": {
            "torch": torch.__version__, "diffusers": diffusers_version(),
            "python": platform.python_version(), "threads": torch.get_num_threads(),
            "machine": platform.machine(),
        },
        "floors": {}, "headline_floor": None, "runs": [], "overhead": [],
    }
    mixtures = {m: get_mixture(m) for m in cfg.mixtures}
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
    bar = tqdm(plan, desc="oracle benchmark", disable=not progress)
    for set_name, kind, mname, pname, sname, nfe, seed in bar:
        bar.set_postfix_str(f"{set_name}/{mname}/{pname}/{sname}/{nfe}")
        mix, process = mixtures[mname], get_process(pname)
        n = sizes[(set_name, mname)]
        record = {"set": set_name, "kind": kind, "mixture": mname, "process": pname,
                  "sampler": sname, "nfe_budget": nfe, "seed": seed, "n": n}
        try:
            if kind == "trilemma":
                samples, info = run_trilemma(mix, process, sname, nfe, n, seed)
            else:
                samples, info = run_diffusers(mix, process, sname, nfe, n, seed)
            record.update(info)
            record.update(_evaluate(mix, samples, references[(set_name, mname)]))
        except (FloatingPointError, ValueError, RuntimeError) as err:
            record["error"] = f"{type(err).__name__}: {err}"
        results["runs"].append(record)
    if cfg.overhead:
        results["overhead"] = measure_overhead(cfg)
    results["headline"] = headline(results)
    results["seconds_total"] = time.perf_counter() - t_start
    return results


def _main_runs(results: dict) -> list[dict]:
    """The runs of the main sweep (the headline set only feeds the headline)."""
    return [r for r in results["runs"] if r.get("set", "main") == "main"]


def _ok(rec: dict) -> bool:
    return "error" not in rec and rec.get("sw2") is not None


def _seed_means(rows: list[dict]) -> list[dict]:
    """Average each (kind, sampler)'s metrics over its seeds; keeps the spread across seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["kind"], r["sampler"]), []).append(r)
    out = []
    for (kind, sname), rs in groups.items():
        if not all(_ok(r) for r in rs):
            continue  # a sampler that failed on any seed is not a candidate

        def mean(key: str, rs: list[dict] = rs) -> float | None:
            vals = [r[key] for r in rs if r.get(key) is not None]
            return statistics.fmean(vals) if vals else None

        rs = sorted(rs, key=lambda r: r.get("seed", 0))
        sw2s = [r["sw2"] for r in rs]
        out.append({"kind": kind, "sampler": sname, "sw2": statistics.fmean(sw2s),
                    "sw2_seeds": sw2s, "seeds": [r.get("seed") for r in rs],
                    "sw2_std": statistics.stdev(sw2s) if len(rs) > 1 else 0.0,
                    "nfe": rs[0]["nfe"], "spread_ratio": mean("spread_ratio"),
                    "spread_ratio_median": mean("spread_ratio_median"),
                    "within_mode_sw2": mean("within_mode_sw2"),
                    "modes_covered": mean("modes_covered"), "quality": mean("quality"),
                    "kl_weights": mean("kl_weights"), "n_seeds": len(rs)})
    return out


def headline(results: dict, mixture: str = "grid25", process: str = "vp",
             nfes: tuple[int, ...] | None = None) -> dict:
    """The target check: best trilemma vs best diffusers SW2 at ``nfes`` on ``mixture``/``process``
    (means over the prior-noise seeds run there), the winner's spread ratio, and the per-step
    overheads of those two."""
    out: dict[str, Any] = {}
    if nfes is None:
        nfes = tuple(results["config"].get("headline_nfes", (10, 20)))
    over = {(o["kind"], o["sampler"]): o["us_per_step"] for o in results.get("overhead", [])}
    runs = [r for r in results["runs"] if r.get("set") == "headline"] or _main_runs(results)
    for nfe in nfes:
        rows = [r for r in runs if r["mixture"] == mixture and r["process"] == process
                and r["nfe_budget"] == nfe]
        means = _seed_means(rows)
        if not means:
            continue
        best = {}
        for kind in ("trilemma", "diffusers"):
            cands = [r for r in means if r["kind"] == kind]
            if cands:
                b = min(cands, key=lambda r: r["sw2"])
                best[kind] = {**b, "us_per_step": over.get((kind, b["sampler"]))}
        entry: dict[str, Any] = {"best": best}
        if "trilemma" in best and "diffusers" in best:
            tb, db = best["trilemma"], best["diffusers"]
            sr = tb["spread_ratio"]
            entry["trilemma_beats_diffusers_sw2"] = tb["sw2"] < db["sw2"]
            if tb["seeds"] == db["seeds"]:  # same prior noise per seed: a paired comparison
                diffs = [a - b for a, b in zip(tb["sw2_seeds"], db["sw2_seeds"], strict=True)]
                entry["sw2_diff_per_seed"] = diffs
                entry["trilemma_better_on_every_seed"] = all(d < 0 for d in diffs)
            entry["spread_ratio_in_0.8_1.25"] = sr is not None and 0.8 <= sr <= 1.25
            if tb["us_per_step"] is not None and db["us_per_step"] is not None:
                entry["overhead_not_larger"] = tb["us_per_step"] <= db["us_per_step"]
            # the best trilemma sampler that also keeps the spread ratio in range
            in_range = [r for r in means if r["kind"] == "trilemma"
                        and r["spread_ratio"] is not None and 0.8 <= r["spread_ratio"] <= 1.25]
            if in_range:
                b = min(in_range, key=lambda r: r["sw2"])
                entry["best_trilemma_in_spread_range"] = {
                    "sampler": b["sampler"], "sw2": b["sw2"], "spread_ratio": b["spread_ratio"],
                    "beats_best_diffusers_sw2": b["sw2"] < db["sw2"]}
        entry["all"] = sorted(means, key=lambda r: r["sw2"])
        out[f"nfe{nfe}"] = entry
    floor = results.get("headline_floor") or results["floors"].get(mixture)
    if floor:
        out["noise_floor_sw2"] = floor["sw2_mean"]
        out["noise_floor_sw2_std"] = floor["sw2_std"]
        out["n"] = floor["n"]
        out["n_reference"] = floor["n_reference"]
    return out


# ---------------------------------------------------------------------- reporting
#: table and axis titles of the metrics the benchmark tabulates
METRIC_TITLES = {"sw2": "SW2", "within_mode_sw2": "within-mode SW2 (mode std units)",
                 "quality": "share within 3 sigma", "spread_ratio": "spread ratio"}


def _label(rec: dict) -> str:
    """A run's sampler as the tables name it (``diffusers:<scheduler>`` for the peer)."""
    return rec["sampler"] if rec["kind"] == "trilemma" else f"diffusers:{rec['sampler']}"


def _floor_note(floor: dict, metric: str) -> str:
    """What a perfect sampler scores on ``metric`` (the SW2 noise floor or the exact samples)."""
    if metric == "sw2":
        return (f"noise floor {floor['sw2_mean']:.4f} ± {floor['sw2_std']:.4f}, n = "
                f"{floor['n']}, reference {floor['n_reference']}")
    return f"exact samples score {fmt(floor['exact_report'].get(metric))}, n = {floor['n']}"


def _nfe_cell(rec: dict | None, metric: str, best: float | None, bold: bool) -> str:
    if rec is None:
        return ""
    if not _ok(rec):
        return "fail"
    text = fmt(rec.get(metric))
    return f"**{text}**" if bold and rec.get(metric) == best else text


def _adaptive_cell(runs: list[dict], metric: str) -> str:
    """The adaptive sampler's ``metric @ NFE`` (its one run, at the NFE it chose)."""
    cell = "–"
    for rec in runs:
        if rec.get("adaptive"):
            cell = f"{fmt(rec.get(metric))} @ {rec['nfe']}" if _ok(rec) else "fail (cap)"
    return cell


def _nfe_table(runs: list[dict], nfes: list[int], metric: str, bold: bool) -> str:
    """Rows samplers, columns NFE budgets plus the adaptive run; best per column in bold."""
    best = {n: best_value((r[metric] for r in runs if r["nfe_budget"] == n and _ok(r)
                           and r.get(metric) is not None), metric) for n in nfes}
    rows = []
    for label in dict.fromkeys(_label(r) for r in runs):
        mine = [r for r in runs if _label(r) == label]
        cells = [_nfe_cell(next((r for r in mine if r["nfe_budget"] == n), None), metric,
                           best[n], bold) for n in nfes]
        rows.append([label, *cells, _adaptive_cell(mine, metric)])
    return md_table(["sampler", *(f"NFE {n}" for n in nfes), "adaptive"], rows)


def sw2_tables(results: dict, markdown: bool = True, metric: str = "sw2") -> str:
    """One ``metric``-vs-NFE table per (mixture, process): rows samplers, columns NFE budgets;
    the best entry per column (lowest; highest for the share within 3 sigma) in bold."""
    lines = []
    nfes = list(results["config"]["nfes"])
    main = _main_runs(results)
    for mname, pname in dict.fromkeys((r["mixture"], r["process"]) for r in main):
        note = _floor_note(results["floors"][mname], metric)
        lines.append(f"\n**{mname} / {pname}** — {METRIC_TITLES.get(metric, metric)} ({note})\n")
        runs = [r for r in main if (r["mixture"], r["process"]) == (mname, pname)]
        lines.append(_nfe_table(runs, nfes, metric, bold=markdown))
    return "\n".join(lines)


def detail_table(results: dict) -> str:
    """All metrics at the headline NFEs on grid25 / VP, averaged over the prior-noise seeds."""
    rows = []
    for key, entry in results.get("headline", {}).items():
        if not key.startswith("nfe"):
            continue
        rows += [[key[3:], _label(r), r["nfe"], f"{r['sw2']:.4f} ± {r['sw2_std']:.4f}",
                  f"{r['quality']:.3f}", f"{r['modes_covered']:.4g}", f"{r['kl_weights']:.3f}",
                  fmt(r["spread_ratio"], 3), fmt(r["spread_ratio_median"], 3),
                  fmt(r["within_mode_sw2"], 3)] for r in entry.get("all", [])]
    return md_table(["NFE", "sampler", "NFE used", "SW2 (mean ± std over seeds)", "quality",
                     "modes", "KL", "spread", "spread (median)", "within-mode SW2"], rows)


def overhead_table(results: dict) -> str:
    """Per-step overhead (us, median) of trilemma's VP samplers and diffusers' schedulers."""
    cfg = results["config"]
    rows = [[o["kind"], o["sampler"], f"{o['us_per_step']:.0f}"]
            for o in sorted(results.get("overhead", []), key=lambda o: o["us_per_step"])]
    return (f"batch {cfg['overhead_batch']} x 2, {cfg['overhead_steps']} steps, median of "
            f"{cfg['overhead_repeats']} interleaved rounds; the score/model is a cached tensor; "
            "time per score call (= per step for one-call-per-step samplers)\n\n"
            + md_table(["kind", "sampler", "µs per step"], rows))


def _best_text(kind: str, b: dict) -> str:
    us = b["us_per_step"]
    return (f"best {kind} = {b['sampler']}: SW2 {b['sw2']:.4f} ± {b['sw2_std']:.4f} over "
            f"{b['n_seeds']} seeds (spread ratio {fmt(b['spread_ratio'], 3)}, median-radius "
            f"ratio {fmt(b['spread_ratio_median'], 3)}, share within 3 sigma "
            f"{b['quality']:.3f}, within-mode SW2 {fmt(b['within_mode_sw2'], 3)}, "
            f"{b['modes_covered']:.4g} modes, {'?' if us is None else f'{us:.0f}'} µs/step);")


def _headline_entry_text(key: str, entry: dict) -> str:
    """One NFE of the headline as a bullet: the best of each kind, then the checks."""
    parts = [f"{key}:"]
    parts += [_best_text(kind, entry["best"][kind]) for kind in ("trilemma", "diffusers")
              if kind in entry["best"]]
    if "sw2_diff_per_seed" in entry:
        parts.append("paired SW2 difference per seed: "
                     + ", ".join(f"{d:+.4f}" for d in entry["sw2_diff_per_seed"]))
    parts += [f"{flag}={entry[flag]}" for flag in (
        "trilemma_beats_diffusers_sw2", "trilemma_better_on_every_seed",
        "spread_ratio_in_0.8_1.25", "overhead_not_larger") if flag in entry]
    if "best_trilemma_in_spread_range" in entry:
        b = entry["best_trilemma_in_spread_range"]
        parts.append(f"best trilemma with spread ratio in [0.8, 1.25] = {b['sampler']} "
                     f"(SW2 {b['sw2']:.4f}, spread {b['spread_ratio']:.3f}, beats best "
                     f"diffusers on SW2: {b['beats_best_diffusers_sw2']})")
    return "- " + "\n  ".join(parts)


def headline_text(results: dict) -> str:
    """The target check as readable lines."""
    head = results.get("headline", {})
    lines = [_headline_entry_text(key, entry) for key, entry in head.items()
             if key.startswith("nfe")]
    if "noise_floor_sw2" in head:
        lines.append(f"n = {head['n']} samples per run, reference {head['n_reference']}; "
                     f"noise floor SW2 {head['noise_floor_sw2']:.4f} ± "
                     f"{head['noise_floor_sw2_std']:.4f}")
    return "\n".join(lines)


def report_markdown(results: dict) -> str:
    """All tables of a run as markdown (what docs/BENCHMARKS.md quotes)."""
    has_headline = any(k.startswith("nfe") for k in results.get("headline", {}))
    parts = ["## Headline (grid25, VP)\n", headline_text(results)] if has_headline else []
    parts += ["\n## SW2 vs NFE",
              sw2_tables(results), "\n## Within-mode SW2 vs NFE",
              sw2_tables(results, metric="within_mode_sw2"),
              "\n## Share within 3 sigma vs NFE", sw2_tables(results, metric="quality")]
    if has_headline:
        parts += ["\n## grid25 / VP at the headline NFEs, all metrics (mean over seeds)\n",
                  detail_table(results)]
    if results.get("overhead"):
        parts += ["\n## Per-step overhead\n", overhead_table(results)]
    parts.append(f"\ntotal {results.get('seconds_total', 0):.0f} s; environment "
                 f"{json.dumps(results['environment'])}\n")
    return "\n".join(parts)


# ---------------------------------------------------------------------- figures
def _floor_lines(ax: Any, floor: dict, metric: str) -> None:
    """What a perfect sampler scores: the SW2 noise floor as a band, or the exact samples."""
    if metric == "sw2":
        ax.axhline(floor["sw2_mean"], color="k", lw=1, ls=":", label="noise floor")
        ax.axhspan(max(floor["sw2_mean"] - floor["sw2_std"], 1e-6),
                   floor["sw2_mean"] + floor["sw2_std"], color="k", alpha=0.08)
    elif floor["exact_report"].get(metric) is not None:
        ax.axhline(floor["exact_report"][metric], color="k", lw=1, ls=":",
                   label="exact samples")


def _sampler_lines(ax: Any, runs: list[dict], metric: str, colors: dict) -> None:
    """One line per (kind, sampler) against NFE (diffusers dashed, adaptive as a star)."""
    for lab, color in colors.items():
        mine = [r for r in runs if (r["kind"], r["sampler"]) == lab and _ok(r)]
        if not mine:
            continue
        xs = [r["nfe"] for r in mine]
        ys = [r.get(metric) or float("nan") for r in mine]
        name = _label(mine[0])
        if len(mine) == 1 and mine[0].get("adaptive"):
            ax.plot(xs, ys, "*", ms=10, color=color, label=f"{name} (adaptive)")
        else:
            ax.plot(xs, ys, "--" if lab[0] == "diffusers" else "-", marker="o", ms=3,
                    color=color, label=name)


def plot_results(results: dict, path: str | Path, metric: str = "sw2") -> Path:
    """``metric`` vs NFE (log-log), one panel per (mixture, process); for SW2 the noise floor as
    a band, otherwise the exact samples' score as a dotted line."""
    plt = pyplot()
    main = _main_runs(results)
    combos = list(dict.fromkeys((r["mixture"], r["process"]) for r in main))
    mixtures = list(dict.fromkeys(m for m, _ in combos))
    processes = list(dict.fromkeys(p for _, p in combos))
    fig, axes = plt.subplots(len(mixtures), len(processes), squeeze=False,
                             figsize=(4.2 * len(processes), 3.4 * len(mixtures)))
    cmap = plt.get_cmap("tab20")
    labels = list(dict.fromkeys((r["kind"], r["sampler"]) for r in main))
    colors = {lab: cmap(i % 20) for i, lab in enumerate(labels)}
    for i, mname in enumerate(mixtures):
        for j, pname in enumerate(processes):
            ax = axes[i][j]
            runs = [r for r in main if (r["mixture"], r["process"]) == (mname, pname)]
            _sampler_lines(ax, runs, metric, colors)
            _floor_lines(ax, results["floors"][mname], metric)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{mname} / {pname}", fontsize=10)
            ax.set_xlabel("NFE")
            ax.set_ylabel(METRIC_TITLES.get(metric, metric).split(" (")[0])
    return finish(fig, [ax for row in axes for ax in row], path, fontsize=6, ncol=2)


def plot_bench_quality_vs_time(results: dict, path: str | Path) -> Path:
    """The benchmark's SW2 vs wall-clock seconds per sample, one panel per mixture, processes
    in colour (exact score: the time is the sampler's own arithmetic plus the oracle)."""
    runs = [r for r in _main_runs(results) if _ok(r) and r.get("seconds")]
    if not runs:
        return no_data(path, "no successful benchmark runs")
    plt = pyplot()
    mixtures = list(dict.fromkeys(r["mixture"] for r in runs))
    procs = list(dict.fromkeys(f"{r['kind']}:{r['process']}" for r in runs))
    samplers = list(dict.fromkeys(r["sampler"] for r in runs))
    cmap = plt.get_cmap("tab10")
    colors = {p: cmap(i % 10) for i, p in enumerate(procs)}
    markers = {s: MARKERS[i % len(MARKERS)] for i, s in enumerate(samplers)}
    fig, axes = plt.subplots(1, len(mixtures), figsize=(6.2 * len(mixtures), 4.8),
                             squeeze=False)
    for ax, mname in zip(axes[0], mixtures, strict=True):
        mine = [r for r in runs if r["mixture"] == mname]
        seen = set()
        for r in mine:
            p = f"{r['kind']}:{r['process']}"
            x, y = r["seconds"] / r["n"], r["sw2"]
            ax.scatter([x], [y], color=colors[p], marker=markers[r["sampler"]], s=18,
                       label=p if p not in seen else None)
            seen.add(p)
            if len(mine) <= 40:
                ax.annotate(f"{r['sampler']} {r['nfe']}", (x, y), textcoords="offset points",
                            xytext=(3, 2), fontsize=6)
        floor = results["floors"].get(mname)
        if floor:
            ax.axhline(floor["sw2_mean"], color="k", ls=":", lw=1, label="noise floor")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("wall-clock seconds per sample (exact oracle score)")
        ax.set_ylabel("SW2 (lower is better)")
        ax.set_title(f"{mname}: sample quality vs sampling time", fontsize=9)
    return finish(fig, axes[0], path)


# ---------------------------------------------------------------------- files
def write_outputs(results: dict, out_dir: str | Path, stem: str = "oracle_samplers") -> dict:
    """Write ``<stem>.json``, ``<stem>.md`` (tables), ``<stem>.png`` (SW2) and
    ``<stem>_within_mode.png``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{stem}.json", "markdown": out / f"{stem}.md",
             "plot": out / f"{stem}.png", "plot_modes": out / f"{stem}_within_mode.png"}
    paths["json"].write_text(json.dumps(results, indent=1))
    paths["markdown"].write_text(report_markdown(results))
    plot_results(results, paths["plot"])
    plot_results(results, paths["plot_modes"], metric="within_mode_sw2")
    return paths


def _floors_html(floors: dict) -> str:
    """The noise-floor table of the page: SW2 a perfect sampler scores per mixture."""
    rows = [[html_cell(escape(m), cls="l"), html_cell(str(f["n"])),
             html_cell(str(f["n_reference"])),
             html_cell(f"{f['sw2_mean']:.4g} ± {f['sw2_std']:.2g}")] for m, f in floors.items()]
    head = [html_cell(h, "th") for h in ("mixture", "n", "reference", "SW2 floor")]
    return "<h2>Noise floors</h2>" + html_table(head, rows)


def write_bench_report(results: dict, out_dir: str | Path,
                       paths: dict[str, Path] | None = None) -> dict[str, Path]:
    """``bench.html`` (self-contained) for an oracle benchmark run, with its plots embedded.

    ``paths``: what :func:`write_outputs` wrote (its plots are embedded too).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = dict(paths or {})
    paths["quality_vs_time"] = plot_bench_quality_vs_time(results,
                                                          out / "bench_quality_vs_time.png")
    parts = ["<p>Every sampler driven by the <b>exact</b> score of a Gaussian mixture "
             "(trilemma.oracle), so every difference is discretisation error. SW2: sliced "
             "Wasserstein-2 to a fixed set of exact samples (a perfect sampler scores the noise "
             "floor); quality: share of samples within 3 sigma of their mode; all runs of a "
             "(mixture, process) share the prior noise.</p>",
             kv([("config", json.dumps(results.get("config", {}))),
                 ("environment", json.dumps(results.get("environment", {}))),
                 ("total seconds", results.get("seconds_total"))])]
    if results.get("floors"):
        parts.append(_floors_html(results["floors"]))
    parts.append("<h2>Plots</h2>")
    parts += plot_images(paths, ("quality_vs_time", "plot", "plot_modes"))
    parts.append(markdown_to_html(report_markdown(results)))
    paths["html"] = out / "bench.html"
    paths["html"].write_text(page("trilemma oracle sampler benchmark", parts))
    return paths
