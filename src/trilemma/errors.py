"""Exceptions shared across layers (a leaf module: it imports nothing of trilemma)."""

from __future__ import annotations

from collections.abc import Sequence


class ConfigError(ValueError):
    """A config that does not validate; the message lists every problem, one per line."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class RunError(ValueError):
    """A run folder that cannot be trained as asked (message says why and what to do)."""
