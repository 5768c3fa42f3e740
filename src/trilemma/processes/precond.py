"""EDM's preconditioning coefficients (Karras et al. 2022, Table 1) in a scalar process's terms.

Every scalar process is EDM's ``x = x0 + sigma n`` after ``x = u / alpha_t`` and
``sigma = sigma_t / alpha_t`` (``= exp(-log_snr(t))``). EDM writes the denoiser as

    D(x, sigma) = c_skip x + c_out F(c_in x, c_noise),
    c_skip = sigma_data^2 / (sigma^2 + sigma_data^2),
    c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2),
    c_in = 1 / sqrt(sigma^2 + sigma_data^2),   c_noise = ln(sigma) / 4,

so that for data of second moment ``sigma_data^2`` both the network input and its training target
``F = (x0 - c_skip x) / c_out`` have unit variance at every ``sigma``. In the process's own
variables the score that ``D`` implies is (``a = alpha_t``, ``s = sigma_t``)

    score = -u / (s^2 + a^2 sigma_data^2) + a sigma_data / (s sqrt(s^2 + a^2 sigma_data^2)) F,

whose first term is the exact score of Gaussian data ``N(0, sigma_data^2 I)``: the analogue of
CLD's mixed score. All coefficients here are float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def check_sigma_data(sigma_data: float | None) -> float:
    """``sigma_data`` as a float, or a ValueError (EDM's coefficients need a positive one)."""
    ok = (isinstance(sigma_data, (int, float)) and not isinstance(sigma_data, bool)
          and math.isfinite(sigma_data) and sigma_data > 0)
    if not ok:
        raise ValueError("the edm prediction needs a positive finite sigma_data, got "
                         f"{sigma_data!r}")
    return float(sigma_data)


def edm_score_coefs(alpha: Tensor, sigma: Tensor, sigma_data: float) -> tuple[Tensor, Tensor]:
    """``(k_u, k_F)`` with ``score = -k_u u + k_F F`` for the EDM denoiser (module docstring),
    from the process's ``alpha_t`` and ``sigma_t``."""
    sd = check_sigma_data(sigma_data)
    var = sigma**2 + alpha**2 * sd**2  # Var(u_t) for data of second moment sigma_data^2
    return 1.0 / var, alpha * sd / (sigma * torch.sqrt(var))
