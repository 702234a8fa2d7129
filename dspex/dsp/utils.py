"""DSPy's ``dspy.dsp.utils`` path: ``dotdict`` (the passages ``ColBERTv2`` returns)."""

from dspex.programs._colbertv2 import dotdict

__all__ = ["dotdict"]
