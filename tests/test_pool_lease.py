"""Managed blocking in WorkerPool: a task parked on its Lease lends out its slot.

Supervision layer only (no LM): tasks park, wait on Events, and resume. A
parked task's slot goes to the next input (on a burst worker); a task asking
to resume gets the next free slot ahead of new input.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from dspex.errors import UsageError
from dspex.supervision import Failed, Lease, Ok, WorkerPool, current_lease

pytestmark = pytest.mark.timeout(60)

WAIT = 5.0  # bound on every wait that should succeed


class Journal:
    """What the tasks did, in order (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entries: list[str] = []

    def add(self, entry: str) -> None:
        with self._lock:
            self.entries.append(entry)


def lease_here() -> Lease:
    lease = current_lease()
    assert lease is not None, "a task of a pool with burst > 0 has a lease"
    return lease


def values(results: list[Any]) -> dict[int, Any]:
    assert all(isinstance(r, Ok) for r in results), results
    return {r.index: r.value for r in results}


# -- current_lease ------------------------------------------------------------------


def test_current_lease_is_none_outside_a_pool_task() -> None:
    assert current_lease() is None
    with WorkerPool(size=1, burst=1) as pool:
        list(pool.map(lambda x: x, [1]))
    assert current_lease() is None  # the consumer thread never gets one


def test_a_map_task_has_its_own_lease_the_same_on_every_call(
    make_pool: Callable[..., WorkerPool],
) -> None:
    def task(x: str) -> tuple[Lease, bool, int]:
        lease = lease_here()
        return lease, current_lease() is lease, lease.task.seq

    pool = make_pool(size=1, burst=1)
    got = values(list(pool.map(task, ["a", "b", "c"])))
    for index, (lease, same, seq) in got.items():
        assert same and seq == index
        assert not lease.parked
    assert len({id(lease) for lease, _, _ in got.values()}) == 3  # one lease per task
    assert pool.statistics().burst_workers == 0  # nobody parked: no extra thread


def test_tasks_of_a_pool_without_burst_get_no_lease(make_pool: Callable[..., WorkerPool]) -> None:
    pool = make_pool(size=2)
    assert [r.unwrap() for r in pool.map(lambda x: current_lease(), [1, 2, 3])] == [None] * 3
    assert pool.submit(current_lease).result(WAIT) is None


# -- parking lends the slot -----------------------------------------------------------


def test_a_parked_task_lets_the_next_input_start() -> None:
    b_started = threading.Event()
    granted = threading.Event()

    def task(name: str) -> str:
        if name == "A":
            lease = lease_here()
            lease.park()
            assert lease.parked
            # With size=1 and no parking, B could only start after A returned.
            assert b_started.wait(WAIT), "B never started while A was parked"
            lease.resume(granted.set)
            assert granted.wait(WAIT), "A never got its slot back"
            assert not lease.parked
        else:
            b_started.set()
        return name

    with WorkerPool(size=1, burst=1) as pool:
        results = list(pool.map(task, ["A", "B"], ordered=False))
        stats = pool.statistics()
    assert values(results) == {0: "A", 1: "B"}
    assert stats.burst_workers == 1
    assert stats.parked == 0
    assert stats.workers == 2  # the burst worker stays until the pool stops
    assert stats.tasks_ok == 2


def test_a_resumer_waits_for_a_slot_and_goes_before_new_input() -> None:
    journal = Journal()
    b_started = threading.Event()
    resume_requested = threading.Event()
    granted = threading.Event()
    a_done = threading.Event()
    seen: dict[str, bool] = {}

    def on_granted() -> None:
        journal.add("A granted")
        granted.set()

    def task(name: str) -> str:
        journal.add(f"{name} start")
        if name == "A":
            lease = lease_here()
            lease.park()
            assert b_started.wait(WAIT)
            lease.resume(on_granted)
            resume_requested.set()
            assert granted.wait(WAIT), "A never got its slot back"
            journal.add("A done")
            a_done.set()
        elif name == "B":
            b_started.set()
            assert resume_requested.wait(WAIT)
            seen["granted while B ran"] = granted.is_set()  # B holds the only slot
            journal.add("B done")
        else:
            seen["C after A granted"] = granted.is_set()
            seen["C after A done"] = a_done.is_set()
        return name

    with WorkerPool(size=1, burst=1) as pool:
        results = list(pool.map(task, ["A", "B", "C"], ordered=False))
        assert pool.statistics().burst_workers == 1
    assert values(results) == {0: "A", 1: "B", 2: "C"}
    assert seen == {
        "granted while B ran": False,
        "C after A granted": True,
        "C after A done": True,
    }
    assert journal.entries == [
        "A start",
        "B start",
        "B done",
        "A granted",
        "A done",
        "C start",
    ]


def test_burst_caps_the_inputs_admitted_for_parked_tasks() -> None:
    # A and B both park, but burst=1 allows only one input beyond size: C is
    # not queued meanwhile, so when A finishes B (resuming) runs before C.
    journal = Journal()
    b_parked = threading.Event()
    a_granted = threading.Event()
    b_resume_requested = threading.Event()
    b_granted = threading.Event()
    seen: dict[str, Any] = {}

    def task(name: str) -> str:
        journal.add(f"{name} start")
        if name == "A":
            lease = lease_here()
            lease.park()
            assert b_parked.wait(WAIT)
            lease.resume(a_granted.set)
            assert a_granted.wait(WAIT)
            assert b_resume_requested.wait(WAIT)  # B asks while A still works
            journal.add("A done")
        elif name == "B":
            lease = lease_here()
            lease.park()
            b_parked.set()
            assert a_granted.wait(WAIT)
            lease.resume(b_granted.set)
            b_resume_requested.set()
            assert b_granted.wait(WAIT)
            journal.add("B done")
        else:
            seen["C after B granted"] = b_granted.is_set()
        return name

    with WorkerPool(size=1, burst=1) as pool:
        results = list(pool.map(task, ["A", "B", "C"], ordered=False))
        stats = pool.statistics()
    assert values(results) == {0: "A", 1: "B", 2: "C"}
    assert seen == {"C after B granted": True}
    assert journal.entries == ["A start", "B start", "A done", "B done", "C start"]
    assert stats.burst_workers == 1  # two parked, but burst=1
    assert stats.workers == 2
    assert stats.parked == 0


def test_ordered_map_lets_a_parked_head_resume_after_a_buffered_result() -> None:
    # In input order, B's result waits in the buffer for A; A must still get
    # its slot back (else neither A nor the buffered B could ever finish).
    b_done = threading.Event()
    granted = threading.Event()

    def task(name: str) -> str:
        if name == "A":
            lease = lease_here()
            lease.park()
            assert b_done.wait(WAIT)
            lease.resume(granted.set)
            assert granted.wait(WAIT), "A never got its slot back (B's result is buffered)"
        else:
            b_done.set()
        return name

    with WorkerPool(size=1, burst=1) as pool:
        results = list(pool.map(task, ["A", "B"]))  # ordered=True is the default
        stats = pool.statistics()
    assert [(r.index, r.ok) for r in results] == [(0, True), (1, True)]
    assert [r.unwrap() for r in results] == ["A", "B"]
    assert stats.parked == 0


def test_without_burst_nothing_is_admitted_beyond_size() -> None:
    journal = Journal()

    def task(name: str) -> str:
        journal.add(f"{name} start")
        lease = current_lease()  # no burst: tasks cannot lend their slot
        journal.add(f"{name} done, lease={lease}")
        return name

    with WorkerPool(size=1) as pool:
        results = list(pool.map(task, ["A", "B", "C"], ordered=False))
        stats = pool.statistics()
    assert values(results) == {0: "A", 1: "B", 2: "C"}
    assert journal.entries == [
        "A start",
        "A done, lease=None",
        "B start",
        "B done, lease=None",
        "C start",
        "C done, lease=None",
    ]
    assert stats.burst_workers == 0 and stats.workers == 1 and stats.parked == 0


# -- submit, close, unpark ------------------------------------------------------------------


def test_a_submitted_task_that_parks_is_granted_at_once() -> None:
    granted = threading.Event()

    def task() -> str:
        lease = lease_here()
        lease.park()
        assert lease.parked
        lease.resume(granted.set)  # a lone submission has no slot limit to wait for
        assert granted.wait(WAIT)
        assert not lease.parked
        return "done"

    with WorkerPool(size=1, burst=2) as pool:
        assert pool.submit(task).result(WAIT) == "done"
        stats = pool.statistics()
    assert stats.parked == 0 and stats.burst_workers == 0


def test_closing_the_stream_grants_a_pending_resume() -> None:
    b_started = threading.Event()
    resume_requested = threading.Event()
    broke = threading.Event()
    granted = threading.Event()
    seen: dict[str, bool] = {}

    def on_granted() -> None:
        seen["granted after the consumer broke"] = broke.is_set()
        granted.set()

    def task(name: str) -> str:
        if name == "A":
            lease = lease_here()
            lease.park()
            assert b_started.wait(WAIT)
            lease.resume(on_granted)  # pending: B holds the only slot
            resume_requested.set()
            assert granted.wait(WAIT), "closing the stream left A waiting"
        else:
            b_started.set()
            assert resume_requested.wait(WAIT)
        return name

    with WorkerPool(size=1, burst=1) as pool:
        stream = pool.map(task, ["A", "B"], ordered=False)
        first = next(stream)
        broke.set()
        stream.close()  # waits for the running A, which needs its grant to finish
        assert granted.wait(WAIT)
        stats = pool.statistics()
        assert pool.stop() is True
    assert first == Ok("B", 1, "B")
    assert seen == {"granted after the consumer broke": True}
    assert stats.parked == 0


def test_a_parked_task_is_granted_when_its_stream_closes() -> None:
    b_done = threading.Event()
    closed = threading.Event()
    granted = threading.Event()

    def task(name: str) -> str:
        if name == "A":
            lease = lease_here()
            lease.park()
            assert closed.wait(WAIT)
            lease.resume(granted.set)  # before or after the close: granted either way
            assert granted.wait(WAIT)
        else:
            b_done.set()
        return name

    with WorkerPool(size=1, burst=1) as pool:
        stream = pool.map(task, ["A", "B"], ordered=False)
        assert next(stream).index == 1
        assert b_done.is_set()
        closed.set()
        stream.close()
        assert granted.wait(WAIT)
        assert pool.statistics().parked == 0
        assert pool.stop() is True


def test_unpark_counts_again_and_runs_pending_callbacks() -> None:
    b_started = threading.Event()
    b_release = threading.Event()
    called: list[str] = []
    reprs: list[str] = []

    def task(name: str) -> str:
        if name == "A":
            lease = lease_here()
            reprs.append(repr(lease))
            lease.park()
            lease.park()  # idempotent
            reprs.append(repr(lease))
            assert b_started.wait(WAIT)
            lease.resume(lambda: called.append("pending"))  # B holds the slot
            reprs.append(repr(lease))
            assert called == []
            lease.unpark()  # the wait ended abnormally: count again at once
            assert called == ["pending"]
            assert not lease.parked
            reprs.append(repr(lease))
            lease.unpark()  # idempotent
            lease.resume(lambda: called.append("at once"))  # active: no waiting
            assert called == ["pending", "at once"]
            b_release.set()
        else:
            b_started.set()
            assert b_release.wait(WAIT)
        return name

    with WorkerPool(size=1, burst=1) as pool:
        results = list(pool.map(task, ["A", "B"], ordered=False))
        stats = pool.statistics()
    assert values(results) == {0: "A", 1: "B"}
    assert reprs == [
        "Lease(task=0, active)",
        "Lease(task=0, parked)",
        "Lease(task=0, resuming)",
        "Lease(task=0, active)",
    ]
    assert stats.parked == 0
    assert stats.burst_workers == 1  # parked twice, one signal: one extra worker


def test_a_task_that_ends_parked_frees_its_place() -> None:
    # A parks and returns without resuming (e.g. it raised mid-wait): the
    # stream forgets its parked place and later inputs still run.
    def task(x: int) -> int:
        if x == 0:
            lease_here().park()
            raise ValueError("gave up while parked")
        return x

    with WorkerPool(size=1, burst=1) as pool:
        results = list(pool.map(task, range(5)))
        stats = pool.statistics()
    assert [r.ok for r in results] == [False, True, True, True, True]
    assert isinstance(results[0], Failed) and isinstance(results[0].error, ValueError)
    assert stats.parked == 0 and stats.burst_workers == 1


# -- validation ------------------------------------------------------------------------


@pytest.mark.parametrize("burst", [-1, True, 1.5, "2"])
def test_bad_burst_is_refused_naming_the_field(burst: Any) -> None:
    with pytest.raises(UsageError, match=r"burst=") as info:
        WorkerPool(size=1, burst=burst)
    assert repr(burst) in str(info.value)
