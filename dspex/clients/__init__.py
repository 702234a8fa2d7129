"""DSPy's ``dspy.clients`` path: ``from dspex.clients import BaseLM, Embedder, LM``."""

from dspex.actors._lm._base_lm import BaseLM
from dspex.actors._lm._embedder import Embedder
from dspex.actors._lm._model import LM

__all__ = ["LM", "BaseLM", "Embedder"]
