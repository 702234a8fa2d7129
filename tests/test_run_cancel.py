"""Cancelling a run ends the LM call it waits for, instead of waiting for the answer.

The fake answers after a minute, far longer than any wait here: a call that
returns at all within ``WAIT`` was woken by the cancel, not by its answer.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from runtime_helpers import SECRET, StartRuntime, echo_answers, make_lm
from wait_helpers import wait_until

import dspex
from dspex.actors._program_run import CancelEvent, RunContext, activate_run
from dspex.errors import ProgramError
from dspex.testing import FakeOpenAI

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0  # bound on every wait that should succeed
SLOW = 60.0  # the fake's latency: no answer arrives during a test


@pytest.fixture
def slow_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=SECRET, latency=SLOW) as server:
        echo_answers(server)
        yield server


def test_cancel_event_runs_its_wakers_once_and_at_once_when_already_set() -> None:
    event = CancelEvent()
    woken: list[str] = []
    event.add_waker(lambda: woken.append("a"))
    removed = lambda: woken.append("removed")  # noqa: E731
    event.add_waker(removed)
    event.discard_waker(removed)
    event.set()
    event.set()  # wakers run once
    assert woken == ["a"] and event.is_set()
    event.add_waker(lambda: woken.append("late"))  # already set: runs at once
    assert woken == ["a", "late"]


def test_a_failing_waker_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    event = CancelEvent()
    woken: list[str] = []

    def broken() -> None:
        raise RuntimeError("waker bug")

    event.add_waker(broken)
    event.add_waker(lambda: woken.append("ok"))
    with caplog.at_level(logging.ERROR, logger="dspex.runtime"):
        event.set()
    assert woken == ["ok"]
    assert "cancel waker failed" in caplog.text


def test_cancelling_a_run_ends_the_lm_call_it_waits_for(
    start_runtime: StartRuntime, slow_fake: FakeOpenAI
) -> None:
    start_runtime()
    lm = make_lm(slow_fake)
    run = RunContext(label="cancel-me")
    assert isinstance(run.cancelled, CancelEvent)  # the default for every run

    def call() -> Any:
        activate_run(run)
        return lm(messages=[{"role": "user", "content": "anyone there?"}])

    with ThreadPoolExecutor(1) as caller:
        future = caller.submit(contextvars.copy_context().run, call)
        wait_until(lambda: slow_fake.in_flight == 1, WAIT, "the request reaches the fake")
        assert not future.done()
        run.cancelled.set()
        error = future.exception(timeout=WAIT)
    assert isinstance(error, ProgramError)
    assert "cancel-me" in str(error) and "cancelled" in str(error)
    stats = lm.handle().stats()
    assert stats.failures == 0  # a cancel is not the provider's failure


def test_a_plain_event_still_cancels_between_calls_but_not_during_one(
    start_runtime: StartRuntime, slow_fake: FakeOpenAI
) -> None:
    # Owners that pass their own threading.Event keep the old, cooperative meaning.
    start_runtime()
    lm = make_lm(slow_fake, timeout=SLOW * 2)
    run = RunContext(label="plain", cancelled=threading.Event())
    run.cancelled.set()

    def call() -> Any:
        activate_run(run)
        run.check_deadline()
        return lm(messages=[{"role": "user", "content": "never sent"}])

    with pytest.raises(ProgramError, match="cancelled"):
        contextvars.copy_context().run(call)
    assert slow_fake.request_count == 0


class _FailFirst(dspex.Module):
    """Example "boom" fails at once; every other example asks the (slow) LM."""

    def __init__(self) -> None:
        super().__init__()
        self.predict = dspex.Predict("question -> answer")

    def forward(self, question: str) -> Any:
        if question == "boom":
            raise ValueError("boom")
        return self.predict(question=question)


def test_max_errors_ends_the_examples_still_waiting_on_the_lm(
    start_runtime: StartRuntime, slow_fake: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    start_runtime()
    questions = ["q1", "q2", "q3", "boom"]
    devset = [dspex.Example(question=q, answer=q).with_inputs("question") for q in questions]
    program = _FailFirst()
    started = threading.Event()

    def metric(example: Any, prediction: Any, trace: Any = None) -> bool:
        return bool(example.answer == prediction.answer)

    # The failing example is dispatched last, once the others wait on the LM.
    program.predict.lm = make_lm(slow_fake)
    original_forward = program.forward

    def forward(question: str) -> Any:
        if question == "boom":
            wait_until(lambda: slow_fake.in_flight == 3, WAIT, "three calls in flight")
            started.set()
        return original_forward(question=question)

    program.forward = forward  # type: ignore[method-assign]
    evaluate = dspex.Evaluate(devset=devset, metric=metric, num_threads=4, max_errors=1)
    with caplog.at_level(logging.WARNING):
        result = evaluate(program)
    assert started.is_set()
    assert result.stopped_early
    # The waiting examples ended when the evaluation stopped: no worker was
    # left stuck in an LM call and abandoned.
    assert "abandoning its worker" not in caplog.text
    assert "still running" not in caplog.text
