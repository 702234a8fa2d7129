"""LM client engines hosted on another owner's event loop (``dspex serve``'s shared loop).

An engine on a :class:`HostedLoop` has no thread of its own: awaited calls
from the host's loop never cross a thread, sync callers elsewhere still reach
it, a client restart keeps the host's loop running, and hosting ends cleanly.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from runtime_helpers import SECRET
from wait_helpers import WAIT, wait_until

from dspex.actors import IOLoop, host_engines
from dspex.actors._lm._async_call import agenerate
from dspex.actors._lm._client import ClientSlot, GetSlot, LMClient
from dspex.actors._lm._handle import LMHandle
from dspex.actors._lm._loop import HostedLoop
from dspex.actors._lm._resilience import LMClientConfig
from dspex.errors import ActorStoppedError
from dspex.supervision import Supervisor, which_children
from dspex.testing import FakeOpenAI

MODEL = "openai/test-model"


def echo(body: dict[str, Any]) -> str:
    return "echo:" + body["messages"][-1]["content"]


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(reply=echo, api_key=SECRET) as server:
        yield server


@pytest.fixture
def host() -> Iterator[IOLoop]:
    io = IOLoop("test-host")
    io.start()
    host_engines(io)
    try:
        yield io
    finally:
        host_engines(None)
        assert io.stop(10.0)


def lm_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("dspex-lm-")]


def message(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_awaited_calls_on_the_hosts_loop_cross_no_thread_and_survive_a_restart(
    host: IOLoop, fake: FakeOpenAI
) -> None:
    fake.latency = 30.0  # the first incarnation never answers
    slot = ClientSlot(MODEL, fake.url, LMClientConfig())
    sup = Supervisor.start_link(
        [LMClient.child_spec(MODEL, slot=slot, api_key=SECRET)], max_restarts=3, max_seconds=60
    )
    try:
        first = slot.endpoint
        assert first is not None
        assert isinstance(first._io, HostedLoop)  # type: ignore[attr-defined]
        assert lm_threads() == []  # the engine made no loop thread of its own
        handle = LMHandle(slot, call_timeout=60)
        on_host: list[bool] = []

        async def call(i: int) -> str:
            response = await agenerate(handle, message(f"q{i}"), {})
            on_host.append(threading.current_thread().name == "test-host")
            return response.texts[0]

        async def main() -> list[str]:
            return list(await asyncio.gather(*(call(i) for i in range(50))))

        answers = asyncio.run_coroutine_threadsafe(main(), host.loop)
        wait_until(lambda: fake.in_flight == 50, what="50 requests at the fake")
        fake.latency = 0.0  # the next incarnation answers at once
        [child] = which_children(sup)
        assert child.ref is not None
        child.ref.stop(timeout=WAIT)  # its engine leaves the loop; the supervisor restarts it
        assert answers.result(WAIT) == [f"echo:q{i}" for i in range(50)]
        assert on_host == [True] * 50
        assert handle.resubmits == 50  # each orphaned once, answered once
        assert slot.incarnations == 2 and slot.endpoint is not first
        assert host.running  # the restart stopped the engine, not the host's loop
        assert lm_threads() == []
    finally:
        sup.stop(timeout=20)
    assert host.running


def test_a_sync_caller_on_another_thread_reaches_a_hosted_engine(
    host: IOLoop, fake: FakeOpenAI
) -> None:
    ref = LMClient.start_link(MODEL, api_base=fake.url, api_key=SECRET)
    try:
        slot = ref.ask(GetSlot(), timeout=WAIT)
        handle = LMHandle(slot, call_timeout=WAIT)
        assert handle.generate(message("sync"), {}).texts == ["echo:sync"]
        assert lm_threads() == []
    finally:
        ref.stop(timeout=WAIT)


def test_a_stopped_hosted_engine_refuses_work_and_the_host_runs_on(host: IOLoop) -> None:
    hosted = HostedLoop(host, "engine")
    hosted.start()
    assert hosted.running
    ran: list[int] = []
    done = threading.Event()

    async def cleanup() -> None:
        ran.append(1)

    hosted.call_soon(done.set)
    assert done.wait(WAIT)
    assert hosted.stop(WAIT, cleanup=cleanup) and ran == [1]
    assert hosted.stop(WAIT, cleanup=cleanup) and ran == [1]  # idempotent
    assert not hosted.running and host.running
    with pytest.raises(ActorStoppedError, match="engine is not running"):
        hosted.call_soon(done.set)


def test_engines_started_after_hosting_ends_get_a_thread_of_their_own(
    fake: FakeOpenAI,
) -> None:
    io = IOLoop("test-host")
    io.start()
    host_engines(io)
    host_engines(None)
    try:
        ref = LMClient.start_link(MODEL, api_base=fake.url, api_key=SECRET)
        try:
            assert len(lm_threads()) == 1
        finally:
            ref.stop(timeout=WAIT)
    finally:
        assert io.stop(10.0)
