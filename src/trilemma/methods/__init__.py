"""What a user trains: data-space score models (the rectified flow among them), reflow, LSGM
(latent SGM), Denoising Diffusion GANs, and the noise-conditional classifier that guides a score
model."""

from .ddgan import DDGAN, DDGANSchedule
from .lsgm import LSGM
from .noise_classifier import NoiseClassifier
from .reflow import Reflow
from .score_model import OBJECTIVES, ScoreModel

__all__ = ["DDGAN", "LSGM", "NoiseClassifier", "OBJECTIVES", "DDGANSchedule", "Reflow",
           "ScoreModel"]
