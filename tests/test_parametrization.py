"""The glue from network outputs to scores, against exact scores of Gaussian(-mixture) data.

A :class:`Parametrization` scales the network's input, calls it and converts its output by the
process (``prediction_to_score``); LSGM's :class:`LatentPrior` converts the same way and mixes in
the Normal score. Test networks here *use* their input: each computes, from the scaled input it
receives, the output that an ideal network of its kind would give, written out by hand from the
definitions (REFERENCE.md §2.1-2.2). So a wrong input scale, a wrong conversion or a dropped
analytic term changes the score, and the oracle (``trilemma.oracle``) tells.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from trilemma.methods.lsgm import LatentPrior
from trilemma.oracle import GaussianMixture, grid25
from trilemma.parametrization import CLD_PREDICTIONS, SCALAR_PREDICTIONS, Parametrization
from trilemma.processes import CLD, VP, get_process, per_sample

F64 = torch.float64
SCALAR = ("vp", "vp_cosine", "subvp", "geometric_vp", "ve")
SD = 0.5  # std of the Gaussian test data, = the default sigma_data
MIX = GaussianMixture(torch.tensor([[-1.0, 0.5], [0.8, -0.4]]), torch.tensor([0.3, 0.7]),
                      torch.tensor([0.3, 0.6]))
NORMAL = GaussianMixture(torch.zeros(1, 2, dtype=F64), None, 1.0)  # N(0, I) data


def _times(proc, n: int = 12) -> Tensor:
    return torch.linspace(0.02, 0.95 * proc.T, n, dtype=F64)


def _states(proc, n: int = 12, seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 1.5 * torch.randn(n, 2 * proc.k, generator=gen, dtype=F64)


def _alpha_sigma(proc, t: Tensor) -> tuple[Tensor, Tensor]:
    return proc.alpha(t)[:, None], proc.sigma(t)[:, None]


def _velocity(u: Tensor) -> Tensor:
    return u[:, u.shape[1] // 2:]


def _cld_coefs(proc: CLD, t: Tensor) -> tuple[Tensor, Tensor]:
    """``(l_t, Sigma_vv)`` by REFERENCE §1.4: ``l = sqrt(Sxx / (Sxx Svv - Sxv^2))``."""
    cov = proc.marginal_cov(t)
    sxx, sxv, svv = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
    return torch.sqrt(sxx / (sxx * svv - sxv**2))[:, None], svv[:, None]


def edm_coefs(sigma: Tensor, sd: float) -> tuple[Tensor, Tensor]:
    """EDM's ``(c_skip, c_out)`` (Karras et al. 2022, Table 1), written out here."""
    return sd**2 / (sigma**2 + sd**2), sigma * sd / torch.sqrt(sigma**2 + sd**2)


def ideal_output(proc, kind: str, score: Tensor, u: Tensor, t: Tensor,
                 sigma_data: float = 0.8) -> Tensor:
    """What an ideal network of kind ``kind`` outputs where the exact score is ``score``."""
    if kind == "score" and not isinstance(proc, CLD):
        return score
    if isinstance(proc, CLD):
        ell, svv = _cld_coefs(proc, t)
        analytic = -_velocity(u) / svv if kind in ("mixed", "edm") else 0.0
        return -(score - analytic) / ell  # s = analytic - l out
    a, s = _alpha_sigma(proc, t)
    eps = -s * score  # the kernel's score is -eps / sigma
    x0 = (u + s**2 * score) / a  # Tweedie
    if kind == "edm":  # x0 = c_skip x + c_out F in the VE variables x = u/a, sigma = s/a
        c_skip, c_out = edm_coefs(s / a, sigma_data)
        return (x0 - c_skip * u / a) / c_out
    return {"eps": eps, "x0": x0, "v": a * eps - s * x0}[kind]


def cld_block_vars(proc: CLD, t: Tensor, sigma_data: float) -> Tensor:
    """Marginal variances ``(Sigma_xx, Sigma_vv)`` per time, ``(T, 2)``, for data of second
    moment ``sigma_data^2`` (initial covariance ``diag(sigma_data^2 + eps_num, gamma M)``)."""
    init = torch.diag(torch.tensor([sigma_data**2 + proc.eps_num, proc.gamma * proc.mass],
                                   dtype=F64))
    cov = proc.marginal_cov(t, init_cov=init)
    return torch.stack([cov[:, 0, 0], cov[:, 1, 1]], dim=1)


def expected_c_in(proc, t: Tensor, sigma_data: float, kind: str = "eps") -> Tensor:
    """The input scale a network should see: unit variance for data of std ``sigma_data``
    (CLD: none, except per block for ``edm``: shape ``(T, 2)``, x block then v block)."""
    if isinstance(proc, CLD):
        if kind != "edm":
            return torch.ones(t.shape[0], 1, dtype=F64)
        return 1.0 / torch.sqrt(cld_block_vars(proc, t, sigma_data))
    a, s = _alpha_sigma(proc, t)
    return 1.0 / torch.sqrt(a**2 * sigma_data**2 + s**2)


def time_from_input(proc, kind: str, tin: Tensor) -> Tensor:
    """The process time behind a network's time input: ``c_noise = ln(sigma)/4`` for a scalar
    process's ``edm`` (inverted through ``sigma = sigma_t/alpha_t``), else ``t`` itself."""
    if kind != "edm" or isinstance(proc, CLD):
        return tin
    return proc.t_from_log_snr(-4.0 * tin)


class OracleNet(nn.Module):
    """The ideal network of one kind for ``data``: undoes the expected input scale, evaluates the
    exact score there and returns :func:`ideal_output`."""

    def __init__(self, proc, data: GaussianMixture, kind: str, sigma_data: float | None) -> None:
        super().__init__()
        self.proc, self.data, self.kind, self.sigma_data = proc, data, kind, sigma_data

    def forward(self, inp: Tensor, tin: Tensor) -> Tensor:
        t = time_from_input(self.proc, self.kind, tin.to(F64))
        scale = (torch.ones(1, dtype=F64) if self.sigma_data is None
                 else expected_c_in(self.proc, t, self.sigma_data, self.kind))
        if scale.dim() == 2 and scale.shape[1] == 2:  # CLD edm: one scale per block
            scale = scale.repeat_interleave(inp.shape[1] // 2, dim=1)
        u = inp / scale
        score = self.data.marginal_score(self.proc, u, t)
        return ideal_output(self.proc, self.kind, score, u, t, self.sigma_data or 0.8)


class LinearNet(nn.Module):
    """``net(inp, t) = k(t) inp``: a fixed linear map per time (no knowledge of the process)."""

    def __init__(self, coef) -> None:  # noqa: ANN001
        super().__init__()
        self.coef = coef

    def forward(self, inp: Tensor, t: Tensor) -> Tensor:
        return self.coef(t.to(F64))[:, None] * inp


def _gaussian_coef(proc, kind: str, t: Tensor) -> Tensor:
    """Ideal output per unit of *scaled* input for ``N(0, SD^2)`` data (all linear in u)."""
    a, s = proc.alpha(t), proc.sigma(t)
    var = a**2 * SD**2 + s**2  # Var(u_t); the right c_in is 1/sqrt(var)
    # edm: the posterior mean of Gaussian data is c_skip x exactly, so the ideal F is 0
    per_u = {"score": -1.0 / var, "eps": s / var, "x0": a * SD**2 / var,
             "v": a * s * (1.0 - SD**2) / var, "edm": 0.0 * var}[kind]
    return per_u * torch.sqrt(var)


# ------------------------------------------------------------------ Parametrization
@pytest.mark.parametrize("name", SCALAR)
@pytest.mark.parametrize("kind", SCALAR_PREDICTIONS)
def test_linear_net_gives_the_exact_score_of_gaussian_data(name: str, kind: str) -> None:
    """For N(0, SD^2) data the ideal output is linear in the state; a linear net that relies on
    the right input scale must give the exact score (fails if c_in is wrong or ignored)."""
    proc = get_process(name)
    t, u = _times(proc), _states(proc)
    model = Parametrization(LinearNet(lambda tt: _gaussian_coef(proc, kind, tt)), proc, kind, SD)
    exact = GaussianMixture(torch.zeros(1, 2, dtype=F64), None, SD).marginal_score(proc, u, t)
    torch.testing.assert_close(model(u, t), exact, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", SCALAR + ("cld",))
def test_every_prediction_gives_the_exact_mixture_score(name: str) -> None:
    """An ideal network of each kind, through the Parametrization, is the oracle's score."""
    proc = get_process(name)
    t, u = _times(proc), _states(proc, seed=1)
    exact = MIX.marginal_score(proc, u, t)
    for kind in proc.predictions:
        net = OracleNet(proc, MIX, kind, sigma_data=0.8)
        got = Parametrization(net, proc, kind, sigma_data=0.8)(u, t)
        torch.testing.assert_close(got, exact, rtol=1e-8, atol=1e-8, msg=f"{name} {kind}")


@pytest.mark.parametrize("name", SCALAR + ("cld",))
def test_process_conversions_invert_each_other_and_match_the_definitions(name: str) -> None:
    proc = get_process(name)
    t, u = _times(proc), _states(proc, seed=2)
    score = MIX.marginal_score(proc, u, t)
    for kind in proc.predictions:
        out = proc.score_to_prediction(kind, score, u, t, sigma_data=0.8)
        torch.testing.assert_close(out, ideal_output(proc, kind, score, u, t, 0.8), msg=kind)
        torch.testing.assert_close(proc.prediction_to_score(kind, out, u, t, sigma_data=0.8),
                                   score, msg=kind)


def test_scalar_time_and_labels_reach_the_network() -> None:
    seen = {}

    class Net(nn.Module):
        def forward(self, inp: Tensor, t: Tensor, labels: Tensor) -> Tensor:
            seen.update(t=t, labels=labels)
            return inp

    model = Parametrization(Net(), VP(), "score", sigma_data=1.0)
    u = torch.randn(3, 2, dtype=F64)
    out = model(u, torch.tensor(0.5, dtype=F64), torch.tensor([0, 1, 2]))
    assert seen["t"].shape == (3,) and bool((seen["t"] == 0.5).all())
    assert seen["labels"].tolist() == [0, 1, 2]
    torch.testing.assert_close(out, u)  # c_in = 1 for VP at sigma_data = 1


def test_prediction_lists_and_defaults_come_from_the_process() -> None:
    assert SCALAR_PREDICTIONS == ("eps", "x0", "v", "score", "edm")
    assert CLD_PREDICTIONS == ("mixed", "score", "edm")
    assert Parametrization(nn.Identity(), VP()).prediction == "eps"
    assert Parametrization(nn.Identity(), CLD()).prediction == "mixed"
    with pytest.raises(ValueError, match="valid predictions: eps, x0, v, score, edm"):
        VP().prediction_to_score("mixed", torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1))


# ------------------------------------------------------------------ CLD's analytic term
class Zero(nn.Module):
    def forward(self, inp: Tensor, t: Tensor) -> Tensor:
        return torch.zeros_like(inp[:, : inp.shape[1] // 2])


def _cld_models(proc: CLD) -> dict[str, nn.Module]:
    """Every score model whose zero-output score is CLD's analytic part ``-v / Sigma_vv``."""
    prior = LatentPrior(proc, Zero(), (2,), "normal_mix", logit_init=0.0).double()
    return {"param": Parametrization(Zero(), proc, "mixed"),
            "prior_plain": LatentPrior(proc, Zero(), (2,), "plain").double(),
            "prior_net_score": prior.net_score, "prior_normal_mix": prior}


@pytest.mark.parametrize("end", ["start", "equilibrium"])
def test_cld_analytic_part_is_the_exact_normal_score_at_both_ends(end: str) -> None:
    """N(0, I) data: at t -> 0 the velocity is N(0, gamma M) and at equilibrium N(0, M), both
    independent of x, so the zero-output mixed score ``-v / Sigma_vv`` is the exact score."""
    proc = CLD() if end == "start" else CLD(beta_min=40.0)
    t = torch.full((12,), 1e-9 if end == "start" else 1.0, dtype=F64)
    u = _states(proc, seed=3)
    exact = NORMAL.marginal_score(proc, u, t)
    for label, model in _cld_models(proc).items():
        torch.testing.assert_close(model(u, t), exact, rtol=1e-5, atol=1e-6, msg=label)


def test_cld_analytic_part_in_between() -> None:
    """At intermediate t, ``-v / Sigma_vv`` is the analytic part by definition (REFERENCE
    §2.2): the zero-output score is exactly that, and it is not the Normal score there."""
    proc = CLD()
    t, u = _times(proc), _states(proc, seed=4)
    _, svv = _cld_coefs(proc, t)
    analytic = -_velocity(u) / svv
    models = _cld_models(proc)
    for label in ("param", "prior_plain", "prior_net_score"):
        torch.testing.assert_close(models[label](u, t), analytic, msg=label)
    assert not torch.allclose(analytic, NORMAL.marginal_score(proc, u, t), rtol=1e-2)


# ------------------------------------------------------------------ LSGM's LatentPrior
@pytest.mark.parametrize("name", ["vp", "vp_cosine", "geometric_vp", "cld"])
def test_latent_prior_network_part_is_the_process_conversion(name: str) -> None:
    """``plain``: the ideal eps (VP) / mixed-residual (CLD) network, fed the unscaled state,
    gives the exact mixture score; ``normal_mix`` blends it with the exact Normal score."""
    proc = get_process(name)
    t, u = _times(proc), _states(proc, seed=5)
    kind = "mixed" if name == "cld" else "eps"
    net = OracleNet(proc, MIX, kind, sigma_data=None)
    exact = MIX.marginal_score(proc, u, t)
    plain = LatentPrior(proc, net, (2,), "plain").double()
    torch.testing.assert_close(plain(u, t), exact, rtol=1e-8, atol=1e-8)
    prior = LatentPrior(proc, net, (2,), "normal_mix", logit_init=0.0).double()
    with torch.no_grad():
        prior.mixing_logit.copy_(torch.tensor([-1.0, 2.0]))
    a = torch.sigmoid(torch.tensor([-1.0, 2.0], dtype=F64))
    normal = NORMAL.marginal_score(proc, u, t)
    torch.testing.assert_close(prior(u, t), (1 - a) * normal + a * exact, rtol=1e-8, atol=1e-8)


class LinearTimeNet(nn.Module):
    """A small trainable net with a named submodule (its keys show in the state dict)."""

    def __init__(self, d_in: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d_in, 2).double()

    def forward(self, inp: Tensor, t: Tensor) -> Tensor:
        return self.lin(inp) * (1.0 + t[:, None])


@pytest.mark.parametrize("name", ["vp", "cld"])
def test_mixed_is_an_alias_of_normal_mix_with_the_same_state_dict(name: str) -> None:
    proc = get_process(name)
    torch.manual_seed(0)
    net = LinearTimeNet(2 * proc.k)
    old = LatentPrior(proc, net, (2,), "mixed", logit_init=-1.0)
    new = LatentPrior(proc, net, (2,), "normal_mix", logit_init=-1.0)
    assert old.prediction == new.prediction == "normal_mix"
    assert list(old.state_dict()) == ["mixing_logit", "net.lin.weight", "net.lin.bias"]
    t, u = _times(proc), _states(proc, seed=6)
    torch.testing.assert_close(old(u, t), new(u, t), rtol=0, atol=0)
    plain = LatentPrior(proc, net, (2,), "plain")
    assert list(plain.state_dict()) == ["net.lin.weight", "net.lin.bias"]
    with pytest.raises(ValueError, match="normal_mix"):
        LatentPrior(proc, net, (2,), "eps")


def test_per_sample_broadcasts_in_the_target_dtype() -> None:
    like = torch.zeros(3, 2, 4, 4)
    out = per_sample(torch.tensor([1.0, 2.0, 3.0], dtype=F64), like)
    assert out.shape == (3, 1, 1, 1) and out.dtype == torch.float32
    assert per_sample(torch.tensor(2.0, dtype=F64), like).shape == (1, 1, 1, 1)
    assert math.isclose(float((out * like + out).sum()), 2 * 16 * 6)


# ------------------------------------------------------------------ EDM preconditioning
GRID = grid25()  # modes at -2..2 per axis, std 0.05
GRID_RMS = math.sqrt(2.0 + 0.05**2)  # second moment per coordinate: sigma_data of the grid
EDM_SIGMAS = torch.logspace(math.log10(0.002), math.log10(80.0), 25, dtype=F64)


def _edm_levels(proc) -> tuple[Tensor, Tensor]:
    """The EDM noise levels in [0.002, 80] that ``proc`` reaches in its training range, as
    ``(sigma, t)`` with ``sigma = sigma_t / alpha_t``."""
    lo, hi = (float(torch.exp(-proc.log_snr(x))) for x in (proc.train_eps, proc.T))
    sig = EDM_SIGMAS[(EDM_SIGMAS >= lo) & (EDM_SIGMAS <= hi)]
    return sig, proc.t_from_log_snr(-torch.log(sig))


@pytest.mark.parametrize("name", SCALAR)
def test_edm_denoiser_of_the_grid_oracle_is_the_posterior_mean_at_every_sigma(name: str) -> None:
    """With ``F = F*`` (the ideal output, from the exact mixture score) the preconditioned
    denoiser ``c_skip x + c_out F`` is the exact posterior mean ``E[x0 | u_t]`` at every sigma
    from 0.002 to 80; ``F*`` is finite and of unit scale there (RMS <= 1, the training
    target's), while the training target itself and the network input have unit variance
    (sigma_data = the data's RMS)."""
    proc = get_process(name)
    sig, t = _edm_levels(proc)
    assert name != "vp" or len(sig) == len(EDM_SIGMAS)  # VP covers the whole range
    n = 2000
    gen = torch.Generator().manual_seed(7)
    x0, _ = GRID.sample(n * len(sig), gen, dtype=F64)
    tt = t.repeat_interleave(n)
    a, s = _alpha_sigma(proc, tt)
    u = a * x0 + s * torch.randn(x0.shape, generator=gen, dtype=F64)
    exact = GRID.marginal_score(proc, u, tt)
    posterior_mean = (u + s**2 * exact) / a  # Tweedie
    model = Parametrization(OracleNet(proc, GRID, "edm", GRID_RMS), proc, "edm", GRID_RMS)
    got = model(u, tt)
    torch.testing.assert_close(got, exact, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close((u + s**2 * got) / a, posterior_mean, rtol=1e-8, atol=1e-8)
    c_skip, c_out = edm_coefs(s / a, GRID_RMS)
    f_star = ideal_output(proc, "edm", exact, u, tt, GRID_RMS).reshape(len(sig), -1)
    target = ((x0 - c_skip * u / a) / c_out).reshape(len(sig), -1)
    inp = (model.c_in(u, tt) * u).reshape(len(sig), -1)
    assert bool(torch.isfinite(f_star).all())
    rms = f_star.pow(2).mean(1).sqrt()
    assert float(rms.max()) <= 1.03 and float(rms.max()) > 0.5, rms
    for what, x in (("target", target), ("input", inp)):
        std = x.pow(2).mean(1).sqrt()
        assert float((std - 1).abs().max()) < 0.05, (what, std)


@pytest.mark.parametrize("data", ["gaussian", "grid25"])
def test_cld_edm_input_has_unit_variance_per_block(data: str) -> None:
    """CLD's ``edm``: each block of the network input, ``x`` and ``v``, has unit variance at
    every t (from t ~ 0, where x is the data and v ~ N(0, gamma M), to equilibrium)."""
    proc = CLD()
    mix = GaussianMixture(torch.zeros(1, 2, dtype=F64), None, 0.6) if data == "gaussian" else GRID
    sd = 0.6 if data == "gaussian" else GRID_RMS
    model = Parametrization(Zero(), proc, "edm", sigma_data=sd)
    for t in (1e-5, 0.01, 0.1, 0.3, 1.0):
        u = mix.marginal_sample(proc, 20000, t, torch.Generator().manual_seed(1), dtype=F64)
        tt = torch.full((20000,), t, dtype=F64)
        inp = model.c_in(u, tt) * u
        std = inp.pow(2).mean(0).sqrt()  # x1, x2, v1, v2
        assert float((std - 1).abs().max()) < 0.03, (t, std)


class BlockLinearNet(nn.Module):
    """``net(inp, t) = k_x(t) inp_x + k_v(t) inp_v`` (CLD, blocks of the scaled input)."""

    def __init__(self, coefs) -> None:  # noqa: ANN001
        super().__init__()
        self.coefs = coefs

    def forward(self, inp: Tensor, t: Tensor) -> Tensor:
        kx, kv = self.coefs(t.to(F64))
        d = inp.shape[1] // 2
        return kx[:, None] * inp[:, :d] + kv[:, None] * inp[:, d:]


def test_cld_edm_linear_net_gives_the_exact_score_of_gaussian_data() -> None:
    """N(0, SD^2) data under CLD: the exact velocity score is linear in ``(x, v)``, so the ideal
    mixed-score residual is linear in the *scaled* input; a linear net whose coefficients assume
    the per-block input scale of REFERENCE §1.4's covariance gives the exact score (fails if
    ``c_in`` is wrong, missing, or the analytic part changed)."""
    proc = CLD()

    def coefs(t: Tensor) -> tuple[Tensor, Tensor]:
        init = torch.diag(torch.tensor([SD**2 + proc.eps_num, proc.gamma * proc.mass],
                                       dtype=F64))
        prec = torch.linalg.inv(proc.marginal_cov(t, init_cov=init))
        c = expected_c_in(proc, t, SD, "edm")
        ell, svv = _cld_coefs(proc, t)  # the HSM kernel's: the analytic part -v / svv
        # s = -(P_vx x + P_vv v) = -v / svv - l out
        return (prec[:, 1, 0] / (c[:, 0] * ell[:, 0]),
                (prec[:, 1, 1] - 1.0 / svv[:, 0]) / (c[:, 1] * ell[:, 0]))

    t, u = _times(proc), _states(proc, seed=8)
    model = Parametrization(BlockLinearNet(coefs), proc, "edm", SD)
    exact = GaussianMixture(torch.zeros(1, 2, dtype=F64), None, SD).marginal_score(proc, u, t)
    torch.testing.assert_close(model(u, t), exact, rtol=1e-8, atol=1e-8)


def test_edm_time_input_is_a_quarter_log_sigma() -> None:
    seen = {}

    class Spy(nn.Module):
        def forward(self, inp: Tensor, t: Tensor) -> Tensor:
            seen["t"] = t
            return torch.zeros_like(inp[:, :2])

    proc = VP()
    t = torch.tensor([1e-4, 0.3, 1.0], dtype=F64)
    Parametrization(Spy(), proc, "edm", 1.0)(torch.ones(3, 2, dtype=F64), t)
    sigma = proc.sigma(t) / proc.alpha(t)
    torch.testing.assert_close(seen["t"], 0.25 * torch.log(sigma))
    Parametrization(Spy(), CLD(), "edm", 1.0)(torch.ones(3, 4, dtype=F64), t)
    torch.testing.assert_close(seen["t"], t)  # CLD keeps t
    with pytest.raises(ValueError, match="sigma_data"):
        proc.prediction_to_score("edm", torch.zeros(3, 2), torch.zeros(3, 2), t)
