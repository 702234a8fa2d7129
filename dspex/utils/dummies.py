"""DSPy's ``dspy.utils.dummies`` path: ``from dspex.utils.dummies import DummyLM``."""

from dspex.testing import DummyLM

__all__ = ["DummyLM"]
