"""``Ensemble`` (DSPy's teleprompter that combines programs) and per-module LM history."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import dspex
from dspex.programs import settings
from dspex.teleprompt import Ensemble
from dspex.testing import DummyLM


@pytest.fixture(autouse=True)
def clean_settings() -> Iterator[None]:
    yield
    settings.reset()


class Constant(dspex.Module):
    def __init__(self, value: Any) -> None:
        super().__init__()
        self.value = value

    def forward(self, **kwargs: Any) -> Any:
        return self.value


def test_ensemble_returns_every_output_or_their_reduction() -> None:
    programs = [Constant(i) for i in range(5)]
    assert Ensemble().compile(programs)() == [0, 1, 2, 3, 4]
    assert Ensemble(reduce_fn=lambda outs: sum(outs) / len(outs)).compile(programs)() == 2.0
    sampled = Ensemble(size=3).compile(programs)()
    assert len(sampled) == 3 and set(sampled) <= set(range(5))


def test_ensemble_with_majority_over_predictions() -> None:
    votes = [dspex.Prediction(answer=a) for a in ("x", "y", "x")]
    program = Ensemble(reduce_fn=dspex.majority).compile([Constant(v) for v in votes])
    assert program().answer == "x"


def test_ensemble_rejects_what_it_cannot_do() -> None:
    with pytest.raises(dspex.UsageError, match="deterministic=True"):
        Ensemble(deterministic=True)
    with pytest.raises(dspex.UsageError, match="needs at least 4 programs"):
        Ensemble(size=4).compile([Constant(1)])


class TwoStep(dspex.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = dspex.Predict("question -> answer")

    def forward(self, question: str) -> Any:
        return self.first(question=question)


def test_each_running_module_records_the_lm_calls_under_it() -> None:
    dspex.configure(lm=DummyLM([{"answer": "Paris"}] * 5))
    program = TwoStep()
    program(question="q")
    program.first(question="q")  # only the inner module is running
    assert len(program.history) == 1 and len(program.first.history) == 2
    assert program.history[0] is program.first.history[0]  # one shared entry
    assert program.history[0]["outputs"][0].startswith("[[ ## answer ## ]]")
    with dspex.context(disable_history=True):
        program(question="q")
    assert len(program.history) == 1


def test_module_history_is_bounded_by_max_history_size() -> None:
    dspex.configure(lm=DummyLM([{"answer": "Paris"}] * 10), max_history_size=3)
    program = dspex.Predict("question -> answer")
    for _ in range(6):
        program(question="q")
    assert len(program.history) == 3
