"""trilemma: score-based diffusion models that aim at quality, diversity and speed at once.

The names most programs need are here::

    import trilemma

    model = trilemma.train("configs/toy_vp.yaml", out="runs/toy_vp")   # a complete run folder
    model = trilemma.load("runs/toy_vp")                                # its EMA weights
    result = model.sample(2000, "dpm2m", nfe=20)                        # .samples, .nfe

    vp = trilemma.get_process("vp")                                      # forward SDEs
    exact = trilemma.grid25().score_fn(vp)                              # an exact score
    trilemma.sample("dpm2m", exact, vp, (2000, 2), nfe=10)              # any sampler

``trilemma.train`` is also the trainer subpackage (``from trilemma.train import Trainer``);
calling it trains a config (see :mod:`trilemma.api`).
"""

__version__ = "0.1.0"

from . import train  # noqa: E402  (the subpackage, made callable below)
from .api import load, resolve_config  # noqa: E402
from .api import train as _train_run  # noqa: E402
from .errors import ConfigError  # noqa: E402
from .inpainting import inpaint  # noqa: E402
from .likelihood import bits_per_dim, log_likelihood  # noqa: E402
from .masks import make_mask  # noqa: E402
from .methods import DDGAN, LSGM, ScoreModel  # noqa: E402
from .oracle import MIXTURES, GaussianMixture, get_mixture, grid25  # noqa: E402
from .processes import CLD, PROCESSES, VE, VP, SubVP, VPCosine, get_process  # noqa: E402
from .samplers import SAMPLERS, SampleResult, sample, samplers_for  # noqa: E402
from .setup import Config, load_config  # noqa: E402
from .train import Trainer  # noqa: E402

train.set_entry_point(_train_run)

__all__ = [
    "CLD",
    "DDGAN",
    "LSGM",
    "MIXTURES",
    "PROCESSES",
    "SAMPLERS",
    "VE",
    "VP",
    "Config",
    "ConfigError",
    "GaussianMixture",
    "SampleResult",
    "ScoreModel",
    "SubVP",
    "Trainer",
    "VPCosine",
    "__version__",
    "bits_per_dim",
    "get_mixture",
    "get_process",
    "grid25",
    "inpaint",
    "load",
    "load_config",
    "log_likelihood",
    "make_mask",
    "resolve_config",
    "sample",
    "samplers_for",
    "train",
]
