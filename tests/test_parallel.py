"""``Parallel``: (module, example) pairs on the Evaluate engine, DSPy's call conventions."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from dspex.errors import UsageError
from dspex.programs import Example, Module, Parallel, Predict, context
from dspex.testing import DummyLM

pytestmark = pytest.mark.usefixtures("clean_settings")


class Echo(Module):
    """Returns what it was called with (no LM), recording the thread that ran it."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.threads.add(threading.current_thread().name)
        return (args, kwargs)


class Boom(Module):
    def forward(self, **kwargs: Any) -> Any:
        raise ValueError(f"bad input {kwargs}")


def test_results_follow_input_order_for_every_example_kind() -> None:
    echo = Echo()
    pairs = [
        (echo, Example(q="ex", label="hidden").with_inputs("q")),
        (echo, {"q": "dict"}),
        (echo, ("pos", 2)),
    ]
    results = Parallel(num_threads=3, disable_progress_bar=True)(pairs)
    assert results == [((), {"q": "ex"}), ((), {"q": "dict"}), (("pos", 2), {})]
    assert echo.threads and threading.current_thread().name not in echo.threads


def test_access_examples_false_passes_the_example_itself() -> None:
    echo = Echo()
    example = Example(q="whole")
    [result] = Parallel(access_examples=False)([(echo, example)])
    assert result == ((example,), {})


def test_pairs_run_at_once_and_see_the_callers_context() -> None:
    barrier = threading.Barrier(3, timeout=10)
    lm = DummyLM(
        {"Spain": {"answer": "Madrid"}, "3 * 4": {"answer": "12"}, "Hamlet": {"answer": "S"}}
    )

    class Waits(Module):
        def __init__(self) -> None:
            super().__init__()
            self.qa = Predict("question -> answer")

        def forward(self, question: str) -> Any:
            barrier.wait()  # all three must be running together to pass
            return self.qa(question=question)

    program = Waits()
    questions = ["capital of Spain?", "What is 3 * 4?", "Who wrote Hamlet?"]
    with context(lm=lm):
        results = Parallel(num_threads=3)([(program, {"question": q}) for q in questions])
    assert [r.answer for r in results] == ["Madrid", "12", "S"]
    assert lm.calls == 3


def test_failures_are_none_and_can_be_returned_with_their_errors() -> None:
    echo, boom = Echo(), Boom()
    pairs = [(echo, {"x": 1}), (boom, {"x": 2}), (echo, {"x": 3}), (boom, {"x": 4})]
    parallel = Parallel(num_threads=2, max_errors=10, return_failed_examples=True)
    results, failed, errors = parallel(pairs)
    assert results == [((), {"x": 1}), None, ((), {"x": 3}), None]
    assert failed == [{"x": 2}, {"x": 4}]
    assert [type(e) for e in errors] == [ValueError, ValueError]
    assert "bad input {'x': 2}" in str(errors[0])
    assert parallel.failed_examples == failed  # the last call's, not accumulated


def test_max_errors_stops_early() -> None:
    started: list[int] = []

    class Counted(Module):
        def forward(self, i: int) -> Any:
            started.append(i)
            raise RuntimeError(f"fail {i}")

    pairs = [(Counted(), {"i": i}) for i in range(20)]
    results = Parallel(num_threads=1, max_errors=2)(pairs)
    assert results == [None] * 20
    assert 2 <= len(started) < 20


def test_a_nested_parallel_takes_a_list_of_pairs() -> None:
    echo = Echo()
    inner = Parallel(num_threads=2)
    outer_results = Parallel(num_threads=2)(
        [(inner, [(echo, {"a": 1}), (echo, {"a": 2})]), (echo, {"b": 3})]
    )
    assert outer_results == [[((), {"a": 1}), ((), {"a": 2})], ((), {"b": 3})]


def test_parallel_inside_a_modules_forward() -> None:
    class Twice(Module):
        def __init__(self) -> None:
            super().__init__()
            self.predictor = Predict("question -> answer")
            self.parallel = Parallel(num_threads=2)

        def forward(self, question: str) -> Any:
            inputs = {"question": question}
            return self.parallel([(self.predictor, inputs), (self.predictor, inputs)])

    lm = DummyLM([{"answer": "x"}, {"answer": "y"}])
    with context(lm=lm):
        program = Twice()
        assert sorted(p.answer for p in program(question="q")) == ["x", "y"]
    assert [name for name, _ in program.named_predictors()] == ["predictor"]
    assert isinstance(program.deepcopy().parallel, Parallel)


def test_num_threads_comes_from_the_call_the_instance_or_settings() -> None:
    with pytest.raises(UsageError, match="num_threads=0"):
        Parallel(num_threads=0)([(Echo(), {"a": 1})])
    with pytest.raises(UsageError, match="num_threads=0"):
        Parallel()([(Echo(), {"a": 1})], num_threads=0)
    assert Parallel()([(Echo(), {"a": 1})], num_threads=1) == [((), {"a": 1})]


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ("qa", "list of \\(module, example\\) pairs"),
        ([(Echo(),)], "each item must be a \\(module, example\\) pair"),
        ([("not callable", {"a": 1})], "not a module"),
        ([(Echo(), Example(q="x"))], "with_inputs"),
        ([(Echo(), [1, 2])], "only for a nested Parallel"),
        ([(Echo(), 42)], "has a int example"),
    ],
)
def test_bad_pairs_raise_before_anything_runs(pairs: Any, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        Parallel()(pairs)
