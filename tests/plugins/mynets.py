"""A network of "your own" for tests/test_own_data.py: a small conv net that returns a
diffusers-style output object (``.sample``) and counts what time it was called with."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Output:
    sample: torch.Tensor


class TinyConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, width: int = 8) -> None:
        super().__init__()
        self.inp = nn.Conv2d(in_channels + 1, width, 3, padding=1)
        self.out = nn.Conv2d(width, out_channels, 3, padding=1)
        self.last_t = None

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> Output:
        self.last_t = t.detach()
        tt = t.view(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])
        return Output(self.out(torch.relu(self.inp(torch.cat([x, tt], dim=1)))))
