"""Bootstrap intervals and paired differences (trilemma.metrics.bootstrap) and the rule that
names a best sampler only when the noise separates it (trilemma.bench.summary)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trilemma.bench.render import headline_text
from trilemma.bench.summary import headline
from trilemma.evaluate.compare import paired_comparisons
from trilemma.evaluate.scoring import Scored
from trilemma.metrics.bootstrap import (
    bootstrap_counts,
    fd_replicates,
    interval,
    is_replicates,
    is_significant,
    paired_difference,
    prdc_replicates,
    rank_with_ties,
    with_intervals,
)
from trilemma.metrics.features import inception_score
from trilemma.metrics.frechet import FrechetReference, frechet_distance, gaussian_stats
from trilemma.metrics.mixture import SlicedReference
from trilemma.metrics.prdc import prdc, prdc_incidence


def _gauss(n: int, d: int, seed: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x * scale + shift


def _indices(counts_row: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.repeat(np.arange(len(counts_row)), counts_row))


def test_counts_are_resamples_shared_by_sets_of_equal_size():
    c = bootstrap_counts(50, 30, seed=3)
    assert c.shape == (30, 50) and (c.sum(axis=1) == 50).all() and (c >= 0).all()
    assert np.array_equal(c, bootstrap_counts(50, 30, seed=3))  # the pairing rests on this
    assert not np.array_equal(c, bootstrap_counts(50, 30, seed=4))
    with pytest.raises(ValueError, match="repeats"):
        bootstrap_counts(50, 1)


def test_each_replicate_is_the_metric_of_its_resample():
    """FD, PRDC, IS and SW2 replicates equal the metric recomputed on the resampled set (the
    PRDC radii of the full sets: exact with unit counts)."""
    real, fake = _gauss(120, 6, 0), _gauss(90, 6, 1, 1.2, 0.2)
    counts = np.vstack([np.ones((1, 90), np.int64), bootstrap_counts(90, 3, seed=1)])
    idx = _indices(counts[2])
    mu, cov = gaussian_stats(real)
    fd = fd_replicates(FrechetReference(mu, cov), fake, counts)
    assert fd[0] == pytest.approx(frechet_distance(mu, cov, *gaussian_stats(fake)), rel=1e-10)
    assert fd[2] == pytest.approx(frechet_distance(mu, cov, *gaussian_stats(fake[idx])),
                                  rel=1e-10)
    # fewer counted samples than dimensions: the Gram-matrix path gives the same distance
    wide_real, wide = _gauss(80, 40, 2), _gauss(30, 40, 3, 1.1)
    wc = bootstrap_counts(30, 2, seed=5)
    mu_w, cov_w = gaussian_stats(wide_real)
    want = frechet_distance(mu_w, cov_w, *gaussian_stats(wide[_indices(wc[1])]))
    assert fd_replicates(FrechetReference(mu_w, cov_w), wide, wc)[1] == pytest.approx(want,
                                                                                      rel=1e-7)
    reps = prdc_replicates(prdc_incidence(real, fake), counts)
    full = prdc(real, fake)
    for key in ("precision", "recall", "density", "coverage"):
        assert reps[key][0] == full[key], key
    assert reps["precision"][2] == prdc(real, fake[idx])["precision"]  # radii: reals only
    logits = torch.randn(90, 5, generator=torch.Generator().manual_seed(2))
    is_reps = is_replicates(logits, counts, 3)
    assert is_reps[0] == pytest.approx(inception_score(logits, 3)[0], rel=1e-12)
    assert is_reps[2] == pytest.approx(inception_score(logits[idx], 3)[0], rel=1e-12)
    xy = _gauss(400, 2, 4)
    for m in (400, 300):  # reference a multiple of n (block sums) or not (merged levels)
        ref = SlicedReference(_gauss(m, 2, 5), 32, torch.Generator().manual_seed(0))
        c2 = np.vstack([np.ones((1, 400), np.int64), bootstrap_counts(400, 2, seed=6)])
        sw = ref.sw2_replicates(xy, c2)
        assert sw[0] == pytest.approx(ref.sw2(xy), rel=1e-10)
        assert sw[2] == pytest.approx(ref.sw2(xy[_indices(c2[2])]), rel=1e-10)


def test_intervals_cover_the_expected_value_at_about_the_nominal_rate():
    """Gaussian features: over 80 independent draws of n = 200 samples, the 95% intervals of
    FD and precision contain the expected value at n (Monte Carlo over 300 further draws)
    between 87 and 99% of the time. In 8 dimensions resampling biases FD's replicates by about
    their spread: the plain percentile interval covers only ~80% here, the bias-shifted ~96%."""
    n, d, trials = 200, 8, 80
    real = _gauss(300, d, 0)
    mu, cov = gaussian_stats(real)
    ref = FrechetReference(mu, cov)

    def draw(seed: int) -> torch.Tensor:
        return _gauss(n, d, seed, 1.2, 0.3)

    truth_fd = np.mean([ref.distance(*gaussian_stats(draw(1000 + s))) for s in range(300)])
    inc_real = real[:150]
    truth_p = np.mean([prdc(inc_real, draw(1000 + s))["precision"] for s in range(300)])
    counts = bootstrap_counts(n, 200, seed=9)
    hits_fd = hits_p = 0
    for t in range(trials):
        x = draw(t)
        fd = ref.distance(*gaussian_stats(x))
        lo, hi = interval(fd, fd_replicates(ref, x, counts))
        hits_fd += lo <= truth_fd <= hi
        p = prdc(inc_real, x)["precision"]
        lo, hi = interval(p, prdc_replicates(prdc_incidence(inc_real, x), counts)["precision"])
        hits_p += lo <= truth_p <= hi
    assert 0.87 <= hits_fd / trials <= 0.99, hits_fd
    assert 0.87 <= hits_p / trials <= 0.99, hits_p


def test_interval_is_centred_on_the_value_and_clipped():
    reps = np.array([2.0, 3.0, 4.0, 5.0, 6.0])  # mean 4: bias +1 against the value 3
    lo, hi = interval(3.0, reps)
    assert lo == pytest.approx(3.0 + np.quantile(reps, 0.025) - 4.0)
    assert hi == pytest.approx(3.0 + np.quantile(reps, 0.975) - 4.0)
    assert interval(0.1, reps, bounds=(0.0, 1.0)) == [0.0, 1.0]  # -1.8 and 2.0, clipped
    assert interval(None, reps) is None and interval(1.0, np.array([1.0, np.nan])) is None
    out = with_intervals({"precision": 0.98, "n": 5}, {"precision": np.array([0.9, 1.0, 1.1])})
    assert out["precision_ci"][1] == 1.0 and "n_ci" not in out  # a proportion stays <= 1


def test_paired_difference_of_identical_rows_is_exactly_zero_and_not_significant():
    reps = np.random.default_rng(0).normal(1.0, 0.3, 200)
    d = paired_difference(1.0, 1.0, reps, reps.copy())
    assert d == {"diff": 0.0, "ci": [0.0, 0.0], "significant": False}


def test_a_clearly_different_pair_is_significant_and_a_close_one_is_not():
    """Two rows from the same prior noise: one sampler a bit off (shift 0.1), one exact. The
    paired FD difference is significant although the two rows' own intervals overlap (the
    shared noise cancels in the difference); two exact rows with independent noise are not."""
    n, d = 300, 4
    real = _gauss(2000, d, 0)
    ref = FrechetReference(*gaussian_stats(real))
    counts = bootstrap_counts(n, 200)
    noise = _gauss(n, d, 1)
    good, off = noise, noise + 0.1  # sample i of both rows starts from the same noise
    va, vb = (ref.distance(*gaussian_stats(x)) for x in (off, good))
    ra, rb = fd_replicates(ref, off, counts), fd_replicates(ref, good, counts)
    diff = paired_difference(va, vb, ra, rb)
    assert diff["significant"] and diff["ci"][0] > 0
    assert interval(va, ra)[0] < interval(vb, rb)[1]  # separately they overlap
    other = _gauss(n, d, 2)
    vc = ref.distance(*gaussian_stats(other))
    same = paired_difference(vb, vc, fd_replicates(ref, good, counts),
                             fd_replicates(ref, other, counts))
    assert not same["significant"] and same["ci"][0] < 0 < same["ci"][1]
    assert is_significant([0.1, 0.2]) and is_significant([-0.2, -0.1])
    assert not is_significant([-0.1, 0.2]) and not is_significant(None)


def test_rank_names_a_winner_only_when_separated_from_the_runner_up():
    values = {"a": 0.10, "b": 0.11, "c": 0.20, "d": 0.21}
    separated = {("a", "b"), ("a", "c"), ("a", "d")}
    win = rank_with_ties(values, lambda x, y: (x, y) in separated)
    assert win == {"winner": "a", "tied": ["a"], "order": ["a", "b", "c", "d"]}
    tie = rank_with_ties(values, lambda x, y: (x, y) in {("a", "c"), ("a", "d")})
    assert tie["winner"] is None and tie["tied"] == ["a", "b"]
    unknown = rank_with_ties(values, lambda x, y: None)  # no interval: nothing is separated
    assert unknown["winner"] is None and unknown["tied"] == ["a", "b", "c", "d"]
    high = rank_with_ties({"p": 0.9, "q": 0.5}, lambda x, y: True, higher_is_better=True)
    assert high["winner"] == "p"
    assert rank_with_ties({"only": 1.0}, lambda x, y: True)["winner"] == "only"


def _bench_results(sw2: dict[str, list[float]]) -> dict:
    """Synthetic benchmark results: grid25 / VP at NFE 10, one record per sampler and seed."""
    runs = []
    for name, vals in sw2.items():
        for seed, v in enumerate(vals):
            runs.append({"set": "headline", "kind": "trilemma", "mixture": "grid25",
                         "process": "vp", "sampler": name, "nfe_budget": 10, "nfe": 10,
                         "seed": seed, "sw2": v, "spread_ratio": 1.0, "quality": 0.9,
                         "spread_ratio_median": 1.0, "within_mode_sw2": 0.2,
                         "modes_covered": 25, "kl_weights": 0.01})
    return {"config": {"headline_nfes": [10]}, "runs": runs, "overhead": [],
            "floors": {}, "headline_floor": {"sw2_mean": 0.03, "sw2_std": 0.005, "n": 2000,
                                             "n_reference": 8000}}


def test_headline_names_a_winner_only_when_the_seeds_separate_it():
    """Three seeds: a best sampler ahead of the runner-up on every seed by much more than the
    seeds' spread is named; one ahead by less than the spread is reported as tied."""
    clear = headline(_bench_results({"dpm2m": [0.040, 0.046, 0.043],
                                     "pc": [0.071, 0.078, 0.074], "em": [0.09, 0.10, 0.095]}))
    rank = clear["nfe10"]["best"]["trilemma"]["ranking"]
    assert rank["winner"] == "dpm2m" and rank["tied"] == ["dpm2m"]
    assert rank["differences"][0]["by"] == "paired t over 3 seeds"
    assert "best trilemma = dpm2m" in headline_text({"headline": clear})
    close = headline(_bench_results({"pc": [0.100, 0.112, 0.105],
                                     "dpm2m": [0.104, 0.108, 0.110], "em": [0.3, 0.31, 0.32]}))
    rank = close["nfe10"]["best"]["trilemma"]["ranking"]
    assert rank["winner"] is None and rank["tied"] == ["pc", "dpm2m"]
    text = headline_text({"headline": close})
    assert "best trilemma =" not in text and "pc, dpm2m are tied within the noise" in text


def test_headline_with_one_seed_uses_the_bootstrap_replicates():
    res = _bench_results({"pc": [0.108], "dpm2m": [0.112]})
    rng = np.random.default_rng(0)
    common = rng.normal(0, 0.02, 200)  # shared prior noise moves both alike
    reps = {"pc": 0.108 + common + rng.normal(0, 0.01, 200),
            "dpm2m": 0.112 + common + rng.normal(0, 0.01, 200)}
    out = headline(res, reps=lambda kind, s, nfe, seed: reps[s])
    rank = out["nfe10"]["best"]["trilemma"]["ranking"]
    assert rank["winner"] is None and rank["tied"] == ["pc", "dpm2m"]
    assert rank["differences"][0]["by"].startswith("paired bootstrap")
    tight = {"pc": 0.108 + common, "dpm2m": 0.112 + common}  # differences exactly 0.004
    out = headline(res, reps=lambda kind, s, nfe, seed: tight[s])
    assert out["nfe10"]["best"]["trilemma"]["ranking"]["winner"] == "pc"
    # without replicates a one-seed headline names no winner
    assert headline(res)["nfe10"]["best"]["trilemma"]["ranking"]["winner"] is None


def test_rows_with_dropped_samples_or_failures_are_not_paired():
    """A row whose non-finite samples were dropped no longer lines up with the resamples of
    the others, and a failed row has no scores: both are left out and named."""
    reps = np.arange(5.0)
    rows = [{"label": "a", "nfe": 10}, {"label": "b", "nfe": 20}, {"label": "c", "nfe": 5},
            {"label": "d", "error": "FloatingPointError"}]
    scored = [Scored({"sw2": 1.0}, [], 0, {"sw2": reps}),
              Scored({"sw2": 2.0}, [], 0, {"sw2": reps + 1.0}),
              Scored({"sw2": 1.5}, [], 3, {"sw2": reps}), None]
    comp = paired_comparisons(rows, scored)
    assert [(p["a"], p["b"]) for p in comp["pairs"]] == [(0, 1)]
    assert comp["excluded"] == ["c NFE 5", "d"]
    d = comp["pairs"][0]["metrics"]["sw2"]
    assert d == {"diff": -1.0, "ci": [-1.0, -1.0], "significant": True}
