"""trilemma: score-based diffusion models that aim at quality, diversity and speed at once."""

__version__ = "0.1.0"
