"""What a user trains: data-space score models (the rectified flow among them), reflow, LSGM
(latent SGM), Denoising Diffusion GANs, consistency models and progressively distilled score
models from a teacher, and the noise-conditional classifier that guides a score model."""

from .consistency import ConsistencyModel
from .consistency_tuning import TunedTaus, prdc_score, tune_taus
from .ddgan import DDGAN, DDGANSchedule
from .lsgm import LSGM
from .noise_classifier import NoiseClassifier
from .progressive import ProgressiveModel
from .reflow import Reflow
from .score_model import OBJECTIVES, ScoreModel

__all__ = ["DDGAN", "LSGM", "OBJECTIVES", "ConsistencyModel", "DDGANSchedule", "NoiseClassifier",
           "ProgressiveModel", "Reflow", "ScoreModel", "TunedTaus", "prdc_score", "tune_taus"]
