"""A CSV of running means of named loss parts, one row every ``every`` training calls (what a
method with several loss terms logs beside the trainer's ``log.csv``, e.g. LSGM's
``lsgm_parts.csv``)."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path


class PartsLog:
    """Accumulate ``parts`` per call and append their means every ``every`` calls."""

    def __init__(self, path: str | os.PathLike, names: Sequence[str], every: int = 50) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        self.path = Path(path)
        self.names = tuple(names)
        self.every = every
        self._sum: dict[str, float] = {}
        self._n = 0
        if not self.path.is_file():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(("calls",) + self.names)

    def record(self, calls: int, parts: Mapping[str, float]) -> None:
        """Add one call's parts; write the means when ``calls`` is a multiple of ``every``."""
        for k, v in parts.items():
            self._sum[k] = self._sum.get(k, 0.0) + v
        self._n += 1
        if calls % self.every == 0:
            row = [calls] + [f"{self._sum.get(k, 0.0) / self._n:.8g}" for k in self.names]
            with open(self.path, "a", newline="") as f:
                csv.writer(f).writerow(row)
            self._sum, self._n = {}, 0
