"""The tuned time grids, as data: interior log-SNR fractions per (sampler, process, steps).

Fraction 0 is ``lambda(T)`` and 1 is ``lambda(eps)`` (``lambda = log(alpha/sigma)``), so an entry
transfers to the same process with other parameters. Found by
:func:`trilemma.samplers.tune_grid` on the ``imbalanced2d`` oracle mixture (exact score, sliced
W2 to a fine solve); regenerate
with ``python benchmarks/tune_grid.py --print-table`` (docs/BENCHMARKS.md, "Five calls").
"""

from __future__ import annotations

#: (sampler, process name, solver steps) -> interior fractions, strictly increasing in (0, 1)
TUNED_FRACTIONS: dict[tuple[str, str, int], tuple[float, ...]] = {
    ('dpm2m', 'subvp', 5): (0.260535, 0.307789, 0.362368, 0.464861),
    ('dpm2m', 'subvp', 10): (0.050715, 0.246744, 0.291372, 0.329396, 0.373213, 0.412807, 0.466039,
        0.486719, 0.636974),
    ('dpm2m', 've', 5): (0.299358, 0.379137, 0.474328, 0.643565),
    ('dpm2m', 've', 10): (0.101436, 0.273791, 0.354497, 0.421019, 0.480284, 0.545884, 0.635439,
        0.655449, 0.932171),
    ('dpm2m', 'vp', 5): (0.383802, 0.454130, 0.534436, 0.678685),
    ('dpm2m', 'vp', 10): (0.143406, 0.357369, 0.428548, 0.485574, 0.551531, 0.613528, 0.691588,
        0.711849, 0.944831),
    ('dpm3m', 'subvp', 5): (0.264854, 0.304854, 0.415080, 0.487448),
    ('dpm3m', 'subvp', 10): (0.063401, 0.214652, 0.266333, 0.309490, 0.385972, 0.439138, 0.491300,
        0.527639, 0.604361),
    ('dpm3m', 've', 5): (0.313013, 0.373157, 0.561103, 0.669510),
    ('dpm3m', 've', 10): (0.090863, 0.224353, 0.299779, 0.356699, 0.423357, 0.549518, 0.633892,
        0.736900, 0.831725),
    ('dpm3m', 'vp', 5): (0.394509, 0.447413, 0.611454, 0.714305),
    ('dpm3m', 'vp', 10): (0.083008, 0.274806, 0.370247, 0.437479, 0.481106, 0.600855, 0.666616,
        0.750799, 0.800303),
    ('unipc', 'subvp', 5): (0.280777, 0.320777, 0.360777, 0.441263),
    ('unipc', 'subvp', 10): (0.026909, 0.306601, 0.334768, 0.372292, 0.392824, 0.413448, 0.458171,
        0.489913, 0.559352),
    ('unipc', 've', 5): (0.040000, 0.398540, 0.438540, 0.602165),
    ('unipc', 've', 10): (0.081144, 0.223373, 0.430088, 0.450137, 0.558967, 0.601059, 0.745534,
        0.788060, 0.973025),
    ('unipc', 'vp', 5): (0.040000, 0.465782, 0.505782, 0.652153),
    ('unipc', 'vp', 10): (0.085244, 0.301867, 0.481116, 0.502005, 0.578534, 0.599412, 0.668510,
        0.708670, 0.821812),
}
