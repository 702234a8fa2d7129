"""DSPy's ``dspy.predict.knn`` path: ``KNN``."""

from dspex.programs._knn import KNN

__all__ = ["KNN"]
