"""DSPy's ``dspy.primitives.prediction`` path."""

from dspex.programs import Completions, Prediction

__all__ = ["Completions", "Prediction"]
