"""Evaluate and Module.batch lend an example's slot while its LM call waits out a 429.

End to end: ``dspex.start()``, ``Predict`` and an LM against a real loopback
fake OpenAI server whose first request answers 429 with ``Retry-After``.
With ``num_threads=1`` the waiting example parks, the other examples run in
its slot meanwhile, and its retry goes out only once it holds a slot again.
``runtime.spare_threads=0`` turns that off: the pool keeps strict order.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from runtime_helpers import SECRET, StartRuntime, echo_answers, make_lm
from wait_helpers import wait_until

import dspex
from dspex.programs import Module, Predict
from dspex.supervision import Lease, VirtualClock, current_lease
from dspex.testing import FakeOpenAI, Fault

pytestmark = pytest.mark.timeout(90)

WAIT = 10.0  # bound on every wait that should succeed

_QUESTION = re.compile(r"\[\[ ## question ## \]\]\n(\S+)")


def first_request_rate_limited(retry_after: float) -> Any:
    """A fake schedule: request 0 gets 429 with ``Retry-After``, the rest succeed."""

    def schedule(index: int) -> Fault | None:
        return Fault.rate_limit(retry_after) if index == 0 else None

    return schedule


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=SECRET, schedule=first_request_rate_limited(0.5)) as server:
        echo_answers(server)  # the answer is the question: exact match scores 1
        yield server


def make_devset(n: int) -> list[Any]:
    return [
        dspex.Example(question=f"q{i}", answer=f"q{i}").with_inputs("question") for i in range(n)
    ]


def exact(example: Any, prediction: Any, trace: Any = None) -> bool:
    return bool(example.answer == prediction.answer)


def questions_sent(fake: FakeOpenAI) -> list[str]:
    """The question of each request the fake received, in arrival order."""
    sent = []
    for request in fake.requests:
        match = _QUESTION.search(fake.messages_of(request.json)[-1]["content"])
        assert match is not None, request.json
        sent.append(match.group(1))
    return sent


def evaluate(lm: Any, devset: list[Any]) -> Any:
    with dspex.context(lm=lm):
        return dspex.Evaluate(devset=devset, metric=exact, num_threads=1)(
            dspex.Predict("question -> answer")
        )


# -- the waiting example lends its slot -------------------------------------------------


def test_evaluate_runs_other_examples_while_one_waits_out_retry_after(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    rt = start_runtime()
    lm = make_lm(fake, cache=False)
    result = evaluate(lm, make_devset(4))
    assert result.score == 100.0  # nothing lost, the throttled example included
    assert [score for _, _, score in result.results] == [True] * 4
    # q0's retry went out only after every other example had used its slot.
    assert questions_sent(fake) == ["q0", "q1", "q2", "q3", "q0"]
    assert fake.outcomes == {"rate_limit": 1, "ok": 4}
    assert fake.max_in_flight == 1  # the retry waited for a slot: never over num_threads
    stats = lm.handle(rt).stats()
    assert stats.retries == 1 and stats.throttled == 1


def test_batch_runs_other_examples_while_one_waits_out_retry_after(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    start_runtime()
    lm = make_lm(fake, cache=False)
    with dspex.context(lm=lm):
        predictions = dspex.Predict("question -> answer").batch(make_devset(4), num_threads=1)
    assert [p.answer for p in predictions] == ["q0", "q1", "q2", "q3"]
    assert questions_sent(fake) == ["q0", "q1", "q2", "q3", "q0"]
    assert fake.max_in_flight == 1


def test_spare_threads_zero_keeps_strict_order(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    start_runtime(runtime={"spare_threads": 0})
    lm = make_lm(fake, cache=False)
    result = evaluate(lm, make_devset(4))
    assert result.score == 100.0
    # No burst workers: q0 keeps its slot through the wait and retries first.
    assert questions_sent(fake) == ["q0", "q0", "q1", "q2", "q3"]
    assert fake.max_in_flight == 1


# -- the resumed retry waits for a slot, then goes before new examples ---------------------


class HoldsQ1(Module):
    """Predicts; q0 shares its pool lease with the test, q1 holds its slot until released."""

    def __init__(self) -> None:
        super().__init__()
        self.predict = Predict("question -> answer")
        self.leases: dict[str, Lease | None] = {}
        self.q1_answered = threading.Event()
        self.release_q1 = threading.Event()

    def forward(self, question: str) -> Any:
        self.leases[question] = current_lease()
        prediction = self.predict(question=question)
        if question == "q1":
            self.q1_answered.set()
            assert self.release_q1.wait(WAIT), "the test never released q1"
        return prediction


def test_a_resumed_retry_waits_for_the_busy_slot_then_goes_before_new_examples(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    clock = VirtualClock()
    start_runtime(clock=clock)
    fake.schedule = first_request_rate_limited(7)
    lm = make_lm(fake, cache=False)
    program = HoldsQ1()

    def run() -> Any:
        with dspex.context(lm=lm):
            return dspex.Evaluate(devset=make_devset(4), metric=exact, num_threads=1)(program)

    with ThreadPoolExecutor(1) as runner:
        evaluation = runner.submit(run)
        try:
            assert clock.wait_for_sleepers(1, timeout=WAIT)  # q0 waits out Retry-After
            assert program.q1_answered.wait(WAIT), "q1 did not start while q0 was parked"
            q0_lease = program.leases["q0"]
            assert q0_lease is not None and q0_lease.parked
            clock.advance(7)  # q0's wait is over; q1 still holds the only slot
            wait_until(lambda: "resuming" in repr(q0_lease), WAIT, "q0 asks for its slot")
            assert fake.request_count == 2  # no retry while q1 works
            assert q0_lease.parked
        finally:
            program.release_q1.set()
        result = evaluation.result(WAIT)
    assert result.score == 100.0
    # Freed by q1, the slot went to q0's retry, not to the next example.
    assert questions_sent(fake) == ["q0", "q1", "q0", "q2", "q3"]
    assert fake.max_in_flight == 1
