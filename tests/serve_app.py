"""Programs that tests/test_serve.py serves with ``dspex serve`` (a subprocess).

The fake provider's URL comes from ``SERVE_TEST_FAKE_URL``; ``SERVE_TEST_NAMES``
picks what ``programs`` holds.
"""

from __future__ import annotations

import os
from typing import Literal

import dspex


class QA(dspex.Signature):
    """Answer the question."""

    question: str = dspex.InputField(desc="a question")
    answer: str = dspex.OutputField()


class Rate(dspex.Signature):
    """Rate the review."""

    review: str = dspex.InputField()
    stars: int = dspex.InputField(desc="how many stars the reviewer gave")
    verdict: Literal["good", "bad"] = dspex.OutputField()


def _lm() -> dspex.LM:
    return dspex.LM(
        "openai/test-model",
        api_base=os.environ["SERVE_TEST_FAKE_URL"],
        api_key="sk-test-secret-key-123",
        num_retries=0,
        cache=False,
    )


def _predict(signature: type[dspex.Signature]) -> dspex.Predict:
    program = dspex.Predict(signature)
    program.set_lm(_lm())
    return program


def qa() -> dspex.Predict:
    """A factory: one program."""
    return _predict(QA)


def programs() -> dict[str, dspex.Predict]:
    """A factory: a dict of programs."""
    return {"qa": _predict(QA), "rate": _predict(Rate)}


def bare_qa() -> dspex.Predict:
    """A factory: a program using the runtime's default LM (``--lm`` and ``--config``)."""
    return dspex.Predict(QA)


class Remembering(dspex.Module):
    """A QA that also answers how many LM calls its Predict's history holds."""

    def __init__(self) -> None:
        super().__init__()
        self.predict = _predict(QA)

    def forward(self, question: str) -> dspex.Prediction:
        answer = self.predict(question=question).answer
        return dspex.Prediction(answer=answer, kept=len(getattr(self.predict, "history", [])))

    async def aforward(self, question: str) -> dspex.Prediction:
        answer = (await self.predict.acall(question=question)).answer
        return dspex.Prediction(answer=answer, kept=len(getattr(self.predict, "history", [])))


def remembering() -> Remembering:
    """A factory: :class:`Remembering`."""
    return Remembering()
