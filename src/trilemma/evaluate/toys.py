"""Scoring samples of toy data against a fixed set of reference points.

On toys drawn from an oracle mixture (``data.name: toy`` with ``data.toy`` in
:data:`trilemma.oracle.MIXTURES`): :func:`~trilemma.metrics.mixture.oracle_report` against a
fixed set of exact samples (SW2 with the noise floor of a perfect sampler, share within 3 sigma,
modes covered, mode-weight KL, spread ratio, ...) and PRDC on the raw coordinates; SW2 and PRDC
get 95% bootstrap intervals (:mod:`trilemma.metrics.bootstrap`). Other toys
(swiss roll, ...) get SW2 and PRDC against fresh data samples. The baseline is fresh exact
samples (or fresh data) scored the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..metrics.bootstrap import DEFAULT_REPEATS, prdc_replicates
from ..metrics.mixture import SlicedReference, oracle_report, random_directions, sw2_noise_floor
from ..metrics.prdc import prdc, prdc_incidence
from .common import finite
from .dataspec import DataSpec
from .scoring import Scorer, quiet_warning

#: exact reference samples per generated sample, SW2 projections, seeds
TOY_REFERENCE_FACTOR = 4
TOY_PROJECTIONS = 256
TOY_REFERENCE_SEED = 10_007
TOY_DIRECTIONS_SEED = 10_009
TOY_BASELINE_SEED = 10_037
TOY_FLOOR_SEED = 10_039


class ToyScorer(Scorer):
    """Oracle metrics (mixtures) or SW2 (other toys) and PRDC against fixed exact (oracle) or
    data reference samples of a toy, for ``n`` samples at a time."""

    def __init__(self, spec: DataSpec, n: int, progress: bool = False,
                 repeats: int = DEFAULT_REPEATS) -> None:
        super().__init__(spec, repeats)
        self.mixture = spec.mixture
        m = TOY_REFERENCE_FACTOR * n
        ref = spec.toy_points(m, torch.Generator().manual_seed(TOY_REFERENCE_SEED),
                              torch.float64)
        self.samples = ref
        directions = random_directions(ref.shape[1], TOY_PROJECTIONS,
                                       torch.Generator().manual_seed(TOY_DIRECTIONS_SEED))
        self.sliced = SlicedReference(ref, directions=directions)
        self.prdc_real = ref[:n]
        self.floor = None
        if self.mixture is not None:
            self.floor = sw2_noise_floor(self.mixture, n,
                                         torch.Generator().manual_seed(TOY_FLOOR_SEED),
                                         repeats=3, n_projections=TOY_PROJECTIONS, m=m)
        self.reference = self._provenance(n, m)

    def _provenance(self, n: int, m: int) -> dict[str, Any]:
        oracle = self.mixture is not None
        return {
            "kind": "oracle" if oracle else "toy data",
            "source": (f"exact samples of the oracle mixture {self.spec.name!r}" if oracle else
                       f"fresh samples of the toy {self.spec.name!r} (no oracle: no mode "
                       "metrics)"),
            "toy": self.spec.name, "n_reference": m, "n_prdc_real": n,
            "reference_seed": TOY_REFERENCE_SEED, "directions_seed": TOY_DIRECTIONS_SEED,
            "n_projections": TOY_PROJECTIONS, "prdc_real": f"the first {n} reference samples",
            "sw2_floor": None if self.floor is None else {
                "mean": self.floor["mean"], "std": self.floor["std"], "repeats": 3,
                "seed": TOY_FLOOR_SEED, "n": n, "m": m},
        }

    def measure(self, x: Tensor, counts: np.ndarray | None
                ) -> tuple[dict[str, Any], list[str], dict[str, np.ndarray]]:
        """Oracle metrics (mixtures) or SW2 (other toys), plus PRDC on the raw coordinates;
        replicates of SW2 and PRDC for the rows of ``counts``."""
        x = x.to(torch.float64)
        out, msgs = self._values(x)
        reps: dict[str, np.ndarray] = {}
        if counts is not None:
            reps["sw2"] = self.sliced.sw2_replicates(x, counts)
            reps.update(prdc_replicates(prdc_incidence(self.prdc_real, x), counts))
        return out, msgs, reps

    def _values(self, x: Tensor) -> tuple[dict[str, Any], list[str]]:
        """The metrics of float64 samples ``x`` and the PRDC sample-size warning."""
        out: dict[str, Any] = {}
        if self.mixture is not None:
            rep = oracle_report(self.mixture, x, reference_samples=self.sliced)
            for key, val in rep.items():
                if key in ("counts", "found_weights", "n"):
                    continue
                out["mode_coverage" if key == "coverage" else key] = finite(val)
            out["mode_counts"] = rep["counts"]
            out["sw2_floor"] = self.floor["mean"]
            out["sw2_floor_std"] = self.floor["std"]
        else:
            out["sw2"] = self.sliced.sw2(x)
            out["n_reference"] = self.sliced.n
        res = prdc(self.prdc_real, x)
        out.update({k: res[k] for k in ("precision", "recall", "density", "coverage")})
        msg = quiet_warning("prdc", min(len(x), len(self.prdc_real)))
        return out, [msg] if msg else []

    def class_hits(self, x: Tensor, labels: Tensor) -> Tensor | None:
        """Whether the oracle's most likely component of each point is its asked class (the
        components of a labelled mixture are its classes); None for toys without an oracle."""
        if self.mixture is None:
            return None
        return (self.mixture.assign(x) == labels.cpu()).double()

    def baseline(self, n: int, seed: int) -> dict[str, Any]:
        """``n`` fresh exact samples (or fresh data) from a fixed seed (``seed`` unused: the
        baseline of a toy does not depend on the run's seed)."""
        gen = torch.Generator().manual_seed(TOY_BASELINE_SEED)
        xr = self.spec.toy_points(n, gen)
        lab = (f"exact samples of {self.spec.name}" if self.mixture is not None
               else f"fresh {self.spec.name} data")
        m, w, _ = self.score(xr)
        return {"label": lab, "n": n, "metrics": m, "warnings": w, "seed": TOY_BASELINE_SEED}

    def picture_reference(self, n: int) -> Tensor:
        """The first ``n`` reference points (float32), drawn under the samples."""
        return self.samples[:n].float()

