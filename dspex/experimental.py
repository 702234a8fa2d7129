"""DSPy's ``dspy.experimental`` path: ``Document`` and ``Citations``."""

from dspex.programs._citations import Citations, Document

__all__ = ["Citations", "Document"]
