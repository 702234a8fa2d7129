"""DSPy's ``dspy.clients`` path: ``from dspex.clients import BaseLM, LM``."""

from dspex.actors._lm._base_lm import BaseLM
from dspex.actors._lm._model import LM
from dspex.programs._embedder import Embedder

__all__ = ["LM", "BaseLM", "Embedder"]
