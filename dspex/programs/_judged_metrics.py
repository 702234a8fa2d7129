"""LM-judged answer metrics: DSPy's ``SemanticF1`` and ``CompleteAndGrounded``.

Each is a module: a ChainOfThought judge reads the question, the reference
answer and the system's answer and reports fractions, combined into an F1
score. Called with ``trace=None`` (evaluation) it returns
``Prediction(score=<float>)``; with a trace (bootstrapping) the score is
``score >= threshold``. Signatures, field names and descriptions are DSPy's,
so the judges' prompts match DSPy's word for word.
"""

from __future__ import annotations

from typing import Any

from dspex.errors import UsageError
from dspex.programs._chain_of_thought import ChainOfThought
from dspex.programs._fields import InputField, OutputField
from dspex.programs._module import Module
from dspex.programs._prediction import Prediction
from dspex.programs._signature import Signature

__all__ = [
    "AnswerCompleteness",
    "AnswerGroundedness",
    "CompleteAndGrounded",
    "DecompositionalSemanticRecallPrecision",
    "SemanticF1",
    "SemanticRecallPrecision",
]

_GROUND_KEY_IDEAS = "enumeration of key ideas in the ground truth"
_SYSTEM_KEY_IDEAS = "enumeration of key ideas in the system response"
_OVERLAP = "discussion of the overlap between ground truth and system response"
_RECALL = "fraction (out of 1.0) of ground truth covered by the system response"
_PRECISION = "fraction (out of 1.0) of system response covered by the ground truth"


class SemanticRecallPrecision(Signature):
    """
    Compare a system's response to the ground truth to compute its recall and precision.
    If asked to reason, enumerate key ideas in each response, and whether they are present in the other response.
    """  # noqa: E501  (DSPy's instructions, verbatim)

    question: str = InputField()
    ground_truth: str = InputField()
    system_response: str = InputField()
    recall: float = OutputField(desc=_RECALL)
    precision: float = OutputField(desc=_PRECISION)


class DecompositionalSemanticRecallPrecision(Signature):
    """
    Compare a system's response to the ground truth to compute recall and precision of key ideas.
    You will first enumerate key ideas in each response, discuss their overlap, and then report recall and precision.
    """  # noqa: E501

    question: str = InputField()
    ground_truth: str = InputField()
    system_response: str = InputField()
    ground_truth_key_ideas: str = OutputField(desc=_GROUND_KEY_IDEAS)
    system_response_key_ideas: str = OutputField(desc=_SYSTEM_KEY_IDEAS)
    discussion: str = OutputField(desc=_OVERLAP)
    recall: float = OutputField(desc=_RECALL)
    precision: float = OutputField(desc=_PRECISION)


class AnswerCompleteness(Signature):
    """
    Estimate the completeness of a system's responses, against the ground truth.
    You will first enumerate key ideas in each response, discuss their overlap, and then report completeness.
    """  # noqa: E501

    question: str = InputField()
    ground_truth: str = InputField()
    system_response: str = InputField()
    ground_truth_key_ideas: str = OutputField(desc=_GROUND_KEY_IDEAS)
    system_response_key_ideas: str = OutputField(desc=_SYSTEM_KEY_IDEAS)
    discussion: str = OutputField(desc=_OVERLAP)
    completeness: float = OutputField(desc=_RECALL)


class AnswerGroundedness(Signature):
    """
    Estimate the groundedness of a system's responses, against real retrieved documents written by people.
    You will first enumerate whatever non-trivial or check-worthy claims are made in the system response, and then
    discuss the extent to which some or all of them can be deduced from the retrieved context and basic commonsense.
    """  # noqa: E501

    question: str = InputField()
    retrieved_context: str = InputField()
    system_response: str = InputField()
    system_response_claims: str = OutputField(
        desc="enumeration of non-trivial or check-worthy claims in the system response"
    )
    discussion: str = OutputField(
        desc="discussion of how supported the claims are by the retrieved context"
    )
    groundedness: float = OutputField(
        desc="fraction (out of 1.0) of system response supported by the retrieved context"
    )


def clamped_f1(precision: float, recall: float) -> float:
    """F1 of two fractions, each clamped to [0, 1] first (LM judges overshoot)."""
    precision = max(0.0, min(1.0, float(precision)))
    recall = max(0.0, min(1.0, float(recall)))
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _check_threshold(where: str, threshold: Any) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise UsageError(f"{where}(threshold={threshold!r}): use a number in [0, 1], e.g. 0.66")
    return float(threshold)


def _read(obj: Any, name: str, role: str, metric: str) -> Any:
    try:
        return obj[name] if isinstance(obj, dict) else getattr(obj, name)
    except (AttributeError, KeyError):
        raise UsageError(
            f"{metric}: the {role} has no `{name}` field; {metric} reads "
            f"example.question, example.response and pred.response"
            + (" and pred.context" if metric == "CompleteAndGrounded" else "")
        ) from None


class SemanticF1(Module):
    """F1 of the LM-judged recall and precision of ``pred.response`` against ``example.response``.

    ``decompositional=True`` makes the judge list the key ideas of both
    responses and discuss their overlap before scoring.
    """

    def __init__(self, threshold: float = 0.66, decompositional: bool = False) -> None:
        super().__init__()
        self.threshold = _check_threshold("SemanticF1", threshold)
        self.decompositional = decompositional
        judge = (
            DecompositionalSemanticRecallPrecision if decompositional else SemanticRecallPrecision
        )
        self.module = ChainOfThought(judge)

    def forward(self, example: Any, pred: Any, trace: Any = None) -> Prediction:
        scores = self.module(
            question=_read(example, "question", "example", "SemanticF1"),
            ground_truth=_read(example, "response", "example", "SemanticF1"),
            system_response=_read(pred, "response", "prediction", "SemanticF1"),
        )
        score = clamped_f1(scores.precision, scores.recall)
        return Prediction(score=score if trace is None else score >= self.threshold)


class CompleteAndGrounded(Module):
    """F1 of how completely ``pred.response`` covers ``example.response`` and how well
    ``pred.context`` supports it, each judged by an LM."""

    def __init__(self, threshold: float = 0.66) -> None:
        super().__init__()
        self.threshold = _check_threshold("CompleteAndGrounded", threshold)
        self.completeness_module = ChainOfThought(AnswerCompleteness)
        self.groundedness_module = ChainOfThought(AnswerGroundedness)

    def forward(self, example: Any, pred: Any, trace: Any = None) -> Prediction:
        name = "CompleteAndGrounded"
        question = _read(example, "question", "example", name)
        response = _read(pred, "response", "prediction", name)
        completeness = self.completeness_module(
            question=question,
            ground_truth=_read(example, "response", "example", name),
            system_response=response,
        )
        groundedness = self.groundedness_module(
            question=question,
            retrieved_context=_read(pred, "context", "prediction", name),
            system_response=response,
        )
        score = clamped_f1(groundedness.groundedness, completeness.completeness)
        return Prediction(score=score if trace is None else score >= self.threshold)
