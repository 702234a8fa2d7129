"""DSPy's ``dspy.primitives`` path: examples, predictions and modules."""

from dspex.programs import BaseModule, Completions, Example, Module, Prediction

__all__ = ["BaseModule", "Completions", "Example", "Module", "Prediction"]
