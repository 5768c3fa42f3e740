"""What the oracle sampler benchmark runs: mixtures, processes, NFE budgets, sample counts."""

from __future__ import annotations

from dataclasses import dataclass, field

#: NFE budgets of the fixed-step samplers
NFES = (5, 10, 20, 50, 100, 200)
#: mixtures of :mod:`trilemma.oracle` the benchmark samples
MIXTURES = ("grid25", "imbalanced2d", "mixture64d")
#: processes every sampler that supports them runs on
PROCESSES = ("vp", "ve", "subvp", "cld")


@dataclass
class BenchConfig:
    """What to run. ``n_samples`` maps mixture -> sample count; the reference set holds
    ``reference_factor`` times as many exact samples; ``samplers`` None means every registered
    sampler that supports the process (the adaptive ``ode`` runs once, capped at ``ode_cap``)."""

    mixtures: tuple[str, ...] = MIXTURES
    processes: tuple[str, ...] = PROCESSES
    samplers: tuple[str, ...] | None = None
    nfes: tuple[int, ...] = NFES
    n_samples: dict[str, int] = field(
        default_factory=lambda: {"grid25": 6000, "imbalanced2d": 6000, "mixture64d": 1000}
    )
    reference_factor: int = 4
    n_projections: int = 256
    floor_repeats: int = 5
    ode_cap: int | None = 2000
    seed: int = 0
    #: the headline comparison (grid25 / VP at ``headline_nfes``, trilemma vs diffusers) is rerun
    #: with ``headline_n`` samples for each prior-noise seed in ``headline_seeds`` (SW2's noise
    #: floor falls only like n^(-1/4)); None: it reuses the main runs (one seed)
    headline_n: int | None = 20000
    headline_seeds: tuple[int, ...] = (0, 1, 2)
    headline_nfes: tuple[int, ...] = (10, 20)
    #: SW2 bootstrap resamples behind the headline's comparisons when it rests on one seed
    #: (with two or more seeds the seeds' spread decides; trilemma.bench.summary)
    bootstrap: int = 200
    diffusers: bool = True
    diffusers_mixtures: tuple[str, ...] = ("grid25",)
    overhead: bool = True
    overhead_batch: int = 4096
    overhead_steps: int = 100
    overhead_repeats: int = 7

    @classmethod
    def quick(cls) -> BenchConfig:
        """A small run: fewer NFEs, samples and repeats (its timing: docs/BENCHMARKS.md)."""
        return cls(
            nfes=(10, 20, 50),
            n_samples={"grid25": 2000, "imbalanced2d": 2000, "mixture64d": 300},
            reference_factor=4,
            n_projections=128,
            floor_repeats=3,
            ode_cap=500,
            headline_n=None,
            overhead_steps=50,
            overhead_repeats=3,
        )

