"""Ensemble: its programs run at once on dspex's pool, outputs in order, reduced."""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest

import dspex
from dspex.teleprompt import Ensemble
from dspex.testing import DummyLM

pytestmark = pytest.mark.usefixtures("clean_settings")


class Constant(dspex.Module):
    def __init__(self, output: Any) -> None:
        super().__init__()
        self.output = output

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.output


class Echo(dspex.Module):
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return (args, kwargs)


def test_outputs_come_in_program_order_and_are_reduced() -> None:
    programs = [Constant(i) for i in range(5)]
    assert Ensemble().compile(programs)() == [0, 1, 2, 3, 4]
    assert Ensemble(reduce_fn=lambda outs: sum(outs) / len(outs)).compile(programs)() == 2.0
    # positional and keyword arguments reach every program
    assert Ensemble().compile([Echo(), Echo()])(1, x=2) == [((1,), {"x": 2})] * 2


def test_size_samples_programs_per_call() -> None:
    programs = [Constant(i) for i in range(10)]
    ensembled = Ensemble(size=3).compile(programs)
    random.seed(7)
    first = ensembled()
    random.seed(7)
    assert ensembled() == first  # the global random module, as DSPy
    assert len(first) == 3 and len(set(first)) == 3
    assert any(ensembled() != first for _ in range(20))


def test_programs_run_at_the_same_time() -> None:
    barrier = threading.Barrier(3, timeout=10)

    class Meets(dspex.Module):
        def forward(self) -> bool:
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                return False
            return True

    assert Ensemble().compile([Meets(), Meets(), Meets()])() == [True, True, True]


def test_majority_of_predictions() -> None:
    lm = DummyLM({"first": {"answer": "Paris"}, "second": {"answer": "Lyon"}})
    dspex.configure(lm=lm)
    programs = [
        dspex.Predict(dspex.Signature("question -> answer", "first")),
        dspex.Predict(dspex.Signature("question -> answer", "second")),
        dspex.Predict(dspex.Signature("question -> answer", "first again")),
    ]
    ensembled = Ensemble(reduce_fn=dspex.majority).compile(programs)
    with dspex.context(trace=[]):
        assert ensembled(question="capital of France?").answer == "Paris"
        # each program's predictor call is in the caller's trace, as in a sequential loop
        assert len(dspex.settings.trace) == 3
    assert len(lm.history) == 3


def test_a_failing_program_fails_the_call_with_the_first_error_in_order() -> None:
    class Fails(dspex.Module):
        def __init__(self, message: str) -> None:
            super().__init__()
            self.message = message

        def forward(self) -> Any:
            raise ValueError(self.message)

    ensembled = Ensemble().compile([Constant(1), Fails("first"), Fails("second")])
    with pytest.raises(ValueError, match="first"):
        ensembled()


def test_arguments_are_checked() -> None:
    with pytest.raises(AssertionError, match="example hashing for deterministic ensemble"):
        Ensemble(deterministic=True)  # DSPy asserts; dspex's error is both
    with pytest.raises(dspex.UsageError, match="deterministic=False"):
        Ensemble(deterministic=True)
    with pytest.raises(dspex.UsageError, match=r"size=0"):
        Ensemble(size=0)
    with pytest.raises(dspex.UsageError, match="reduce_fn"):
        Ensemble(reduce_fn="majority")  # type: ignore[arg-type]
    with pytest.raises(dspex.UsageError, match="at least 3 programs"):
        Ensemble(size=3).compile([Constant(1)])
    with pytest.raises(dspex.UsageError, match=r"programs\[1\]"):
        Ensemble().compile([Constant(1), "qa"])
    with pytest.raises(dspex.UsageError, match="at least one"):
        Ensemble().compile([])
