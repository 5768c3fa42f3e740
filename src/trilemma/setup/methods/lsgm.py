"""Setup of LSGM (``model.method: lsgm``): a VAE (``model.vae``, sized from the data), a latent
score prior (``model.net``, sized from the latent), the :class:`~trilemma.methods.LSGM`
arguments, ``init_from`` (a stage-1 run whose weights start training), and the builder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...methods.lsgm import DECODE_MODES, LSGM, PREDICTION_ALIASES, PREDICTIONS, STAGES
from ...nets import NETS, build_net
from ...nets.vae import DECODERS, VAES, build_vae, latent_shape_of
from ...objectives.lsgm import PRIOR_WEIGHTINGS, T_SAMPLINGS
from ...processes import get_process
from ..registry import MethodSetup
from ..schema import ConfigError, Field, check_section, fields_from_signature, one_of
from ..sections import DERIVED_NET_KEYS, size_net, validate_subnet, wrap_errors

if TYPE_CHECKING:
    from ..config import Config

LATENT_PROCESSES = ("vp", "vp_cosine", "geometric_vp", "cld")
_VAE_DERIVED = {name: ("data_shape",) for name in VAES}
_ARGS = ("stage", "prediction", "weighting", "t_sampling", "shared_t", "logit_init",
         "mixing_lr_scale", "kl_start", "kl_anneal_steps", "decode", "label_dropout")


def _fields() -> dict[str, Field]:
    fields = fields_from_signature(LSGM, exclude=("process", "vae", "net"))
    checks = {"stage": one_of(*STAGES), "prediction": one_of(*PREDICTIONS, *PREDICTION_ALIASES),
              "weighting": one_of(*PRIOR_WEIGHTINGS), "t_sampling": one_of(*T_SAMPLINGS),
              "decode": one_of(*DECODE_MODES),
              "mixing_lr_scale": lambda v: None if v > 0 else "a positive number",
              "kl_start": lambda v: None if v is None or 0 <= v <= 1 else "a number in [0, 1]",
              "kl_anneal_steps": lambda v: None if v >= 0 else "an integer >= 0",
              "label_dropout": lambda v: None if 0 <= v < 1 else "a number in [0, 1)"}
    for key, check in checks.items():
        fields[key].check = check
    fields["method"] = Field("method", str, "lsgm")
    fields["objective"] = Field("objective", str, "lsgm", one_of("lsgm"))
    fields["init_from"] = Field("init_from", str | None, None)
    return fields


def validate_model(raw: dict[str, Any], process: str | None, data: str | None,
                   problems: list[str]) -> dict[str, Any]:
    """The ``model`` section of an LSGM config (see the module docstring)."""
    if process is not None and process not in LATENT_PROCESSES:
        problems.append(f"process.name: LSGM's latent process must be one of: "
                        f"{', '.join(LATENT_PROCESSES)}; got {process!r}")
    body = {k: v for k, v in raw.items() if k not in ("net", "vae")}
    out = check_section("model", body, _fields(), problems)
    vae_raw = raw.get("vae")
    vae = None
    if not isinstance(vae_raw, dict):
        problems.append("model.vae: required mapping is missing (e.g. {name: mlp_vae, "
                        "latent_dim: 2}); use name: " + ", ".join(VAES))
    else:
        default = "mlp_vae" if data == "toy" else "conv_vae"
        vae = validate_subnet("model.vae", vae_raw, VAES, _VAE_DERIVED, problems,
                              default=default, what="VAE",
                              checks={"decoder": one_of(*DECODERS)})
        if vae is not None:
            out["vae"] = vae
            if data == "toy" and vae["name"] == "conv_vae":
                problems.append("model.vae.name: 'conv_vae' needs images; data 'toy' holds "
                                "points (n, d): use mlp_vae")
    want = "unet" if vae is not None and vae["name"] == "conv_vae" else "mlp"
    net = validate_subnet("model.net", raw.get("net"), NETS, DERIVED_NET_KEYS, problems,
                          default=want, want=want if vae is not None else None,
                          derived_from="the latent shape",
                          fits=f"the latent of {vae['name']!r}" if vae else "the latent")
    out["net"] = net if net is not None else {"name": "mlp"}
    out["objective"] = "lsgm"
    return out


def net_kwargs(config: Config, data_shape: tuple[int, ...]) -> dict[str, Any]:
    """The prior net's config sized for the VAE's latent (CLD doubles the input)."""
    latent = latent_shape_of(config.model["vae"], tuple(data_shape))
    k = 2 if config.process["name"] == "cld" else 1
    return size_net(config.model["net"], latent, in_factor=k, seed=config.seed,
                    of="this VAE's latent")


def build(config: Config, data_shape: tuple[int, ...]) -> LSGM:
    """An :class:`~trilemma.methods.LSGM` from a resolved config."""
    m = config.model
    if m["vae"].get("decoder") == "bernoulli" and not config.data.get("binarize"):
        raise ConfigError(["model.vae.decoder: 'bernoulli' needs binary data; set "
                           "data.binarize: threshold (or stochastic)"])
    process = wrap_errors("process", lambda: get_process(**config.process))
    vae_cfg = dict(m["vae"])
    if vae_cfg.get("seed") is None:
        vae_cfg["seed"] = config.seed
    vae = wrap_errors("model.vae", lambda: build_vae(vae_cfg, tuple(data_shape)))
    kw = net_kwargs(config, data_shape)
    net = wrap_errors("model.net", lambda: build_net(kw))
    args = {k: m[k] for k in _ARGS}
    return wrap_errors("model", lambda: LSGM(process, vae, net, **args))


def prepare(model: LSGM, config: Config, run_dir: Path, resume: bool) -> None:
    """Load ``model.init_from`` unless resuming a checkpoint (the EMA then starts from it)."""
    init_from = config.model.get("init_from")
    if init_from and not resume:
        try:
            model.load_pretrained(init_from)
        except FileNotFoundError as err:
            raise ValueError(f"model.init_from: {err}") from None


SETUP = MethodSetup(
    name="lsgm",
    summary="LSGM: a score-based prior in a VAE's latent space, trained end to end",
    validate_model=validate_model,
    build=build,
    net_kwargs=net_kwargs,
    prepare=prepare,
)
