"""DSPy's ``dspy.evaluate`` path: ``from dspex.evaluate import Evaluate``.

The same objects as the top-level names; this module exists so DSPy code that
imports from ``dspy.evaluate`` runs unchanged under ``import dspex as dspy``.
"""

from dspex.programs import (
    CompleteAndGrounded,
    Evaluate,
    EvaluationResult,
    SemanticF1,
    answer_exact_match,
    answer_passage_match,
    exact_match,
    f1_score,
    normalize_text,
)

__all__ = [
    "CompleteAndGrounded",
    "Evaluate",
    "EvaluationResult",
    "SemanticF1",
    "answer_exact_match",
    "answer_passage_match",
    "exact_match",
    "f1_score",
    "normalize_text",
]
