"""DSPy's ``dspy.clients.lm`` path: ``from dspex.clients.lm import LM``."""

from dspex.actors._lm._model import LM

__all__ = ["LM"]
