"""Networks from outside trilemma: your own class (``name: "package.module:Class"``) and a
Hugging Face diffusers ``UNet2DModel`` (``name: diffusers_unet``, optional dependency).

**The calling convention.** A score network is called as ``net(x, t)`` (``net(x, t, labels)``
for class-conditional training), where ``x`` is the state after the parametrisation's input
scaling (:mod:`trilemma.parametrization`: ``c_in(t) u`` with ``c_in = 1/sqrt(alpha_t^2
sigma_data^2 + sigma_t^2)`` for VP/sub-VP/VE, so unit variance; the raw ``(x, v)`` state for
CLD) and ``t`` is a float tensor of shape ``(B,)`` holding the diffusion time in
``[process.eps, process.T]`` (``T = 1`` for VP, sub-VP, VE and CLD, 0.9946 for the cosine VP;
``eps`` is 1e-3 or 1e-5 by default). It returns a tensor shaped like the data (the ``eps``,
``x0``, ``v`` or score prediction the config's ``model.prediction`` names).

:class:`ExternalNet` wraps any module to that convention: it multiplies ``t`` by
``time_scale`` (and adds ``time_shift``) before the call, for networks whose time embedding
expects another range (e.g. 0..999), and returns ``out.sample`` when the network returns a
diffusers-style output object, ``out[0]`` when it returns a tuple.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from torch import Tensor, nn

#: keys of a ``model.net`` section that the wrapper takes (the rest go to the class)
WRAPPER_KEYS = ("time_scale", "time_shift")
#: size arguments filled from the data when a class accepts them (and the config omits them)
SIZE_ARGUMENTS = {
    "in_channels": "in", "out_channels": "out", "image_size": "size", "sample_size": "size",
    "in_dim": "in", "out_dim": "out",
}


def is_class_path(name: Any) -> bool:
    """Whether a net name is a ``"package.module:Class"`` path."""
    return isinstance(name, str) and ":" in name


def import_class(path: str) -> type:
    """The class (or factory) named ``"package.module:Class"``; a ValueError says what failed."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"net name {path!r}: expected 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"net name {path!r}: cannot import module {module_name!r} ({err}); is "
                         "the package installed or on PYTHONPATH?") from None
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ValueError(f"net name {path!r}: module {module_name!r} has no {attr!r}")
    if not callable(obj):
        raise ValueError(f"net name {path!r}: {attr!r} is not a class or function")
    return obj


def accepted_arguments(cls: Any) -> tuple[set[str], bool]:
    """``(keyword arguments of cls, whether it also takes **kwargs)``."""
    params = inspect.signature(cls).parameters
    names = {n for n, p in params.items() if n != "self"
             and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return names, any(p.kind is p.VAR_KEYWORD for p in params.values())


def unwrap_output(out: Any) -> Tensor:
    """A network's output as a tensor: ``out.sample`` (diffusers), ``out[0]`` (a tuple)."""
    if isinstance(out, Tensor):
        return out
    sample = getattr(out, "sample", None)
    if isinstance(sample, Tensor):
        return sample
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    raise TypeError(f"the network returned {type(out).__name__}; expected a tensor, an object "
                    "with a .sample tensor (diffusers) or a tuple whose first item is a tensor")


class ExternalNet(nn.Module):
    """A network of your own, called with trilemma's convention (see the module docstring).

    Args:
        net: the module, called as ``net(x, t * time_scale + time_shift[, labels])``.
        time_scale, time_shift: how the diffusion time is mapped before the call.
    """

    def __init__(self, net: nn.Module, time_scale: float = 1.0, time_shift: float = 0.0) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"the net must be a torch.nn.Module, got {type(net).__name__}")
        self.net = net
        self.time_scale = float(time_scale)
        self.time_shift = float(time_shift)
        self.num_classes = getattr(net, "num_classes", None)

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        tt = t * self.time_scale + self.time_shift if (self.time_scale, self.time_shift) \
            != (1.0, 0.0) else t
        out = self.net(x, tt) if labels is None else self.net(x, tt, labels)
        return unwrap_output(out)


def build_external(path: str, kwargs: dict[str, Any]) -> ExternalNet:
    """``ExternalNet(Class(**kwargs))`` for ``path = "package.module:Class"``; the wrapper's
    own keys (``time_scale``, ``time_shift``) are taken out of ``kwargs`` first."""
    kw = dict(kwargs)
    wrap = {k: kw.pop(k) for k in WRAPPER_KEYS if k in kw}
    cls = import_class(path)
    names, var_kw = accepted_arguments(cls)
    unknown = sorted(set(kw) - names)
    if unknown and not var_kw:
        raise ValueError(f"unknown key(s) {unknown} for net {path!r}; it takes: "
                         + ", ".join(sorted(names)) + " (and the wrapper's "
                         + ", ".join(WRAPPER_KEYS) + ")")
    return ExternalNet(cls(**kw), **wrap)


class DiffusersUNet(nn.Module):
    """A diffusers ``UNet2DModel`` as a trilemma network (``pip install diffusers``).

    The U-Net sees the discrete DDPM timestep of the continuous time: ``num_train_timesteps *
    t - 1`` (0 at ``t = 1/N``, ``N - 1`` at ``t = 1``), the mapping
    :func:`trilemma.export.diffusers` relies on; ``unet_kwargs`` are ``UNet2DModel``'s own
    (``block_out_channels``, ``layers_per_block``, ``down_block_types``, ...). Its
    ``state_dict`` is the U-Net's under ``unet.``.
    """

    def __init__(self, in_channels: int, out_channels: int, image_size: int | list[int],
                 num_train_timesteps: int = 1000, **unet_kwargs: Any) -> None:
        super().__init__()
        try:
            from diffusers import UNet2DModel
        except ImportError as err:
            raise ImportError("net 'diffusers_unet' needs the optional diffusers package: pip "
                              "install diffusers (or, in the checkout, pip install -e "
                              "'.[diffusers]')") from err
        size = image_size if isinstance(image_size, int) else tuple(image_size)
        self.unet = UNet2DModel(sample_size=size, in_channels=in_channels,
                                out_channels=out_channels, **unet_kwargs)
        self.num_train_timesteps = int(num_train_timesteps)
        self.num_classes = None

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        if labels is not None:
            raise ValueError("diffusers_unet is unconditional here (no labels)")
        return self.unet(x, t * self.num_train_timesteps - 1.0).sample
