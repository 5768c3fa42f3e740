"""Evaluate trained runs on the generative learning trilemma: quality, coverage and speed.

:func:`evaluate_run` rebuilds a run's model (EMA weights), draws ``n`` samples with each
requested sampler and NFE budget, times the sampling warm, measures peak memory and scores the
samples; :func:`trilemma.report.write_report` turns the result into JSON, CSV, plots and a
self-contained HTML page. ``trilemma evaluate`` is the command line over both.

Every model is a :class:`trilemma.methods.base.Method` and is used through that protocol alone:
``check_sampler`` decides whether a request fits, ``sample`` draws, ``nll`` gives the
likelihood (``has_likelihood``, ``likelihood_decoder``).

What is measured, per (sampler, budget), and where:

- :mod:`.requests`: parsing ``--samplers``/``--opt`` and checking each request with the method.
- :mod:`.sampling` (:func:`timed_sample`, shared with ``trilemma sample``): NFE actually used,
  wall seconds per sample at the given batch size (the first batch an untimed warm-up), peak
  memory (:mod:`.memory`).
- :mod:`.scoring`: one :class:`Scorer` per run with a fixed reference. :mod:`.images`: FD, PRDC
  and IS of a classifier trained on the data set itself (``FD-<dataset>``, **not** FID; FID with
  Inception weights on disk); :mod:`.toys`: oracle mixture metrics, SW2 and PRDC. Each also
  scores a **baseline** row of real data: what a perfect model would score at that n.
- :mod:`.likelihood` (``nll_n > 0``): bits/dim of ``nll_n`` held-out points by ``model.nll``,
  with the dequantisation policy for discrete data.
- :mod:`.results`: the results dict (``results.json``), merging and combining reports;
  :mod:`.run`: :func:`evaluate_run`, which composes the rest.
"""

from .common import FORMAT, MIN_SAMPLES, EvaluationError, default_cache_dir
from .dataspec import DataSpec, data_spec
from .images import (
    CLASSIFIER_SEED,
    DEFAULT_CLASSIFIER_STEPS,
    FD_BOOTSTRAP,
    ImageScorer,
    fd_bootstrap_sd,
    features_and_logits,
    get_classifier,
    image_metrics,
)
from .likelihood import NLL_SEED_OFFSET, check_likelihood, likelihood
from .memory import PeakMemory
from .requests import (
    SamplerRequest,
    as_requests,
    check_request,
    fitting_requests,
    parse_options,
    parse_samplers,
)
from .results import (
    COMBINE_KEYS,
    combine_reports,
    environment,
    load_results,
    merge_results,
)
from .run import check_fits_some_run, evaluate_run
from .sampling import TimedSamples, timed_sample
from .scorers import make_scorer
from .scoring import NoScorer, Scorer
from .toys import ToyScorer

__all__ = [
    "CLASSIFIER_SEED", "COMBINE_KEYS", "DEFAULT_CLASSIFIER_STEPS", "FD_BOOTSTRAP", "FORMAT",
    "MIN_SAMPLES", "NLL_SEED_OFFSET", "DataSpec", "EvaluationError", "ImageScorer", "NoScorer",
    "PeakMemory", "SamplerRequest", "Scorer", "TimedSamples", "ToyScorer", "as_requests",
    "check_likelihood", "check_request", "combine_reports", "data_spec", "default_cache_dir",
    "check_fits_some_run", "environment", "evaluate_run", "fd_bootstrap_sd",
    "features_and_logits", "fitting_requests",
    "get_classifier", "image_metrics", "likelihood", "load_results", "make_scorer",
    "merge_results", "parse_options", "parse_samplers", "timed_sample",
]
