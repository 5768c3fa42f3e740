"""Probability-flow ODE likelihoods against exact densities, Hutchinson's unbiasedness, bits/dim.

References: the Gaussian-mixture oracle's exact ``log p_{t_min}`` (the joint (x, v_0) density for
CLD), a single Gaussian in closed form, and bits/dim of discrete distributions computed by hand.
"""

from __future__ import annotations

import math

import pytest
import torch

from trilemma import oracle as O
from trilemma.likelihood import bits_per_dim, dequantize, log_likelihood, to_levels
from trilemma.processes import get_process

F64 = torch.float64

MIXTURES = {
    "grid25": lambda: O.grid25(std=0.1),
    "imbalanced2d": O.imbalanced2d,
    "two_mode_1d": O.two_mode_1d,
}
PROCESSES = {
    "vp": {},
    "subvp": {},
    "ve": {"sigma_max": 20.0},  # "moderate": grid25 spans [-2.3, 2.3]^2
    "cld": {},
}


def _data(mix: O.GaussianMixture, n: int, seed: int = 0) -> torch.Tensor:
    return mix.sample(n, torch.Generator().manual_seed(seed), dtype=F64)[0]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------- exact divergence vs oracle
@pytest.mark.parametrize("pname", list(PROCESSES))
@pytest.mark.parametrize("mname", list(MIXTURES))
def test_exact_divergence_matches_oracle(mname: str, pname: str) -> None:
    """dopri5 at 1e-5 with the exact score: |log p - oracle log p_{t_min}| < 0.01 nat/dim."""
    mix, proc = MIXTURES[mname](), get_process(pname, **PROCESSES[pname])
    x = _data(mix, 64)
    res = log_likelihood(mix.score_fn(proc), proc, x, generator=_gen(1))
    assert res.log_p.dtype == F64 and res.log_p.shape == (64,)
    assert res.t_min == proc.eps and res.dim == mix.dim
    # k = 1: the state is x; CLD: (x, v_0) with v_0 from the generator
    assert torch.equal(proc.state_to_data(res.initial_state), x)
    ref = mix.marginal_log_prob(proc, res.initial_state, res.t_min).to(F64)
    # ODE + divergence error alone: swap the prior for the exact p_T
    p_T = mix.marginal_log_prob(proc, res.final_state, proc.T).to(F64)
    ode_err = (res.state_log_p - res.prior_logp + p_T - ref).abs().max() / mix.dim
    assert ode_err < 0.01, f"ODE error {ode_err:.3g} nat/dim"
    err = (res.state_log_p - ref).abs() / mix.dim
    if pname == "ve":
        # VE's prior N(0, sigma_max^2) is not p_T: per sample the mismatch is ~ <m, u_T> /
        # sigma_max^2 (up to 0.04 nat/dim for imbalanced2d) but it is linear in u_T and
        # averages out; over 64 samples its mean has sd ~ 0.03 / 8
        signed = (res.state_log_p - ref).mean() / mix.dim
        assert abs(signed) < 0.01, f"mean error {signed:.3g} nat/dim"
        assert err.max() < 0.06, f"max error {err.max():.3g} nat/dim"
    else:
        assert err.max() < 0.01, f"max error {err.max():.3g} nat/dim"
    assert res.nfe > 10


@pytest.mark.parametrize("pname", ["vp", "cld"])
def test_error_vanishes_with_tolerance(pname: str) -> None:
    """At rtol = atol = 1e-9 the ODE result equals the exact density to 1e-6 nats."""
    mix, proc = O.two_mode_1d(), get_process(pname)
    x = _data(mix, 8, seed=3)
    res = log_likelihood(mix.score_fn(proc), proc, x, rtol=1e-9, atol=1e-9, generator=_gen(2))
    ref = mix.marginal_log_prob(proc, res.initial_state, res.t_min).to(F64)
    p_T = mix.marginal_log_prob(proc, res.final_state, proc.T).to(F64)
    err = (res.state_log_p - res.prior_logp + p_T - ref).abs().max()
    assert err < 1e-6, f"error {err:.3g} nats"


def test_cld_bound_pieces() -> None:
    """CLD: log_p = joint + velocity entropy; v_0 ~ N(0, gamma M); a smaller t_min works too."""
    mix, proc = O.imbalanced2d(), get_process("cld")
    x = _data(mix, 64, seed=4)
    res = log_likelihood(mix.score_fn(proc), proc, x, t_min=1e-4, generator=_gen(5))
    gm = proc.gamma * proc.mass
    h = 0.5 * mix.dim * (1 + math.log(2 * math.pi) + math.log(gm))
    assert res.v0_entropy == pytest.approx(h, rel=1e-12)
    assert torch.allclose(res.log_p, res.state_log_p + h)
    v0 = proc.split(res.initial_state)[1]
    assert abs(float(v0.var()) / gm - 1) < 0.35  # 128 draws: sd of the ratio ~ 0.125
    # E[-log q(v0)] = H: the per-sample ELBO and the entropy form agree in mean
    assert abs(float(-res.v0_log_q.mean()) - h) < 4 * float(res.v0_log_q.std()) / 8
    ref = mix.marginal_log_prob(proc, res.initial_state, 1e-4).to(F64)
    assert (res.state_log_p - ref).abs().max() / mix.dim < 0.01
    # the bound holds on average: -E[log_p] >= -E[log p_{t_min}(x)] (x alone, HSM marginal)
    assert res.nll.mean() >= -mix.marginal_log_prob(get_process("vp"), x, 1e-9).mean() - 0.5


# ------------------------------------------------------------------- single Gaussian, closed form
def test_single_gaussian_vp_closed_form() -> None:
    """N(m, diag s^2) under VP: log p_t = log N(alpha m, alpha^2 s^2 + sigma^2), inline score."""
    proc = get_process("vp")
    m = torch.tensor([0.5, -1.0, 2.0], dtype=F64)
    s = torch.tensor([0.3, 0.7, 1.2], dtype=F64)

    def var(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = proc.alpha(t)[:, None]
        return a * m, a**2 * s**2 + proc.sigma(t)[:, None] ** 2

    def score(u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        mean, v = var(t)
        return -(u - mean) / v

    def logn(u: torch.Tensor, t: float) -> torch.Tensor:
        mean, v = var(torch.full((u.shape[0],), t, dtype=F64))
        return (-0.5 * (u - mean) ** 2 / v - 0.5 * torch.log(2 * math.pi * v)).sum(1)

    x = m + s * torch.randn(32, 3, generator=_gen(7), dtype=F64)
    res = log_likelihood(score, proc, x)
    exact = logn(x, res.t_min)
    # with the exact p_T in place of the prior: ODE error only (measured 6e-5)
    err = (res.log_p - res.prior_logp + logn(res.final_state, proc.T) - exact).abs().max()
    assert err < 1e-3, f"error {err:.3g} nats"
    # with the prior N(0, I): + alpha_T <m, u_T> (alpha_T = 6.6e-3; measured 0.027)
    err = (res.log_p - exact).abs().max()
    assert err < 0.06, f"error {err:.3g} nats"
    # the documented offset: log p_{t_min} vs log p_0 is small for data this wide
    p0 = (-0.5 * (x - m) ** 2 / s**2 - 0.5 * torch.log(2 * math.pi * s**2)).sum(1)
    assert (exact - p0).abs().max() < 0.02


# ------------------------------------------------------------------- Hutchinson
@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
@pytest.mark.parametrize("pname", ["vp", "cld"])
def test_hutchinson_unbiased(noise: str, pname: str) -> None:
    """Per-sample (Hutchinson - exact) has mean zero within 4 standard errors, and is random."""
    mix, proc = O.imbalanced2d(), get_process(pname)
    n = 96
    x = _data(mix, n, seed=11)
    kw = {"rtol": 1e-7, "atol": 1e-7}  # keep the ODE error far below the probe noise
    exact = log_likelihood(mix.score_fn(proc), proc, x, generator=_gen(3), **kw)
    hut = log_likelihood(mix.score_fn(proc), proc, x, divergence="hutchinson", noise=noise,
                         generator=_gen(3), **kw)
    # same generator: same v_0 for CLD (drawn before the probes)
    assert torch.equal(hut.initial_state, exact.initial_state)
    diff = hut.log_p - exact.log_p
    se = float(diff.std()) / math.sqrt(n)
    assert float(diff.std()) > 0.05, "the probes should make the estimate noisy"
    assert abs(float(diff.mean())) < 4 * se, f"mean {diff.mean():.3g}, se {se:.3g}"
    # more probes: variance ~ 1 / n_probes
    hut8 = log_likelihood(mix.score_fn(proc), proc, x, divergence="hutchinson", noise=noise,
                          n_probes=8, generator=_gen(3), **kw)
    ratio = float((hut8.log_p - exact.log_p).std()) / float(diff.std())
    assert ratio < 0.6, f"8 probes should cut the sd by ~sqrt(8); ratio {ratio:.2f}"


def test_rademacher_is_exact_in_one_dimension() -> None:
    """With one noise coordinate (1-D VP, and 1-D CLD: the probe lives on v only) e^2 = 1."""
    mix = O.two_mode_1d()
    x = _data(mix, 16, seed=5)
    for pname in ("vp", "cld"):
        proc = get_process(pname)
        a = log_likelihood(mix.score_fn(proc), proc, x, generator=_gen(0))
        b = log_likelihood(mix.score_fn(proc), proc, x, divergence="hutchinson",
                           generator=_gen(0))
        assert (a.log_p - b.log_p).abs().max() < 1e-3, pname


# ------------------------------------------------------------------- model handling
class _Net(torch.nn.Module):
    """The oracle score behind an nn.Module that records its mode on every call."""

    def __init__(self, mix: O.GaussianMixture, proc) -> None:  # noqa: ANN001
        super().__init__()
        self.fn = mix.score_fn(proc)
        self.scale = torch.nn.Parameter(torch.ones((), dtype=F64))
        self.modes: list[bool] = []

    def forward(self, u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return self.scale * self.fn(u, t)


def test_model_as_given_no_distributed_and_nfe(monkeypatch: pytest.MonkeyPatch) -> None:
    """A train-mode model stays in train mode; no DDP or torch.distributed; NFE = calls."""
    def boom(*_a: object, **_k: object) -> None:
        raise AssertionError("log_likelihood must not touch torch.distributed / DDP")

    for name in ("is_available", "is_initialized", "get_rank", "get_world_size",
                 "all_reduce", "all_gather", "barrier", "broadcast"):
        monkeypatch.setattr(torch.distributed, name, boom, raising=False)
    monkeypatch.setattr(torch.nn.parallel.DistributedDataParallel, "__init__", boom)
    mix, proc = O.two_mode_1d(), get_process("vp")
    net = _Net(mix, proc).train()
    x = _data(mix, 8)
    res = log_likelihood(net, proc, x)
    assert net.training and all(net.modes) and len(net.modes) == res.nfe
    net.eval()
    net.modes.clear()
    res2 = log_likelihood(net, proc, x)
    assert not net.training and not any(net.modes) and len(net.modes) == res2.nfe
    assert torch.allclose(res.log_p, res2.log_p)
    assert net.scale.grad is None  # only the input is differentiated


def test_float32_input() -> None:
    """A float32 batch integrates in float32 and agrees with float64 to 0.01 nat/dim."""
    mix, proc = O.imbalanced2d(), get_process("vp")
    x = _data(mix, 32)
    a = log_likelihood(mix.score_fn(proc), proc, x)
    b = log_likelihood(mix.score_fn(proc), proc, x.float())
    assert b.final_state.dtype == torch.float32 and b.log_p.dtype == F64
    assert (a.log_p - b.log_p).abs().max() / 2 < 0.01


def test_bad_arguments() -> None:
    mix, proc = O.two_mode_1d(), get_process("vp")
    fn, x = mix.score_fn(proc), _data(mix, 4)
    with pytest.raises(ValueError, match="divergence"):
        log_likelihood(fn, proc, x, divergence="trace")
    with pytest.raises(ValueError, match="noise"):
        log_likelihood(fn, proc, x, divergence="hutchinson", noise="uniform")
    with pytest.raises(ValueError, match="n_probes"):
        log_likelihood(fn, proc, x, n_probes=0)
    with pytest.raises(ValueError, match="t_min"):
        log_likelihood(fn, proc, x, t_min=1.5)
    with pytest.raises(ValueError, match="method"):
        log_likelihood(fn, proc, x, method="lsoda")
    with pytest.raises(ValueError, match="step_size"):
        log_likelihood(fn, proc, x, method="rk4")
    with pytest.raises(ValueError, match="x must"):
        log_likelihood(fn, proc, x[0])
    with pytest.raises(ValueError, match="x must be floating"):
        log_likelihood(fn, proc, x.long())
    with pytest.raises(TypeError, match="process"):
        log_likelihood(fn, "vp", x)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="differentiabl"):
        log_likelihood(lambda u, t: fn(u, t).detach(), proc, x)
    from trilemma.samplers import ODEBudgetExceeded

    with pytest.raises(ODEBudgetExceeded, match="max_nfe"):
        log_likelihood(fn, proc, x, max_nfe=5)


def test_fixed_step_method() -> None:
    """rk4 with a fine step agrees with dopri5."""
    mix, proc = O.two_mode_1d(), get_process("vp")
    x = _data(mix, 8)
    a = log_likelihood(mix.score_fn(proc), proc, x)
    b = log_likelihood(mix.score_fn(proc), proc, x, method="rk4", step_size=2e-3)
    assert (a.log_p - b.log_p).abs().max() < 0.01


# ------------------------------------------------------------------- bits / dim
def test_bits_per_dim_offsets() -> None:
    d = 3072
    assert float(bits_per_dim(torch.zeros(1, dtype=F64), d)) == pytest.approx(7.0)
    assert float(bits_per_dim(0.0, d, eight_bit=True)) == pytest.approx(7.0)
    assert float(bits_per_dim(0.0, d, eight_bit=False)) == 0.0
    assert float(bits_per_dim(0.0, d, levels=None)) == 0.0
    assert float(bits_per_dim(-d * math.log(2.0), d, levels=None)) == pytest.approx(1.0)
    # uniform density 2^-d on [-1, 1]^d <-> uniform over the levels: log2(levels) bits exactly
    for levels in (2, 17, 256):
        bpd = bits_per_dim(torch.tensor([-d * math.log(2.0)], dtype=F64), d, levels=levels)
        assert float(bpd) == pytest.approx(math.log2(levels), abs=1e-12)
    with pytest.raises(ValueError, match="levels"):
        bits_per_dim(0.0, d, levels=1)
    with pytest.raises(ValueError, match="dim"):
        bits_per_dim(0.0, 0)


@pytest.mark.parametrize("levels", [5, 256])
def test_dequantized_histogram_gives_exact_discrete_bits(levels: int) -> None:
    """A histogram density on dequantize's bins gives exactly -log2 P(k) / d bits/dim."""
    gen = _gen(0)
    d, n = 3, 4000
    probs = torch.rand(levels, generator=gen, dtype=F64) + 0.05
    probs /= probs.sum()
    k = torch.multinomial(probs, n * d, replacement=True, generator=gen).reshape(n, d)
    z = dequantize(k.to(torch.uint8) if levels <= 256 else k, gen, levels=levels, dtype=F64)
    assert float(z.min()) >= -1.0 and float(z.max()) < 1.0
    # recover the bin from z alone, evaluate the histogram density p(z) = P(bin) * levels / 2
    b = torch.floor((z + 1) * levels / 2).long()
    assert torch.equal(b, k)
    log_p = torch.log(probs[b] * levels / 2).sum(1)
    expected = -torch.log2(probs[k]).sum(1) / d
    assert torch.allclose(bits_per_dim(log_p, d, levels=levels), expected, atol=1e-12)
    # uniform within the bin: offset from the bin's left edge has mean 1/2 of a bin
    frac = (z + 1) * levels / 2 - k
    assert abs(float(frac.mean()) - 0.5) < 4 * math.sqrt(1 / 12 / (n * d))


def test_dequantize_and_to_levels() -> None:
    k = torch.arange(17).reshape(1, 17)
    x_loader = k.float() * (2.0 / 16) - 1.0  # how load_digits scales 0..16
    assert torch.equal(to_levels(x_loader, 17), k)
    with pytest.raises(ValueError, match="levels"):
        to_levels(x_loader * 0.9, 17)
    with pytest.raises(ValueError, match="integer dtype"):
        dequantize(x_loader)
    with pytest.raises(ValueError, match="0..16"):
        dequantize(k + 1, levels=17)
    a = dequantize(k, _gen(1), levels=17)
    b = dequantize(k, _gen(1), levels=17)
    assert torch.equal(a, b) and a.dtype == torch.float32


# ------------------------------------------------------------------- image-shaped states
def _gauss_cld_score(proc, s0: torch.Tensor):  # noqa: ANN001, ANN202
    """Exact velocity score of CLD for N(0, I) data (per coordinate N(0, C_t))."""

    def fn(u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        prec = torch.linalg.inv(proc.marginal_cov(t, init_cov=s0)).to(u.dtype)
        x, v = proc.split(u)
        view = (-1, 1, 1, 1)
        return -(prec[:, 1, 0].reshape(view) * x + prec[:, 1, 1].reshape(view) * v)

    return fn


@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_image_shaped_gaussian_data(divergence: str) -> None:
    """(B, C, H, W) data ~ N(0, I): VP keeps p_t = N(0, I) (score -u, prior exact) and CLD's
    joint density is Gaussian; Rademacher Hutchinson on a linear score is exact too."""
    x = torch.randn(6, 2, 3, 3, generator=_gen(8), dtype=F64)
    vp = get_process("vp")
    res = log_likelihood(lambda u, t: -u, vp, x, divergence=divergence)
    exact = (-0.5 * x**2 - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
    assert res.dim == 18 and (res.log_p - exact).abs().max() < 1e-4
    cld = get_process("cld")
    s0 = torch.diag(torch.tensor([1.0, cld.gamma * cld.mass], dtype=F64))
    res = log_likelihood(_gauss_cld_score(cld, s0), cld, x, divergence=divergence,
                         generator=_gen(9))
    assert res.initial_state.shape == (6, 4, 3, 3)
    cov = cld.marginal_cov(res.t_min, init_cov=s0)
    xs, vs = cld.split(res.initial_state)
    pair = torch.stack([xs.flatten(1), vs.flatten(1)], -1)  # (B, d, 2)
    quad = (pair @ torch.linalg.inv(cov) * pair).sum((-1, -2))
    joint = -0.5 * quad - 0.5 * 18 * (2 * math.log(2 * math.pi) + torch.logdet(cov))
    err = (res.state_log_p - joint).abs().max() / 18
    assert err < 1e-3, f"error {err:.3g} nat/dim"
