"""Mixture metrics: SW2 vs closed forms; exact samples score perfectly; broken ones are caught."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from trilemma.metrics import (
    SlicedReference,
    far_outlier_share,
    far_radius,
    mode_metrics,
    oracle_report,
    quality_radius,
    random_directions,
    sliced_wasserstein2,
    sw2_noise_floor,
    sw2_to_standard_normal,
    truncated_var_factor,
)
from trilemma.metrics.mixture import wasserstein1_1d
from trilemma.oracle import GaussianMixture, get_mixture

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------- sliced W2
def test_sw2_between_gaussians_matches_closed_form() -> None:
    # For Gaussians, each projection is 1-D Gaussian: W2^2 = (theta.dm)^2 + (sd1 - sd2)^2.
    d = 3
    m1 = torch.tensor([0.0, 0.0, 0.0], dtype=F64)
    m2 = torch.tensor([0.3, -0.2, 0.1], dtype=F64)
    s1 = torch.tensor([1.0, 0.5, 2.0], dtype=F64)
    s2 = torch.tensor([0.7, 0.9, 1.0], dtype=F64)
    dirs = random_directions(d, 200, gen(5))
    dm = dirs.T @ (m1 - m2)
    sd1 = ((dirs**2) * (s1**2)[:, None]).sum(0).sqrt()
    sd2 = ((dirs**2) * (s2**2)[:, None]).sum(0).sqrt()
    expected = float((dm**2 + (sd1 - sd2) ** 2).mean().sqrt())
    g = gen(1)
    x = m1 + s1 * torch.randn(20000, d, generator=g, dtype=F64)
    y = m2 + s2 * torch.randn(15000, d, generator=g, dtype=F64)  # unequal sizes
    # 20 seeds gave std 0.0072 and bias +0.0014 at these sizes: 0.03 is > 4 sigma
    assert sliced_wasserstein2(x, y, directions=dirs) == pytest.approx(expected, abs=0.03)


def test_sw2_isotropic_sphere_average() -> None:
    # Averaged over the sphere: SW2^2 = |dm|^2 / d + (s1 - s2)^2 for isotropic Gaussians.
    d, s1, s2 = 4, 1.0, 0.5
    dm = torch.tensor([1.0, -1.0, 0.5, 0.0], dtype=F64)
    g = gen(2)
    x = s1 * torch.randn(8000, d, generator=g, dtype=F64)
    y = dm + s2 * torch.randn(8000, d, generator=g, dtype=F64)
    expected = math.sqrt(float(dm.pow(2).sum()) / d + (s1 - s2) ** 2)
    # (theta.dm)^2 has std ~|dm|^2/d over the sphere: with 500 directions SW2^2 has ~3% s.e.
    # (1.5% on SW2), samples ~1%: 6% is > 3 sigma
    assert sliced_wasserstein2(x, y, 500, gen(3)) == pytest.approx(expected, rel=0.06)


def test_sw2_unequal_sizes_is_exact_1d_w2() -> None:
    # 1-D: x = {0, 1}, y = {0, 0.5, 3}; quantile functions on the merged breakpoints
    # 0 < 1/3 < 1/2 < 2/3 < 1: (0-0)^2/3 + (0-0.5)^2/6 + (1-0.5)^2/6 + (1-3)^2/3
    x = torch.tensor([[1.0], [0.0]], dtype=F64)
    y = torch.tensor([[3.0], [0.0], [0.5]], dtype=F64)
    expected = math.sqrt(0.25 / 6 + 0.25 / 6 + 4.0 / 3)
    dirs = torch.ones(1, 1, dtype=F64)
    assert sliced_wasserstein2(x, y, directions=dirs) == pytest.approx(expected, rel=1e-12)
    assert sliced_wasserstein2(y, x, directions=dirs) == pytest.approx(expected, rel=1e-12)
    # a set and its duplicate are the same empirical law
    z = torch.randn(37, 2, generator=gen(4), dtype=F64)
    assert sliced_wasserstein2(z, torch.cat([z, z, z])) == pytest.approx(0.0, abs=1e-12)


def test_sw2_of_a_shift_is_the_projected_shift() -> None:
    z = torch.randn(500, 2, generator=gen(6), dtype=F64)
    delta = torch.tensor([0.3, -0.4], dtype=F64)
    dirs = random_directions(2, 64, gen(7))
    expected = float((dirs.T @ delta).pow(2).mean().sqrt())
    assert sliced_wasserstein2(z + delta, z, directions=dirs) == pytest.approx(expected, rel=1e-10)


def test_noise_floor_shrinks_like_n_to_the_minus_quarter() -> None:
    # For a mixture the floor is dominated by mode-count fluctuations: moving an excess mass
    # ~n^(-1/2) across the gap D costs W2^2 ~ n^(-1/2) D^2, so SW2 ~ n^(-1/4).
    mix = get_mixture("two_mode_1d")  # 1-D: one direction is all of them
    small = sw2_noise_floor(mix, 250, gen(8), repeats=40, n_projections=1)["mean"]
    large = sw2_noise_floor(mix, 4000, gen(9), repeats=40, n_projections=1)["mean"]
    assert 0.36 < large / small < 0.66  # expected 16^(-1/4) = 0.5; s.e. of the ratio ~0.05


def test_bad_inputs_raise_clear_errors() -> None:
    mix = get_mixture("grid25")
    with pytest.raises(ValueError, match="x must have 2 columns"):
        mode_metrics(mix, torch.zeros(10, 3))
    with pytest.raises(ValueError, match="n_projections"):
        sliced_wasserstein2(torch.zeros(4, 2), torch.zeros(4, 2), n_projections=0)
    with pytest.raises(ValueError, match="y must have 2 columns"):
        sliced_wasserstein2(torch.zeros(4, 2), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="non-finite"):
        oracle_report(mix, torch.full((4, 2), float("nan")))
    with pytest.raises(ValueError, match="smoothing"):
        mode_metrics(mix, torch.zeros(4, 2), smoothing=0.0)


# ---------------------------------------------------------------------- mode metrics
def test_quality_radius_and_truncation_factor() -> None:
    assert quality_radius(1) == pytest.approx(3.0, rel=1e-9)
    # truncated 1-D normal at +-3: var = 1 - 2*3*phi(3) / (2 Phi(3) - 1)
    phi3 = math.exp(-4.5) / math.sqrt(2 * math.pi)
    assert truncated_var_factor(1, 3.0) == pytest.approx(1 - 6 * phi3 / math.erf(3 / 2**0.5))
    # in d dims the radius holds the same mass as +-3 sigma in 1-D
    assert stats.chi2.cdf(quality_radius(64) ** 2, 64) == pytest.approx(0.9973, abs=1e-4)


@pytest.mark.parametrize("name", ["grid25", "imbalanced2d", "mixture64d", "two_mode_1d"])
def test_exact_samples_score_perfectly(name: str) -> None:
    mix = get_mixture(name)
    n = 6000
    x, _ = mix.sample(n, gen(10))
    rep = oracle_report(mix, x, generator=gen(11))
    assert rep["modes_covered"] == mix.n_components
    # binomial s.e. of the share at p = 0.9973, n = 6000 is 0.0007
    assert rep["quality"] == pytest.approx(0.9973, abs=0.003)
    # multinomial KL concentrates at (K - 1) / (2 n) <= 0.002; allow 4x
    assert rep["kl_weights"] < 4 * (mix.n_components - 1) / (2 * n) + 1e-4
    # the smallest mode of imbalanced2d has ~60 samples: per-mode s.e. ~0.07, /4 modes
    assert rep["spread_ratio"] == pytest.approx(1.0, abs=0.05)
    assert rep["spread_ratio_median"] == pytest.approx(1.0, abs=0.05)
    assert rep["mode_offset"] < 0.25
    # finite-sample W2 of a few hundred standard normals is ~0.1 (0.05 at 4000 per mode)
    assert rep["within_mode_sw2"] < 0.2
    assert rep["far_outliers"] == 0.0
    floor = sw2_noise_floor(mix, n, gen(12), repeats=4)
    assert rep["sw2"] < floor["mean"] + 4 * floor["std"] + 1e-3


def test_far_outlier_share_counts_samples_beyond_six_stds_of_every_mode() -> None:
    """The far radius holds the 1-D +-6 sigma mass: 6 in 1-D, sqrt(-2 ln erfc(6/sqrt 2)) = 6.33
    in 2-D. grid25 (modes 1 apart, std 0.05): points 0.31 from a mode (6.2 std) are not far,
    0.33 (6.6 std) are, whichever mode is nearest; per-component stds are used."""
    assert far_radius(1) == pytest.approx(6.0, rel=1e-9)
    assert far_radius(2) == pytest.approx(math.sqrt(-2 * math.log(math.erfc(6 / 2**0.5))))
    assert far_radius(2, 3.0) == pytest.approx(quality_radius(2), rel=1e-9)
    mix = get_mixture("grid25")
    exact, _ = mix.sample(1000, gen(3))
    near = torch.tensor([[0.31, 0.0], [2.0, -1.69], [1.0, 1.0 - 0.31]], dtype=F64)
    far = torch.tensor([[0.33, 0.0], [-2.0, 2.33], [0.5, 0.5], [7.0, 7.0]], dtype=F64)
    x = torch.cat([exact, near, far])
    assert far_outlier_share(mix, x) == pytest.approx(4 / 1007)
    assert far_outlier_share(mix, far, n_std=6.5) == pytest.approx(2 / 4)  # radius 6.8
    assert oracle_report(mix, x)["far_outliers"] == pytest.approx(4 / 1007)
    imb = get_mixture("imbalanced2d")  # mode 0 at (-1, -1), std 0.25; mode 3 at (1.4, 1.4), 0.08
    pts = torch.tensor([[-1.0 + 1.55, -1.0], [1.4 + 0.52, 1.4], [1.4 + 0.50, 1.4]], dtype=F64)
    assert far_outlier_share(imb, pts) == pytest.approx(1 / 3)  # 6.2 std; 6.5 std; 6.25 std
    with pytest.raises(ValueError, match="n_std"):
        far_outlier_share(mix, x, n_std=0.0)


def test_dropped_modes_are_detected() -> None:
    mix = get_mixture("grid25")
    x, labels = mix.sample(8000, gen(13))
    dropped = torch.tensor([0, 6, 12, 18, 24])
    keep = ~torch.isin(labels, dropped)
    rep = mode_metrics(mix, x[keep])
    assert rep["modes_covered"] == 20
    assert rep["coverage"] == pytest.approx(0.8)
    assert all(rep["counts"][int(k)] == 0 for k in dropped)
    # KL from the definition with the 0.5 pseudo-count, and its size from the dropped mass
    counts = torch.tensor(rep["counts"], dtype=F64)
    q = (counts + 0.5) / (counts.sum() + 0.5 * 25)
    expected = float((0.04 * torch.log(0.04 / q)).sum())
    assert rep["kl_weights"] == pytest.approx(expected, rel=1e-9)
    n_kept = int(keep.sum())
    approx = 0.2 * math.log(0.04 * (n_kept + 12.5) / 0.5) + 0.8 * math.log(0.8)
    assert rep["kl_weights"] == pytest.approx(approx, abs=0.02)
    # the kept modes themselves are perfect
    assert rep["quality"] == pytest.approx(0.9973, abs=0.003)
    assert rep["spread_ratio"] == pytest.approx(1.0, abs=0.04)


def test_doubled_spread_is_detected() -> None:
    mix = get_mixture("grid25")
    n = 8000
    _, labels = mix.sample(n, gen(14))
    z = torch.randn(n, 2, generator=gen(15), dtype=F64)
    x = mix.means[labels] + 2.0 * mix.stds[labels] * z
    rep = mode_metrics(mix, x)
    c = quality_radius(2) ** 2
    # |z_assigned| = 2 |z|: share = P(chi2_2 <= c / 4) = 1 - exp(-c / 8)
    share = 1 - math.exp(-c / 8)
    assert rep["quality"] == pytest.approx(share, abs=4 * math.sqrt(share * (1 - share) / n))
    assert rep["spread_ratio_median"] == pytest.approx(2.0, abs=0.05)
    # the truncated std ratio sees 2 sqrt(F4(c/4)/F2(c/4)) / sqrt(F4(c)/F2(c)) = 1.51
    full = truncated_var_factor(2, math.sqrt(c))
    trunc = 2 * math.sqrt(truncated_var_factor(2, math.sqrt(c / 4)) / full)
    assert rep["spread_ratio"] == pytest.approx(trunc, abs=0.03)
    assert rep["modes_covered"] == 25
    # every projection is N(0, 4) against N(0, 1): W2 = 2 - 1 = 1 per projection
    assert rep["within_mode_sw2"] == pytest.approx(1.0, abs=0.06)
    # a narrower sampler reads below 1 without truncation effects
    x_half = mix.means[labels] + 0.5 * mix.stds[labels] * z
    rep_half = mode_metrics(mix, x_half)
    assert rep_half["spread_ratio"] == pytest.approx(0.5 / math.sqrt(full), abs=0.02)
    assert rep_half["quality"] == pytest.approx(1.0, abs=1e-3)


def test_offset_is_detected() -> None:
    mix = get_mixture("grid25")
    n = 8000
    x, _ = mix.sample(n, gen(16), dtype=F64)
    shift = torch.tensor([0.05, 0.05], dtype=F64)  # one std of every mode in each coordinate
    rep = mode_metrics(mix, x + shift)
    c = quality_radius(2) ** 2
    share = float(stats.ncx2.cdf(c, 2, 2.0))  # |z + delta|^2 with |delta|^2 = 2
    assert rep["quality"] == pytest.approx(share, abs=4 * math.sqrt(share * (1 - share) / n))
    assert rep["mode_offset"] == pytest.approx(1.0, abs=0.05)
    # W2^2 per projection = (theta . delta)^2 (+ finite-sample noise): sqrt(mean) over the
    # 64 fixed directions mode_metrics uses
    dirs = random_directions(2, 64, gen(0))
    expected = float((dirs.T @ torch.ones(2, dtype=F64)).pow(2).mean().sqrt())
    assert rep["within_mode_sw2"] == pytest.approx(expected, abs=0.06)
    # the spread of the samples is untouched
    assert rep["spread_ratio_median"] == pytest.approx(math.sqrt(
        stats.ncx2.ppf(0.5, 2, 2.0) / stats.chi2.ppf(0.5, 2)), abs=0.05)


def test_report_with_given_reference_and_unequal_sizes() -> None:
    mix = GaussianMixture(torch.tensor([[0.0], [4.0]]), torch.tensor([0.5, 0.5]), 0.5)
    x, _ = mix.sample(3000, gen(19))
    ref, _ = mix.sample(5000, gen(20))
    rep = oracle_report(mix, x, reference_samples=ref)
    assert rep["n"] == 3000 and rep["n_reference"] == 5000
    assert rep["modes_covered"] == 2
    # one mode only: half the mass must move by ~4, so W2^2 >= ~(0.5 * 16) minus spread slack
    one_mode = x[mix.assign(x) == 0]
    rep_bad = oracle_report(mix, one_mode, reference_samples=ref)
    assert rep_bad["modes_covered"] == 1
    assert rep_bad["sw2"] > 2.0 and rep_bad["sw2"] > 5 * rep["sw2"]


def test_sw2_to_standard_normal_closed_forms() -> None:
    z = torch.randn(20000, 3, generator=gen(25), dtype=F64)
    dirs = random_directions(3, 32, gen(26))
    assert sw2_to_standard_normal(z, dirs) < 0.03  # finite-sample W2 at n = 20000 ~0.015
    # scaling by c: each projection is N(0, c^2) vs N(0, 1), W2 = |c - 1|
    assert sw2_to_standard_normal(0.5 * z, dirs) == pytest.approx(0.5, abs=0.02)
    assert sw2_to_standard_normal(3.0 * z, dirs) == pytest.approx(2.0, abs=0.05)
    # a single point at 0 against N(0, 1): W2^2 = E[g^2] = 1
    assert sw2_to_standard_normal(torch.zeros(1, 3), dirs) == pytest.approx(1.0, abs=1e-12)


def test_sliced_reference_matches_direct_sw2() -> None:
    mix = get_mixture("imbalanced2d")
    x, _ = mix.sample(700, gen(21))
    y, _ = mix.sample(1100, gen(22))  # sizes with a non-trivial lcm
    ref = SlicedReference(y, 64, gen(23))
    direct = sliced_wasserstein2(x, y, directions=ref.directions)
    assert ref.sw2(x) == pytest.approx(direct, rel=1e-12)
    assert oracle_report(mix, x, reference_samples=ref)["sw2"] == pytest.approx(direct, rel=1e-12)
    with pytest.raises(ValueError, match="x must have 2 columns"):
        ref.sw2(torch.zeros(5, 3))


# ---------------------------------------------------------------------- benchmark plumbing
def test_diffusers_oracle_model_is_exact_eps() -> None:
    # For one Gaussian N(m, s^2 I): E[eps | x_t] = sqrt(1 - ab) (x - sqrt(ab) m) / (ab s^2 + 1 - ab)
    pytest.importorskip("diffusers")
    from trilemma.bench import OracleEpsModel, make_scheduler
    from trilemma.processes import get_process

    mix = GaussianMixture(torch.tensor([[0.3, -0.5]]), None, 0.2)
    vp = get_process("vp")
    for label in ("dpmpp2m", "euler"):
        sched = make_scheduler(label)
        model = OracleEpsModel(mix, vp, sched)
        x = torch.randn(64, 2, generator=gen(24), dtype=F64)
        for timestep in (0, 17, 500, 999):
            ab = float(sched.alphas_cumprod[timestep])
            t = model.noise_time(timestep)
            assert float(vp.alpha(t)) ** 2 == pytest.approx(ab, rel=1e-6)
            expected = math.sqrt(1 - ab) * (x - math.sqrt(ab) * mix.means[0]) / (
                ab * 0.04 + 1 - ab)
            got = model(x, torch.tensor(timestep))
            assert torch.allclose(got, expected, rtol=1e-6, atol=1e-9)
        # a fractional timestep takes diffusers' linear-in-sigma interpolation
        sig = sched.alphas_cumprod.double()
        s_lo, s_hi = (((1 - sig[10:12]) / sig[10:12]) ** 0.5).tolist()
        t = model.noise_time(10.25)
        assert float(vp.sigma(t) / vp.alpha(t)) == pytest.approx(0.75 * s_lo + 0.25 * s_hi)


def test_benchmark_smoke_run(tmp_path) -> None:  # noqa: ANN001 - pytest fixture
    from trilemma import bench

    cfg = bench.BenchConfig(mixtures=("imbalanced2d",), processes=("vp",), samplers=("dpm2m",),
                            nfes=(5, 20), n_samples={"imbalanced2d": 300}, headline_n=None,
                            floor_repeats=2, n_projections=32, diffusers=False, overhead=False)
    res = bench.run_benchmark(cfg)
    runs = [r for r in res["runs"] if "error" not in r]
    assert [r["nfe"] for r in runs] == [5, 20]
    # the exact score at 20 NFE: every mode found and a near-exact share within 3 sigma
    assert runs[1]["modes_covered"] == 4 and runs[1]["quality"] > 0.9
    paths = bench.write_outputs(res, tmp_path)
    assert all(p.exists() for p in paths.values())
    assert "dpm2m" in paths["markdown"].read_text()


def test_wasserstein1_1d_against_closed_forms():
    """W1 of a point mass at 0 from N(0, s^2) is E|X| = s sqrt(2/pi); of a point mass at m from
    a two-component mixture 0.5 N(-a, s^2) + 0.5 N(a, s^2) with s << a it is about the mean
    distance |m - a|/2 + |m + a|/2; exact samples score near 0."""
    s = 0.3
    one = GaussianMixture(torch.zeros(1, 1), torch.ones(1), s)
    assert wasserstein1_1d(one, torch.zeros(500)) == pytest.approx(s * math.sqrt(2 / math.pi),
                                                                 rel=1e-3)
    two = GaussianMixture(torch.tensor([[-1.0], [1.0]]), torch.tensor([0.5, 0.5]), 0.01)
    assert wasserstein1_1d(two, torch.full((10,), 0.5)) == pytest.approx(1.0, rel=1e-2)
    exact = torch.randn(20_000, generator=torch.Generator().manual_seed(0)) * s
    assert wasserstein1_1d(one, exact) < 0.01
