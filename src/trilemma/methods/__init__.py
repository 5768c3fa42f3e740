"""What a user trains: data-space score models, LSGM (latent SGM) and Denoising Diffusion GANs."""

from .ddgan import DDGAN, DDGANSchedule
from .lsgm import LSGM
from .score_model import OBJECTIVES, ScoreModel

__all__ = ["DDGAN", "LSGM", "OBJECTIVES", "DDGANSchedule", "ScoreModel"]
