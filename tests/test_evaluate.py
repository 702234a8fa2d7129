"""Evaluate and Module.batch: scores, order, failures, limits, cancellation, progress."""

from __future__ import annotations

import io
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import dspex.programs as dp
from dspex.actors._program_run import current_run
from dspex.errors import CallTimeoutError, ProgramError, UsageError
from dspex.programs import Evaluate, EvaluationResult, Example, Module, Prediction
from dspex.testing import DummyLM


def make_devset(n: int) -> list[Example]:
    return [Example(question=f"q{i}", answer=f"A{i}").with_inputs("question") for i in range(n)]


def exact(example: Any, prediction: Any, trace: Any = None) -> bool:
    return bool(example.answer == prediction.answer)


class Program(Module):
    """Answers ``A<i>`` for ``q<i>``; ``behave(i)`` may raise, block or alter the answer."""

    def __init__(self, behave: Callable[[int], str | None] | None = None) -> None:
        super().__init__()
        self.behave = behave
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def forward(self, question: str) -> Prediction:
        i = int(question[1:])
        with self.lock:
            self.calls.append(i)
        answer = self.behave(i) if self.behave is not None else None
        return Prediction(answer=answer if answer is not None else f"A{i}")


# -- scores and order --------------------------------------------------------------------


def test_score_and_results_in_devset_order_with_predict_and_dummy_lm() -> None:
    # Zero-padded questions: DummyLM matches by substring, and "q1" is in "q10".
    devset = [
        Example(question=f"q{i:02d}", answer=f"A{i}").with_inputs("question") for i in range(12)
    ]
    answers = {f"q{i:02d}": {"answer": f"A{i}" if i % 4 else "nope"} for i in range(12)}
    lm = DummyLM(answers)
    qa = dp.Predict("question -> answer")
    # The LM comes from a context override: it must reach the pool's workers.
    with dp.context(lm=lm):
        result = Evaluate(devset=devset, metric=exact, num_threads=4)(qa)
    assert isinstance(result, EvaluationResult)
    assert result.score == 75.0
    assert [ex for ex, _, _ in result.results] == devset
    assert [score for _, _, score in result.results] == [i % 4 != 0 for i in range(12)]
    assert all(isinstance(pred, Prediction) for _, pred, _ in result.results)
    assert result.errors == []
    assert not result.stopped_early and not result.interrupted
    assert len(lm.history) == 12


def test_result_is_a_prediction_with_dspys_two_fields() -> None:
    result = Evaluate(devset=make_devset(3), metric=exact, num_threads=2)(Program())
    assert result.keys() == ["score", "results"]
    assert float(result) == 100.0
    assert "score=100.0" in repr(result)


def test_score_is_a_percent_rounded_to_two_decimals() -> None:
    program = Program(lambda i: "x" if i == 0 else None)
    result = Evaluate(devset=make_devset(3), metric=exact)(program)
    assert result.score == 66.67


def test_metric_may_return_floats_or_predictions_with_score() -> None:
    def half(example: Any, prediction: Any) -> float:
        return 0.5

    def as_prediction(example: Any, prediction: Any) -> Prediction:
        return Prediction(score=0.25)

    assert Evaluate(devset=make_devset(4), metric=half)(Program()).score == 50.0
    result = Evaluate(devset=make_devset(4), metric=as_prediction)(Program())
    assert result.score == 25.0


def test_call_arguments_override_the_constructor() -> None:
    evaluate = Evaluate(devset=make_devset(2), metric=exact)
    result = evaluate(Program(), devset=make_devset(4), metric=lambda e, p: 0.0, num_threads=2)
    assert len(result.results) == 4
    assert result.score == 0.0


def test_empty_devset_scores_zero() -> None:
    result = Evaluate(devset=[], metric=exact)(Program())
    assert result.score == 0.0 and result.results == []


# -- failures ------------------------------------------------------------------------------


def test_failing_program_gets_failure_score_and_keeps_its_error() -> None:
    def behave(i: int) -> None:
        if i in (1, 3):
            raise ValueError(f"bad input {i}")

    result = Evaluate(devset=make_devset(5), metric=exact, failure_score=0.5, num_threads=3)(
        Program(behave)
    )
    assert [index for index, _ in result.errors] == [1, 3]
    assert all(isinstance(err, ValueError) for _, err in result.errors)
    assert "bad input 3" in str(result.errors[1][1])
    _, prediction, score = result.results[1]
    assert isinstance(prediction, Prediction) and prediction.keys() == []  # DSPy's empty one
    assert score == 0.5
    assert result.score == 80.0  # (3 + 0.5 + 0.5) / 5
    assert not result.stopped_early


def test_metric_raising_keeps_the_prediction_and_the_error() -> None:
    def metric(example: Any, prediction: Any) -> bool:
        if example.question == "q2":
            raise KeyError("no label")
        return True

    result = Evaluate(devset=make_devset(4), metric=metric, max_errors=10)(Program())
    assert [index for index, _ in result.errors] == [2]
    _, prediction, score = result.results[2]
    assert prediction.answer == "A2"
    assert score == 0.0
    assert result.score == 75.0


def test_metric_returning_none_is_an_error_that_names_the_fix() -> None:
    result = Evaluate(devset=make_devset(2), metric=lambda e, p: None)(Program())
    assert len(result.errors) == 2
    error = result.errors[0][1]
    assert isinstance(error, UsageError)
    assert "return a bool" in str(error)


def test_max_errors_stops_early_and_returns_the_partial_result(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def always_fail(i: int) -> None:
        raise RuntimeError("provider down")

    program = Program(always_fail)
    with caplog.at_level(logging.WARNING, logger="dspex.programs"):
        result = Evaluate(devset=make_devset(20), metric=exact, max_errors=3, num_threads=1)(
            program
        )
    assert result.stopped_early
    assert len(result.results) == 3 and len(result.errors) == 3
    assert program.calls == [0, 1, 2]  # nothing submitted after the stop
    assert result.score == 0.0
    assert any("max_errors=3" in record.getMessage() for record in caplog.records)


def test_reaching_max_errors_on_the_last_example_is_not_an_early_stop() -> None:
    program = Program(lambda i: (_ for _ in ()).throw(RuntimeError("x")) if i == 2 else None)
    result = Evaluate(devset=make_devset(3), metric=exact, max_errors=1, num_threads=1)(program)
    assert len(result.results) == 3
    assert not result.stopped_early


def test_stopping_cancels_the_examples_still_running() -> None:
    started = [threading.Event() for _ in range(3)]
    saw_cancel: list[int] = []

    def behave(i: int) -> None:
        if i == 3:
            for event in started:
                assert event.wait(5)
            raise RuntimeError("fatal")
        run = current_run()
        assert run is not None
        started[i].set()
        if run.cancelled.wait(5):
            saw_cancel.append(i)
        run.check_deadline()

    result = Evaluate(devset=make_devset(4), metric=exact, max_errors=1, num_threads=4)(
        Program(behave)
    )
    assert result.stopped_early
    assert [index for index, _ in result.errors] == [3]
    assert len(result.results) == 1
    assert sorted(saw_cancel) == [0, 1, 2]


# -- per-example timeout -----------------------------------------------------------------


def test_timeout_cancels_an_example_cooperatively_at_its_deadline() -> None:
    release = threading.Event()

    def behave(i: int) -> None:
        if i == 1:
            run = current_run()
            assert run is not None and run.deadline is not None
            while not release.wait(0.01):  # stands for "between LM calls"
                run.check_deadline()

    try:
        result = Evaluate(devset=make_devset(3), metric=exact, timeout=0.3, num_threads=3)(
            Program(behave)
        )
    finally:
        release.set()
    assert [index for index, _ in result.errors] == [1]
    error = result.errors[0][1]
    assert isinstance(error, ProgramError)
    assert "deadline" in str(error)
    assert result.score == pytest.approx(66.67)


def test_timeout_backstop_fails_an_example_that_never_checks() -> None:
    release = threading.Event()

    def behave(i: int) -> None:
        if i == 0:
            release.wait(30)  # ignores its deadline entirely

    try:
        result = Evaluate(devset=make_devset(2), metric=exact, timeout=0.2, num_threads=2)(
            Program(behave)
        )
    finally:
        release.set()  # lets the abandoned worker thread finish
    assert [index for index, _ in result.errors] == [0]
    assert isinstance(result.errors[0][1], CallTimeoutError)
    assert result.results[1][2] is True


# -- Ctrl-C ------------------------------------------------------------------------------


def test_keyboard_interrupt_returns_the_partial_result(tmp_path: Path) -> None:
    calls = 0

    def metric(example: Any, prediction: Any) -> bool:
        nonlocal calls
        calls += 1
        if calls == 4:
            raise KeyboardInterrupt
        return True

    journal = tmp_path / "eval.jsonl"
    evaluate = Evaluate(devset=make_devset(10), metric=metric, num_threads=1, journal=journal)
    result = evaluate(Program(), on_interrupt="return")
    assert result.interrupted
    assert [ex.question for ex, _, _ in result.results] == ["q0", "q1", "q2"]
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [line["index"] for line in lines] == [0, 1, 2]


def test_keyboard_interrupt_raises_by_default_after_the_journal(tmp_path: Path) -> None:
    calls = 0

    def metric(example: Any, prediction: Any) -> bool:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt
        return True

    journal = tmp_path / "eval.jsonl"
    with pytest.raises(KeyboardInterrupt):
        Evaluate(devset=make_devset(10), metric=metric, num_threads=1, journal=journal)(Program())
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [line["index"] for line in lines] == [0, 1]
    with pytest.raises(UsageError, match="on_interrupt='later'"):
        Evaluate(devset=make_devset(1), metric=metric, on_interrupt="later")  # type: ignore[arg-type]


def test_sigint_cancels_running_examples_and_returns_what_finished(tmp_path: Path) -> None:
    assert threading.current_thread() is threading.main_thread()
    main = threading.main_thread().ident
    assert main is not None

    def behave(i: int) -> None:
        if i == 5:
            run = current_run()
            assert run is not None
            signal.pthread_kill(main, signal.SIGINT)
            assert run.cancelled.wait(5)  # Ctrl-C cancels the running examples first
            run.check_deadline()

    journal = tmp_path / "eval.jsonl"
    evaluate = Evaluate(
        devset=make_devset(50), metric=exact, num_threads=2, journal=journal, on_interrupt="return"
    )
    result = evaluate(Program(behave))
    assert result.interrupted
    assert 4 <= len(result.results) < 50  # example 5 starts once 4 of 0..4 are done
    assert 5 not in {int(ex.question[1:]) for ex, _, _ in result.results}
    journaled = {json.loads(line)["index"] for line in journal.read_text().splitlines()}
    assert journaled == {int(ex.question[1:]) for ex, _, _ in result.results}
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# -- progress ------------------------------------------------------------------------------


def test_progress_bar_shows_the_running_score(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    program = Program(lambda i: "wrong" if i == 1 else None)
    Evaluate(devset=make_devset(3), metric=exact, display_progress=True, num_threads=1)(program)
    text = err.getvalue()
    assert "Average Metric: 2.00 / 3 (66.7%)" in text
    assert "3/3" in text


def test_progress_is_quiet_when_stderr_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    Evaluate(devset=make_devset(3), metric=exact)(Program())
    assert err.getvalue() == ""


# -- arguments -------------------------------------------------------------------------------


def test_bad_arguments_raise_errors_that_name_the_fix() -> None:
    with pytest.raises(UsageError, match="metric is required"):
        Evaluate(devset=make_devset(1))(Program())
    with pytest.raises(UsageError, match=r"devset\[1\] has no input fields"):
        Evaluate(devset=[make_devset(1)[0], Example(question="q")], metric=exact)(Program())
    with pytest.raises(UsageError, match="num_threads=0"):
        Evaluate(devset=make_devset(1), metric=exact, num_threads=0)(Program())
    with pytest.raises(UsageError, match="timeout=-1"):
        Evaluate(devset=make_devset(1), metric=exact, timeout=-1)


def test_deprecated_dspy_arguments_are_accepted_with_a_warning() -> None:
    with pytest.warns(DeprecationWarning, match="return_all_scores"):
        evaluate = Evaluate(devset=make_devset(2), metric=exact, return_all_scores=True)
    assert evaluate(Program()).score == 100.0


def test_table_and_saved_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results.json"
    csv_out = tmp_path / "results.csv"
    Evaluate(devset=make_devset(3), metric=exact, display_table=2)(
        Program(), save_as_json=str(out), save_as_csv=str(csv_out)
    )
    rows = json.loads(out.read_text())
    assert rows[0] == {"question": "q0", "example_answer": "A0", "pred_answer": "A0", "exact": True}
    assert csv_out.read_text().splitlines()[0] == "question,example_answer,pred_answer,exact"
    printed = capsys.readouterr().out
    assert "pred_answer" in printed and "1 more rows" in printed


# -- Module.batch ----------------------------------------------------------------------------


def test_batch_returns_predictions_in_order_with_none_for_failures() -> None:
    def behave(i: int) -> None:
        if i % 3 == 2:
            raise ValueError(f"cannot answer {i}")

    program = Program(behave)
    examples = make_devset(9)
    results = program.batch(examples, num_threads=4, max_errors=100)
    assert [r.answer if r is not None else None for r in results] == [
        None if i % 3 == 2 else f"A{i}" for i in range(9)
    ]
    results, failed, exceptions = program.batch(
        examples, num_threads=4, max_errors=100, return_failed_examples=True
    )
    assert failed == [examples[2], examples[5], examples[8]]
    assert [str(e) for e in exceptions] == ["cannot answer 2", "cannot answer 5", "cannot answer 8"]
    assert results[0].answer == "A0"


def test_batch_accepts_dicts_and_stops_at_max_errors() -> None:
    program = Program(lambda i: (_ for _ in ()).throw(RuntimeError("down")) if i > 0 else None)
    results = program.batch([{"question": f"q{i}"} for i in range(10)], num_threads=1, max_errors=2)
    assert len(results) == 10
    assert results[0].answer == "A0"
    assert results[1:] == [None] * 9
    assert program.calls == [0, 1, 2]


def test_batch_reraises_keyboard_interrupt() -> None:
    def behave(i: int) -> None:
        if i == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Program(behave).batch(make_devset(3), num_threads=1)


def test_batch_progress_counts_processed_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(err, "isatty", lambda: True)  # a terminal: the bar shows by default
    Program().batch(make_devset(3), num_threads=1)
    assert "Processed 3 / 3 examples" in err.getvalue()
    quiet = io.StringIO()
    monkeypatch.setattr(sys, "stderr", quiet)
    monkeypatch.setattr(quiet, "isatty", lambda: True)
    Program().batch(make_devset(3), disable_progress_bar=True)
    assert quiet.getvalue() == ""


def test_the_evaluation_pool_runs_under_the_coordinators_supervisor() -> None:
    import threading as _threading

    import dspex
    from dspex.supervision import which_children

    started, release = _threading.Event(), _threading.Event()

    class Gate(dspex.Module):
        def forward(self, question: str) -> dspex.Prediction:
            started.set()
            release.wait(10)
            return dspex.Prediction(answer=question)

    devset = [dspex.Example(question="q", answer="q").with_inputs("question")]
    seen: list[list[str]] = []
    with dspex.start() as rt:
        coordinators = rt.whereis("coordinators")

        def peek() -> None:
            assert started.wait(10)
            seen.append([c.id for c in which_children(coordinators, timeout=5)])
            release.set()

        peeker = _threading.Thread(target=peek)
        peeker.start()
        result = dspex.Evaluate(devset=devset, metric=lambda e, p, t=None: 1.0, num_threads=1)(
            Gate()
        )
        peeker.join(10)
        after = [c.id for c in which_children(coordinators, timeout=5)]
    assert result.score == 100.0
    assert len(seen) == 1 and len(seen[0]) == 1  # the pool, while the example ran
    assert after == []  # a temporary child, gone once the evaluation ended


def test_each_example_counts_as_a_program_run_in_the_metrics() -> None:
    import dspex

    class Echo(dspex.Module):
        def forward(self, question: str) -> dspex.Prediction:
            if question == "bad":
                raise ValueError("bad example")
            return dspex.Prediction(answer=question)

    devset = [
        dspex.Example(question=q, answer=q).with_inputs("question") for q in ("a", "b", "bad")
    ]
    with dspex.start() as rt:
        result = dspex.Evaluate(devset=devset, metric=lambda e, p, t=None: 1.0, num_threads=2)(
            Echo()
        )
        runs = rt.metrics()["runs"]
    assert len(result.errors) == 1
    assert (runs["started"], runs["succeeded"], runs["failed"]) == (3, 2, 1)
    assert runs["errors"] == {"ValueError": 1}
