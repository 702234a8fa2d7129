"""``LabeledFewShot``: every predictor gets up to ``k`` training examples as demos."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Sequence
from typing import Any

from dspex.programs._teleprompt._base import Teleprompter, check_count, check_trainset
from dspex.programs._teleprompt._checkpoint import (
    digest,
    fingerprint_examples,
    fingerprint_program,
    open_journal,
)

__all__ = ["LabeledFewShot"]

logger = logging.getLogger("dspex.programs")


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
        self,
        student: Any,
        *,
        trainset: Sequence[Any],
        sample: bool = True,
        checkpoint: str | os.PathLike[str] | None = None,
    ) -> Any:
        """A copy of ``student`` with labeled demos.

        With ``checkpoint`` (a directory), the choice of demos (trainset
        positions per predictor) is journaled, and a rerun takes it from there.
        There is no LM call to save: this is for a uniform API and for the
        mismatch check.
        """
        self.student = student.reset_copy()
        self.trainset = check_trainset(trainset, "LabeledFewShot.compile", need_inputs=False)
        journal = open_journal(
            checkpoint,
            optimizer="LabeledFewShot",
            fingerprint={
                "program": fingerprint_program(student),
                "trainset": fingerprint_examples(self.trainset),
                "settings": digest({"k": self.k, "sample": sample}),
            },
        )
        try:
            if journal is not None:
                found, choice = journal.replay("choice", "")
                if not found:
                    choice = self._choose(sample)
                    journal.record("choice", "", choice)
            else:
                choice = self._choose(sample)
        finally:
            if journal is not None:
                journal.close()
                logger.info(
                    "LabeledFewShot checkpoint: %d units replayed, %d recorded",
                    journal.replayed,
                    journal.recorded,
                )
        for predictor, positions in zip(self.student.predictors(), choice, strict=True):
            predictor.demos = [self.trainset[i] for i in positions]
        return self.student

    def _choose(self, sample: bool) -> list[list[int]]:
        """Each predictor's demos, as trainset positions."""
        count = len(self.student.predictors())
        if not self.trainset:
            return [[] for _ in range(count)]
        rng = random.Random(0)
        size = min(self.k, len(self.trainset))
        positions = range(len(self.trainset))
        if sample:
            return [rng.sample(positions, size) for _ in range(count)]
        return [list(positions[:size]) for _ in range(count)]
