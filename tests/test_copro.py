"""COPRO: proposes instructions with a prompt model and keeps the best-scoring one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import dspex
from dspex.clients import BaseLM
from dspex.programs import settings
from dspex.teleprompt import COPRO
from dspex.testing import DummyLM

CAPS = "Answer in capital letters."


@pytest.fixture(autouse=True)
def clean_settings() -> Iterator[None]:
    yield
    settings.reset()


def trainset() -> list[dspex.Example]:
    return [
        dspex.Example(question=q, answer=a).with_inputs("question")
        for q, a in (("capital of France?", "PARIS"), ("capital of Peru?", "LIMA"))
    ]


class CapsLM(BaseLM):
    """Right (upper case) only when the system prompt carries the proposed instruction."""

    def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
        question = messages[-1]["content"]
        answer = "PARIS" if "France" in question else "LIMA"
        if CAPS not in messages[0]["content"]:
            answer = answer.lower()
        text = f"[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]"
        return {"choices": [{"message": {"content": text}}], "model": "caps"}


def metric(example: Any, pred: Any, trace: Any = None) -> bool:
    return bool(example.answer == pred.answer)


def test_copro_keeps_the_instruction_that_scores_best() -> None:
    proposal = {"proposed_instruction": CAPS, "proposed_prefix_for_output_field": "Answer:"}
    prompt_lm = DummyLM([proposal] * 10)
    student = dspex.Predict("question -> answer")
    dspex.configure(lm=CapsLM(model="test/caps"))
    best = COPRO(
        prompt_model=prompt_lm, metric=metric, breadth=2, depth=2, track_stats=True
    ).compile(student, trainset=trainset(), eval_kwargs={"num_threads": 1})
    predictor = best.predictors()[0]
    assert predictor.signature.instructions == CAPS
    assert predictor.signature.output_fields["answer"].prefix == "Answer:"
    assert student.signature.instructions != CAPS  # the student is left as it was
    assert best.total_calls == 4  # 2 rounds of 2 candidates (breadth)
    assert best.candidate_programs[0]["score"] == 100.0
    assert best.candidate_programs[-1]["score"] == 0.0  # the original instruction
    (stats,) = best.results_best.values()
    assert stats["max"] and stats["max"][0] == 100.0
    # round 2 asked with the attempts so far, worst first, with their scores
    attempts = prompt_lm.history[1]["messages"][-1]["content"]
    assert "Resulting Score #" in attempts and CAPS in attempts


def test_copro_checks_its_settings() -> None:
    with pytest.raises(dspex.UsageError, match="Breadth must be greater than 1"):
        COPRO(metric=metric, breadth=1)
    with pytest.raises(dspex.UsageError, match="needs metric"):
        COPRO().compile(dspex.Predict("q -> a"), trainset=trainset())
