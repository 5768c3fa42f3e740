"""A small MLP test network that counts its forward calls (exact-NFE tests of several methods)."""

from __future__ import annotations

from torch import Tensor, nn

from trilemma.nets import MLP


class CountingNet(nn.Module):
    """An MLP that counts its forward calls."""

    def __init__(self, dim: int = 2) -> None:
        super().__init__()
        self.mlp = MLP(dim, dim, hidden=16, depth=2)
        self.calls = 0

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        self.calls += 1
        return self.mlp(x, t)
