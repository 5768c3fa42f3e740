"""Sample-quality metrics against a Gaussian mixture with known modes (REFERENCE.md §6).

Everything here is a pure function of tensors and runs in float64 on the CPU:

- :func:`sliced_wasserstein2`: the sliced 2-Wasserstein distance between two sample sets
  (random unit directions; the 1-D W2 of each projection from the exact quantile functions of
  the two empirical distributions, so unequal sizes are handled exactly).
- :func:`sw2_noise_floor`: what a perfect sampler scores (SW2 between two independent exact
  sample sets of the same size).
- :func:`mode_metrics`: per-mode quality, coverage, weight KL and spread;
- :func:`far_outlier_share`: samples beyond the 6-sigma radius of every mode.
- :func:`oracle_report`: all of it in one dictionary.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from ..oracle import GaussianMixture

_F64 = torch.float64

#: two-sided mass of a standard normal within 3 standard deviations (0.99730...)
THREE_SIGMA_MASS = math.erf(3.0 / math.sqrt(2.0))


def _as_samples(x: Tensor, name: str, dim: int | None = None) -> Tensor:
    """Validate a ``(n, d)`` sample tensor and return it as float64 on the CPU."""
    if not isinstance(x, Tensor):
        x = torch.as_tensor(x)
    if x.dim() == 1:
        x = x[:, None]
    if x.dim() != 2 or x.shape[0] < 1:
        raise ValueError(f"{name} must have shape (n, d) with n >= 1, got {tuple(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(
            f"{name} must have {dim} columns (the mixture's dimension), got {x.shape[1]}"
        )
    x = x.detach().to(device="cpu", dtype=_F64)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains non-finite values")
    return x


def _default_generator(generator: torch.Generator | None) -> torch.Generator:
    """A fixed-seed CPU generator when none is given, so metrics are reproducible."""
    return generator if generator is not None else torch.Generator().manual_seed(0)


def random_directions(
    dim: int, n_projections: int, generator: torch.Generator | None = None
) -> Tensor:
    """``(dim, n_projections)`` unit vectors uniform on the sphere (float64, CPU)."""
    if n_projections < 1:
        raise ValueError(f"n_projections must be >= 1, got {n_projections}")
    gen = _default_generator(generator)
    theta = torch.randn(dim, n_projections, generator=gen, device=gen.device, dtype=_F64).cpu()
    return theta / theta.norm(dim=0, keepdim=True)


def _sorted_rows(a: Tensor) -> np.ndarray:
    """Sort each row (numpy's sort is ~10x faster than torch.sort on CPU for this shape)."""
    return np.sort(a.numpy(), axis=1)


def _w2sq_1d_sorted(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Exact squared W2 between the empirical laws of sorted rows ``xs (P, n)``, ``ys (P, m)``.

    The quantile functions are step functions with jumps at ``i/n`` and ``j/m``; on the merged
    breakpoints both are constant, so the integral of their squared difference is a finite sum
    (computed in row chunks to bound memory).
    """
    n, m = xs.shape[1], ys.shape[1]
    if n == m:
        return ((xs - ys) ** 2).mean(axis=1)
    lcm = n * m // math.gcd(n, m)  # breakpoints as exact integers in units of 1/lcm
    sx, sy = lcm // n, lcm // m
    levels = np.union1d(np.arange(1, n + 1, dtype=np.int64) * sx,
                        np.arange(1, m + 1, dtype=np.int64) * sy)
    widths = np.diff(levels, prepend=0).astype(np.float64) / lcm
    # on (levels[k-1], levels[k]] the x-quantile is xs[ceil(level / sx) - 1]
    ix = (levels + sx - 1) // sx - 1
    iy = (levels + sy - 1) // sy - 1
    out = np.empty(xs.shape[0])
    chunk = max(1, 2_000_000 // levels.size)
    for lo in range(0, xs.shape[0], chunk):
        diff = xs[lo:lo + chunk, ix] - ys[lo:lo + chunk, iy]
        out[lo:lo + chunk] = (diff**2 * widths).sum(axis=1)
    return out


def _check_directions(directions: Tensor, dim: int) -> Tensor:
    directions = torch.as_tensor(directions, dtype=_F64).cpu()
    if directions.dim() != 2 or directions.shape[0] != dim:
        raise ValueError(f"directions must have shape ({dim}, P), got {tuple(directions.shape)}")
    return directions


def sliced_wasserstein2(
    x: Tensor,
    y: Tensor | SlicedReference,
    n_projections: int = 256,
    generator: torch.Generator | None = None,
    directions: Tensor | None = None,
) -> float:
    """Sliced 2-Wasserstein distance ``sqrt(E_theta W2^2(theta#x, theta#y))`` between sample sets.

    Projects both sets on ``n_projections`` random unit directions (or the given ``directions``
    of shape ``(d, P)``) and averages the exact 1-D squared W2 of the empirical laws; sizes may
    differ. ``generator`` (a fixed seed when ``None``) draws the directions. ``y`` may be a
    :class:`SlicedReference` (its directions are then used).
    """
    if isinstance(y, SlicedReference):
        return y.sw2(x)
    x = _as_samples(x, "x")
    y = _as_samples(y, "y", x.shape[1])
    if directions is None:
        directions = random_directions(x.shape[1], n_projections, generator)
    directions = _check_directions(directions, x.shape[1])
    xs = _sorted_rows(directions.T @ x.T)
    ys = _sorted_rows(directions.T @ y.T)
    return float(math.sqrt(_w2sq_1d_sorted(xs, ys).mean()))


class SlicedReference:
    """A reference sample set with its projections sorted once, to score many sets against it.

    ``SlicedReference(y, n_projections, generator).sw2(x)`` equals
    ``sliced_wasserstein2(x, y, directions=ref.directions)``.
    """

    def __init__(
        self,
        y: Tensor,
        n_projections: int = 256,
        generator: torch.Generator | None = None,
        directions: Tensor | None = None,
    ) -> None:
        y = _as_samples(y, "reference samples")
        if directions is None:
            directions = random_directions(y.shape[1], n_projections, generator)
        self.directions = _check_directions(directions, y.shape[1])
        self.dim, self.n = y.shape[1], y.shape[0]
        self.sorted = _sorted_rows(self.directions.T @ y.T)

    def sw2(self, x: Tensor) -> float:
        """SW2 between samples ``x`` and this reference."""
        x = _as_samples(x, "x", self.dim)
        xs = _sorted_rows(self.directions.T @ x.T)
        return float(math.sqrt(_w2sq_1d_sorted(xs, self.sorted).mean()))

    def sw2_replicates(self, x: Tensor, counts: np.ndarray) -> np.ndarray:
        """SW2 of reweighted copies of ``x (n, d)``: row b of ``counts (B, n)`` says how often
        each sample appears in copy b (a bootstrap resample: each row sums to n). Every copy
        equals ``sw2(x[idx])`` for the indices it counts, but the projections are sorted once:
        a copy's sorted projections are the sorted ones repeated by its counts."""
        x = _as_samples(x, "x", self.dim)
        proj = (self.directions.T @ x.T).numpy()  # (P, n)
        order = np.argsort(proj, axis=1, kind="stable")
        xs = np.take_along_axis(proj, order, axis=1)
        n = x.shape[0]
        blocks = self._block_sums(n)
        out = np.empty(len(counts))
        for b, c in enumerate(np.asarray(counts)):
            if int(c.sum()) != n:
                raise ValueError(f"counts row {b} sums to {int(c.sum())}, expected n = {n}")
            cs = c[order]  # (P, n): counts in each projection's sorted order
            if blocks is None:
                rep = np.repeat(xs.ravel(), cs.ravel()).reshape(xs.shape)
                w2sq = _w2sq_1d_sorted(rep, self.sorted)
            else:
                # m = f n: rank r of the copy meets reference ranks f r .. f r + f - 1, so
                # W2^2 = (f sum_r rep_r^2 - 2 sum_r rep_r S_r) / m + mean(y^2) with S_r the
                # block sums; sample k fills ranks cum_{k-1} .. cum_k - 1 of the copy
                cum_s, mean_sq, f = blocks
                at = np.cumsum(cs, axis=1) + (np.arange(len(cs)) * (n + 1))[:, None]
                seg = np.take(cum_s, at) - np.take(cum_s, at - cs)  # flat: rows of n + 1
                w2sq = (f * (proj**2 @ c) - 2.0 * (xs * seg).sum(axis=1)) / self.n + mean_sq
            out[b] = math.sqrt(max(float(w2sq.mean()), 0.0))
        return out

    def _block_sums(self, n: int) -> tuple[np.ndarray, np.ndarray, int] | None:
        """When the reference size is a multiple ``f`` of ``n``: the cumulative sums (a leading
        0, then ``(P, n)``) of the sorted reference projections summed over blocks of ``f``
        ranks, the mean of their squares ``(P,)`` and ``f`` (so the W2 of an n-point set needs
        no merge of quantile levels)."""
        if self.n % n:
            return None
        f = self.n // n
        s1 = self.sorted.reshape(self.sorted.shape[0], n, f).sum(axis=2)
        cum_s = np.concatenate([np.zeros((s1.shape[0], 1)), np.cumsum(s1, axis=1)], axis=1)
        return cum_s, (self.sorted**2).mean(axis=1), f


def sw2_noise_floor(
    mixture: GaussianMixture,
    n: int,
    generator: torch.Generator | None = None,
    repeats: int = 3,
    n_projections: int = 256,
    m: int | None = None,
) -> dict:
    """SW2 between independent exact sample sets of sizes ``n`` and ``m`` (default ``n``): the
    score of a perfect sampler, to read every sampler's SW2 against.

    Returns ``{"mean", "std", "values", "n", "m"}`` over ``repeats`` independent pairs.
    """
    if n < 1 or repeats < 1:
        raise ValueError(f"n and repeats must be >= 1, got n={n}, repeats={repeats}")
    m = n if m is None else m
    gen = _default_generator(generator)
    values = []
    for _ in range(repeats):
        a, _ = mixture.sample(n, gen, dtype=_F64)
        b, _ = mixture.sample(m, gen, dtype=_F64)
        values.append(sliced_wasserstein2(a, b, n_projections, gen))
    vals = torch.tensor(values, dtype=_F64)
    std = float(vals.std()) if repeats > 1 else 0.0
    return {"mean": float(vals.mean()), "std": std, "values": values, "n": n, "m": m}


def sw2_to_standard_normal(z: Tensor, directions: Tensor) -> float:
    """Exact sliced W2 between the empirical law of ``z (n, d)`` and ``N(0, I_d)``.

    Every projection of ``N(0, I)`` is ``N(0, 1)``, whose quantile integrals are closed-form:
    ``int_a^b Phi^-1 = phi(Phi^-1(a)) - phi(Phi^-1(b))`` and ``int_0^1 (Phi^-1)^2 = 1``, so
    ``W2^2 = mean(p^2) - 2 sum_i p_(i) (phi(q_{i-1}) - phi(q_i)) + 1``, ``q_i = Phi^-1(i/n)``.
    No reference sample is involved (no reference noise).
    """
    z = _as_samples(z, "z")
    n = z.shape[0]
    p = _sorted_rows(_check_directions(directions, z.shape[1]).T @ z.T)  # (P, n)
    dens = stats.norm.pdf(stats.norm.ppf(np.arange(n + 1) / n))  # phi(q_i); 0 at both ends
    w2sq = (p**2).mean(axis=1) - 2.0 * (p * (dens[:-1] - dens[1:])).sum(axis=1) + 1.0
    return float(math.sqrt(max(float(w2sq.mean()), 0.0)))


def quality_radius(dim: int, mass: float = THREE_SIGMA_MASS) -> float:
    """Standardized radius holding ``mass`` of a ``dim``-D standard normal: the chi quantile.

    For ``dim = 1`` this is 3 (the 3-sigma rule); for ``dim > 1`` it is the radius with the same
    mass (0.9973) as +-3 sigma in 1-D, e.g. 3.44 in 2-D and 10.5 in 64-D.
    """
    if dim < 1 or not 0.0 < mass < 1.0:
        raise ValueError(f"dim must be >= 1 and mass in (0, 1), got dim={dim}, mass={mass}")
    return float(math.sqrt(stats.chi2.ppf(mass, dim)))


def truncated_var_factor(dim: int, radius: float) -> float:
    """Per-coordinate variance of a standard normal in ``dim`` dims conditioned on ``|z| < radius``.

    ``E[|z|^2 ; |z|^2 < c] = dim F_{dim+2}(c)`` for chi-square CDFs ``F``, so the factor is
    ``F_{dim+2}(c) / F_dim(c)`` with ``c = radius^2`` (0.973 for the 1-D 3-sigma window).
    """
    c = radius**2
    return float(stats.chi2.cdf(c, dim + 2) / stats.chi2.cdf(c, dim))


#: a sample beyond the radius holding the 1-D +-6 sigma mass of every component is a far
#: outlier (:func:`far_outlier_share`)
FAR_OUTLIER_STDS = 6.0


def far_radius(dim: int, n_std: float = FAR_OUTLIER_STDS) -> float:
    """Standardized radius whose ``dim``-D normal tail equals the two-sided 1-D tail beyond
    ``n_std`` (so ``n_std`` itself in 1-D, 6.33 in 2-D for 6, 14.6 in 64-D): the far-outlier
    analogue of :func:`quality_radius`."""
    if dim < 1 or not n_std > 0:
        raise ValueError(f"dim must be >= 1 and n_std > 0, got dim={dim}, n_std={n_std}")
    tail = math.erfc(n_std / math.sqrt(2.0))
    return float(math.sqrt(stats.chi2.isf(tail, dim)))


def far_outlier_share(mixture: GaussianMixture, x: Tensor,
                      n_std: float = FAR_OUTLIER_STDS) -> float:
    """Share of samples ``x (n, d)`` beyond :func:`far_radius` of every component:
    ``min_k |(x - m_k) / s_k| > far_radius(d, n_std)`` (norm of the standardized offset).

    An exact sampler scores ~0 (a tail of 2e-9 per sample for ``n_std = 6``); a
    probability-flow sampler that strands samples between modes shows here, while the share
    within 3 sigma barely moves.
    """
    radius = far_radius(mixture.dim, n_std)
    x = _as_samples(x, "x", mixture.dim)
    far = torch.ones(x.shape[0], dtype=torch.bool)
    for k in range(mixture.n_components):
        z = (x - mixture.means[k]) / mixture.stds[k]
        far &= z.pow(2).sum(1) > radius**2
    return float(far.to(_F64).mean())


def _per_mode_averages(
    z: Tensor, radius_sq: Tensor, labels: Tensor, good: Tensor, covered: Tensor, w: Tensor,
    r_d: float, n_projections: int,
) -> dict[str, float]:
    """Spread, median-radius, offset and within-mode SW2 of the covered modes, averaged.

    The definitions are :func:`mode_metrics`'s; an average over no mode is NaN.
    """
    d = z.shape[1]
    var_factor = truncated_var_factor(d, r_d)
    chi_median = float(math.sqrt(stats.chi2.ppf(0.5, d)))
    dirs = random_directions(d, 1 if d == 1 else n_projections, torch.Generator().manual_seed(0))
    spreads, medians, offsets, shape_w, shape_sw2 = [], [], [], [], []
    for k in range(len(covered)):
        if not bool(covered[k]):
            continue
        zk = z[good & (labels == k)]
        if zk.shape[0] >= 2:
            var_ratio = zk.var(dim=0, unbiased=True).mean()
            spreads.append(float(torch.sqrt(var_ratio / var_factor)))
        mine = labels == k
        offsets.append(float(z[mine].median(dim=0).values.pow(2).mean()))
        medians.append(float(radius_sq[mine].sqrt().median()) / chi_median)
        if int(mine.sum()) >= 2:
            shape_w.append(float(w[k]))
            shape_sw2.append(sw2_to_standard_normal(z[mine], dirs))
    nan = float("nan")
    return {
        "spread_ratio": float(sum(spreads) / len(spreads)) if spreads else nan,
        "spread_ratio_median": float(sum(medians) / len(medians)) if medians else nan,
        "mode_offset": float(math.sqrt(sum(offsets) / len(offsets))) if offsets else nan,
        "within_mode_sw2": (sum(a * b for a, b in zip(shape_w, shape_sw2, strict=True))
                            / sum(shape_w)) if shape_w else nan,
    }


def mode_metrics(
    mixture: GaussianMixture,
    x: Tensor,
    min_count: int = 1,
    smoothing: float = 0.5,
    n_projections: int = 64,
) -> dict:
    """Per-mode quality, coverage, weight KL and spread of samples ``x (n, d)``.

    Definitions (each sample is assigned to its most likely component, ``mixture.assign``):

    - ``z = (x - m_k) / s_k`` with the assigned component's diagonal std ``s_k``; a sample is
      *high quality* when ``|z| <= r_d``, ``r_d`` the chi_d quantile with the 1-D 3-sigma mass
      0.9973 (:func:`quality_radius`; r_1 = 3). An exact sampler scores ``quality`` ~= 0.9973.
    - ``modes_covered``: components with at least ``min_count`` high-quality samples (default 1).
    - ``kl_weights``: ``KL(true weights || found weights)`` where found weights are the
      high-quality counts plus ``smoothing`` pseudo-counts per mode, normalised (so a dropped
      mode of weight ``w`` costs about ``w log(w (n + K smoothing) / smoothing)``).
    - ``spread_ratio``: per covered mode with >= 2 high-quality samples, the empirical std of
      its high-quality samples over the true std (RMS over coordinates of the per-coordinate
      variance ratio), divided by ``sqrt(truncated_var_factor)`` so an exact sampler scores 1
      despite the truncation at ``r_d``; averaged over those modes. Truncation caps what it can
      see: samples spread 2x read ~1.5 in 2-D, hence also
    - ``spread_ratio_median``: per mode, the median ``|z|`` of all samples assigned to it over
      the chi_d median, averaged over covered modes (not truncated; robust to stray samples).
    - ``mode_offset``: per covered mode, the coordinate-wise median of ``z`` over all samples
      assigned to it; RMS over coordinates and modes (a bias in units of the mode's std; exact
      samples give ~1.25 / sqrt(samples per mode), the median's standard error).
    - ``within_mode_sw2``: per covered mode with >= 2 assigned samples, the exact sliced W2
      between its standardized samples ``z`` and ``N(0, I)`` (:func:`sw2_to_standard_normal`,
      ``n_projections`` fixed directions), averaged with the true weights. In units of the
      mode's std: a mode spread 2x or shifted by one std per coordinate scores ~1; exact samples
      score ~0.1 at a few hundred samples per mode (finite-sample W2). Unlike SW2 between whole
      sample sets, which mode-count noise dominates, it sees within-mode shape errors.
    - ``far_outliers``: share of samples beyond the 6-sigma radius of every component
      (:func:`far_outlier_share`; 6.33 standard deviations in 2-D).

    Returns a dict of floats plus ``counts`` / ``found_weights`` lists per component.
    """
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    if smoothing <= 0:
        raise ValueError(f"smoothing must be > 0 (it keeps the KL finite), got {smoothing}")
    x = _as_samples(x, "x", mixture.dim)
    n, d = x.shape
    n_comp = mixture.n_components
    labels = mixture.assign(x)
    z = (x - mixture.means[labels]) / mixture.stds[labels]
    radius_sq = (z**2).sum(dim=1)
    r_d = quality_radius(d)
    good = radius_sq <= r_d**2
    counts = torch.bincount(labels[good], minlength=n_comp).to(_F64)
    covered = counts >= min_count

    w = mixture.weights
    found = (counts + smoothing) / (counts.sum() + smoothing * n_comp)
    kl = float((w * (torch.log(w.clamp_min(1e-300)) - torch.log(found))).where(w > 0, 0.0).sum())

    per_mode = _per_mode_averages(z, radius_sq, labels, good, covered, w, r_d, n_projections)
    return {
        "n": n,
        "quality": float(good.to(_F64).mean()),
        "quality_radius": r_d,
        "modes_covered": int(covered.sum()),
        "n_modes": n_comp,
        "coverage": float(covered.to(_F64).mean()),
        "kl_weights": kl,
        **per_mode,
        "far_outliers": far_outlier_share(mixture, x),
        "counts": [int(c) for c in counts],
        "found_weights": [float(f) for f in found],
    }


def oracle_report(
    mixture: GaussianMixture,
    samples: Tensor,
    reference_samples: Tensor | SlicedReference | None = None,
    generator: torch.Generator | None = None,
    n_projections: int = 256,
    min_count: int = 1,
) -> dict:
    """Everything about ``samples`` against the mixture: SW2 to exact reference samples (drawn
    here with ``generator``, same size, when none are given; a :class:`SlicedReference` reuses
    its sorted projections) plus :func:`mode_metrics`."""
    x = _as_samples(samples, "samples", mixture.dim)
    gen = _default_generator(generator)
    if reference_samples is None:
        reference_samples, _ = mixture.sample(x.shape[0], gen, dtype=_F64)
    if isinstance(reference_samples, SlicedReference):
        if reference_samples.dim != mixture.dim:
            raise ValueError(f"reference_samples has dimension {reference_samples.dim}, the "
                             f"mixture {mixture.dim}")
        report = {"sw2": reference_samples.sw2(x), "n_reference": reference_samples.n}
    else:
        ref = _as_samples(reference_samples, "reference_samples", mixture.dim)
        report = {"sw2": sliced_wasserstein2(x, ref, n_projections, gen),
                  "n_reference": ref.shape[0]}
    report.update(mode_metrics(mixture, x, min_count=min_count))
    return report


def wasserstein1_1d(mixture: GaussianMixture, samples: Tensor, lo: float = -4.0,
                    hi: float = 4.0, points: int = 8001) -> float:
    """Wasserstein-1 distance between 1-D ``samples`` and an exact 1-D mixture: the integral of
    ``|F_n - F|`` over ``[lo, hi]`` on ``points`` grid points (e.g. inpainting completions
    against the exact conditional, REFERENCE.md §9.3)."""
    xs = torch.linspace(lo, hi, points, dtype=torch.float64)
    s = samples.detach().reshape(-1).to(torch.float64).cpu().sort().values
    f_n = torch.searchsorted(s, xs, right=True).to(torch.float64) / len(s)
    return float((f_n - mixture.cdf_1d(xs)).abs().sum() * (xs[1] - xs[0]))
