"""``aforward`` of the built-in composite modules (BestOfN, Refine, Parallel, ...): awaited
on the caller's loop with no thread per call, and the same answers as ``forward`` (issue 11)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from runtime_helpers import SECRET, StartRuntime, make_lm

import dspex
from dspex.errors import ProgramError
from dspex.programs import (
    BestOfN,
    ChainOfThought,
    Example,
    Module,
    MultiChainComparison,
    Parallel,
    Predict,
    Prediction,
    Refine,
    configure,
    context,
)
from dspex.testing import DummyLM, FakeOpenAI

pytestmark = pytest.mark.usefixtures("clean_settings")

CALLS = 200


def one_word(args: dict[str, Any], pred: Any) -> float:
    return 1.0 if len(pred.answer.split()) == 1 else 0.0


# -- the same answers as forward -------------------------------------------------------------


class TwoStep(Module):
    def __init__(self) -> None:
        super().__init__()
        self.draft = Predict("question -> draft")
        self.polish = Predict("draft -> answer")

    def forward(self, question: str) -> Any:
        return self.polish(draft=self.draft(question=question).draft)


class Flaky(Module):
    """Fails on the rollouts listed, answers otherwise."""

    def __init__(self, fail_on: set[int]) -> None:
        super().__init__()
        self.qa = Predict("question -> answer")
        self.fail_on = fail_on

    def forward(self, question: str) -> Any:
        if self.qa.lm.kwargs["rollout_id"] in self.fail_on:
            raise RuntimeError(f"attempt {self.qa.lm.kwargs['rollout_id']} broke")
        return self.qa(question=question)


def feedback_reward(args: Any, pred: Any) -> Prediction:
    ok = len(pred.answer.split()) == 1
    return Prediction(score=float(ok), feedback="" if ok else "Use exactly one word.")


SCENARIOS: dict[str, tuple[list[dict[str, Any]], Callable[[], Module]]] = {
    "best-of-n stops at the threshold": (
        [{"answer": "two words"}, {"answer": "Brussels"}, {"answer": "never"}],
        lambda: BestOfN(Predict("question -> answer"), N=3, reward_fn=one_word, threshold=1.0),
    ),
    "best-of-n keeps the best reward": (
        [{"answer": "a b c"}, {"answer": "one two"}, {"answer": "x y z w"}],
        lambda: BestOfN(
            Predict("question -> answer"),
            N=3,
            reward_fn=lambda a, p: {"a b c": 0.3, "one two": 0.8, "x y z w": 0.5}[p.answer],
            threshold=1.0,
        ),
    ),
    "failed attempts are skipped": (
        [{"answer": "ok"}],
        lambda: BestOfN(Flaky({0, 1}), N=3, reward_fn=one_word, threshold=1.0),
    ),
    "refine asks the critic": (
        [
            {"answer": "It is Brussels"},
            {"discussion": "too long", "advice": {"self": "Answer with one word."}},
            {"answer": "Brussels"},
        ],
        lambda: Refine(Predict("question -> answer"), N=3, reward_fn=one_word, threshold=1.0),
    ),
    "refine uses the reward's feedback": (
        [{"reasoning": "r", "answer": "two words"}, {"reasoning": "r", "answer": "one"}],
        lambda: Refine(
            ChainOfThought("question -> answer"), N=3, reward_fn=feedback_reward, threshold=1
        ),
    ),
    "refine advises each predictor": (
        [
            {"draft": "d1"},
            {"answer": "too long answer"},
            {"discussion": "d", "advice": {"draft": "Be brief."}},
            {"draft": "d2"},
            {"answer": "good"},
        ],
        lambda: Refine(TwoStep(), N=2, reward_fn=one_word, threshold=1),
    ),
}


def _run(answers: list[dict[str, Any]], build: Callable[[], Module], awaited: bool) -> Any:
    lm = DummyLM(answers)
    configure(lm=lm)
    trace: list[Any] = []
    module = build()
    with context(trace=trace):
        if awaited:
            pred = asyncio.run(module.acall(question="Capital of Belgium?"))
        else:
            pred = module(question="Capital of Belgium?")
    sent = [
        (entry["messages"][-1]["content"], entry["params"].get("rollout_id"))
        for entry in lm.history
    ]
    return pred.answer, sent, [(inputs, dict(out)) for _, inputs, out in trace]


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_acall_answers_and_asks_exactly_as_the_call(name: str) -> None:
    answers, build = SCENARIOS[name]
    called = _run(answers, build, awaited=False)
    awaited = _run(answers, build, awaited=True)
    assert awaited == called
    assert called[1]  # the scenario did ask the LM


def test_acall_reraises_past_fail_count_like_the_call() -> None:
    configure(lm=DummyLM([{"answer": "ok"}]))
    best = BestOfN(Flaky({0, 1}), N=3, reward_fn=one_word, threshold=1.0, fail_count=1)
    with pytest.raises(RuntimeError, match="attempt 1 broke"):
        asyncio.run(best.acall(question="?"))


def test_an_async_reward_and_a_reward_module_are_awaited() -> None:
    lm = DummyLM([{"answer": "two words"}, {"answer": "one"}])
    configure(lm=lm)
    seen: list[str] = []

    async def reward(args: Any, pred: Any) -> float:
        seen.append(pred.answer)
        return one_word(args, pred)

    best = BestOfN(Predict("question -> answer"), N=3, reward_fn=reward, threshold=1.0)
    assert asyncio.run(best.acall(question="?")).answer == "one"
    assert seen == ["two words", "one"]

    class Judge(Module):
        def forward(self, args: Any, pred: Any) -> float:
            raise AssertionError("the sync forward of a reward module is not used by acall")

        async def aforward(self, args: Any, pred: Any) -> float:
            return 1.0

    configure(lm=DummyLM([{"answer": "whatever it says"}]))
    best = BestOfN(Predict("question -> answer"), N=3, reward_fn=Judge(), threshold=1.0)
    assert asyncio.run(best.acall(question="?")).answer == "whatever it says"


# -- Parallel.aforward ---------------------------------------------------------------------


class Echo(Module):
    async def aforward(self, *args: Any, **kwargs: Any) -> Any:
        return (args, kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return (args, kwargs)


class Boom(Module):
    def forward(self, **kwargs: Any) -> Any:
        raise ValueError(f"bad input {kwargs}")


def test_parallel_acall_follows_the_calls_conventions() -> None:
    echo = Echo()
    pairs: list[Any] = [
        (echo, Example(x=1, y=2).with_inputs("x")),
        (echo, {"x": 3}),
        (echo, (4, 5)),
        (lambda v: v * 2, (21,)),  # no acall: runs in dspex's async pool
        (Parallel(), [(echo, {"z": 6})]),
    ]
    parallel = Parallel(num_threads=2)
    assert asyncio.run(parallel.acall(pairs)) == parallel(pairs)
    assert asyncio.run(parallel.acall(pairs))[3] == 42


def test_parallel_acall_failures_and_max_errors() -> None:
    echo, boom = Echo(), Boom()
    pairs = [(echo, {"x": 1}), (boom, {"x": 2}), (echo, {"x": 3}), (boom, {"x": 4})]
    parallel = Parallel(num_threads=2, max_errors=10, return_failed_examples=True)
    results, failed, errors = asyncio.run(parallel.acall(pairs))
    assert results == [((), {"x": 1}), None, ((), {"x": 3}), None]
    assert failed == [{"x": 2}, {"x": 4}]
    assert [str(e) for e in errors] == ["bad input {'x': 2}", "bad input {'x': 4}"]

    started: list[int] = []

    class Counted(Module):
        async def aforward(self, i: int) -> Any:
            started.append(i)
            raise RuntimeError(f"fail {i}")

    many = [(Counted(), {"i": i}) for i in range(20)]
    assert asyncio.run(Parallel(num_threads=1, max_errors=2).acall(many)) == [None] * 20
    assert 2 <= len(started) < 20


def test_parallel_acall_timeout_fails_only_the_slow_pair(caplog: pytest.LogCaptureFixture) -> None:
    release = asyncio.Event()

    class Stuck(Module):
        async def aforward(self, x: int) -> Any:
            await release.wait()  # never set: only the timeout ends it

    parallel = Parallel(num_threads=4, timeout=0.05, return_failed_examples=True)
    with caplog.at_level(logging.ERROR, logger="dspex.programs"):
        results, _, errors = asyncio.run(parallel.acall([(Echo(), {"x": 1}), (Stuck(), {"x": 2})]))
    assert results == [((), {"x": 1}), None]
    assert isinstance(errors[0], ProgramError)
    assert "passed its deadline" in str(errors[0])


# -- no thread per call ----------------------------------------------------------------------


def chat_reply(body: dict[str, Any]) -> str:
    """ChatAdapter's format with every output field these modules ask for (extras are ignored)."""
    fields = {
        "reasoning": "r",
        "rationale": "r",
        "next_thought": "done",
        "next_tool_name": "finish",
        "next_tool_args": "{}",
        "answer": "word",
    }
    return "".join(f"[[ ## {k} ## ]]\n{v}\n\n" for k, v in fields.items()) + "[[ ## completed ## ]]"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(reply=chat_reply, api_key=SECRET) as server:
        yield server


async def until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Await (bounded) until ``condition()`` holds, without blocking the loop."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.005)


def _call_of(kind: str) -> tuple[Callable[[int], Any], int]:
    """An awaitable call of a module of ``kind`` and the LM requests it holds in flight."""
    if kind == "BestOfN":
        best = BestOfN(Predict("question -> answer"), N=2, reward_fn=one_word, threshold=1.0)
        return (lambda i: best.acall(question=f"q{i}")), 1
    if kind == "Refine":
        refine = Refine(Predict("question -> answer"), N=2, reward_fn=one_word, threshold=1.0)
        return (lambda i: refine.acall(question=f"q{i}")), 1
    if kind == "Parallel":
        qa, parallel = Predict("question -> answer"), Parallel(num_threads=2)
        pairs = [(qa, {"question": "a"}), (qa, {"question": "b"})]
        return (
            lambda i: parallel.acall([(m, {"question": f"{e['question']}{i}"}) for m, e in pairs])
        ), 2
    if kind == "ChainOfThought":
        cot = ChainOfThought("question -> answer")
        return (lambda i: cot.acall(question=f"q{i}")), 1
    if kind == "ReAct":
        react = dspex.ReAct("question -> answer", tools=[])
        return (lambda i: react.acall(question=f"q{i}")), 1
    assert kind == "MultiChainComparison"
    mcc = MultiChainComparison("question -> answer", M=2)
    done = [Prediction(reasoning="r", answer="a"), Prediction(reasoning="s", answer="b")]
    return (lambda i: mcc.acall(done, question=f"q{i}")), 1


@pytest.mark.parametrize(
    "kind", ["BestOfN", "Refine", "Parallel", "ChainOfThought", "MultiChainComparison", "ReAct"]
)
def test_200_awaited_calls_hold_their_requests_in_flight_with_no_thread_per_call(
    kind: str, start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    start_runtime()
    lm = make_lm(fake, cache=False)
    call, per_call = _call_of(kind)
    with dspex.context(lm=lm):
        Predict("question -> answer")(question="warm")  # the client's IO loop starts here
    fake.latency = 30.0  # held until we look; cancelled below

    async def main() -> tuple[int, list[Any]]:
        before = threading.active_count()
        with dspex.context(lm=lm):
            tasks = [asyncio.create_task(call(i)) for i in range(CALLS)]
        await until(lambda: fake.in_flight == CALLS * per_call, "every request at the fake")
        grown = threading.active_count() - before
        for task in tasks:
            task.cancel()
        return grown, await asyncio.gather(*tasks, return_exceptions=True)

    grown, outcomes = asyncio.run(main())
    assert grown <= 2  # not one per call (dspex's async pool would cap them at 8)
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)


@pytest.mark.parametrize("kind", ["BestOfN", "Refine", "Parallel", "ReAct"])
def test_200_awaited_calls_complete_with_the_right_answers(
    kind: str, start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    start_runtime()
    lm = make_lm(fake, cache=False)
    call, per_call = _call_of(kind)
    with dspex.context(lm=lm):
        Predict("question -> answer")(question="warm")
    fake.latency = 0.05

    async def main() -> tuple[int, list[Any]]:
        before, most = threading.active_count(), 0
        with dspex.context(lm=lm):
            tasks = [asyncio.create_task(call(i)) for i in range(CALLS)]
        while not all(task.done() for task in tasks):
            most = max(most, threading.active_count() - before)
            await asyncio.wait(tasks, timeout=0.01)
        return most, [task.result() for task in tasks]

    most, results = asyncio.run(main())
    assert most <= 2
    if kind == "Parallel":
        assert all([r.answer for r in pair] == ["word", "word"] for pair in results)
    else:
        assert all(r.answer == "word" for r in results)
    assert len(fake.requests) >= 1 + CALLS * per_call * (2 if kind == "ReAct" else 1)


def test_awaited_lm_calls_go_to_the_running_modules_history() -> None:
    # As in DSPy: every module whose (a)forward is running gets the call's entry.
    class Outer(dspex.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = dspex.Predict("question -> answer")

        async def aforward(self, question: str) -> Any:
            return await self.inner.acall(question=question)

    dspex.configure(lm=DummyLM([{"answer": "a"}] * 3))
    outer = Outer()
    asyncio.run(outer.acall(question="q1"))
    assert [len(outer.history), len(outer.inner.history)] == [1, 1]
    assert outer.history[0] is outer.inner.history[0]  # one entry, shared
    asyncio.run(outer.inner.acall(question="q2"))
    assert [len(outer.history), len(outer.inner.history)] == [1, 2]
    dspex.configure(disable_history=True)
    asyncio.run(outer.acall(question="q3"))
    assert [len(outer.history), len(outer.inner.history)] == [1, 2]
