"""DSPy's ``dspy.clients.base_lm`` path: the custom-LM base class and its state marker."""

from dspex.actors._lm._base_lm import LM_CLASS_STATE_KEY, MAX_HISTORY_SIZE, BaseLM

__all__ = ["LM_CLASS_STATE_KEY", "MAX_HISTORY_SIZE", "BaseLM"]
