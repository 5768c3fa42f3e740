"""LSGM on a 2-D Gaussian mixture: latent VP- and CLD-LSGM against the same VAE, Normal prior.

    python benchmarks/lsgm_toy.py --out out/lsgm_toy             # ~12 min on 2 busy CPU cores
    python benchmarks/lsgm_toy.py --quick --out out/lsgm_toy     # ~2 min (smoke run)
    python benchmarks/lsgm_toy.py --report out/lsgm_toy/lsgm_toy.json   # re-print the table

Protocol (one CPU thread, fixed budget in optimizer steps; wall time is reported):

1. stage 1: an MLP VAE (2-D latent, Gaussian decoder with std fixed at the modes' 0.05, so the
   VAE must place each mode precisely in the latent instead of blurring: the setting where a
   Normal prior's "holes" show) with a Normal prior, ``--steps1`` steps with KL warm-up;
2. from the stage-1 EMA weights, ``--steps2`` more steps of each contender:
   ``normal`` (the same VAE, Normal prior, i.e. stage 1 continued), ``vp`` (end-to-end LSGM,
   VP latent SDE), ``cld`` (end-to-end LSGM, CLD latent SDE, HSM with the Normal-mixed score);
   with ``--extras`` also ``vp_stagewise`` (VAE frozen, prior only), ``vp_plain`` (end to
   end, no mixed score) and ``vp_logit-6`` (LSGM's initial mixing logit -6, see below);
   the LSGM runs start the mixing logit at -3 with a 5x learning rate (``mixing_lr_scale``):
   only the product ``a (eps' - sigma z)`` matters, so from -6 the prior's effective learning
   rate is ~400x smaller and a few thousand CPU steps barely move it;
3. each final EMA model: the NELBO (nats/sample) by the training estimator (DSM/HSM bound, many
   t-draws per test point) and by the probability-flow ODE (exact divergence), and the oracle
   metrics (:func:`trilemma.metrics.mixture.oracle_report`) of decoded samples.

Writes ``lsgm_toy.json`` and ``lsgm_toy.md`` under ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from trilemma.build import build_model
from trilemma.config import Config
from trilemma.metrics.mixture import oracle_report
from trilemma.oracle import get_mixture
from trilemma.train import Trainer


@dataclass
class ToyConfig:
    """Everything the benchmark depends on."""

    mixture: str = "grid25"
    n_train: int = 50000
    n_test: int = 2000
    latent_dim: int = 2
    vae_hidden: int = 128
    vae_depth: int = 2
    decoder_std: float | None = 0.05
    prior_hidden: int = 128
    prior_depth: int = 3
    batch_size: int = 512
    lr1: float = 2e-3
    lr2: float = 1e-3
    steps1: int = 4000
    steps2: int = 3000
    kl_warmup: int = 1500
    kl_anneal2: int = 500
    prior_weighting: str = "un"
    logit_init: float = -3.0
    mixing_lr_scale: float = 5.0
    ema_decay: float = 0.995
    n_samples: int = 4000
    nelbo_repeats: int = 16
    n_ode: int = 200
    samplers: dict = field(default_factory=lambda: {"vp": ("dpm2m", 30), "cld": ("sscs", 50)})
    extras: bool = False
    seed: int = 0

    @classmethod
    def quick(cls) -> ToyConfig:
        """A smoke-sized run (~2 minutes)."""
        return cls(n_train=8192, n_test=500, steps1=400, steps2=300, kl_warmup=150,
                   kl_anneal2=100, n_samples=1000, nelbo_repeats=4, n_ode=50)


def run_config(tc: ToyConfig, process: str, stage: str, steps: int, lr: float, **model) -> Config:
    """The trilemma config of one run."""
    m = {"method": "lsgm", "stage": stage, "weighting": tc.prior_weighting,
         "vae": {"name": "mlp_vae", "latent_dim": tc.latent_dim, "hidden": tc.vae_hidden,
                 "depth": tc.vae_depth, "decoder": "gaussian", "decoder_std": tc.decoder_std},
         "net": {"name": "mlp", "hidden": tc.prior_hidden, "depth": tc.prior_depth},
         "logit_init": tc.logit_init, "mixing_lr_scale": tc.mixing_lr_scale, **model}
    return Config.from_dict({
        "seed": tc.seed, "device": "cpu", "process": {"name": process}, "model": m,
        "data": {"name": "toy", "toy": tc.mixture, "n": tc.n_train},
        "train": {"steps": steps, "batch_size": tc.batch_size, "lr": lr, "warmup_steps": 100,
                  "ema_decay": tc.ema_decay, "log_every": 100, "ckpt_every": 0, "keep_last": 1,
                  "grad_clip": 1.0},
        "sample": {"sampler": tc.samplers["cld" if process == "cld" else "vp"][0],
                   "nfe": tc.samplers["cld" if process == "cld" else "vp"][1]},
    })


def train(cfg: Config, data: torch.Tensor, out: Path, init_from: Path | None = None):
    """Train one run; returns (model with EMA weights, seconds, trainer summary)."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, tuple(data.shape[1:]))
    if init_from is not None:
        model.load_pretrained(init_from)
    trainer = Trainer(model, data, cfg.train, out, device="cpu", progress=False,
                      metadata={"config": cfg.to_dict(), "data_shape": list(data.shape[1:])})
    t0 = time.perf_counter()
    summary = trainer.fit()
    seconds = time.perf_counter() - t0
    trainer.ema.copy_to(model)
    model.eval()
    return model, seconds, summary


@torch.no_grad()
def nelbo_dsm(model, x: torch.Tensor, repeats: int, seed: int) -> tuple[float, float]:
    """Mean and standard error of the training estimator of the NELBO (nats/sample)."""
    gen = torch.Generator().manual_seed(seed)
    vals = torch.stack([model.loss(x, gen) for _ in range(repeats)]).mean(0).double()
    return float(vals.mean()), float(vals.std() / math.sqrt(len(vals)))


def nelbo_ode(model, x: torch.Tensor, seed: int) -> tuple[float, float, int]:
    """Mean, standard error and NFE of the probability-flow NELBO (nats/sample)."""
    gen = torch.Generator().manual_seed(seed)
    res = model.nll(x, generator=gen, rtol=1e-5, atol=1e-5)
    v = res["nelbo"]
    return float(v.mean()), float(v.std() / math.sqrt(len(v))), int(res["nfe"])


def evaluate(name: str, model, tc: ToyConfig, x_test: torch.Tensor, seconds: float) -> dict:
    """NELBO (two ways) and oracle metrics of decoded samples for one model."""
    mix = get_mixture(tc.mixture)
    out: dict = {"name": name, "train_seconds": seconds, "stage": model.stage,
                 "process": model.process.name, "prediction": model.prior.prediction}
    out["nelbo_dsm"], out["nelbo_dsm_se"] = nelbo_dsm(model, x_test, tc.nelbo_repeats, tc.seed + 1)
    out["parts"] = dict(model.last_parts)
    t0 = time.perf_counter()
    out["nelbo_ode"], out["nelbo_ode_se"], out["ode_nfe"] = nelbo_ode(
        model, x_test[: tc.n_ode], tc.seed + 2)
    out["nelbo_ode_seconds"] = time.perf_counter() - t0
    sampler, nfe = tc.samplers["cld" if model.process.name == "cld" else "vp"]
    gen = torch.Generator().manual_seed(tc.seed + 3)
    t0 = time.perf_counter()
    res = model.sample(tc.n_samples, sampler, nfe, generator=gen, decode="sample")
    out["sample_seconds"] = time.perf_counter() - t0
    out["sampler"] = sampler if model.stage != "vae" else "normal"
    out["nfe"] = res.nfe
    rep = oracle_report(mix, res.samples.double(), generator=torch.Generator().manual_seed(7))
    out["oracle"] = {k: v for k, v in rep.items() if k not in ("counts", "found_weights")}
    a = model.prior.mixing()
    out["alpha_mean"] = float(a.detach().mean()) if a is not None and model.stage != "vae" else None
    return out


def table(results: list[dict]) -> str:
    """Markdown table of the main numbers."""
    head = ("| model | NELBO (DSM est.) | NELBO (ODE) | sampler, NFE | quality | modes | "
            "KL(w) | SW2 | train s |")
    rows = [head, "|" + "---|" * 9]
    for r in results:
        o = r["oracle"]
        rows.append(
            f"| {r['name']} | {r['nelbo_dsm']:.3f} ± {r['nelbo_dsm_se']:.3f} | "
            f"{r['nelbo_ode']:.3f} ± {r['nelbo_ode_se']:.3f} | {r['sampler']}, {r['nfe']} | "
            f"{o['quality']:.3f} | {o['modes_covered']}/{o['n_modes']} | {o['kl_weights']:.3f} | "
            f"{o['sw2']:.4f} | {r['train_seconds']:.0f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke-sized run")
    p.add_argument("--extras", action="store_true", help="also stage-wise and no-mixed-score")
    p.add_argument("--out", default="out/lsgm_toy")
    p.add_argument("--steps1", type=int)
    p.add_argument("--steps2", type=int)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report", metavar="JSON", help="re-print the table of an earlier run")
    args = p.parse_args(argv)
    if args.report:
        data = json.loads(Path(args.report).read_text())
        print(table(data["results"]))
        return data
    torch.set_num_threads(args.threads)
    tc = ToyConfig.quick() if args.quick else ToyConfig()
    if args.steps1:
        tc.steps1 = args.steps1
    if args.steps2:
        tc.steps2 = args.steps2
    tc.extras = args.extras
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mix = get_mixture(tc.mixture)
    gen = torch.Generator().manual_seed(tc.seed)
    x_train = mix.sample(tc.n_train, gen, dtype=torch.float32)[0]
    x_test = mix.sample(tc.n_test, torch.Generator().manual_seed(tc.seed + 100),
                        dtype=torch.float32)[0]
    results = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        kw1 = {"kl_anneal_steps": tc.kl_warmup}
        cfg1 = run_config(tc, "vp", "vae", tc.steps1, tc.lr1, **kw1)
        vae1, s1, _ = train(cfg1, x_train, tmp / "stage1")
        print(f"stage 1 (VAE, Normal prior): {s1:.0f} s", flush=True)
        runs = [("normal", "vp", "vae", {"kl_anneal_steps": 0}),
                ("vp", "vp", "joint", {"kl_anneal_steps": tc.kl_anneal2}),
                ("cld", "cld", "joint", {"kl_anneal_steps": tc.kl_anneal2})]
        if tc.extras:
            runs += [("vp_stagewise", "vp", "prior", {}),
                     ("vp_plain", "vp", "joint", {"kl_anneal_steps": tc.kl_anneal2,
                                                  "prediction": "plain"}),
                     ("vp_logit-6", "vp", "joint", {"kl_anneal_steps": tc.kl_anneal2,
                                                    "logit_init": -6.0, "mixing_lr_scale": 1.0})]
        for name, proc, stage, kw in runs:
            cfg = run_config(tc, proc, stage, tc.steps2, tc.lr2, **kw)
            try:
                model, sec, _ = train(cfg, x_train, tmp / name, init_from=tmp / "stage1")
                res = evaluate(name, model, tc, x_test, sec)
            except Exception as err:  # a diverged ablation is a result too
                res = {"name": name, "error": f"{type(err).__name__}: {err}"}
                print(f"{name}: failed: {res['error']}", flush=True)
                results.append(res)
                continue
            results.append(res)
            o = res["oracle"]
            print(f"{name}: NELBO {res['nelbo_dsm']:.3f} (DSM) {res['nelbo_ode']:.3f} (ODE), "
                  f"quality {o['quality']:.3f}, modes {o['modes_covered']}, "
                  f"SW2 {o['sw2']:.4f}, {sec:.0f} s", flush=True)
        stage1 = evaluate("stage1_vae", vae1, tc, x_test, s1)
    entropy = float(-mix.log_prob(x_test.double()).mean())
    report = {"config": asdict(tc), "stage1": stage1, "results": results,
              "data_entropy_nats": entropy,
              "total_seconds": time.perf_counter() - t_all,
              "threads": torch.get_num_threads(), "torch": torch.__version__}
    good = [r for r in results if "error" not in r]
    text = table([stage1] + good)
    (out / "lsgm_toy.json").write_text(json.dumps(report, indent=1))
    (out / "lsgm_toy.md").write_text(text + "\n")
    print(text)
    print(f"data entropy (the best possible NELBO): {entropy:.3f} nats; "
          f"total {report['total_seconds']:.0f} s")
    return report


if __name__ == "__main__":
    main()
