"""A VP run trained with a diffusers ``UNet2DModel`` (``model.net.name: diffusers_unet``)
exported as a folder that ``diffusers.DiffusionPipeline.from_pretrained`` loads and samples
(``trilemma export RUN --diffusers DIR``; needs ``pip install diffusers``, the ``diffusers`` extra).

**The discrete schedule.** The continuous VP process has ``alpha_t^2 = exp(-int_0^t beta)``;
the export's DDIM scheduler gets ``trained_betas`` chosen so that its ``alphas_cumprod[i]``
is exactly ``alpha^2`` at ``t_i = (i + 1) / N`` (``N = num_train_timesteps``, 1000), and the
network saw the timestep ``N t - 1`` during training (:class:`~trilemma.nets.DiffusersUNet`),
i.e. ``i`` at ``t_i``: the U-Net is called at the same noise level in both libraries. The
scheduler does not clip ``x0`` (``clip_sample: false``), steps to ``alpha = 1`` at the end
(``set_alpha_to_one``, trilemma's final denoising step) and spaces its steps ``trailing``, so
``pipeline(num_inference_steps=K, eta=0)`` is trilemma's DDIM on the grid ``t = (i + 1) / N``
for the scheduler's timesteps ``i`` (:func:`matching_grid`).

**What the network must be.** An ``eps`` prediction with unscaled input: the parametrisation's
input scale ``1/sqrt(alpha^2 sigma_data^2 + sigma^2)`` is 1 for VP exactly when
``model.sigma_data`` is 1, and the export refuses other values (the pipeline would feed the
U-Net unscaled states).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import __version__
from .export import ExportError
from .methods.score_model import ScoreModel
from .nets.external import DiffusersUNet
from .processes import VP

README = """\
# {name}

A denoising diffusion model trained with trilemma {version} ({process}, epsilon prediction),
exported for Hugging Face diffusers:

```python
from diffusers import DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained("{name}")
images = pipe(batch_size=16, num_inference_steps=50, eta=0.0).images
```

The DDIM scheduler's `trained_betas` reproduce trilemma's continuous VP schedule at the
times t_i = (i + 1) / {n}; `trilemma.json` holds the run's config.
"""


def discrete_betas(process: VP, num_train_timesteps: int) -> Tensor:
    """``beta_i`` (float64) whose cumulative product gives ``alpha^2(t_i)``, ``t_i = (i+1)/N``."""
    n = int(num_train_timesteps)
    t = torch.arange(1, n + 1, dtype=torch.float64) / n
    abar = process.alpha(t).to(torch.float64) ** 2
    prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    return 1.0 - abar / prev


def matching_grid(timesteps: Tensor, num_train_timesteps: int) -> Tensor:
    """trilemma's time grid for a diffusers scheduler's ``timesteps``: ``(i + 1) / N``."""
    return (timesteps.to(torch.float64) + 1.0) / float(num_train_timesteps)


def _check(model: Any) -> DiffusersUNet:
    """The run's U-Net when the run fits the export, else :class:`ExportError` saying why."""
    if not isinstance(model, ScoreModel):
        raise ExportError("the diffusers export takes score models (model.method: score)")
    if type(model.process) is not VP:
        raise ExportError(f"the diffusers export needs the linear VP process (process.name: "
                          f"vp), this run uses {model.process.name!r}")
    param = model.model
    net = param.net
    if not isinstance(net, DiffusersUNet):
        raise ExportError("the diffusers export needs model.net.name: diffusers_unet (a "
                          "diffusers UNet2DModel), this run's network is "
                          f"{type(net).__name__}")
    if param.prediction != "eps":
        raise ExportError(f"the diffusers export needs model.prediction: eps, got "
                          f"{param.prediction!r}")
    if abs(param.sigma_data - 1.0) > 1e-12:
        raise ExportError(f"the diffusers export needs model.sigma_data: 1.0 (so the network "
                          f"sees unscaled states, as diffusers feeds them), got "
                          f"{param.sigma_data}")
    return net


def export_diffusers(model: Any, config: dict[str, Any], out: str | os.PathLike) -> Path:
    """Write ``out`` (a ``DDIMPipeline`` folder: ``unet/``, ``scheduler/``,
    ``model_index.json``, plus ``trilemma.json`` and ``README.md``); see the module docstring."""
    net = _check(model)
    try:
        from diffusers import DDIMPipeline, DDIMScheduler
    except ImportError as err:
        raise ExportError("the diffusers export needs the optional diffusers package: pip "
                          "install diffusers (or, in the checkout, pip install -e "
                          "'.[diffusers]')") from err
    n = net.num_train_timesteps
    betas = discrete_betas(model.process, n)
    scheduler = DDIMScheduler(num_train_timesteps=n, trained_betas=betas.tolist(),
                              clip_sample=False, set_alpha_to_one=True, steps_offset=0,
                              prediction_type="epsilon", timestep_spacing="trailing")
    out = Path(out)
    pipe = DDIMPipeline(unet=net.unet, scheduler=scheduler)
    pipe.save_pretrained(str(out))
    record = {"trilemma_version": __version__, "config": config,
              "time_mapping": f"diffusers timestep i <-> trilemma t = (i + 1) / {n}",
              "process": {"name": model.process.name, "beta_min": model.process.beta_min,
                          "beta_max": model.process.beta_max}}
    (out / "trilemma.json").write_text(json.dumps(record, indent=1) + "\n")
    (out / "README.md").write_text(README.format(name=out.name, version=__version__,
                                                 process="VP", n=n))
    return out
