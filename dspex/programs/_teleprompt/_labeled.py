"""``LabeledFewShot``: every predictor gets up to ``k`` training examples as demos."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from dspex.programs._teleprompt._base import Teleprompter, check_count, check_trainset

__all__ = ["LabeledFewShot"]


class LabeledFewShot(Teleprompter):
    """Gives each predictor of a copy of the student up to ``k`` labeled demos.

    ``sample=True`` draws them with ``random.Random(0)`` (one generator for
    the whole program, so predictors get different draws, reproducibly);
    ``sample=False`` takes the first ``k``. An empty trainset leaves the
    copy without demos. The copy is not marked compiled, as in DSPy.
    """

    def __init__(self, k: int = 16) -> None:
        self.k = check_count("LabeledFewShot", "k", k, 0)

    def compile(  # type: ignore[override]  # DSPy's signature: no teacher/valset
        self, student: Any, *, trainset: Sequence[Any], sample: bool = True
    ) -> Any:
        self.student = student.reset_copy()
        self.trainset = check_trainset(trainset, "LabeledFewShot.compile", need_inputs=False)
        if not self.trainset:
            return self.student
        rng = random.Random(0)
        size = min(self.k, len(self.trainset))
        for predictor in self.student.predictors():
            if sample:
                predictor.demos = rng.sample(self.trainset, size)
            else:
                predictor.demos = self.trainset[:size]
        return self.student
