"""DynamicSupervisor: start/terminate from any thread, max_children, restarts, shutdown."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pykka
import pytest
from _supervision_helpers import (
    Crash,
    EventLog,
    Exit,
    FailingStart,
    Journal,
    down_queue,
    ping,
    worker,
)

from dspex.errors import (
    ActorStoppedError,
    MaxChildrenError,
    StartError,
    SupervisionError,
    UsageError,
)
from dspex.supervision import (
    CHILD_RESTARTED,
    CHILD_STARTED,
    CHILD_TERMINATED,
    INTENSITY_EXCEEDED,
    SHUTDOWN,
    ChildCounts,
    ChildSpec,
    DynamicSupervisor,
    EventBus,
    Registry,
    Restart,
    Supervisor,
    VirtualClock,
    count_children,
    is_abnormal,
    render_tree,
    restart_child,
    start_child,
    statistics,
    terminate_child,
    tree,
    which_children,
)

Starter = Callable[..., pykka.ActorRef[Any]]


@pytest.fixture
def bus() -> EventBus:
    return EventBus()


@pytest.fixture
def log(bus: EventBus) -> Iterator[EventLog]:
    events = EventLog(bus)
    yield events
    events.unsubscribe()


@pytest.fixture
def dyn(bus: EventBus) -> Iterator[Starter]:
    started: list[pykka.ActorRef[Any]] = []

    def start(**options: Any) -> pykka.ActorRef[Any]:
        options.setdefault("events", bus)
        ref = DynamicSupervisor.start_link(**options)
        started.append(ref)
        return ref

    yield start
    for ref in reversed(started):
        if ref.is_alive():
            ref.stop(block=True, timeout=10)


def run_spec(label: str, journal: Journal | None = None, **options: Any) -> ChildSpec:
    options.setdefault("restart", Restart.TRANSIENT)
    return ChildSpec("run", worker(label, journal), **options)


def current(sup: pykka.ActorRef[Any]) -> list[pykka.ActorRef[Any]]:
    return [i.ref for i in which_children(sup) if i.ref is not None]


def test_start_and_terminate_children(dyn: Starter, log: EventLog) -> None:
    sup = dyn(name="runs")
    first = start_child(sup, run_spec("one"))
    second = start_child(sup, run_spec("two"))
    assert ping(first)[0] == "one" and ping(second)[0] == "two"
    assert current(sup) == [first, second]
    assert [(i.id, i.restart, i.kind) for i in which_children(sup)] == [
        ("run", Restart.TRANSIENT, "worker"),
        ("run", Restart.TRANSIENT, "worker"),
    ]
    assert count_children(sup) == ChildCounts(2, 2, 0, 2)
    down = down_queue(first)
    assert terminate_child(sup, first) is True
    assert down.get(timeout=5).reason == SHUTDOWN
    assert terminate_child(sup, first) is False
    assert current(sup) == [second]
    assert len(log.matching(CHILD_STARTED, supervisor="runs")) == 2
    assert log.matching(CHILD_TERMINATED, reason=repr(SHUTDOWN))
    assert log.matching(CHILD_RESTARTED) == []


def test_max_children_is_a_clear_error(dyn: Starter) -> None:
    sup = dyn(max_children=2, name="runs")
    a = start_child(sup, run_spec("a"))
    start_child(sup, run_spec("b"))
    with pytest.raises(
        MaxChildrenError, match=r"'runs' already runs max_children=2.*raise max_children"
    ):
        start_child(sup, run_spec("c"))
    terminate_child(sup, a)
    assert ping(start_child(sup, run_spec("c")))[0] == "c"
    assert count_children(sup).active == 2


def test_max_children_holds_under_concurrent_starts(dyn: Starter) -> None:
    sup = dyn(max_children=5)
    barrier = threading.Barrier(12)
    results: list[str] = []
    lock = threading.Lock()

    def go() -> None:
        barrier.wait(5)
        try:
            start_child(sup, run_spec("x"))
            outcome = "ok"
        except MaxChildrenError:
            outcome = "full"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=go) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results) == ["full"] * 7 + ["ok"] * 5
    assert count_children(sup).active == 5


def test_crashed_transient_child_is_restarted(dyn: Starter, log: EventLog) -> None:
    reg = Registry("test")
    sup = dyn(registry=reg)
    ref = start_child(sup, run_spec("t", name="run-1"))
    handle = reg.handle("run-1")
    label, first = handle.ask("ping", timeout=5)
    ref.tell(Crash())
    log.wait(CHILD_RESTARTED, child="run")
    (new,) = current(sup)
    assert new is not ref and ping(new)[0] == "t"
    assert handle.ask("ping", timeout=5) == ("t", ping(new)[1]) != (label, first)
    assert terminate_child(sup, ref) is False  # the old incarnation is no longer a child
    assert terminate_child(sup, new) is True
    assert reg.whereis("run-1") is None


def test_normal_exit_removes_transient_and_temporary_never_restarts(
    dyn: Starter, log: EventLog
) -> None:
    sup = dyn()
    transient = start_child(sup, run_spec("t"))
    temporary = start_child(sup, run_spec("k", restart=Restart.TEMPORARY))
    permanent = start_child(sup, run_spec("p", restart=Restart.PERMANENT))
    transient.tell(Exit())
    temporary.tell(Crash())
    permanent.tell(Exit())
    log.wait(CHILD_RESTARTED, child="run")
    log.wait(CHILD_TERMINATED, count=3)
    (only,) = current(sup)
    assert ping(only)[0] == "p" and only is not permanent
    assert len(log.matching(CHILD_RESTARTED)) == 1
    assert statistics(sup).failures == 1


def test_intensity_exceeded_stops_children_and_fails(dyn: Starter, log: EventLog) -> None:
    clock = VirtualClock()
    journal = Journal()
    sup = dyn(max_restarts=2, max_seconds=10, clock=clock, name="runs")
    dead = down_queue(sup)
    bystander = start_child(sup, run_spec("by", journal))
    crashy = start_child(sup, run_spec("cr", journal))
    for n in (1, 2):
        crashy.tell(Crash())
        log.wait(CHILD_RESTARTED, count=n)
        crashy = current(sup)[-1]
        clock.advance(1)
    crashy.tell(Crash())
    down = dead.get(timeout=5)
    assert isinstance(down.reason, SupervisionError)
    assert "more than 2 restart(s) within 10.0s" in str(down.reason)
    assert journal.stopped == ["by"] and not bystander.is_alive()
    log.wait(INTENSITY_EXCEEDED, supervisor="runs")
    with pytest.raises(ActorStoppedError):
        start_child(sup, run_spec("late"))


def test_shutdown_is_ordered_newest_first(dyn: Starter) -> None:
    journal = Journal()
    sup = dyn()
    for label in ("r1", "r2", "r3"):
        start_child(sup, run_spec(label, journal))
    assert sup.stop(block=True, timeout=10)
    assert journal.stopped == ["r3", "r2", "r1"]
    with pytest.raises(ActorStoppedError):
        start_child(sup, run_spec("late"))


def test_start_failure_leaves_no_child(dyn: Starter) -> None:
    sup = dyn(max_children=1)
    with pytest.raises(StartError, match="cannot init"):
        start_child(sup, ChildSpec("bad", FailingStart.start))
    assert count_children(sup) == ChildCounts(0, 0, 0, 0)
    assert ping(start_child(sup, run_spec("ok")))[0] == "ok"  # the slot was released
    assert statistics(sup).failures == 1


def test_nested_under_a_static_supervisor(bus: EventBus, log: EventLog) -> None:
    root = Supervisor.start_link(
        [
            ChildSpec("cfg", worker("cfg")),
            DynamicSupervisor.spec("runs", max_children=4, events=bus),
        ],
        name="root",
    )
    try:
        runs = next(i.ref for i in which_children(root) if i.id == "runs")
        assert runs is not None
        run = start_child(runs, run_spec("r"))
        assert str(tree(root)) == (
            "root (Supervisor, one_for_one)\n"
            "├── cfg (Worker) alive\n"
            "└── runs (DynamicSupervisor, one_for_one) alive\n"
            "    └── run (Worker) alive [transient]"
        )
        dead = down_queue(run)
    finally:
        assert root.stop(block=True, timeout=10)
    assert dead.get(timeout=5).reason == SHUTDOWN
    assert log.wait(CHILD_STARTED, supervisor="runs").data["child"] == "run"


def test_proxy_call_path_also_works(dyn: Starter) -> None:
    sup = dyn()
    ref = sup.proxy().start_child(run_spec("via-proxy")).get(timeout=5)
    assert ping(ref)[0] == "via-proxy"
    assert sup.proxy().terminate_child(ref).get(timeout=5) is True
    with pytest.raises(UsageError, match="call start_child with the spec again"):
        restart_child(sup, "run")


def test_tree_elides_long_child_lists(dyn: Starter) -> None:
    sup = dyn(name="runs")
    for n in range(5):
        start_child(sup, run_spec(f"r{n}"))
    text = render_tree(tree(sup), max_children=2)
    assert text.splitlines() == [
        "runs (DynamicSupervisor, one_for_one)",
        "├── run (Worker) alive [transient]",
        "├── run (Worker) alive [transient]",
        "└── … 3 more",
    ]


def test_deaths_without_restart_are_booked_in_the_dying_thread(
    dyn: Starter, bus: EventBus, log: EventLog
) -> None:
    """A temporary child's death never waits for the supervisor's thread; a
    transient child's crash (a restart decision) still goes through it."""
    threads: list[tuple[str, str]] = []  # (event, thread that emitted it)
    unsubscribe = bus.subscribe(
        lambda event: threads.append((event.name, threading.current_thread().name))
    )
    try:
        sup = dyn(name="runs")
        temporary = start_child(sup, run_spec("k", restart=Restart.TEMPORARY))
        down = down_queue(temporary)  # set after the supervisor's own monitor
        temporary.tell(Crash())
        assert is_abnormal(down.get(timeout=5).reason)
        # Booked before our Down was delivered: no wait on the supervisor needed.
        assert current(sup) == []
        assert statistics(sup).failures == 1
        (booked_in,) = [name for event, name in threads if event == CHILD_TERMINATED]
        assert booked_in.startswith("Worker-")

        transient = start_child(sup, run_spec("t"))
        transient.tell(Crash())
        log.wait(CHILD_RESTARTED)
        decided_in = [name for event, name in threads if event == CHILD_TERMINATED][1]
        assert decided_in.startswith("DynamicSupervisor-")
        assert [name for event, name in threads if event == CHILD_RESTARTED] == [decided_in]
    finally:
        unsubscribe()
