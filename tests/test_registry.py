"""Registry: unique names, auto-removal on death, handles that survive restarts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pykka
import pytest
from _supervision_helpers import Crash, EventLog, Worker, ping, worker

from dspex.errors import ActorStoppedError, CallTimeoutError, RegistryError, UsageError
from dspex.supervision import (
    CHILD_RESTARTED,
    ChildSpec,
    EventBus,
    NamedRef,
    Registry,
    Supervisor,
    default_registry,
    terminate_child,
    wait_dead,
)


@pytest.fixture
def actors() -> Iterator[list[pykka.ActorRef[Any]]]:
    started: list[pykka.ActorRef[Any]] = []
    yield started
    for ref in started:
        if ref.is_alive():
            ref.stop(block=True, timeout=5)


def test_register_whereis_unregister_names(actors: list[pykka.ActorRef[Any]]) -> None:
    reg = Registry("t")
    a, b = Worker.start("a"), Worker.start("b")
    actors += [a, b]
    reg.register("alpha", a)
    reg.register("beta", b)
    reg.register("alpha", a)  # idempotent for the same actor
    assert reg.whereis("alpha") is a and "beta" in reg and reg.names() == ["alpha", "beta"]
    with pytest.raises(RegistryError, match="'alpha' is already registered to live actor"):
        reg.register("alpha", b)
    assert reg.unregister("alpha", ref=b) is False  # conditional removal
    assert reg.unregister("alpha") is True and reg.unregister("alpha") is False
    assert reg.whereis("alpha") is None and list(reg) == ["beta"]
    with pytest.raises(UsageError, match="non-empty string"):
        reg.register("", a)


def test_entry_is_removed_when_the_actor_dies() -> None:
    reg = Registry("t")
    a = Worker.start("a")
    reg.register("alpha", a)
    a.tell(Crash())
    assert wait_dead(a, 5)
    assert reg.whereis("alpha") is None and reg.names() == []
    b = Worker.start("b")
    try:
        reg.register("alpha", b)  # the name is free again
        assert reg.whereis("alpha") is b
    finally:
        b.stop()


def test_replacing_lets_a_supervisor_hand_a_name_to_the_next_incarnation(
    actors: list[pykka.ActorRef[Any]],
) -> None:
    reg = Registry("t")
    old, new = Worker.start("old"), Worker.start("new")
    actors += [old, new]
    reg.register("svc", old)
    reg.register("svc", new, replacing=old)
    assert reg.whereis("svc") is new
    old.stop(block=True, timeout=5)  # the old entry's monitor must not remove the new one
    assert reg.whereis("svc") is new


def test_plain_pykka_actors_are_dropped_once_dead() -> None:
    class Plain(pykka.ThreadingActor):
        pass

    reg = Registry("t")
    ref = Plain.start()
    reg.register("plain", ref)
    assert reg.whereis("plain") is ref
    ref.stop(block=True, timeout=5)
    assert reg.whereis("plain") is None


def test_default_registry_is_process_wide() -> None:
    assert default_registry() is default_registry()
    root = Supervisor.start_link([ChildSpec("w", worker("w"), name="test-default-w")])
    try:
        ref = default_registry().whereis("test-default-w")
        assert ref is not None and ping(ref)[0] == "w"
    finally:
        root.stop(block=True, timeout=10)
    assert default_registry().whereis("test-default-w") is None


def test_handle_re_resolves_after_a_restart() -> None:
    reg, bus = Registry("t"), EventBus()
    log = EventLog(bus)
    root = Supervisor.start_link(
        [ChildSpec("svc", worker("svc"), name="svc")], registry=reg, events=bus
    )
    try:
        handle = reg.handle("svc")
        first = handle.ask("ping", timeout=5)
        old = handle.whereis()
        assert old is not None
        old.tell(Crash())
        # Queued behind the crash: hits the dying incarnation, then is retried on the new one.
        second = handle.ask("ping", timeout=5)
        assert second[0] == "svc" and second != first
        assert handle.call("whoami", timeout=5) == second
        log.wait(CHILD_RESTARTED, child="svc")
        assert handle.whereis() is not old
    finally:
        root.stop(block=True, timeout=10)
        log.unsubscribe()


def test_handle_waits_for_registration() -> None:
    reg = Registry("t")
    handle = NamedRef(reg, "late", timeout=5)
    result: list[Any] = []
    asking = threading.Thread(target=lambda: result.append(handle.ask("ping")))
    asking.start()
    ref = Worker.start("late")
    try:
        reg.register("late", ref)
        asking.join(5)
        assert result == [("late", ping(ref)[1])]
    finally:
        ref.stop()


def test_handle_gives_clear_errors() -> None:
    reg = Registry("t")
    with pytest.raises(
        RegistryError, match=r"no live actor is registered as 'ghost'.*name='ghost'"
    ):
        reg.handle("ghost").ask("ping", timeout=0.05)
    root = Supervisor.start_link([ChildSpec("svc", worker("svc"), name="svc")], registry=reg)
    try:
        handle = reg.handle("svc")
        old = handle.resolve()
        terminate_child(root, "svc")  # stopped for good: no new incarnation comes
        with pytest.raises(ActorStoppedError, match="no new incarnation"):
            handle.resolve(0.05, not_ref=old)
    finally:
        root.stop(block=True, timeout=10)


def test_ask_timeout_is_call_timeout_error(actors: list[pykka.ActorRef[Any]]) -> None:
    gate = threading.Event()

    class Slow(Worker):
        def on_receive(self, message: Any) -> Any:
            gate.wait(5)
            return None

    reg = Registry("t")
    ref = Slow.start("slow")
    actors.append(ref)
    reg.register("slow", ref)
    try:
        with pytest.raises(CallTimeoutError, match=r"did not reply within 0\.05s"):
            reg.handle("slow").ask("hang", timeout=0.05)
    finally:
        gate.set()


def test_known_names_include_those_whose_actor_died_not_unregistered_ones() -> None:
    reg = Registry("t")
    assert reg.known("never") is False
    a = Worker.start("a")
    reg.register("alpha", a)
    assert reg.known("alpha")
    a.tell(Crash())
    assert wait_dead(a, 5)
    assert reg.whereis("alpha") is None and reg.known("alpha")  # may be restarting
    b = Worker.start("b")
    try:
        reg.register("alpha", b)
        assert reg.unregister("alpha") and not reg.known("alpha")  # gone on purpose
    finally:
        b.stop(block=True, timeout=5)
