"""Named program servers: ask/tell, limits, backpressure, hot reload, crash safety, drain."""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import pykka
import pytest

from dspex.actors._program_run import current_run
from dspex.actors._program_server import ProgramServer, ServerDirectory, server_key
from dspex.actors._server_requests import ServerFuture
from dspex.actors._server_state import ServerState
from dspex.actors._telemetry import Telemetry
from dspex.actors._telemetry_emitter import TelemetryEmitter, TelemetryEvent
from dspex.errors import (
    ActorStoppedError,
    OverloadedError,
    ProgramError,
    RegistryError,
    UsageError,
)
from dspex.programs import Example, Module, Predict, Prediction, context
from dspex.supervision import DynamicSupervisor, Registry, Restart, call, shutdown
from dspex.testing import DummyLM

WAIT = 5.0


class Gate(Module):
    """Each call blocks until ``release`` is set; records concurrency and calls per input."""

    def __init__(self, tag: str = "v1") -> None:
        super().__init__()
        self.tag = tag
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)
        self.lock = threading.Lock()
        self.running = 0
        self.max_running = 0
        self.calls: collections.Counter[Any] = collections.Counter()

    def forward(self, x: Any) -> Any:
        with self.lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            self.calls[x] += 1
        self.entered.release()
        try:
            if not self.release.wait(WAIT):
                raise RuntimeError("test gate was never released")
            return Prediction(answer=f"{self.tag}:{x}")
        finally:
            with self.lock:
                self.running -= 1

    def wait_entered(self, n: int) -> None:
        for _ in range(n):
            assert self.entered.acquire(timeout=WAIT), "a request did not start in time"


class Echo(Module):
    """Answers at once; fails for ``x == "bad"``; records the run it saw."""

    def __init__(self, tag: str = "echo") -> None:
        super().__init__()
        self.tag = tag
        self.runs: list[Any] = []

    def forward(self, x: Any) -> Any:
        self.runs.append(current_run())
        if x == "bad":
            raise ValueError(f"bad input {x!r}")
        return Prediction(answer=f"{self.tag}:{x}")


@dataclass
class Recorder:
    """A fake telemetry emitter: keeps events, signals when one of a name arrives."""

    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def emit(self, name: str, **data: Any) -> None:
        with self.arrived:
            self.events.append((name, data))
            self.arrived.notify_all()

    def named(self, name: str) -> list[dict[str, Any]]:
        with self.arrived:
            return [data for n, data in self.events if n == name]

    def wait_for(self, name: str, count: int = 1) -> list[dict[str, Any]]:
        with self.arrived:
            ok = self.arrived.wait_for(
                lambda: sum(1 for n, _ in self.events if n == name) >= count, WAIT
            )
        assert ok, f"telemetry event {name!r} did not arrive {count} time(s)"
        return self.named(name)


@dataclass
class Setup:
    directory: ServerDirectory
    registry: Registry
    supervisor: pykka.ActorRef[Any]
    telemetry: Recorder


@pytest.fixture
def setup() -> Iterator[Setup]:
    registry = Registry("test-servers")
    supervisor = DynamicSupervisor.start_link(name="servers", registry=registry)
    telemetry = Recorder()
    sentinel_runtime = object()
    directory = ServerDirectory(supervisor, registry, telemetry=telemetry, runtime=sentinel_runtime)
    try:
        yield Setup(directory, registry, supervisor, telemetry)
    finally:
        directory.close_all()
        assert shutdown(supervisor, WAIT)


def results(futures: list[ServerFuture]) -> list[str]:
    return [f.result(timeout=WAIT).answer for f in futures]


# -- ask / tell ------------------------------------------------------------------------


def test_ask_resolves_to_the_prediction_inside_a_program_run(setup: Setup) -> None:
    echo = Echo()
    handle = setup.directory.serve("echo", echo, max_concurrency=2)
    future = setup.directory.ask("echo", x=1)
    assert future.get(timeout=WAIT).answer == "echo:1"
    assert handle.ask(x=2).result(timeout=WAIT).answer == "echo:2"
    assert future.server == "echo" and future.request_id == 1
    run = echo.runs[0]
    assert run is not None, "the program must run with current_run() set (nested modules inline)"
    assert run.label == "server:echo" and run.runtime is setup.directory.runtime
    assert setup.registry.whereis(server_key("echo")) is not None


def test_ask_error_is_wrapped_and_keeps_its_type(setup: Setup) -> None:
    setup.directory.serve("echo", Echo())
    future = setup.directory.ask("echo", x="bad")
    with pytest.raises(ProgramError) as info:
        future.result(timeout=WAIT)
    assert isinstance(info.value, ValueError)
    assert "bad input" in str(info.value)
    stats = setup.directory.stats("echo")
    assert (stats.completed, stats.failed, stats.admitted) == (0, 1, 0)


def test_tell_outcomes_reach_the_telemetry_actor() -> None:
    registry = Registry("tell")
    supervisor = DynamicSupervisor.start_link(name="servers", registry=registry)
    tel = Telemetry.start()
    seen: list[TelemetryEvent] = []
    both = threading.Event()

    def subscriber(event: TelemetryEvent) -> None:  # runs in the Telemetry actor's thread
        if event.name.startswith("program.server."):
            seen.append(event)
            names = {e.name for e in seen}
            if {"program.server.result", "program.server.error"} <= names:
                both.set()

    call(tel, "subscribe", subscriber, timeout=WAIT)
    directory = ServerDirectory(supervisor, registry, telemetry=TelemetryEmitter(lambda: tel))
    try:
        directory.serve("echo", Echo())
        ok_id = directory.tell("echo", x="fine")
        bad_id = directory.tell("echo", x="bad")
        assert both.wait(WAIT), "tell outcomes did not reach telemetry"
        by_name = {e.name: e.data for e in seen}
        result = by_name["program.server.result"]
        assert (result["server"], result["request_id"]) == ("echo", ok_id)
        assert result["result"].answer == "echo:fine"
        error = by_name["program.server.error"]
        assert (error["server"], error["request_id"], error["error"]) == (
            "echo",
            bad_id,
            "ValueError",
        )
        assert "bad input" in error["message"]
        metrics = call(tel, "metrics", timeout=WAIT)
        assert metrics["runs"]["failed"] == 1 and metrics["runs"]["succeeded"] == 1
    finally:
        directory.close_all()
        assert shutdown(supervisor, WAIT)
        assert shutdown(tel, WAIT)


def test_a_custom_executor_runs_requests_and_broken_telemetry_costs_no_answer() -> None:
    registry = Registry("custom")
    supervisor = DynamicSupervisor.start_link(name="servers", registry=registry)

    class Broken:
        def emit(self, name: str, **data: Any) -> None:
            raise RuntimeError("telemetry is down")

    seen: list[tuple[Any, dict[str, Any]]] = []

    def execute(program: Any, inputs: Any, ctx: Any) -> Any:
        seen.append((program, dict(inputs)))
        return ctx.run(program, **inputs)

    directory = ServerDirectory(supervisor, registry, telemetry=Broken(), execute=execute)
    try:
        echo = Echo()
        directory.serve("echo", echo)
        # Not run inline by the server: the module call made its own ProgramRun.
        assert directory.ask("echo", x=1).result(timeout=WAIT).answer == "echo:1"
        assert seen == [(echo, {"x": 1})]
        assert echo.runs[0] is not None and echo.runs[0].label == "Echo"
    finally:
        directory.close_all()
        assert shutdown(supervisor, WAIT)


# -- concurrency and backpressure ----------------------------------------------------------


def test_max_concurrency_is_respected_and_the_mailbox_stays_responsive(setup: Setup) -> None:
    gate = Gate()
    setup.directory.serve("gate", gate, max_concurrency=3, queue_limit=10)
    futures = [setup.directory.ask("gate", x=i) for i in range(8)]
    gate.wait_entered(3)
    ref = setup.registry.whereis(server_key("gate"))
    assert ref is not None
    # All three workers are blocked, yet the actor answers at once.
    stats = call(ref, "stats", timeout=1.0)
    assert (stats.executing, stats.queued, stats.admitted) == (3, 5, 8)
    gate.release.set()
    assert sorted(results(futures)) == sorted(f"v1:{i}" for i in range(8))
    assert gate.max_running == 3
    assert setup.directory.stats("gate").completed == 8


def test_full_queue_raises_overloaded_at_once_and_enqueues_nothing(setup: Setup) -> None:
    gate = Gate()
    setup.directory.serve("gate", gate, max_concurrency=1, queue_limit=2)
    futures = [setup.directory.ask("gate", x=i) for i in range(3)]
    gate.wait_entered(1)
    with pytest.raises(OverloadedError) as info:
        setup.directory.ask("gate", x="extra")
    message = str(info.value)
    assert "'gate'" in message and "max_concurrency=1" in message and "queue_limit=2" in message
    with pytest.raises(OverloadedError):
        setup.directory.tell("gate", x="extra")
    stats = setup.directory.stats("gate")
    assert (stats.admitted, stats.rejected) == (3, 2)
    gate.release.set()
    assert results(futures) == ["v1:0", "v1:1", "v1:2"]
    assert "extra" not in gate.calls
    assert setup.directory.ask("gate", x=9).result(timeout=WAIT).answer == "v1:9"


def test_a_cancelled_queued_request_frees_its_slot_and_never_runs(setup: Setup) -> None:
    gate = Gate()
    setup.directory.serve("gate", gate, max_concurrency=1, queue_limit=1)
    first = setup.directory.ask("gate", x="first")
    gate.wait_entered(1)
    queued = setup.directory.ask("gate", x="queued")
    assert queued.cancel()
    gate.release.set()
    assert first.result(timeout=WAIT).answer == "v1:first"
    assert setup.directory.ask("gate", x="after").result(timeout=WAIT).answer == "v1:after"
    assert "queued" not in gate.calls
    assert setup.directory.stats("gate").admitted == 0


def test_ask_is_awaitable_and_cancelling_the_task_drops_a_queued_request(
    setup: Setup,
) -> None:
    import asyncio

    gate = Gate()
    setup.directory.serve("gate", gate, max_concurrency=1, queue_limit=2)
    handle = setup.directory.serve("echo", Echo())

    async def main() -> tuple[Any, Any, Any]:
        echoed = await handle.ask(x=1)  # a ServerFuture is awaitable
        failed: Any = None
        try:
            await setup.directory.ask("echo", x="bad")
        except ValueError as exc:  # the wrapped error keeps its type
            failed = exc
        first = asyncio.ensure_future(setup.directory.ask("gate", x="first"))
        await asyncio.to_thread(gate.wait_entered, 1)
        queued = asyncio.ensure_future(setup.directory.ask("gate", x="queued"))
        await asyncio.sleep(0)  # let the task start awaiting
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        gate.release.set()
        return echoed, failed, (await first)

    echoed, failed, first = asyncio.run(main())
    assert echoed.answer == "echo:1" and isinstance(failed, ProgramError)
    assert first.answer == "v1:first"
    assert "queued" not in gate.calls  # cancelling the awaiting task cancelled the request


# -- hot reload --------------------------------------------------------------------------------


def test_reload_in_flight_request_finishes_on_the_old_program(setup: Setup) -> None:
    old = Gate("v1")
    setup.directory.serve("qa", old, max_concurrency=2)
    in_flight = setup.directory.ask("qa", x="a")
    old.wait_entered(1)
    assert setup.directory.reload("qa", Echo("v2")) == 2
    assert setup.directory.ask("qa", x="b").result(timeout=WAIT).answer == "v2:b"
    assert not in_flight.done()
    old.release.set()
    assert in_flight.result(timeout=WAIT).answer == "v1:a"
    assert setup.directory.stats("qa").version == 2
    assert setup.telemetry.named("program.server.reloaded") == [{"server": "qa", "version": 2}]


class QA(Module):
    def __init__(self) -> None:
        super().__init__()
        self.qa = Predict("question -> answer")

    def forward(self, question: str) -> Any:
        return self.qa(question=question)


def test_reload_from_a_saved_state_file(setup: Setup, tmp_path: Any) -> None:
    trained = QA()
    trained.qa.demos = [Example(question="capital of France?", answer="Paris")]
    path = tmp_path / "qa.json"
    trained.save(path)
    served = QA()
    setup.directory.serve("qa", served)
    assert setup.directory.reload("qa", str(path)) == 2
    current = setup.directory.program("qa")
    assert current is not served and served.qa.demos == []
    assert [d["answer"] for d in current.qa.demos] == ["Paris"]
    lm = DummyLM([{"answer": "Rome"}])
    with context(lm=lm):  # the caller's context travels with the request
        answer = setup.directory.ask("qa", question="capital of Italy?").result(timeout=WAIT)
    assert answer.answer == "Rome"
    prompt = "\n".join(str(m["content"]) for m in lm.history[0]["messages"])
    assert "capital of France?" in prompt


def test_reload_rejects_a_missing_file_and_leaves_the_program(setup: Setup, tmp_path: Any) -> None:
    echo = Echo()
    setup.directory.serve("qa", echo)
    with pytest.raises(UsageError, match="no such file"):
        setup.directory.reload("qa", tmp_path / "missing.json")
    assert setup.directory.program("qa") is echo
    assert setup.directory.stats("qa").version == 1


# -- crash safety ------------------------------------------------------------------------------


def test_crash_restarts_the_server_and_loses_no_request(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    gate = Gate()
    setup.directory.serve("gate", gate, max_concurrency=2, queue_limit=5)
    futures = [setup.directory.ask("gate", x=i) for i in range(5)]
    gate.wait_entered(2)
    answers: collections.Counter[int] = collections.Counter()
    for future in futures:
        future.add_done_callback(lambda f: answers.update([cast(ServerFuture, f).request_id]))
    old = setup.registry.whereis(server_key("gate"))
    assert old is not None
    with caplog.at_level(logging.ERROR):
        old.tell("not a request")  # a bug in a handler: the actor crashes
        new = setup.registry.await_name(server_key("gate"), WAIT, not_ref=old)
    assert new is not None and new.actor_urn != old.actor_urn
    assert not old.is_alive()
    assert setup.directory.stats("gate").restarts == 1
    gate.release.set()
    assert sorted(results(futures)) == [f"v1:{i}" for i in range(5)]
    assert setup.directory.ask("gate", x=5).result(timeout=WAIT).answer == "v1:5"
    assert all(gate.calls[i] == 1 for i in range(6)), gate.calls
    assert sorted(answers) == [1, 2, 3, 4, 5] and set(answers.values()) == {1}
    assert "answered request" not in caplog.text


def test_a_new_incarnation_dispatches_what_was_queued_while_none_ran() -> None:
    state = ServerState("orphan", Echo(), max_concurrency=2, queue_limit=4)
    futures = [ServerFuture("orphan") for _ in range(3)]
    for i, future in enumerate(futures):
        state.submit({"x": i}, future)
    assert not any(f.done() for f in futures)  # nobody dispatches yet
    ref = ProgramServer.start_link(state)
    try:
        assert results(futures) == ["echo:0", "echo:1", "echo:2"]
    finally:
        assert shutdown(ref, WAIT)
    assert state.closed


# -- draining and stopping ---------------------------------------------------------------------


def test_drain_answers_every_admitted_request_then_stops(setup: Setup) -> None:
    gate = Gate()
    setup.directory.serve("gate", gate, max_concurrency=1, queue_limit=3)
    futures = [setup.directory.ask("gate", x=i) for i in range(3)]
    gate.wait_entered(1)
    setup.directory.stop_accepting("gate")
    with pytest.raises(ActorStoppedError, match="draining"):
        setup.directory.ask("gate", x="late")
    gate.release.set()
    report = setup.directory.drain("gate", timeout=WAIT)
    assert report.ok and (report.answered, report.expired) == (3, 0)
    assert all(f.done() for f in futures) and results(futures) == ["v1:0", "v1:1", "v1:2"]
    assert setup.directory.names() == []
    assert setup.registry.whereis(server_key("gate")) is None
    with pytest.raises(RegistryError, match="no program server named 'gate'"):
        setup.directory.ask("gate", x=1)


def test_drain_deadline_answers_leftovers_with_an_error_exactly_once(setup: Setup) -> None:
    gate = Gate()
    setup.directory.serve("gate", gate, max_concurrency=1, queue_limit=2)
    futures = [setup.directory.ask("gate", x=i) for i in range(3)]
    gate.wait_entered(1)
    report = setup.directory.drain("gate", timeout=0.2)
    assert (report.answered, report.expired) == (0, 3) and not report.ok
    for future in futures:
        with pytest.raises(ActorStoppedError, match="drain deadline"):
            future.result(timeout=0)
    dropped = threading.Event()
    messages: list[str] = []

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())
            if "late result is dropped" in record.getMessage():
                dropped.set()

    logger = logging.getLogger("dspex.servers")
    watch = Watch(logging.INFO)
    logger.addHandler(watch)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        gate.release.set()  # the abandoned run finishes now; its result must be dropped
        assert dropped.wait(WAIT)
    finally:
        logger.removeHandler(watch)
        logger.setLevel(old_level)
    assert not [m for m in messages if "answered request" in m]
    assert gate.calls == {0: 1}
    assert isinstance(futures[0].exception(timeout=0), ActorStoppedError)


def test_stopping_the_supervisor_fails_queued_requests_and_finishes_running_ones(
    setup: Setup,
) -> None:
    gate = Gate()
    setup.directory.serve("gate", gate, max_concurrency=1, queue_limit=2)
    futures = [setup.directory.ask("gate", x=i) for i in range(3)]
    gate.wait_entered(1)
    assert shutdown(setup.supervisor, WAIT)
    for future in futures[1:]:
        with pytest.raises(ActorStoppedError, match="stopped"):
            future.result(timeout=WAIT)
    gate.release.set()
    assert futures[0].result(timeout=WAIT).answer == "v1:0"
    assert setup.directory.names() == []


def test_drain_all_shares_one_deadline(setup: Setup) -> None:
    setup.directory.serve("a", Echo("a"))
    setup.directory.serve("b", Echo("b"))
    futures = [setup.directory.ask("a", x=1), setup.directory.ask("b", x=2)]
    report = setup.directory.drain_all(timeout=WAIT)
    assert sorted(report.servers) == ["a", "b"] and report.ok
    assert results(futures) == ["a:1", "b:2"]
    assert setup.directory.names() == []


# -- misuse ---------------------------------------------------------------------------------------


def test_serve_rejects_bad_arguments(setup: Setup) -> None:
    with pytest.raises(UsageError, match="max_concurrency=0"):
        setup.directory.serve("x", Echo(), max_concurrency=0)
    with pytest.raises(UsageError, match="queue_limit=-1"):
        setup.directory.serve("x", Echo(), queue_limit=-1)
    with pytest.raises(UsageError, match="must be callable"):
        setup.directory.serve("x", "not a program")
    with pytest.raises(UsageError, match="non-empty"):
        setup.directory.serve("", Echo())
    with pytest.raises(UsageError, match="PERMANENT"):
        setup.directory.serve("x", Echo(), restart=Restart.PERMANENT)
    setup.directory.serve("x", Echo())
    with pytest.raises(UsageError, match="already runs"):
        setup.directory.serve("x", Echo())
    with pytest.raises(RegistryError, match=r"running: \['x'\]"):
        setup.directory.ask("y", x=1)
    assert setup.directory.names() == ["x"]


def test_the_overloaded_message_counts_no_more_queued_than_the_queue_holds() -> None:
    # No actor dispatches for this state, so every admitted request is still pending:
    # the burst a server sees before its actor catches up. 4 of them hold run slots.
    state = ServerState("burst", lambda **_: None, max_concurrency=4, queue_limit=16)
    try:
        for i in range(20):
            state.submit({"x": i}, None)
        with pytest.raises(OverloadedError) as info:
            state.submit({"x": "extra"}, None)
    finally:
        state.close("test over")
    message = str(info.value)
    assert "4 request(s) hold its run slots (max_concurrency=4; 0 executing now)" in message
    assert "16 wait in its queue (queue_limit=16)" in message
    assert "20" not in message
