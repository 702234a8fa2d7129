"""DSPy's ``dspy.dsp.colbertv2`` path (a re-export of ``dspex.ColBERTv2``)."""

from dspex.programs._colbertv2 import ColBERTv2, dotdict

__all__ = ["ColBERTv2", "dotdict"]
