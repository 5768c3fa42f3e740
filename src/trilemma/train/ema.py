"""Exponential moving average of a model's weights (a shadow copy used for sampling)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import Tensor, nn

_LOW_PRECISION = (torch.float16, torch.bfloat16)


class EMA:
    """Shadow copy of a model's state: parameters averaged, buffers copied.

    After each :meth:`update`, ``shadow = d * shadow + (1 - d) * param`` with
    ``d = min(decay, (1 + n) / (10 + n))`` when ``warmup`` (``n`` = updates so far), else
    ``d = decay``: the warm-up keeps early, random weights from dominating the average.
    The shadow is keyed like ``model.state_dict()``, so it loads into a fresh model directly;
    half-precision parameters are averaged in float32.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        if not isinstance(decay, (int, float)) or isinstance(decay, bool) or not 0 <= decay < 1:
            raise ValueError(f"EMA decay must be a float in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self._param_names = {n for n, _ in model.named_parameters(remove_duplicate=False)}
        self.shadow: dict[str, Tensor] = {}
        with torch.no_grad():
            for name, value in model.state_dict().items():
                v = value.detach().clone()
                if name in self._param_names and v.dtype in _LOW_PRECISION:
                    v = v.float()
                self.shadow[name] = v

    def current_decay(self) -> float:
        """The decay the next :meth:`update` will use."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    def _check_model(self, state: Mapping[str, Tensor]) -> None:
        """Fail clearly when ``model`` is not the module this EMA shadows."""
        if state.keys() != self.shadow.keys():
            missing = sorted(self.shadow.keys() - state.keys())[:5]
            extra = sorted(state.keys() - self.shadow.keys())[:5]
            raise ValueError(
                f"model does not match the EMA shadow: missing {missing}, unexpected {extra}"
            )

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights into the average."""
        state = model.state_dict()
        self._check_model(state)
        d = self.current_decay()
        avg_s, avg_p = [], []
        for name, value in state.items():
            s = self.shadow[name]
            if name in self._param_names and s.is_floating_point():
                avg_s.append(s)
                avg_p.append(value.detach().to(s.dtype))
            else:
                s.copy_(value)
        if avg_s:
            torch._foreach_lerp_(avg_s, avg_p, 1.0 - d)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's weights with the averaged ones."""
        state = model.state_dict()
        self._check_model(state)
        for name, value in state.items():
            value.copy_(self.shadow[name])

    @contextmanager
    def swap_in(self, model: nn.Module) -> Iterator[nn.Module]:
        """Context manager: the model carries the EMA weights inside, its own weights after."""
        with torch.no_grad():
            backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, value in model.state_dict().items():
                    value.copy_(backup[name])

    def to(self, device: torch.device | str) -> EMA:
        """Move the shadow to ``device`` (in place; returns self)."""
        self.shadow = {k: v.to(device) for k, v in self.shadow.items()}
        return self

    def state_dict(self) -> dict[str, Tensor]:
        """The shadow tensors (keyed like the model's state dict)."""
        return dict(self.shadow)

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Tensor], num_updates: int | None = None) -> None:
        """Load shadow tensors (same keys and shapes) and optionally the update count."""
        self._check_model(state)
        for name, value in state.items():
            s = self.shadow[name]
            if tuple(value.shape) != tuple(s.shape):
                raise ValueError(
                    f"EMA tensor {name!r} has shape {tuple(value.shape)}, expected {tuple(s.shape)}"
                )
            s.copy_(value)
        if num_updates is not None:
            self.num_updates = int(num_updates)
