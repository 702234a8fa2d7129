"""DSPy's ``dspy.teleprompt.knn_fewshot`` path: ``KNNFewShot``."""

from dspex.programs._teleprompt import KNNFewShot

__all__ = ["KNNFewShot"]
