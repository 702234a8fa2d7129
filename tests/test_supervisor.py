"""The static Supervisor: strategies, restart types, intensity, shutdown, auto_shutdown."""

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
    Stuck,
    Worker,
    down_queue,
    ping,
    worker,
)

from dspex.errors import StartError, SupervisionError, UsageError
from dspex.supervision import (
    CHILD_RESTARTED,
    CHILD_STARTED,
    CHILD_TERMINATED,
    INTENSITY_EXCEEDED,
    SHUTDOWN,
    AutoShutdown,
    ChildCounts,
    ChildInfo,
    ChildSpec,
    EventBus,
    Restart,
    Strategy,
    Supervisor,
    VirtualClock,
    count_children,
    delete_child,
    restart_child,
    start_child,
    statistics,
    terminate_child,
    tree,
    wait_dead,
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
def sup(bus: EventBus) -> Iterator[Starter]:
    """Start supervisors with the test's bus; stop whatever is left at the end."""
    started: list[pykka.ActorRef[Any]] = []

    def start(children: list[ChildSpec], **options: Any) -> pykka.ActorRef[Any]:
        options.setdefault("events", bus)
        ref = Supervisor.start_link(children, **options)
        started.append(ref)
        return ref

    yield start
    for ref in reversed(started):
        if ref.is_alive():
            ref.stop(block=True, timeout=10)


def refs(sup: pykka.ActorRef[Any]) -> dict[str, pykka.ActorRef[Any] | None]:
    return {info.id: info.ref for info in which_children(sup)}


def ref_of(sup: pykka.ActorRef[Any], id: str) -> pykka.ActorRef[Any]:
    ref = refs(sup)[id]
    assert ref is not None, f"child {id!r} is not running"
    return ref


def three(journal: Journal, **spec: Any) -> list[ChildSpec]:
    return [ChildSpec(x, worker(x, journal), **spec) for x in ("a", "b", "c")]


# -- start-up ----------------------------------------------------------------------


def test_children_start_in_order_and_are_listed(sup: Starter) -> None:
    journal = Journal()
    root = sup([*three(journal), Supervisor.spec("sub", [ChildSpec("d", worker("d", journal))])])
    assert journal.started == ["a", "b", "c", "d"]
    infos = which_children(root)
    assert [(i.id, i.restart, i.kind) for i in infos] == [
        ("a", Restart.PERMANENT, "worker"),
        ("b", Restart.PERMANENT, "worker"),
        ("c", Restart.PERMANENT, "worker"),
        ("sub", Restart.PERMANENT, "supervisor"),
    ]
    assert all(isinstance(i, ChildInfo) and i.ref is not None and i.ref.is_alive() for i in infos)
    assert count_children(root) == ChildCounts(specs=4, active=4, supervisors=1, workers=3)


def test_child_start_failure_stops_started_children_in_reverse(sup: Starter) -> None:
    journal = Journal()
    children = [*three(journal), ChildSpec("bad", FailingStart.start)]
    with pytest.raises(StartError, match=r"child 'bad'.*cannot init"):
        sup(children, name="root")
    assert journal.stopped == ["c", "b", "a"]


def test_start_function_must_return_a_dspex_actor(sup: Starter) -> None:
    with pytest.raises(StartError, match="must return the ActorRef of a dspex"):
        sup([ChildSpec("x", lambda: "not a ref")])  # type: ignore[arg-type, return-value]


def test_bad_options_are_clear_errors() -> None:
    spec = ChildSpec("a", worker("a"))
    with pytest.raises(UsageError, match="id 'a' is used twice"):
        Supervisor.start_link([spec, spec])
    with pytest.raises(UsageError, match=r"strategy='one_for_most' is not valid"):
        Supervisor.start_link([spec], strategy="one_for_most")
    with pytest.raises(UsageError, match="max_restarts=-1"):
        Supervisor.start_link([spec], max_restarts=-1)
    significant = ChildSpec("s", worker("s"), restart=Restart.TRANSIENT, significant=True)
    with pytest.raises(UsageError, match="significant but auto_shutdown is NEVER"):
        Supervisor.spec("sub", [significant])


# -- strategies ----------------------------------------------------------------------


def test_one_for_one_restarts_only_the_crashed_child(sup: Starter, log: EventLog) -> None:
    journal = Journal()
    root = sup(three(journal), strategy=Strategy.ONE_FOR_ONE)
    before = refs(root)
    ref_of(root, "b").tell(Crash())
    log.wait(CHILD_RESTARTED, child="b")
    after = refs(root)
    assert after["a"] is before["a"] and after["c"] is before["c"]
    assert after["b"] is not before["b"]
    assert ping(ref_of(root, "b"))[0] == "b"
    assert journal.stopped == []  # a crash skips on_stop; nobody else was stopped


def test_one_for_all_stops_others_in_reverse_then_restarts_all_in_order(
    sup: Starter, log: EventLog
) -> None:
    journal = Journal()
    root = sup(three(journal), strategy=Strategy.ONE_FOR_ALL)
    before = refs(root)
    journal.clear()
    ref_of(root, "b").tell(Crash())
    log.wait(CHILD_RESTARTED, child="c")
    assert journal.stopped == ["c", "a"]
    assert journal.started == ["a", "b", "c"]
    after = refs(root)
    assert all(after[k] is not before[k] for k in "abc")
    assert statistics(root).restarts == 1  # one restart event, however many children


def test_rest_for_one_restarts_the_child_and_those_after_it(sup: Starter, log: EventLog) -> None:
    journal = Journal()
    root = sup(three(journal), strategy="rest_for_one")
    before = refs(root)
    journal.clear()
    ref_of(root, "b").tell(Crash())
    log.wait(CHILD_RESTARTED, child="c")
    assert journal.stopped == ["c"]
    assert journal.started == ["b", "c"]
    after = refs(root)
    assert after["a"] is before["a"]
    assert after["b"] is not before["b"] and after["c"] is not before["c"]


def test_group_restart_drops_a_temporary_sibling(sup: Starter, log: EventLog) -> None:
    children = [
        ChildSpec("a", worker("a")),
        ChildSpec("tmp", worker("tmp"), restart=Restart.TEMPORARY),
    ]
    root = sup(children, strategy=Strategy.ONE_FOR_ALL)
    ref_of(root, "a").tell(Crash())
    log.wait(CHILD_RESTARTED, child="a")
    assert [i.id for i in which_children(root)] == ["a"]


# -- restart types ---------------------------------------------------------------------


def test_permanent_is_restarted_even_after_a_normal_exit(sup: Starter, log: EventLog) -> None:
    root = sup([ChildSpec("p", worker("p"))])
    old = ref_of(root, "p")
    old.tell(Exit())
    event = log.wait(CHILD_RESTARTED, child="p")
    assert event.data["reason"] == repr("normal")
    assert refs(root)["p"] is not old


def test_transient_restarted_after_crash_not_after_normal_exit(sup: Starter, log: EventLog) -> None:
    root = sup([ChildSpec("t", worker("t"), restart=Restart.TRANSIENT)])
    first = ref_of(root, "t")
    first.tell(Crash("bad"))
    event = log.wait(CHILD_RESTARTED, child="t")
    assert event.data["reason"] == repr(RuntimeError("bad"))
    second = ref_of(root, "t")
    assert second is not first
    second.tell(Exit())
    log.wait(CHILD_TERMINATED, child="t", reason=repr("normal"))
    assert refs(root) == {"t": None}  # spec kept, not running
    assert count_children(root) == ChildCounts(1, 0, 0, 1)
    assert len(log.matching(CHILD_RESTARTED)) == 1


def test_temporary_is_never_restarted_and_is_removed(sup: Starter, log: EventLog) -> None:
    root = sup(
        [ChildSpec("k", worker("k")), ChildSpec("tmp", worker("tmp"), restart=Restart.TEMPORARY)]
    )
    ref_of(root, "tmp").tell(Crash())
    log.wait(CHILD_TERMINATED, child="tmp")
    assert list(refs(root)) == ["k"]
    assert log.matching(CHILD_RESTARTED) == []
    assert statistics(root).failures == 1


# -- intensity and escalation ----------------------------------------------------------


def test_escalates_exactly_at_max_restarts_plus_one(sup: Starter, log: EventLog) -> None:
    clock = VirtualClock()
    journal = Journal()
    root = sup(three(journal), max_restarts=3, max_seconds=5.0, clock=clock, name="root")
    dead = down_queue(root)
    for n in range(1, 4):
        ref_of(root, "b").tell(Crash())
        log.wait(CHILD_RESTARTED, child="b", count=n)
        clock.advance(1.0)  # all three stay inside the 5 s window
    assert statistics(root).restarts == 3 and root.is_alive()
    journal.clear()
    ref_of(root, "b").tell(Crash())
    down = dead.get(timeout=5)
    assert isinstance(down.reason, SupervisionError)
    assert "exceeded its restart intensity" in str(down.reason)
    assert "more than 3 restart(s) within 5.0s" in str(down.reason)
    assert journal.stopped == ["c", "a"]  # reverse start order (b had crashed)
    event = log.wait(INTENSITY_EXCEEDED, supervisor="root")
    assert event.data["child"] == "b" and "RuntimeError" in event.data["reason"]
    assert len(log.matching(CHILD_RESTARTED)) == 3


def test_never_escalates_when_restarts_are_spaced_outside_the_window(
    sup: Starter, log: EventLog
) -> None:
    clock = VirtualClock()
    root = sup([ChildSpec("b", worker("b"))], max_restarts=1, max_seconds=5.0, clock=clock)
    for n in range(1, 7):
        ref_of(root, "b").tell(Crash())
        log.wait(CHILD_RESTARTED, child="b", count=n)
        assert statistics(root).recent_restarts == 1
        clock.advance(5.0)  # the previous restart has just left the window
    stats = statistics(root)
    assert root.is_alive() and stats.restarts == 6 and stats.failures == 6
    assert log.matching(INTENSITY_EXCEEDED) == []


def test_zero_max_restarts_escalates_on_first_crash(sup: Starter) -> None:
    root = sup([ChildSpec("b", worker("b"))], max_restarts=0)
    dead = down_queue(root)
    ref_of(root, "b").tell(Crash())
    assert isinstance(dead.get(timeout=5).reason, SupervisionError)


def test_child_supervisor_escalates_and_root_applies_its_strategy(
    sup: Starter, bus: EventBus, log: EventLog
) -> None:
    clock = VirtualClock()
    journal = Journal()
    inner = Supervisor.spec(
        "sub",
        [ChildSpec("b", worker("b", journal))],
        max_restarts=1,
        clock=clock,
        events=bus,
    )
    root = sup(
        [ChildSpec("a", worker("a", journal)), inner],
        strategy=Strategy.ONE_FOR_ALL,
        clock=clock,
        name="root",
    )
    old = refs(root)
    ref_of(ref_of(root, "sub"), "b").tell(Crash())
    log.wait(CHILD_RESTARTED, supervisor="sub", child="b")
    journal.clear()
    ref_of(ref_of(root, "sub"), "b").tell(Crash())
    log.wait(INTENSITY_EXCEEDED, supervisor="sub", child="b")
    log.wait(CHILD_RESTARTED, supervisor="root", child="sub")
    new = refs(root)
    assert new["a"] is not old["a"] and new["sub"] is not old["sub"]  # one_for_all
    assert journal.stopped == ["a"]  # b was already dead when sub gave up
    assert journal.started == ["a", "b"]
    assert statistics(root).restarts == 1
    assert statistics(ref_of(root, "sub")).restarts == 0
    terminated = log.matching(CHILD_TERMINATED, supervisor="root", child="sub")
    assert "SupervisionError" in terminated[0].data["reason"]


def test_failing_restarts_count_toward_intensity(sup: Starter, log: EventLog) -> None:
    attempts: list[int] = []

    def flaky() -> pykka.ActorRef[Any]:
        attempts.append(1)
        return Worker.start("f") if len(attempts) == 1 else FailingStart.start()

    root = sup([ChildSpec("f", flaky)], max_restarts=2, clock=VirtualClock())
    dead = down_queue(root)
    ref_of(root, "f").tell(Crash())
    assert isinstance(dead.get(timeout=5).reason, SupervisionError)
    assert len(attempts) == 1 + 2  # the first start, then two failed restarts
    log.wait(INTENSITY_EXCEEDED, child="f")


# -- shutdown ---------------------------------------------------------------------------


def test_stop_shuts_children_down_in_reverse_start_order(sup: Starter) -> None:
    journal = Journal()
    inner = Supervisor.spec(
        "sub", [ChildSpec("s1", worker("s1", journal)), ChildSpec("s2", worker("s2", journal))]
    )
    root = sup([ChildSpec("a", worker("a", journal)), inner, ChildSpec("z", worker("z", journal))])
    reasons = {i.id: down_queue(i.ref) for i in which_children(root) if i.ref is not None}
    assert root.stop(block=True, timeout=10)
    assert journal.stopped == ["z", "s2", "s1", "a"]
    assert all(q.get(timeout=5).reason == SHUTDOWN for q in reasons.values())


def test_a_child_that_will_not_stop_is_abandoned_and_reported(sup: Starter, log: EventLog) -> None:
    journal = Journal()
    release, entered = threading.Event(), threading.Event()
    stuck_spec = ChildSpec("stuck", lambda: Stuck.start(release, entered), shutdown=0.2)
    root = sup(
        [ChildSpec("a", worker("a", journal)), stuck_spec, ChildSpec("z", worker("z", journal))]
    )
    stuck = refs(root)["stuck"]
    try:
        assert terminate_child(root, "stuck") is True
        assert entered.is_set()
        event = log.wait(CHILD_TERMINATED, child="stuck", abandoned=True)
        assert "abandoned after 0.2s" in event.data["reason"]
        assert statistics(root).abandoned == 1
        assert stuck is not None and stuck.is_alive() is False  # stopped flag is set at once
        assert root.stop(block=True, timeout=10)  # shutdown moves on past it
        assert journal.stopped == ["z", "a"]
    finally:
        release.set()
    assert stuck is not None and wait_dead(stuck, 5)


def test_abandoned_during_supervisor_shutdown(sup: Starter, log: EventLog) -> None:
    journal = Journal()
    release, entered = threading.Event(), threading.Event()
    stuck_spec = ChildSpec("stuck", lambda: Stuck.start(release, entered), shutdown=0.1)
    root = sup(
        [ChildSpec("a", worker("a", journal)), stuck_spec, ChildSpec("z", worker("z", journal))]
    )
    stuck = refs(root)["stuck"]
    try:
        assert root.stop(block=True, timeout=10)
        assert journal.stopped == ["z", "a"]
        log.wait(CHILD_TERMINATED, child="stuck", abandoned=True)
    finally:
        release.set()
    assert stuck is not None and wait_dead(stuck, 5)


# -- auto_shutdown ------------------------------------------------------------------------


def _significant(id: str, journal: Journal) -> ChildSpec:
    return ChildSpec(id, worker(id, journal), restart=Restart.TRANSIENT, significant=True)


def test_any_significant_stops_the_supervisor(sup: Starter, log: EventLog) -> None:
    journal = Journal()
    children = [
        ChildSpec("other", worker("other", journal)),
        _significant("s1", journal),
        _significant("s2", journal),
    ]
    root = sup(children, auto_shutdown=AutoShutdown.ANY_SIGNIFICANT)
    dead = down_queue(root)
    ref_of(root, "s1").tell(Crash())  # a crash restarts it
    log.wait(CHILD_RESTARTED, child="s1")
    assert root.is_alive()
    ref_of(root, "s1").tell(Exit())
    assert dead.get(timeout=5).reason == SHUTDOWN
    assert journal.stopped[-2:] == ["s2", "other"]


def test_all_significant_waits_for_the_last_one(sup: Starter, log: EventLog) -> None:
    journal = Journal()
    children = [
        ChildSpec("other", worker("other", journal)),
        _significant("s1", journal),
        _significant("s2", journal),
    ]
    root = sup(children, auto_shutdown="all_significant")
    dead = down_queue(root)
    ref_of(root, "s1").tell(Exit())
    log.wait(CHILD_TERMINATED, child="s1")
    assert root.is_alive() and refs(root)["s1"] is None
    ref_of(root, "s2").tell(Exit())
    assert dead.get(timeout=5).reason == SHUTDOWN
    assert "other" in journal.stopped


# -- administration -----------------------------------------------------------------------


def test_start_terminate_restart_delete_child(sup: Starter, log: EventLog) -> None:
    root = sup([ChildSpec("a", worker("a"))])
    added = start_child(root, ChildSpec("b", worker("b")))
    assert ping(added)[0] == "b"
    log.wait(CHILD_STARTED, child="b")
    with pytest.raises(UsageError, match="used twice"):
        start_child(root, ChildSpec("b", worker("b")))
    assert terminate_child(root, "b") is True
    assert terminate_child(root, "b") is False
    assert refs(root)["b"] is None and not added.is_alive()
    with pytest.raises(UsageError, match="has no child 'nope'"):
        terminate_child(root, "nope")
    again = restart_child(root, "b")
    assert again.is_alive() and refs(root)["b"] is again
    with pytest.raises(UsageError, match="terminate_child"):
        delete_child(root, "b")
    assert terminate_child(root, again) is True  # by ref works too
    delete_child(root, "b")
    assert list(refs(root)) == ["a"]
    assert statistics(root).restarts == 0  # administrative restarts are not charged
    with pytest.raises(StartError):
        start_child(root, ChildSpec("bad", FailingStart.start))
    assert list(refs(root)) == ["a"]


def test_terminating_a_child_never_triggers_a_restart(sup: Starter, log: EventLog) -> None:
    root = sup([ChildSpec("a", worker("a"))])
    terminate_child(root, "a")
    restart_child(root, "a")  # a barrier: any stray Down would have been handled first
    assert log.matching(CHILD_RESTARTED, reason=repr("shutdown")) == []
    assert statistics(root).restarts == 0


def test_statistics_and_events(sup: Starter, log: EventLog) -> None:
    clock = VirtualClock(100.0)
    root = sup([ChildSpec("a", worker("a"))], clock=clock, name="root")
    clock.advance(7.5)
    ref_of(root, "a").tell(Crash("x"))
    restarted = log.wait(CHILD_RESTARTED, child="a")
    stats = statistics(root)
    assert (stats.name, stats.restarts, stats.failures, stats.abandoned) == ("root", 1, 1, 0)
    assert stats.uptime == pytest.approx(7.5) and stats.started_at > 0
    assert (stats.active, stats.specs) == (1, 1)
    started = log.wait(CHILD_STARTED, child="a")
    assert started.data["supervisor"] == "root"
    terminated = log.wait(CHILD_TERMINATED, child="a")
    assert terminated.data["reason"] == repr(RuntimeError("x"))
    assert restarted.data == {
        "supervisor": "root",
        "child": "a",
        "reason": repr(RuntimeError("x")),
        "trigger": "a",
        "restarts": 1,
    }


def test_tree_dump(sup: Starter, log: EventLog) -> None:
    inner = Supervisor.spec(
        "sub",
        [ChildSpec("b", worker("b"), restart=Restart.TRANSIENT)],
        strategy=Strategy.REST_FOR_ONE,
    )
    root = sup([ChildSpec("config", worker("config")), inner], name="root")
    ref_of(root, "config").tell(Crash())
    log.wait(CHILD_RESTARTED, child="config")
    node = tree(root)
    b = node.find("b")
    assert b is not None and b.status == "alive"
    assert str(node) == (
        "root (Supervisor, one_for_one)\n"
        "├── config (Worker) alive restarts=1\n"
        "└── sub (Supervisor, rest_for_one) alive\n"
        "    └── b (Worker) alive [transient]"
    )
    terminate_child(ref_of(root, "sub"), "b")
    b = tree(root).find("b")
    assert b is not None and b.status == "dead"
