"""DSPy's ``dspy.teleprompt.simba`` path: ``SIMBA``."""

from dspex.programs._teleprompt import SIMBA

__all__ = ["SIMBA"]
