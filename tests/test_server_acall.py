"""Program servers awaited on an event loop (``ServerDirectory.acall``) and the HTTP
route built on it: a program with ``aforward`` runs as a task on the caller's
loop; cancelling (or a client hanging up) cancels the request; a restarting
server is waited for off the loop.
"""

from __future__ import annotations

import asyncio
import threading
import types
from collections.abc import Iterator
from typing import Any

import httpx
import pykka
import pytest
from wait_helpers import wait_until

from dspex.actors._program_run import current_run
from dspex.actors._program_server import ServerDirectory
from dspex.errors import ActorStoppedError
from dspex.programs import Module, Prediction
from dspex.serve import app
from dspex.supervision import DynamicSupervisor, Registry, shutdown

WAIT = 10.0


class AsyncGate(Module):
    """``aforward`` waits on ``release`` (an asyncio.Event); records where and how it ran."""

    def __init__(self) -> None:
        super().__init__()
        self.entered: asyncio.Queue[Any] | None = None
        self.release: asyncio.Event | None = None
        self.threads: list[int] = []
        self.runs: list[Any] = []
        self.cancelled: list[Any] = []

    def arm(self) -> None:
        """Make the events on the running loop (each test's loop is new)."""
        self.entered = asyncio.Queue()
        self.release = asyncio.Event()

    def forward(self, x: Any) -> Any:
        return Prediction(answer=f"sync:{x}")

    async def aforward(self, x: Any) -> Any:
        assert self.entered is not None and self.release is not None
        self.threads.append(threading.get_ident())
        self.runs.append(current_run())
        self.entered.put_nowait(x)
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.append(x)
            raise
        return Prediction(answer=f"async:{x}")


class Gate(Module):
    """A sync-only program that blocks (in a worker thread) until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)
        self.calls: list[Any] = []
        self.threads: list[int] = []

    def forward(self, x: Any) -> Any:
        self.calls.append(x)
        self.threads.append(threading.get_ident())
        self.entered.release()
        if not self.release.wait(WAIT):
            raise RuntimeError("test gate was never released")
        return Prediction(answer=f"gate:{x}")


class Recorder:
    def __init__(self) -> None:
        self.names: list[str] = []

    def emit(self, name: str, **data: Any) -> None:
        self.names.append(name)


@pytest.fixture
def directory() -> Iterator[ServerDirectory]:
    registry = Registry("test-acall")
    supervisor = DynamicSupervisor.start_link(name="servers", registry=registry)
    found = ServerDirectory(supervisor, registry, telemetry=Recorder(), runtime="the-runtime")
    try:
        yield found
    finally:
        found.close_all()
        assert shutdown(supervisor, WAIT)


async def entered(gate: AsyncGate) -> Any:
    assert gate.entered is not None
    return await asyncio.wait_for(gate.entered.get(), WAIT)


def test_acall_runs_an_aforward_program_on_the_callers_loop_inside_a_run(
    directory: ServerDirectory,
) -> None:
    gate = AsyncGate()
    directory.serve("g", gate, max_concurrency=2, queue_limit=2)
    sync_gate = Gate()
    sync_gate.release.set()
    directory.serve("s", sync_gate)

    async def main() -> tuple[Any, Any, int]:
        gate.arm()
        assert gate.release is not None
        gate.release.set()
        native = await directory.acall("g", x=1)
        threaded = await directory.acall("s", x=2)
        return native, threaded, threading.get_ident()

    native, threaded, loop_thread = asyncio.run(main())
    assert native.answer == "async:1" and threaded.answer == "gate:2"
    assert gate.threads == [loop_thread]  # no worker thread: a task on the caller's loop
    assert sync_gate.threads != [loop_thread]  # a sync-only program keeps its worker thread
    run = gate.runs[0]
    assert run is not None and run.label == "server:g" and run.runtime == "the-runtime"
    stats = directory.stats("g")
    assert (stats.completed, stats.failed, stats.admitted) == (1, 0, 0)
    telemetry = directory.telemetry
    assert isinstance(telemetry, Recorder)
    assert telemetry.names.count("program.run.start") == telemetry.names.count("program.run.stop")


def test_cancelling_acall_drops_a_queued_request_and_cancels_a_running_task(
    directory: ServerDirectory,
) -> None:
    gate = AsyncGate()
    directory.serve("g", gate, max_concurrency=1, queue_limit=1)

    async def main() -> list[Any]:
        gate.arm()
        first = asyncio.ensure_future(directory.acall("g", x="first"))
        assert await entered(gate) == "first"
        queued = asyncio.ensure_future(directory.acall("g", x="queued"))
        await asyncio.sleep(0)  # one step: the task admits its request and awaits it
        stats = directory.stats("g")
        assert (stats.executing, stats.queued) == (1, 1)
        queued.cancel()
        first.cancel()
        return await asyncio.gather(first, queued, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)
    assert gate.cancelled == ["first"]  # the running task was cancelled, not left to run on
    wait_until(lambda: directory.stats("g").admitted == 0, WAIT, "both slots freed")
    assert [r is not None for r in gate.runs] == [True]  # the queued request never ran
    assert directory.stats("g").completed == 0


def test_a_drain_deadline_cancels_a_running_task_and_answers_it_once(
    directory: ServerDirectory,
) -> None:
    gate = AsyncGate()
    directory.serve("g", gate, max_concurrency=1, queue_limit=0)

    async def main() -> tuple[Any, Any]:
        gate.arm()
        call = asyncio.ensure_future(directory.acall("g", x=1))
        await entered(gate)
        report = await asyncio.to_thread(directory.drain, "g", 0.0)
        outcome = await asyncio.gather(call, return_exceptions=True)
        return report, outcome[0]

    report, outcome = asyncio.run(main())
    assert isinstance(outcome, ActorStoppedError) and "drain deadline" in str(outcome)
    assert report.expired == 1
    assert gate.cancelled == [1]  # a task, unlike a thread, is stopped at the deadline


# -- the HTTP route --------------------------------------------------------------------------


def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }


class Client:
    """One raw ASGI request whose client can hang up (``disconnect()``)."""

    def __init__(self, application: Any, path: str, body: bytes) -> None:
        self.body = body
        self.gone = asyncio.Event()
        self.sent: list[dict[str, Any]] = []
        self.receives = 0
        self.task = asyncio.ensure_future(application(_scope(path), self.receive, self.send))
        self._body_sent = False

    async def receive(self) -> dict[str, Any]:
        self.receives += 1
        if not self._body_sent:
            self._body_sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def disconnect(self) -> None:
        self.gone.set()

    @property
    def status(self) -> int | None:
        return next((m["status"] for m in self.sent if m["type"] == "http.response.start"), None)


def _runtime(directory: ServerDirectory) -> Any:
    """What app() needs of a runtime for program calls: its servers."""
    return types.SimpleNamespace(servers=directory, ask=directory.ask)


def test_a_client_hanging_up_cancels_its_queued_request(directory: ServerDirectory) -> None:
    gate = Gate()
    directory.serve("g", gate, max_concurrency=1, queue_limit=1)
    application = app(_runtime(directory))

    async def main() -> tuple[Client, Client]:
        first = Client(application, "/v1/programs/g", b'{"x": "first"}')
        assert await asyncio.to_thread(gate.entered.acquire, True, WAIT)
        second = Client(application, "/v1/programs/g", b'{"x": "second"}')
        for _ in range(100):  # each step runs the handler further, up to its admission
            if directory.stats("g").queued:
                break
            await asyncio.sleep(0)
        assert directory.stats("g").queued == 1
        second.disconnect()
        await asyncio.wait_for(second.task, WAIT)
        gate.release.set()
        await asyncio.wait_for(first.task, WAIT)
        return first, second

    first, second = asyncio.run(main())
    assert first.status == 200
    assert second.sent == []  # nobody to answer
    wait_until(lambda: directory.stats("g").admitted == 0, WAIT, "the queued slot freed")
    assert gate.calls == ["first"]  # the hung-up request never ran


def test_a_client_hanging_up_cancels_its_running_task(directory: ServerDirectory) -> None:
    gate = AsyncGate()
    directory.serve("g", gate, max_concurrency=1, queue_limit=0)
    application = app(_runtime(directory))

    async def main() -> Client:
        gate.arm()
        client = Client(application, "/v1/programs/g", b'{"x": 7}')
        await entered(gate)
        client.disconnect()
        await asyncio.wait_for(client.task, WAIT)
        return client

    client = asyncio.run(main())
    assert client.sent == [] and gate.cancelled == [7]
    wait_until(lambda: directory.stats("g").admitted == 0, WAIT, "the slot freed")


def test_a_quick_call_starts_no_disconnect_watcher(directory: ServerDirectory) -> None:
    """The watcher (a task reading ``receive``) starts only for a call still
    running after ``_WATCH_AFTER``: a quick call reads ``receive`` once, for its body."""
    gate = AsyncGate()
    directory.serve("g", gate, max_concurrency=1, queue_limit=0)
    application = app(_runtime(directory))

    async def main() -> Client:
        gate.arm()
        assert gate.release is not None
        gate.release.set()
        client = Client(application, "/v1/programs/g", b'{"x": 3}')
        await asyncio.wait_for(client.task, WAIT)
        return client

    client = asyncio.run(main())
    assert client.status == 200
    assert client.receives == 1


def test_a_call_during_a_servers_restart_is_awaited_off_the_loop() -> None:
    registry = Registry("test-acall-restart")
    first = DynamicSupervisor.start_link(name="servers", registry=registry)
    asked = threading.Event()

    def restores() -> bool:  # asked by a caller that found the name restarting
        asked.set()
        return True

    directory = ServerDirectory(first, registry, restores=restores, restore_wait=WAIT)
    second: pykka.ActorRef[Any] | None = None
    gate = Gate()
    gate.release.set()
    try:
        directory.serve("g", gate)
        application = app(_runtime(directory))
        assert shutdown(first, WAIT)  # the supervisor goes; "g" is wanted: it restarts
        wait_until(lambda: directory.names() == [], WAIT, "server closed with its supervisor")

        def restart() -> tuple[str, ...]:
            nonlocal second
            second = DynamicSupervisor.start_link(name="servers", registry=registry)
            return directory.restore(second)

        async def main() -> httpx.Response:
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="http://dspex") as c:
                call = asyncio.ensure_future(c.post("/v1/programs/g", json={"x": 1}))
                # If the handler blocked the loop while it waits for the restart,
                # this await could not resume until the wait gave up (503).
                assert await asyncio.to_thread(asked.wait, WAIT)
                assert await asyncio.to_thread(restart) == ("g",)
                return await asyncio.wait_for(call, WAIT)

        reply = asyncio.run(main())
        assert reply.status_code == 200 and reply.json() == {"answer": "gate:1"}
    finally:
        directory.close_all()
        if second is not None:
            assert shutdown(second, WAIT)
