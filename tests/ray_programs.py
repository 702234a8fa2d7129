"""Programs and metrics the Ray backend's tests ship to Ray workers.

They live at the top level of a module of their own so the workers can
import them (``tests/`` is on the workers' code search path, see
``tests/test_ray_pool.py``): what any shippable program must satisfy.
"""

from __future__ import annotations

import os
from typing import Any

import dspex


class QA(dspex.Module):
    """One Predict, as most programs are: built with no arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = dspex.Predict("question -> answer")

    def forward(self, question: str) -> Any:
        return self.answer(question=question)


class Sized(dspex.Module):
    """Built from a constructor argument: the factory alone does not rebuild it."""

    def __init__(self, steps: int = 1) -> None:
        super().__init__()
        self.steps = [dspex.Predict("question -> answer") for _ in range(steps)]

    def forward(self, question: str) -> Any:
        return self.steps[-1](question=question)


def exact(example: Any, prediction: Any, trace: Any = None) -> bool:
    return bool(example.answer == prediction.answer)


def scoring_pid(example: Any, prediction: Any, trace: Any = None) -> float:
    """The id of the process that scored: shows where the metric ran."""
    return float(os.getpid())


class FailsOnQ0(QA):
    """Raises at once for question ``q0``; the others call the LM."""

    def forward(self, question: str) -> Any:
        if question == "q0":
            raise ValueError("q0 always fails")
        return super().forward(question)


SCORED_HERE: list[int] = []
"""Pids of the runs this process scored (the driver's copy stays empty on Ray)."""


def upper_feedback(
    gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None
) -> Any:
    """GEPA's metric for the UPPERCASE task (``tests/upper_task.py``), with feedback."""
    if pred_name is None:  # scoring a run, not feedback for the reflection (driver)
        SCORED_HERE.append(os.getpid())
    ok = pred.answer == gold.answer
    hint = "Correct." if ok else f"Expected {gold.answer!r}: answers must be in UPPERCASE."
    return dspex.Prediction(score=float(ok), feedback=hint)


def upper_exact(gold: Any, pred: Any, trace: Any = None) -> float:
    """SIMBA's metric for the UPPERCASE task."""
    SCORED_HERE.append(os.getpid())
    return float(pred is not None and pred.answer == gold.answer)
