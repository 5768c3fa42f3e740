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

Modules: :mod:`.config` (what to run), :mod:`.run` (sampling, scoring, overhead timing),
:mod:`.peer` (the diffusers adapter), :mod:`.summary` (the headline comparison) and
:mod:`.render` (tables, figures and ``bench.html``, drawn with :mod:`trilemma.report`).
"""

from __future__ import annotations

from .config import MIXTURES, NFES, PROCESSES, BenchConfig
from .peer import (
    DIFFUSERS_BETAS,
    DIFFUSERS_SCHEDULERS,
    OracleEpsModel,
    diffusers_n_steps,
    diffusers_overhead_run,
    diffusers_version,
    make_scheduler,
    run_diffusers,
)
from .render import (
    METRIC_TITLES,
    detail_table,
    headline_text,
    overhead_table,
    plot_bench_quality_vs_time,
    plot_results,
    report_markdown,
    sw2_tables,
    write_bench_report,
    write_outputs,
)
from .run import (
    main_reference,
    measure_overhead,
    run_benchmark,
    run_trilemma,
    score_samples,
    trilemma_overhead_run,
)
from .summary import headline, main_runs, run_ok

__all__ = [
    "DIFFUSERS_BETAS", "DIFFUSERS_SCHEDULERS", "METRIC_TITLES", "MIXTURES", "NFES", "PROCESSES",
    "BenchConfig", "OracleEpsModel", "detail_table", "diffusers_n_steps",
    "diffusers_overhead_run", "diffusers_version", "headline", "headline_text", "main_reference",
    "main_runs",
    "make_scheduler", "measure_overhead", "overhead_table", "plot_bench_quality_vs_time",
    "plot_results", "report_markdown", "run_benchmark", "run_diffusers", "run_ok",
    "run_trilemma", "score_samples", "sw2_tables", "trilemma_overhead_run", "write_bench_report",
    "write_outputs",
]
