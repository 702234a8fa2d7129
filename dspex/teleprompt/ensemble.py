"""DSPy's ``dspy.teleprompt.ensemble`` path: ``Ensemble``."""

from dspex.programs._teleprompt import Ensemble

__all__ = ["Ensemble"]
