"""Served programs survive a restart of the ProgramServers (``servers``) supervisor.

The runtime remembers what is served (serve, reload, stop/drain) and every new
incarnation of ``servers`` serves it again under the same names and options.
"""

from __future__ import annotations

import threading
from typing import Any

import pykka
import pytest
from runtime_helpers import StartRuntime
from wait_helpers import wait_until

import dspex
from dspex.actors._program_server import ServerDirectory, server_key
from dspex.actors._telemetry_emitter import TelemetryEvent
from dspex.errors import ActorStoppedError, RegistryError, UsageError
from dspex.programs import Module, Prediction
from dspex.supervision import DynamicSupervisor, Registry, call, shutdown

WAIT = 10.0


class Echo(Module):
    """Answers ``tag:x`` at once."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag

    def forward(self, x: Any) -> Any:
        return Prediction(answer=f"{self.tag}:{x}")


class Gate(Module):
    """Each call blocks until ``release`` is set; ``entered`` counts calls started."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def forward(self, x: Any) -> Any:
        self.entered.release()
        if not self.release.wait(WAIT):
            raise RuntimeError("test gate was never released")
        return Prediction(answer=f"gate:{x}")


class Restored:
    """Telemetry subscriber: signals each ``program.server.restored`` event."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.cond = threading.Condition()

    def __call__(self, event: TelemetryEvent) -> None:  # the Telemetry actor's thread
        if event.name == "program.server.restored":
            with self.cond:
                self.events.append(dict(event.data))
                self.cond.notify_all()

    def wait(self, count: int) -> list[dict[str, Any]]:
        with self.cond:
            ok = self.cond.wait_for(lambda: len(self.events) >= count, WAIT)
            assert ok, f"program.server.restored did not arrive {count} time(s)"
            return list(self.events)


def crash_servers_supervisor(rt: dspex.Runtime, victim: str) -> None:
    """Crash server ``victim`` until ``servers`` exceeds its restart intensity.

    Each of the first ``max_restarts`` crashes is restarted; the next makes
    the supervisor give up and fail to the root, which starts a new one.
    """
    old_sup = rt.whereis("servers")
    ref = rt.registry.whereis(server_key(victim))
    for _ in range(rt.settings.runtime.max_restarts):
        assert ref is not None
        ref.tell("not a request")  # an unexpected message crashes a ProgramServer
        ref = rt.registry.await_name(server_key(victim), WAIT, not_ref=ref)
    assert ref is not None
    ref.tell("not a request")
    new_sup = rt.registry.await_name("servers", WAIT, not_ref=old_sup)
    assert new_sup is not None and new_sup.actor_urn != old_sup.actor_urn
    assert not old_sup.is_alive()


def test_served_programs_come_back_after_the_servers_supervisor_restarts(
    start_runtime: StartRuntime,
) -> None:
    rt = start_runtime(runtime={"max_restarts": 1, "max_seconds": 60.0})
    restored = Restored()
    call(rt.whereis("telemetry"), "subscribe", restored, timeout=WAIT)
    rt.serve("qa", Echo("v1"), max_concurrency=3, queue_limit=7)
    assert rt.reload("qa", Echo("v2")) == 2
    rt.serve("gone", Echo("gone"))
    rt.servers.stop("gone")  # explicitly stopped: must not come back
    gate = Gate()
    rt.serve("slow", gate, max_concurrency=1, queue_limit=2)
    running = rt.ask("slow", x=0)
    assert gate.entered.acquire(timeout=WAIT)
    queued = [rt.ask("slow", x=i) for i in (1, 2)]
    old_qa = rt.registry.whereis(server_key("qa"))

    crash_servers_supervisor(rt, "qa")

    # Requests queued in the old incarnation are answered with an error that says why.
    for future in queued:
        with pytest.raises(ActorStoppedError, match="is restarting"):
            future.result(timeout=WAIT)
    event = restored.wait(1)[-1]
    assert sorted(event["servers"]) == ["qa", "slow"] and event["failed"] == ()

    # Same names, same options, latest reloaded program and version.
    assert rt.ask("qa", x=1).result(timeout=WAIT).answer == "v2:1"
    stats = rt.servers.stats("qa")
    assert (stats.max_concurrency, stats.queue_limit, stats.version) == (3, 7, 2)
    slow = rt.servers.stats("slow")
    assert (slow.max_concurrency, slow.queue_limit, slow.closed) == (1, 2, False)
    new_qa = rt.registry.whereis(server_key("qa"))
    assert new_qa is not None and old_qa is not None and new_qa.actor_urn != old_qa.actor_urn
    assert rt.servers.names() == ["qa", "slow"]
    with pytest.raises(RegistryError, match="no program server named 'gone'"):
        rt.ask("gone", x=1)

    # The request executing during the restart finishes on the old workers.
    gate.release.set()
    assert running.result(timeout=WAIT).answer == "gate:0"
    assert rt.ask("slow", x=3).result(timeout=WAIT).answer == "gate:3"
    # The restored servers are children of the new supervisor, shown in the tree.
    assert "server:qa" in str(rt.tree()) and "server:slow" in str(rt.tree())


def test_a_second_restart_serves_the_version_reloaded_in_between(
    start_runtime: StartRuntime,
) -> None:
    rt = start_runtime(runtime={"max_restarts": 2, "max_seconds": 60.0})
    restored = Restored()
    call(rt.whereis("telemetry"), "subscribe", restored, timeout=WAIT)
    handle = rt.serve("qa", Echo("v1"), max_concurrency=2, queue_limit=4)
    crash_servers_supervisor(rt, "qa")
    restored.wait(1)
    assert handle.reload(Echo("v2")) == 2  # the handle follows the name
    assert handle.ask(x=1).result(timeout=WAIT).answer == "v2:1"
    crash_servers_supervisor(rt, "qa")
    restored.wait(2)
    assert handle.ask(x=2).result(timeout=WAIT).answer == "v2:2"
    assert handle.stats().version == 2
    assert handle.drain(timeout=WAIT).ok  # drained: no longer wanted
    assert rt.servers.wanted() == {}
    with pytest.raises(RegistryError):
        handle.ask(x=3)


def test_drained_and_stopped_servers_are_not_restored() -> None:
    registry = Registry("restore-unit")
    first = DynamicSupervisor.start_link(name="servers", registry=registry)
    directory = ServerDirectory(first, registry, restores=lambda: True)
    second: pykka.ActorRef[Any] | None = None
    try:
        directory.serve("kept", Echo("k"), max_concurrency=2, queue_limit=3)
        directory.serve("stopped", Echo("s"))
        directory.serve("drained", Echo("d"))
        directory.stop("stopped")
        assert directory.drain("drained", timeout=WAIT).ok
        assert sorted(directory.wanted()) == ["kept"]
        assert shutdown(first, WAIT)  # the supervisor goes: its servers with it
        wait_until(lambda: directory.names() == [], WAIT, "servers closed with their supervisor")
        assert sorted(directory.wanted()) == ["kept"]  # still wanted: it restarts

        # A caller of a restarting name waits (bounded) instead of failing.
        answers: list[Any] = []
        asked = threading.Thread(
            target=lambda: answers.append(directory.ask("kept", x=1).result(timeout=WAIT))
        )
        asked.start()
        second = DynamicSupervisor.start_link(name="servers", registry=registry)
        assert directory.restore(second) == ("kept",)
        asked.join(WAIT)
        assert not asked.is_alive() and [a.answer for a in answers] == ["k:1"]
        assert directory.names() == ["kept"]
        ref = registry.whereis(server_key("kept"))
        assert ref is not None and ref.is_alive()
        with pytest.raises(RegistryError):
            directory.ask("stopped", x=1)
    finally:
        directory.close_all()
        for sup in (first, second):
            if sup is not None:
                assert shutdown(sup, WAIT)


def test_without_a_restorer_servers_die_with_their_supervisor() -> None:
    registry = Registry("restore-none")
    sup = DynamicSupervisor.start_link(name="servers", registry=registry)
    directory = ServerDirectory(sup, registry)
    try:
        directory.serve("qa", Echo("v1"))
        assert shutdown(sup, WAIT)
        wait_until(lambda: directory.names() == [], WAIT, "server closed with its supervisor")
        assert directory.wanted() == {}
        with pytest.raises(RegistryError, match="no program server named 'qa'"):
            directory.ask("qa", x=1)
    finally:
        directory.close_all()


def test_a_restart_that_never_comes_is_reported_after_restore_wait() -> None:
    registry = Registry("restore-wait")
    sup = DynamicSupervisor.start_link(name="servers", registry=registry)
    directory = ServerDirectory(sup, registry, restores=lambda: True, restore_wait=0.05)
    try:
        directory.serve("qa", Echo("v1"))
        assert shutdown(sup, WAIT)
        wait_until(lambda: directory.names() == [], WAIT, "server closed with its supervisor")
        with pytest.raises(ActorStoppedError, match=r"restarting .* did not come back"):
            directory.ask("qa", x=1)
    finally:
        directory.close_all()


def test_a_server_stopped_behind_the_directorys_back_can_be_forgotten() -> None:
    registry = Registry("restore-orphan")
    sup = DynamicSupervisor.start_link(name="servers", registry=registry)
    directory = ServerDirectory(sup, registry, restores=lambda: True, restore_wait=0.05)
    try:
        directory.serve("qa", Echo("v1"))
        ref = registry.whereis(server_key("qa"))
        assert ref is not None
        ref.stop()  # not through stop/drain: it still counts as wanted
        wait_until(lambda: directory.names() == [], WAIT, "server closed")
        assert sorted(directory.wanted()) == ["qa"]
        with pytest.raises(UsageError, match="is restarting"):
            directory.serve("qa", Echo("v2"))
        directory.stop("qa")  # forgets it although no state runs
        assert directory.wanted() == {}
        directory.serve("qa", Echo("v2"))
        assert directory.ask("qa", x=1).result(timeout=WAIT).answer == "v2:1"
    finally:
        directory.close_all()
        assert shutdown(sup, WAIT)
