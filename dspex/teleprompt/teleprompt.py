"""DSPy's ``dspy.teleprompt.teleprompt`` path: the optimizer base class."""

from dspex.programs._teleprompt import Teleprompter

__all__ = ["Teleprompter"]
