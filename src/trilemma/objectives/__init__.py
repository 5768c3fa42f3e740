"""Training objectives: per-sample losses of a score model (DSM, HSM, CLD-DSM)."""

from .dsm import DSM_WEIGHTINGS, dsm_loss, likelihood_importance
from .hsm import HSM_WEIGHTINGS, cld_dsm_loss, hsm_loss
from .tsampling import ImportanceTimes, uniform_times

__all__ = [
    "DSM_WEIGHTINGS",
    "HSM_WEIGHTINGS",
    "ImportanceTimes",
    "cld_dsm_loss",
    "dsm_loss",
    "hsm_loss",
    "likelihood_importance",
    "uniform_times",
]
