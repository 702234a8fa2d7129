"""DSPy's ``dspy.primitives.example`` path."""

from dspex.programs import Example

__all__ = ["Example"]
