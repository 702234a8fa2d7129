"""The async-native path: ``await Predict(...).acall(...)`` awaits the LM client on the
caller's event loop, with no thread per call (issue 11)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from runtime_helpers import SECRET, StartRuntime, make_lm
from wait_helpers import wait_until

import dspex
from dspex.actors._lm._async_call import AsyncAttempt
from dspex.actors._lm._client import ClientSlot, LMClient
from dspex.actors._lm._handle import LMHandle
from dspex.actors._lm._resilience import CallInfo, LMClientConfig
from dspex.actors._lm._types import LMResponse
from dspex.errors import LMTimeoutError
from dspex.programs._async_pool import pool_threads
from dspex.supervision import Supervisor, which_children
from dspex.testing import FakeOpenAI, Fault

MODEL = "openai/test-model"
QA = "question -> answer"


def chat_reply(body: dict[str, Any]) -> str:
    """ChatAdapter's format, answering with the question it was asked."""
    question = body["messages"][-1]["content"].split("[[ ## question ## ]]")[-1]
    question = question.split("\n\n")[0].strip()
    return f"[[ ## answer ## ]]\nre: {question}\n\n[[ ## completed ## ]]"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(reply=chat_reply, api_key=SECRET) as server:
        yield server


async def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Await (bounded) until ``condition()`` holds, without blocking the loop."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.005)


def lm_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("dspex-lm-"))


def test_200_awaited_calls_are_in_flight_at_once_with_no_thread_per_call(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    start_runtime()
    lm = make_lm(fake, cache=False)
    qa = dspex.Predict(QA)
    with dspex.context(lm=lm):
        qa(question="warm")  # starts the client (its IO loop thread) before counting
    fake.latency = 30.0  # held until we look; cancelled below

    async def main() -> list[Any]:
        before = threading.active_count()
        with dspex.context(lm=lm):
            tasks = [asyncio.create_task(qa.acall(question=f"q{i}")) for i in range(200)]
        await until(lambda: fake.in_flight == 200, "all 200 requests at the fake")
        grown = threading.active_count() - before
        for task in tasks:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        return [grown, outcomes]

    grown, outcomes = asyncio.run(main())
    assert grown <= 2  # not 200 (nor even the default executor's 6)
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)
    endpoint = lm.handle().slot.endpoint
    assert endpoint is not None
    wait_until(lambda: endpoint.in_flight == 0, what="the client left every cancelled request")


def test_cancelling_the_awaiting_task_closes_the_request_at_the_fake(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    start_runtime()
    lm = make_lm(fake, cache=False)
    fake.schedule = [Fault.timeout()]  # the first request hangs until its connection closes
    qa = dspex.Predict(QA)

    async def main() -> None:
        with dspex.context(lm=lm):
            task = asyncio.create_task(qa.acall(question="hang"))
        await until(lambda: fake.outcomes.get("timeout") == 1, "the request hangs at the fake")
        assert fake._server.open_connections == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    # The hung request ends only when the client closes its connection.
    wait_until(lambda: fake._server.open_connections == 0, what="the fake saw the close")
    endpoint = lm.handle().slot.endpoint
    assert endpoint is not None and endpoint.in_flight == 0
    with dspex.context(lm=lm):
        assert dspex.Predict(QA)(question="after").answer == "re: after"


def test_a_cache_hit_is_answered_in_the_loop_thread(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    start_runtime()
    lm = make_lm(fake)
    qa = dspex.Predict(QA)
    with dspex.context(lm=lm):
        assert qa(question="cached").answer == "re: cached"
    assert fake.request_count == 1
    handle = lm.handle()
    endpoint = handle.slot.endpoint
    assert endpoint is not None
    submitted: list[str] = []
    original = endpoint.submit

    def spy(*args: Any) -> bool:  # would run if the cache missed
        submitted.append(threading.current_thread().name)
        return original(*args)

    endpoint.submit = spy  # type: ignore[method-assign]
    threads_before = set(threading.enumerate())

    async def main() -> tuple[Any, str, bool]:
        loop_thread = threading.current_thread().name
        loop = asyncio.get_running_loop()
        hopped = False
        original_threadsafe = loop.call_soon_threadsafe

        def watch(*args: Any, **kwargs: Any) -> Any:
            nonlocal hopped
            hopped = True  # a wake-up from another thread
            return original_threadsafe(*args, **kwargs)

        loop.call_soon_threadsafe = watch  # type: ignore[method-assign]
        with dspex.context(lm=lm):
            pred = await qa.acall(question="cached")
        return pred, loop_thread, hopped

    try:
        pred, _, hopped = asyncio.run(main())
    finally:
        del endpoint.submit
    assert pred.answer == "re: cached"
    assert submitted == [] and not hopped
    assert set(threading.enumerate()) <= threads_before | {threading.current_thread()}
    assert fake.request_count == 1


def test_a_client_restart_mid_flight_loses_no_awaited_call(fake: FakeOpenAI) -> None:
    fake.reply = lambda body: "echo:" + body["messages"][-1]["content"]
    fake.latency = 30.0  # the first incarnation never answers
    slot = ClientSlot(MODEL, fake.url, LMClientConfig())
    spec = LMClient.child_spec(MODEL, slot=slot, api_key=SECRET)
    sup = Supervisor.start_link([spec], max_restarts=3, max_seconds=60)
    from dspex.actors._lm._async_call import agenerate

    try:
        handle = LMHandle(slot, call_timeout=60)
        first = slot.endpoint
        assert first is not None

        async def main() -> list[LMResponse]:
            calls = [
                asyncio.create_task(agenerate(handle, [{"role": "user", "content": f"q{i}"}], {}))
                for i in range(100)
            ]
            await until(lambda: fake.in_flight == 100, "100 requests at the fake")
            fake.latency = 0.0  # the next incarnation answers at once
            [child] = which_children(sup)
            assert child.ref is not None
            child.ref.stop(timeout=10)  # the supervisor restarts it
            return list(await asyncio.gather(*calls))

        answers = asyncio.run(main())
        assert [r.texts for r in answers] == [[f"echo:q{i}"] for i in range(100)]
        assert handle.resubmits == 100  # each orphaned once, answered once
        assert slot.incarnations == 2 and slot.endpoint is not first
    finally:
        sup.stop(timeout=20)


def test_the_call_timeout_bounds_an_awaited_call(fake: FakeOpenAI) -> None:
    fake.latency = 30.0
    ref = LMClient.start_link(MODEL, api_base=fake.url, api_key=SECRET)
    from dspex.actors._lm._async_call import agenerate

    try:
        handle = LMHandle.for_client(ref, call_timeout=0.3)
        with pytest.raises(LMTimeoutError, match="call timeout"):
            asyncio.run(agenerate(handle, [{"role": "user", "content": "slow"}], {}))
        endpoint = handle.slot.endpoint
        assert endpoint is not None
        wait_until(lambda: endpoint.in_flight == 0, what="the client left the request")
    finally:
        ref.stop(timeout=10)


def test_a_user_error_fails_only_its_own_call(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    start_runtime()
    lm = make_lm(fake, cache=False)

    class Picky(dspex.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qa = dspex.Predict(QA)

        async def aforward(self, question: str) -> Any:
            pred = await self.qa.acall(question=question)
            if question == "bad":
                raise ValueError("user code failed")
            return pred

    program = Picky()

    async def main() -> list[Any]:
        with dspex.context(lm=lm):
            return await asyncio.gather(
                *(program.acall(question=q) for q in ("a", "bad", "b")), return_exceptions=True
            )

    a, bad, b = asyncio.run(main())
    assert isinstance(bad, ValueError)
    assert (a.answer, b.answer) == ("re: a", "re: b")


def test_history_usage_and_callbacks_see_awaited_calls(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    start_runtime()
    lm = make_lm(fake, cache=False)
    seen: list[str] = []

    class Hook(dspex.utils.BaseCallback):  # type: ignore[name-defined]
        def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            seen.append(f"start:{threading.current_thread().name}")

        def on_lm_end(self, call_id: str, outputs: Any, exception: Any = None) -> None:
            seen.append("end")

    async def main() -> Any:
        with dspex.context(lm=lm, callbacks=[Hook()], track_usage=True):
            with dspex.track_usage() as tracker:
                pred = await dspex.Predict(QA).acall(question="u")
        return pred, tracker, threading.current_thread().name

    pred, tracker, loop_thread = asyncio.run(main())
    assert pred.answer == "re: u"
    assert seen == [f"start:{loop_thread}", "end"]
    assert tracker.get_total_tokens()[MODEL]["total_tokens"] > 0
    assert lm.history and lm.history[-1]["outputs"] == [
        "[[ ## answer ## ]]\nre: u\n\n[[ ## completed ## ]]"
    ]


def test_a_sync_only_module_runs_in_dspexs_own_bounded_pool() -> None:
    inside: list[str] = []
    gate = threading.Event()

    class SyncOnly(dspex.Module):
        def forward(self, x: int) -> int:
            inside.append(threading.current_thread().name)
            gate.wait(10)
            return x * 2

    program = SyncOnly()

    async def main() -> list[int]:
        with dspex.context(async_max_workers=2):
            tasks = [asyncio.create_task(program.acall(x=i)) for i in range(5)]
            await until(lambda: len(inside) == 2, "two calls running")
            running = pool_threads()
            gate.set()
            results = await asyncio.gather(*tasks)
        assert running == 2  # bounded by async_max_workers, not the default executor
        return list(results)

    assert asyncio.run(main()) == [0, 2, 4, 6, 8]
    wait_until(lambda: pool_threads() == 0, what="idle pool threads exit")


def test_a_late_answer_after_the_attempt_was_abandoned_is_dropped() -> None:
    async def main() -> tuple[bool, bool]:
        attempt = AsyncAttempt(asyncio.get_running_loop())
        assert attempt.abandon()  # the caller gave up first
        attempt.resolve(LMResponse(()), CallInfo())
        await asyncio.sleep(0)
        return attempt.future.done(), attempt.value is None

    assert asyncio.run(main()) == (False, True)


def test_an_lm_called_directly_can_be_awaited(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    start_runtime()
    fake.reply = lambda body: "echo:" + body["messages"][-1]["content"]
    lm = make_lm(fake, cache=False)
    assert lm(messages=[{"role": "user", "content": "warm"}]) == ["echo:warm"]
    starts: list[str] = []

    class Hook(dspex.utils.BaseCallback):  # type: ignore[name-defined]
        def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            starts.append(inputs["prompt"])

    async def main() -> tuple[list[str], Any, int]:
        before = threading.active_count()
        texts = await lm.acall("hi")
        with dspex.context(callbacks=[Hook()]):
            response = await lm.aforward(messages=[{"role": "user", "content": "there"}])
            await lm.acall("hooked")
        return texts, response, threading.active_count() - before

    texts, response, grown = asyncio.run(main())
    assert texts == ["echo:hi"] and response.texts == ["echo:there"]
    assert starts == ["hooked"]
    assert grown == 0
    with pytest.raises(dspex.errors.UsageError, match="exactly one of prompt= or messages="):
        asyncio.run(lm.acall())


def test_answers_wake_the_callers_loop_once_per_burst() -> None:
    """A burst of answers from the client's thread costs one wake-up of the caller's loop."""
    loop = asyncio.new_event_loop()
    wakes: list[object] = []
    threadsafe = loop.call_soon_threadsafe

    def counting(callback: Any, *args: Any, **kwargs: Any) -> Any:
        wakes.append(callback)
        return threadsafe(callback, *args, **kwargs)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]

    async def main() -> list[Any]:
        attempts = [AsyncAttempt(asyncio.get_running_loop()) for _ in range(50)]

        def answer_all() -> None:  # as the client's loop thread would
            for i, attempt in enumerate(attempts):
                attempt.resolve(LMResponse((), model=f"m{i}"), CallInfo())

        other = threading.Thread(target=answer_all)
        other.start()
        other.join(10)  # the caller's loop is blocked meanwhile: every answer is pending
        await asyncio.wait_for(asyncio.gather(*(a.future for a in attempts)), 10)
        return [a.value.model for a in attempts if isinstance(a.value, LMResponse)]

    try:
        assert loop.run_until_complete(main()) == [f"m{i}" for i in range(50)]
    finally:
        loop.close()
    assert len(wakes) == 1


def test_the_call_timer_and_a_late_answer_settle_once() -> None:
    async def main() -> list[tuple[bool, bool, bool]]:
        loop = asyncio.get_running_loop()
        answered_first = AsyncAttempt(loop)
        answered_first.resolve(LMResponse(()), CallInfo())
        answered_first.expire()  # the timer fires after the answer got in: ignored
        expired_first = AsyncAttempt(loop)
        expired_first.expire()
        expired_first.resolve(LMResponse(()), CallInfo())  # too late: dropped
        await asyncio.sleep(0)
        return [
            (a.future.done(), a.expired, a.value is not None)
            for a in (answered_first, expired_first)
        ]

    assert asyncio.run(main()) == [(True, False, True), (True, True, False)]
