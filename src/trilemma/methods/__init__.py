"""What a user trains: data-space score models (LSGM and DDGAN to follow)."""

from .score_model import OBJECTIVES, ScoreModel

__all__ = ["OBJECTIVES", "ScoreModel"]
