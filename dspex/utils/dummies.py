"""DSPy's ``dspy.utils.dummies`` path: ``from dspex.utils.dummies import DummyLM``."""

from dspex.testing import DummyLM, DummyVectorizer

__all__ = ["DummyLM", "DummyVectorizer"]
