"""Training objectives: per-sample losses of a score model (DSM, HSM, CLD-DSM), time sampling.

``edm_sigma_times``: EDM's log-normal noise levels as process times; ``edm_loss_weight``: EDM's
``lambda(sigma)``.
"""

from .dsm import (
    DSM_WEIGHTINGS,
    FLOW_WEIGHTINGS,
    LOGNORMAL_WEIGHTINGS,
    T_SAMPLINGS,
    dsm_loss,
    likelihood_importance,
)
from .hsm import HSM_WEIGHTINGS, cld_dsm_loss, hsm_loss
from .tsampling import ImportanceTimes, edm_loss_weight, edm_sigma_times, uniform_times

__all__ = [
    "DSM_WEIGHTINGS",
    "FLOW_WEIGHTINGS",
    "HSM_WEIGHTINGS",
    "ImportanceTimes",
    "LOGNORMAL_WEIGHTINGS",
    "T_SAMPLINGS",
    "cld_dsm_loss",
    "dsm_loss",
    "edm_loss_weight",
    "edm_sigma_times",
    "hsm_loss",
    "likelihood_importance",
    "uniform_times",
]
