"""LSGM: the latent cross-entropy bound against closed forms, time sampling, the mixed score,
decoders, gradients, training, sampling NFE, configs and the CLI (REFERENCE §7)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from trilemma.build import build_model, load_run, net_kwargs
from trilemma.cli import main
from trilemma.config import Config, ConfigError, validate
from trilemma.methods.lsgm import LSGM, LatentPrior, scale_grad
from trilemma.nets import MLP
from trilemma.nets.vae import (
    MLPVAE,
    ConvVAE,
    bernoulli_log_prob,
    categorical_log_prob,
    gaussian_log_prob,
    latent_shape_of,
    to_level_index,
)
from trilemma.objectives.lsgm import (
    LatentTimes,
    ce_constant,
    eps_residual,
    gaussian_entropy,
    latent_cross_entropy,
    noise_scale,
    normal_cross_entropy,
    normal_score,
    weight,
)
from trilemma.oracle import GaussianMixture
from trilemma.processes import get_process
from trilemma.processes.base import chol_factor
from trilemma.train import Trainer

F64 = torch.float64
PROCESSES = ("vp", "geometric_vp", "vp_cosine", "cld")
MU = torch.tensor([[0.5, -1.0, 2.0, 0.3]], dtype=F64)
S = 0.3


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _normal_prior(process, d: int, dtype=F64) -> LatentPrior:
    """The mixed-score prior with a = 0 exactly (logit -inf) and a non-zero random network."""
    k = process.k
    net = MLP(k * d, d, hidden=16, depth=1, zero_init=False).to(dtype)
    prior = LatentPrior(process, net, (d,), "mixed", logit_init=-6.0)
    with torch.no_grad():
        prior.mixing_logit.fill_(-math.inf)
    return prior


def _expected_residual(process, t: torch.Tensor, mu: torch.Tensor, var: float) -> torch.Tensor:
    """Closed form of ``E ||eps + s_N(u_t)/kappa||^2`` for ``z0 ~ N(mu, var I)`` (float64)."""
    k, nb = process.k, process.noise_block
    init = torch.zeros(k, k, dtype=F64)
    init[0, 0] = 1.0
    prec = torch.linalg.inv(process.marginal_cov(t, init_cov=init + process.init_cov()))
    row = prec[:, nb, :]
    col = process.mean_coef(t)[..., :, 0]
    chol = chol_factor(process.marginal_cov(t))
    kap = noise_scale(process, t)
    rp = (row * col).sum(-1)
    e = torch.zeros(len(t), k, dtype=F64)
    e[:, nb] = 1.0
    c = e - (row.unsqueeze(1) @ chol).squeeze(1) / kap[:, None]
    d = mu.shape[1]
    return (rp / kap) ** 2 * (mu.pow(2).sum() + d * var) + d * c.pow(2).sum(-1)


# ------------------------------------------------------------------------ the bound
@pytest.mark.parametrize("name", PROCESSES)
@pytest.mark.parametrize("s", [0.05, 0.3, 1.7])
def test_ce_bound_equals_closed_form_by_quadrature(name, s):
    """int w_ll E[residual] dt + c(mu, var) == CE(N(mu, s^2) || N(0, I)) for the Normal prior:
    checks the constant (terminal CE, log-det and CLD velocity entropy) to 1e-5."""
    p = get_process(name)
    var = torch.full_like(MU, s * s)
    x = torch.linspace(math.log(p.train_eps), math.log(p.T), 40001, dtype=F64)
    t = torch.exp(x)
    f = weight(p, "ll", t) * _expected_residual(p, t, MU, s * s) * t  # dt = t dx
    h = x[1] - x[0]
    integral = h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())
    est = float(integral + ce_constant(p, MU, var)[0])
    # the bound is on the latent diffused to t_min: N(a mu, a^2 s^2 + c) against the Normal
    # prior there, N(0, a^2 + c) (a = 1 - O(t_min), c = sigma^2(t_min), or eps_num for CLD)
    t_min = torch.tensor(p.train_eps, dtype=F64)
    a, c = float(p.mean_coef(t_min)[0, 0]), float(p.marginal_cov(t_min)[0, 0])
    d = MU.shape[1]
    v_p = a * a + c
    exact = 0.5 * (a * a * float(MU.pow(2).sum()) / v_p + d * (a * a * s * s + c) / v_p
                   + d * math.log(2 * math.pi * v_p))
    assert est == pytest.approx(exact, rel=2e-6)
    # ... which is CE(N(mu, s^2) || N(0, I)) up to O(sigma^2(t_min)) (3e-5 for geometric VP)
    target = float(normal_cross_entropy(MU, var)[0])
    assert est == pytest.approx(target, abs=1e-4 * d * (1 + s * s))
    # REFERENCE's approximate constant (D/2)(1 + log 2 pi sigma^2(t_min)) is close to ours
    blur = p.eps_num if name == "cld" else float(p.sigma(torch.tensor(p.train_eps)) ** 2)
    approx = 0.5 * d * (1 + math.log(2 * math.pi * blur))
    assert float(ce_constant(p, MU, var)[0]) == pytest.approx(approx, abs=0.01 * (1 + s * s))


@pytest.mark.parametrize("name", ["vp", "geometric_vp", "cld"])
@pytest.mark.parametrize("sampling", ["importance", "uniform"])
def test_ce_estimator_monte_carlo(name, sampling):
    """The one-sample estimator with the a = 0 mixed prior averages to the closed form."""
    p = get_process(name)
    n, d = (20000 if sampling == "importance" else 200000), MU.shape[1]
    gen = _gen(1)
    z0 = MU + S * torch.randn(n, d, generator=gen, dtype=F64)
    prior = _normal_prior(p, d)
    times = LatentTimes(p, "ll", sampling)
    with torch.no_grad():
        ce = latent_cross_entropy(prior, p, z0, MU.expand(n, d), torch.full((n, d), S * S,
                                  dtype=F64), times=times, generator=gen)
    target = float(normal_cross_entropy(MU, torch.full_like(MU, S * S))[0])
    se = float(ce.std()) / math.sqrt(n)
    assert abs(float(ce.mean()) - target) < 4.5 * se, (float(ce.mean()), target, se)
    if sampling == "importance":  # the test has teeth (uniform t: see the variance test)
        assert se < 0.03 * target, se


@pytest.mark.parametrize("name", ["vp", "cld"])
def test_importance_sampling_lowers_variance(name):
    p = get_process(name)
    n, d = 20000, MU.shape[1]
    prior = _normal_prior(p, d)
    var = {}
    for sampling in ("importance", "uniform"):
        gen = _gen(2)
        z0 = MU + S * torch.randn(n, d, generator=gen, dtype=F64)
        with torch.no_grad():
            ce = latent_cross_entropy(prior, p, z0, MU.expand(n, d),
                                      torch.full((n, d), S * S, dtype=F64),
                                      times=LatentTimes(p, "ll", sampling), generator=gen)
        var[sampling] = float(ce.var())
    ratio = var["uniform"] / var["importance"]
    assert ratio > (20.0 if name == "vp" else 3.0), var


@pytest.mark.parametrize("name", PROCESSES)
@pytest.mark.parametrize("weighting", ["ll", "un", "re"])
@pytest.mark.parametrize("sampling", ["importance", "uniform"])
def test_importance_weights_times_density_equal_the_weighting(name, weighting, sampling):
    p = get_process(name)
    times = LatentTimes(p, weighting, sampling)
    n = 20000
    t, ratio = times.sample(n, _gen(3))
    t64 = t.to(F64)
    assert float(t.min()) >= p.train_eps and float(t.max()) <= p.T
    # w/r * r = w
    torch.testing.assert_close(ratio.to(F64) * times.density(t64), weight(p, weighting, t64),
                               rtol=2e-6, atol=0)
    # the draws follow r: their CDF values are uniform (Kolmogorov-Smirnov, 0.1% level)
    u = torch.sort(times.cdf(t64)).values
    grid = torch.arange(1, n + 1, dtype=F64) / n
    ks = float(torch.maximum((grid - u).abs(), (u - (grid - 1 / n)).abs()).max())
    assert ks < 1.95 / math.sqrt(n)
    # E_r[(w/r) f] = int w f dt
    f = t64 * (1 - t64)
    mc = ratio.to(F64) * f
    xg = torch.linspace(p.train_eps, p.T, 200001, dtype=F64)
    integrand = weight(p, weighting, xg) * xg * (1 - xg)
    exact = float(torch.trapezoid(integrand, xg))
    assert abs(float(mc.mean()) - exact) < 4.5 * float(mc.std()) / math.sqrt(n) + 1e-6 * exact


def test_log_sigma2_sampler_is_uniform_for_geometric_vp_and_log_uniform_for_vp():
    geo = LatentTimes(get_process("geometric_vp"), "ll", "importance")
    t = torch.linspace(1e-5, 1, 11, dtype=F64)
    torch.testing.assert_close(geo.density(t), torch.full_like(t, 1 / (1 - 1e-5)), rtol=1e-9,
                               atol=0)
    vp = get_process("vp")
    times = LatentTimes(vp, "ll", "importance")
    t, _ = times.sample(50000, _gen(4))
    log_s2 = torch.log(vp.sigma(t.to(F64)) ** 2)
    lo, hi = math.log(float(vp.sigma(torch.tensor(1e-5, dtype=F64))) ** 2), math.log(
        float(vp.sigma(torch.tensor(1.0, dtype=F64))) ** 2)
    frac = (log_s2 - lo) / (hi - lo)
    assert abs(float(frac.mean()) - 0.5) < 0.01 and abs(float(frac.var()) - 1 / 12) < 0.003


# ------------------------------------------------------------------------ the mixed score
@pytest.mark.parametrize("name", PROCESSES)
def test_alpha_zero_is_exactly_the_normal_prior(name):
    p = get_process(name)
    d = 3
    prior = _normal_prior(p, d)
    oracle = GaussianMixture(torch.zeros(1, d, dtype=F64), None, 1.0)
    gen = _gen(5)
    u = torch.randn(64, p.k * d, generator=gen, dtype=F64)
    t = torch.rand(64, generator=gen, dtype=F64) * (p.T - 1e-3) + 1e-3
    with torch.no_grad():
        s = prior(u, t)
        assert prior.net(u, t).abs().max() > 0.01  # a = 0 switches a non-zero network off
    torch.testing.assert_close(s, normal_score(p, u, t), rtol=0, atol=0)
    # ... and normal_score is the exact score of the diffused N(0, I) (CLD: v0 ~ N(0, gamma M);
    # the oracle blurs its mode by eps_num as the HSM kernel does)
    torch.testing.assert_close(s, oracle.marginal_score(p, u, t), rtol=1e-6, atol=1e-8)
    # logit -6 at initialisation, per latent channel
    fresh = LatentPrior(p, MLP(p.k * d, d, hidden=8, depth=1), (d,))
    torch.testing.assert_close(fresh.mixing(), torch.full((d,), 1 / (1 + math.exp(6))))


def test_alpha_zero_prior_log_density_is_normal():
    """With a = 0 the latent prior's probability-flow log-density is log N(z; 0, I)."""
    from trilemma.likelihood import log_likelihood

    p = get_process("vp")
    prior = _normal_prior(p, 2)
    z = torch.randn(16, 2, generator=_gen(6), dtype=F64)
    res = log_likelihood(prior, p, z, t_min=p.train_eps, rtol=1e-7, atol=1e-7)
    exact = -0.5 * z.pow(2).sum(1) - math.log(2 * math.pi)
    torch.testing.assert_close(res.log_p, exact, rtol=0, atol=1e-4)


def test_alpha_zero_samples_are_standard_normal():
    torch.manual_seed(0)
    model = _toy_lsgm("cld", stage="joint")
    with torch.no_grad():
        model.prior.mixing_logit.fill_(-math.inf)
    res = model.sample(4000, "sscs", 40, generator=_gen(7))
    z = res.info["latents"]
    assert z.shape == (4000, 2)
    assert float(z.mean(0).abs().max()) < 0.08
    assert float((z.var(0) - 1).abs().max()) < 0.1


# ------------------------------------------------------------------------ decoders / VAEs
def test_decoder_log_likelihoods_match_closed_forms():
    gen = _gen(8)
    x = torch.randn(5, 3, generator=gen, dtype=F64)
    mean = torch.randn(5, 3, generator=gen, dtype=F64)
    log_std = 0.3 * torch.randn(5, 3, generator=gen, dtype=F64)
    exact = torch.distributions.Normal(mean, log_std.exp()).log_prob(x).sum(1)
    torch.testing.assert_close(gaussian_log_prob(x, mean, log_std), exact)
    # Bernoulli on {-1, 1} data
    b = torch.randint(0, 2, (5, 3), generator=gen).to(F64) * 2 - 1
    logits = torch.randn(5, 3, generator=gen, dtype=F64)
    pr = torch.sigmoid(logits)
    exact = torch.where(b > 0, pr.log(), (1 - pr).log()).sum(1)
    torch.testing.assert_close(bernoulli_log_prob(b, logits), exact)
    # categorical on the 17-level digits lattice
    levels = 17
    k = torch.randint(0, levels, (5, 3), generator=gen)
    xk = k.to(F64) * 2 / (levels - 1) - 1
    assert torch.equal(to_level_index(xk, levels), k)
    logits = torch.randn(5, levels, 3, generator=gen, dtype=F64)
    probs = torch.softmax(logits, 1)
    exact = probs.gather(1, k.unsqueeze(1)).squeeze(1).log().sum(1)
    torch.testing.assert_close(categorical_log_prob(xk, logits, levels), exact)
    # normalised: summing p(x) over every level of one coordinate gives 1
    one = logits[:1, :, :1]
    total = sum(categorical_log_prob(torch.full((1, 1), v * 2 / 16 - 1, dtype=F64), one,
                                     levels).exp() for v in range(levels))
    assert float(total) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("decoder", ["gaussian", "bernoulli", "categorical"])
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_vaes_shapes_and_decode(decoder, kind):
    torch.manual_seed(0)
    shape = (1, 8, 8)
    kw = {"decoder": decoder, "levels": 17}
    vae = (MLPVAE(shape, latent_dim=5, hidden=32, **kw) if kind == "mlp"
           else ConvVAE(shape, latent_channels=2, base_channels=8, **kw))
    assert vae.latent_shape == ((5,) if kind == "mlp" else (2, 4, 4))
    cfg = {"name": "mlp_vae", "latent_dim": 5} if kind == "mlp" else {"name": "conv_vae",
                                                                      "latent_channels": 2}
    assert latent_shape_of(cfg, shape) == vae.latent_shape
    x = torch.rand(4, *shape) * 2 - 1
    if decoder != "gaussian":
        x = (to_level_index(x, 17).float() * 2 / 16 - 1) if decoder == "categorical" \
            else torch.sign(x)
    mu, log_std = vae.encode(x)
    assert mu.shape == log_std.shape == (4, *vae.latent_shape)
    z = vae.reparameterize(mu, log_std, _gen(0))
    ll = vae.log_likelihood(x, z)
    assert ll.shape == (4,) and torch.isfinite(ll).all()
    for sample in (False, True):
        out = vae.decode(z, sample=sample, generator=_gen(1))
        bound = 1.0 if decoder != "gaussian" else math.inf
        assert out.shape == x.shape and float(out.detach().abs().max()) <= bound
    if decoder == "bernoulli":  # samples are +-1 with mean 2p - 1
        zz = z[:1].expand(4000, *z.shape[1:])
        s = vae.decode(zz, sample=True, generator=_gen(2))
        assert set(s.unique().tolist()) <= {-1.0, 1.0}
        torch.testing.assert_close(s.mean(0), vae.decode(z[:1])[0], atol=0.06, rtol=0)


def test_gaussian_entropy_closed_form():
    log_std = torch.randn(3, 4, dtype=F64)
    exact = torch.distributions.Normal(torch.zeros(3, 4, dtype=F64), log_std.exp()).entropy()
    torch.testing.assert_close(gaussian_entropy(log_std), exact.sum(1))


# ------------------------------------------------------------------------ LSGM
def _toy_lsgm(process: str = "vp", **kw) -> LSGM:
    p = get_process(process)
    vae = MLPVAE((2,), latent_dim=2, hidden=32, depth=2)
    net = MLP(p.k * 2, 2, hidden=32, depth=2)
    return LSGM(p, vae, net, **kw)


class _FixedEncoder(MLPVAE):
    """q(z0|x) = N(MU, S^2) whatever x (for checking the CE estimate inside LSGM)."""

    def encode(self, x):
        n = x.shape[0]
        return (MU.to(x.dtype).expand(n, -1).clone(),
                torch.full((n, MU.shape[1]), math.log(S), dtype=x.dtype))


@pytest.mark.parametrize("name,weighting,shared", [("vp", "un", False), ("vp", "re", True),
                                                   ("cld", "ll", False), ("cld", "un", True)])
def test_lsgm_loss_ce_part_is_the_bound(name, weighting, shared):
    p = get_process(name)
    d = MU.shape[1]
    vae = _FixedEncoder((2,), latent_dim=d, hidden=8).to(F64)
    model = LSGM(p, vae, MLP(p.k * d, d, hidden=16, depth=1).to(F64), weighting=weighting,
                 shared_t=shared)
    with torch.no_grad():
        model.prior.mixing_logit.fill_(-math.inf)
    n = 20000
    x = torch.zeros(n, 2, dtype=F64)
    with torch.no_grad():
        parts = model.loss_parts(x, _gen(9))
    target = float(normal_cross_entropy(MU, torch.full_like(MU, S * S))[0])
    ce = parts["ce"]
    se = float(ce.std()) / math.sqrt(n)
    assert abs(float(ce.mean()) - target) < 4.5 * se
    torch.testing.assert_close(parts["nelbo"], parts["recon"] + parts["neg_entropy"] + ce)
    ent = float(gaussian_entropy(torch.full((1, d), math.log(S), dtype=F64))[0])
    torch.testing.assert_close(parts["neg_entropy"], torch.full((n,), -ent, dtype=F64))


def test_scale_grad():
    x = torch.randn(3, 2, requires_grad=True)
    y = scale_grad(x, torch.tensor([1.0, 2.0, -0.5]))
    assert torch.equal(y, x)
    (y * 3).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([[3.0, 3.0], [6.0, 6.0], [-1.5, -1.5]]))


def _grads(loss, params):
    return torch.autograd.grad(loss.sum(), params, retain_graph=True, allow_unused=True)


def test_gradients_split_between_encoder_and_prior():
    """Encoder/decoder always get the likelihood-weighted bound; the prior its own weighting."""
    torch.manual_seed(1)
    x = torch.randn(64, 2)
    base = _toy_lsgm("vp", weighting="ll")
    state = base.state_dict()
    models = {}
    for key, kw in {"ll": {}, "un_shared": {"shared_t": True}, "un_sep": {}}.items():
        m = _toy_lsgm("vp", weighting="ll" if key == "ll" else "un", **kw)
        m.load_state_dict(state)
        with torch.no_grad():
            m.prior.mixing_logit.fill_(0.0)  # a = 1/2: the network matters
        models[key] = m
    vae_p = {k: [p for n, p in m.vae.named_parameters()] for k, m in models.items()}
    pri_p = {k: list(m.prior.parameters()) for k, m in models.items()}
    out = {k: m.loss(x, _gen(10)) for k, m in models.items()}
    g_ll = _grads(out["ll"], vae_p["ll"])
    g_sh = _grads(out["un_shared"], vae_p["un_shared"])
    # same draws (shared t from the ll sampler): identical encoder/decoder gradients
    for a, b in zip(g_ll, g_sh, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # ll: the gradient of the returned value is the gradient of the NELBO estimate
    parts = models["ll"].loss_parts(x, _gen(10))
    for a, b in zip(_grads(out["ll"], pri_p["ll"]),
                    _grads(parts["objective"], pri_p["ll"]), strict=True):
        torch.testing.assert_close(a, b)
    # shared 'un': the prior's gradient is that of sum (r_ll-weights * w_un / w_ll) * residual
    m = models["un_shared"]
    gen = _gen(10)
    mu, log_std = m.vae.encode(x)
    z0 = m.vae.reparameterize(mu, log_std, gen)
    m.vae.log_likelihood(x, z0)
    t, r = m.times_ll.sample(64, gen)
    u, noise = m.process.perturb(z0.detach(), t, gen)
    res = eps_residual(m.process, m.prior(u, t), noise, t)
    t64 = t.to(F64)
    manual = (r.to(F64) * weight(m.process, "un", t64) / weight(m.process, "ll", t64)).float()
    for a, b in zip(_grads(out["un_shared"], pri_p["un_shared"]), _grads(manual * res,
                    pri_p["un_shared"]), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    # separate 'un': the prior gets nothing from the cross-entropy term (its parameters are
    # frozen there), the VAE nothing from the prior's term
    parts = models["un_sep"].loss_parts(x, _gen(11))
    for g in _grads(parts["nelbo"], pri_p["un_sep"]):
        assert g is None or float(g.abs().max()) == 0.0
    for g in _grads(parts["prior_loss"], vae_p["un_sep"]):
        assert g is None or float(g.abs().max()) == 0.0


def test_stages_freeze_and_anneal():
    vae_stage = _toy_lsgm(stage="vae", kl_anneal_steps=10)
    assert not any(p.requires_grad for p in vae_stage.prior.parameters())
    assert vae_stage.kl_coef() == pytest.approx(1e-4)
    x = torch.randn(8, 2)
    vae_stage.train()
    for _ in range(5):
        vae_stage.loss(x, _gen())
    assert vae_stage.kl_coef() == pytest.approx(1e-4 + 0.5 * (1 - 1e-4))
    joint = _toy_lsgm(stage="joint", kl_anneal_steps=4)
    assert joint.kl_coef() == pytest.approx(0.7)
    prior = _toy_lsgm(stage="prior")
    assert not any(p.requires_grad for p in prior.vae.parameters())
    prior.train()
    assert not prior.vae.training and prior.prior.training
    with pytest.raises(ValueError, match="stage"):
        _toy_lsgm(stage="both")
    with pytest.raises(ValueError, match="LSGM's latent process"):
        _toy_lsgm("ve")


def _mixture_data(n: int, seed: int) -> torch.Tensor:
    mix = GaussianMixture(torch.tensor([[-1.0, 0.0], [1.0, 0.5]], dtype=F64), None, 0.15)
    return mix.sample(n, _gen(seed))[0]


@torch.no_grad()
def _nelbo(model, x, repeats=4):
    model.eval()
    return float(torch.stack([model.loss(x, _gen(50 + i)) for i in range(repeats)]).mean())


def test_tiny_training_lowers_the_nelbo_and_stage_weights_load(tmp_path):
    torch.manual_seed(0)
    data, held = _mixture_data(4096, 0), _mixture_data(1000, 1)
    cfg = {"steps": 150, "batch_size": 256, "lr": 3e-3, "ckpt_every": 0, "log_every": 50,
           "ema_decay": 0.9}
    stage1 = _toy_lsgm("vp", stage="vae", kl_anneal_steps=50)
    before = _nelbo(stage1, held)
    meta = {"config": {"model": {"method": "lsgm", "stage": "vae"}}, "data_shape": [2]}
    trainer = Trainer(stage1, data, cfg, tmp_path / "s1", progress=False, metadata=meta)
    trainer.fit()
    trainer.ema.copy_to(stage1)
    after1 = _nelbo(stage1, held)
    assert after1 < before - 0.5, (before, after1)
    # stage 2 starts from the stage-1 VAE (EMA weights); the untrained prior is not loaded
    joint = _toy_lsgm("vp", stage="joint", weighting="un", kl_anneal_steps=50)
    prior_before = {k: v.clone() for k, v in joint.prior.state_dict().items()}
    keys = joint.load_pretrained(tmp_path / "s1")
    assert keys and all(k.startswith("vae.") for k in keys)
    for k, v in joint.vae.state_dict().items():
        torch.testing.assert_close(v, stage1.vae.state_dict()[k])
    for k, v in joint.prior.state_dict().items():
        assert torch.equal(v, prior_before[k])
    start2 = _nelbo(joint, held)
    assert start2 == pytest.approx(after1, abs=0.3)  # a ~ 0: the same model, noisier estimate
    trainer = Trainer(joint, data, {**cfg, "steps": 60}, tmp_path / "s2", progress=False)
    trainer.fit()
    trainer.ema.copy_to(joint)
    after2 = _nelbo(joint, held)
    assert math.isfinite(after2) and after2 < start2 + 0.3
    assert set(joint.last_parts) >= {"recon", "neg_entropy", "ce", "kl", "nelbo", "prior_loss",
                                     "kl_coef", "alpha_mean"}
    # the probability-flow NELBO of the joint model: finite, a bound of the same size
    res = joint.nll(held[:20], generator=_gen(3), rtol=1e-4, atol=1e-4)
    assert res["nelbo"].shape == (20,) and res["nfe"] > 0
    assert abs(float(res["nelbo"].mean()) - after2) < 1.0
    assert torch.isfinite(res["bits_per_dim"]).all()


@pytest.mark.parametrize("process,sampler,nfe", [("vp", "euler", 12), ("vp", "dpm2m", 9),
                                                 ("cld", "sscs", 11), ("cld", "gddim", 7)])
def test_sample_counts_nfe(process, sampler, nfe):
    model = _toy_lsgm(process, stage="joint")
    calls = []
    model.prior.register_forward_hook(lambda *_: calls.append(1))
    res = model.sample(16, sampler, nfe, generator=_gen(12))
    assert res.samples.shape == (16, 2) and res.nfe == nfe == len(calls)
    assert res.info["latents"].shape == (16, 2)
    mean = model.sample(16, sampler, nfe, generator=_gen(12), decode="mean").samples
    again = model.sample(16, sampler, nfe, generator=_gen(12), decode="mean").samples
    assert torch.equal(mean, again)
    normal = _toy_lsgm(process, stage="vae").sample(16, sampler, nfe, generator=_gen(12))
    assert normal.nfe == 0
    with pytest.raises(ValueError, match="unconditional"):
        model.sample(4, sampler, nfe, labels=torch.zeros(4, dtype=torch.long))


def test_image_lsgm_with_unet_prior_and_cld():
    torch.manual_seed(0)
    raw = {"process": {"name": "cld"}, "model": {
        "method": "lsgm", "vae": {"name": "conv_vae", "latent_channels": 2, "base_channels": 8,
                                  "decoder": "categorical", "levels": 17},
        "net": {"base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1,
                "dropout": 0.0}},
        "data": {"name": "digits"}, "train": {"steps": 2, "batch_size": 8}}
    cfg = Config.from_dict(raw)
    assert cfg.model["net"]["name"] == "unet"
    kw = net_kwargs(cfg, (1, 8, 8))
    assert (kw["in_channels"], kw["out_channels"], kw["image_size"]) == (4, 2, 4)
    model = build_model(cfg, (1, 8, 8))
    x = (torch.randint(0, 17, (8, 1, 8, 8)).float() * 2 / 16) - 1
    loss = model.loss(x, _gen())
    assert loss.shape == (8,) and torch.isfinite(loss).all()
    loss.mean().backward()
    res = model.sample(4, "sscs", 6, generator=_gen())
    assert res.samples.shape == (4, 1, 8, 8) and res.nfe == 6


# ------------------------------------------------------------------------ configs / CLI
BASE = {"seed": 1, "device": "cpu", "process": {"name": "vp"},
        "model": {"method": "lsgm", "vae": {"name": "mlp_vae", "latent_dim": 2, "hidden": 16},
                  "net": {"name": "mlp", "hidden": 16, "depth": 1}},
        "data": {"name": "toy", "toy": "grid25", "n": 256},
        "train": {"steps": 4, "batch_size": 32, "lr": 1e-3, "ckpt_every": 2, "log_every": 2},
        "sample": {"sampler": "euler", "nfe": 6, "n": 40}}


def _problems(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate(raw)
    return info.value.problems


def test_config_validation():
    cfg = Config.from_dict(BASE)
    assert cfg.model["stage"] == "joint" and cfg.model["objective"] == "lsgm"
    assert Config.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()
    bad = {**BASE, "model": {**BASE["model"], "stage": "both", "weightin": "un"}}
    probs = _problems(bad)
    assert any("model.stage" in p and "vae" in p for p in probs)
    assert any("model.weightin" in p and "weighting" in p for p in probs)
    bad = {**BASE, "process": {"name": "subvp"}}
    assert any("LSGM's latent process" in p for p in _problems(bad))
    bad = {**BASE, "model": {**BASE["model"], "vae": {"name": "conv_vae"}}}
    assert any("conv_vae" in p and "mlp_vae" in p for p in _problems(bad))
    bad = {**BASE, "model": {**BASE["model"], "net": {"name": "mlp", "in_dim": 4}}}
    assert any("model.net.in_dim" in p for p in _problems(bad))
    bad = {**BASE, "model": {**BASE["model"], "vae": {"name": "mlp_vae", "decoder": "poisson"}}}
    assert any("model.vae.decoder" in p for p in _problems(bad))
    binary = {**BASE, "model": {**BASE["model"], "vae": {"name": "mlp_vae",
                                                         "decoder": "bernoulli"}}}
    with pytest.raises(ConfigError, match="binarize"):
        build_model(Config.from_dict(binary), (2,))


@pytest.mark.parametrize("name", ["lsgm_toy_vp", "lsgm_toy_cld", "lsgm_digits",
                                  "lsgm_digits_binary"])
def test_shipped_lsgm_configs_build(name):
    from trilemma.build import build_dataset, data_shape_of
    from trilemma.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml")
    shape = data_shape_of(build_dataset(cfg))
    model = build_model(cfg, shape)
    assert isinstance(model, LSGM)
    x = build_dataset(cfg).data[:4]
    assert torch.isfinite(model.loss(x, _gen())).all()


def test_cli_two_stage_run_sample_info(tmp_path, capsys):
    s1 = tmp_path / "s1.yaml"
    s1.write_text(yaml.safe_dump({**BASE, "model": {**BASE["model"], "stage": "vae"}}))
    assert main(["train", str(s1), "--out", str(tmp_path / "r1"), "--quiet"]) == 0
    s2 = tmp_path / "s2.yaml"
    s2.write_text(yaml.safe_dump({**BASE, "model": {**BASE["model"], "stage": "joint",
                                                    "init_from": str(tmp_path / "r1")}}))
    assert main(["train", str(s2), "--out", str(tmp_path / "r2"), "--quiet"]) == 0
    assert (tmp_path / "r2" / "lsgm_parts.csv").read_text().startswith("calls,nelbo")
    capsys.readouterr()
    out = tmp_path / "s.npz"
    assert main(["sample", str(tmp_path / "r2"), "--nfe", "8", "--n", "30", "--out",
                 str(out)]) == 0
    assert "NFE 8" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "r2")]) == 0
    text = capsys.readouterr().out
    assert "VAE" in text and "objective=lsgm" in text
    model, _, _ = load_run(tmp_path / "r2")
    assert isinstance(model, LSGM) and model.stage == "joint"
    bad = tmp_path / "s3.yaml"
    bad.write_text(yaml.safe_dump({**BASE, "model": {**BASE["model"],
                                                     "init_from": str(tmp_path / "none")}}))
    assert main(["train", str(bad), "--out", str(tmp_path / "r3"), "--quiet"]) == 2
    assert "init_from" in capsys.readouterr().err


def test_lsgm_refuses_the_teleport():
    """The training data's moments do not describe the latent prior's state (issue 14)."""
    model = _toy_lsgm()
    model.check_sampler("dpm2m", 5, {"grid": "log_snr"})
    with pytest.raises(ValueError, match="options: lsgm samples in its latent space"):
        model.check_sampler("dpm2m", 5, {"teleport": "data", "teleport_sigma": 2.0})
