"""A trivial "noise-free" method: a diagonal Gaussian fitted by maximum likelihood, sampled in
one call as ``mean + std * z`` (no diffusion at all)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from trilemma.methods.base import Method
from trilemma.samplers.base import SampleResult

SAMPLERS = ("direct",)


class NoiseFree(Method):
    """``x ~ N(mean, diag(std^2))`` with learned ``mean`` and ``log std``."""

    name = "noisefree.setup"

    def __init__(self, data_shape: tuple[int, ...], init_log_std: float = 0.0) -> None:
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)
        self.mean = nn.Parameter(torch.zeros(self.data_shape))
        self.log_std = nn.Parameter(torch.full(self.data_shape, float(init_log_std)))

    def loss(self, batch: Tensor | tuple | list, generator: torch.Generator | None = None,
             **kwargs: Any) -> Tensor:
        """Per-sample Gaussian negative log-likelihood."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        z = (x - self.mean) * torch.exp(-self.log_std)
        nll = 0.5 * z.pow(2) + self.log_std + 0.5 * math.log(2 * math.pi)
        return nll.flatten(1).sum(1)

    def samplers(self) -> list[str]:
        """Only its own one-call sampler."""
        return list(SAMPLERS)

    def check_sampler(self, sampler: str, nfe: int | None = None,
                      options: dict[str, Any] | None = None) -> None:
        """``direct`` with NFE 1 and no options."""
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler: use one of: {', '.join(SAMPLERS)} (got {sampler!r})")
        if nfe is not None and nfe != 1:
            raise ValueError(f"nfe: the direct sampler makes 1 call; got {nfe}")
        if options:
            raise ValueError(f"options: the direct sampler takes none, got {sorted(options)}")

    @torch.no_grad()
    def sample(self, n: int, sampler: str = "direct", nfe: int | None = 1,
               generator: torch.Generator | None = None, **opts: Any) -> SampleResult:
        """``mean + std * z`` for ``n`` draws of ``z``."""
        self.check_sampler(sampler, nfe, opts)
        z = torch.randn(self.state_shape(n), generator=generator, device=self.mean.device,
                        dtype=self.mean.dtype)
        x = self.mean + torch.exp(self.log_std) * z
        return SampleResult(samples=x, state=x, nfe=1, info={"sampler": "direct"})
