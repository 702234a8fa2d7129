"""DSPy's ``dspy.teleprompt.signature_opt`` path: ``COPRO``."""

from dspex.programs._teleprompt import COPRO

__all__ = ["COPRO"]
