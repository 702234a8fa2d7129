"""WorkerPool: Task.async_stream semantics on supervised worker actors."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pykka
import pytest

from dspex.errors import ActorStoppedError, UsageError
from dspex.supervision import (
    Ok,
    Restart,
    WorkerPool,
    shutdown,
)
from dspex.supervision._pool_worker import Worker

pytestmark = pytest.mark.timeout(60)

WAIT = 5.0  # bound on every wait that should succeed


# -- results ---------------------------------------------------------------------


def test_ordered_results_carry_index_and_item(make_pool: Callable[..., WorkerPool]) -> None:
    pool = make_pool(size=8)
    results = list(pool.map(lambda x: x * x, range(200)))
    assert [r.index for r in results] == list(range(200))
    assert all(isinstance(r, Ok) for r in results)
    assert [r.unwrap() for r in results] == [x * x for x in range(200)]
    assert results[7] == Ok(49, 7, 7)


def test_ordered_mode_waits_for_the_head() -> None:
    one_done = threading.Event()

    def fn(x: int) -> int:
        if x == 0:
            assert one_done.wait(WAIT)  # finishes after task 1
        else:
            one_done.set()
        return x

    with WorkerPool(size=2) as pool:
        assert [r.index for r in pool.map(fn, [0, 1])] == [0, 1]


def test_unordered_yields_in_completion_order() -> None:
    gate = threading.Event()

    def fn(x: int) -> int:
        if x == 0:
            assert gate.wait(WAIT)  # released by the consumer once 1 is in
        return x

    try:
        with WorkerPool(size=2) as pool:
            seen = []
            for result in pool.map(fn, [0, 1], ordered=False):
                seen.append(result.index)
                gate.set()
            assert seen == [1, 0]
    finally:
        gate.set()


# -- concurrency and backpressure ------------------------------------------------


def test_max_concurrency_is_reached_and_never_exceeded(
    make_pool: Callable[..., WorkerPool],
) -> None:
    limit = 3
    barrier = threading.Barrier(limit, timeout=WAIT)  # passes only with `limit` running
    lock = threading.Lock()
    running = 0
    peak = 0

    def fn(x: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            barrier.wait()
            return x
        finally:
            with lock:
                running -= 1

    pool = make_pool(size=8)
    results = list(pool.map(fn, range(limit * 4), max_concurrency=limit))
    assert all(r.ok for r in results), results
    assert peak == limit


@pytest.mark.parametrize("ordered", [True, False])
def test_input_is_pulled_lazily_from_an_infinite_generator(
    make_pool: Callable[..., WorkerPool], ordered: bool
) -> None:
    limit = 4
    consumed = 0
    pulled = 0
    lead = 0

    def source() -> Iterator[int]:
        nonlocal pulled, lead
        for x in itertools.count():
            pulled += 1
            lead = max(lead, pulled - consumed)
            yield x

    pool = make_pool(size=8)
    stream = pool.map(lambda x: x, source(), max_concurrency=limit, ordered=ordered)
    for result in itertools.islice(stream, 50):
        assert result.ok
        consumed += 1
        assert pulled <= consumed + limit
    stream.close()
    assert consumed == 50
    assert lead <= limit
    assert pulled <= 50 + limit


def test_ordered_buffer_counts_against_the_limit(make_pool: Callable[..., WorkerPool]) -> None:
    limit = 4
    others = threading.Barrier(limit, timeout=WAIT)  # task 0 + tasks 1..3 finished
    pulled = 0

    def source() -> Iterator[int]:
        nonlocal pulled
        for x in range(12):
            pulled += 1
            yield x

    def fn(x: int) -> int:
        if x == 0:
            others.wait()  # 1..3 have returned: their results will be buffered
            # Give a wrong stream time to pull past the limit; a right one never does.
            threading.Event().wait(0.2)
            assert pulled == limit
        elif x < limit:
            others.wait()
        return x

    pool = make_pool(size=8)
    results = list(pool.map(fn, source(), max_concurrency=limit))
    assert [r.index for r in results] == list(range(12))
    assert all(r.ok for r in results), results


# -- leaving early and stopping --------------------------------------------------


def test_break_cancels_queued_tasks_and_waits_for_running_ones(
    make_pool: Callable[..., WorkerPool],
) -> None:
    lock = threading.Lock()
    running = 0
    started = 0
    pulled = 0

    def source() -> Iterator[int]:
        nonlocal pulled
        for x in itertools.count():
            pulled += 1
            yield x

    def fn(x: int) -> int:
        nonlocal running, started
        with lock:
            running += 1
            started += 1
        threading.Event().wait(0.001)  # a task that takes a moment
        with lock:
            running -= 1
        return x

    pool = make_pool(size=4)
    for result in pool.map(fn, source(), max_concurrency=4):
        if result.index == 5:
            break
    with lock:
        assert running == 0
        started_at_break = started
    assert pulled <= 6 + 4
    # Prove the pool is idle: a new stream runs and nothing of the old one starts.
    assert [r.unwrap() for r in pool.map(lambda x: -x, range(3))] == [0, -1, -2]
    assert started == started_at_break


def test_break_with_stuck_tasks_abandons_their_workers() -> None:
    gate = threading.Event()
    lock = threading.Lock()
    started: set[int] = set()

    def fn(x: int) -> int:
        with lock:
            started.add(x)
        if x >= 2:
            gate.wait(WAIT)
        return x

    try:
        with WorkerPool(size=4) as pool:
            stream = pool.map(fn, range(100), max_concurrency=4, timeout=0.3)
            assert [next(stream).index, next(stream).index] == [0, 1]
            stream.close()  # tasks 2..5 are stuck on the gate: abandoned after 0.3s
            stats = pool.statistics()
            assert stats.workers == 4 and stats.workers_abandoned >= 1
            with lock:
                seen = set(started)
            gate.set()
            assert [r.unwrap() for r in pool.map(lambda x: x, range(4))] == [0, 1, 2, 3]
            with lock:
                assert started == seen  # no queued task of the closed stream ran
            assert max(seen) <= 5
    finally:
        gate.set()


def test_stopping_the_pool_under_a_stream_raises_to_the_consumer() -> None:
    pool = WorkerPool(size=2)
    stream = pool.map(lambda x: x, range(1000), max_concurrency=2)
    assert next(stream).ok
    assert pool.stop() is True
    with pytest.raises(ActorStoppedError, match="stopped"):
        list(stream)
    assert not pool.is_alive()
    with pytest.raises(ActorStoppedError):
        pool.map(lambda x: x, [1])
    with pytest.raises(ActorStoppedError):
        pool.submit(lambda: 1).result(WAIT)
    assert pool.stop() is True  # idempotent


def test_stop_leaves_no_worker_thread() -> None:
    before = set(threading.enumerate())
    pool = WorkerPool(size=6, name="threads")
    assert len(set(threading.enumerate()) - before) == 7  # 6 workers + the pool actor
    assert pool.stop() is True
    assert not pykka.ActorRegistry.get_by_class(Worker)
    for thread in set(threading.enumerate()) - before:
        thread.join(WAIT)
    assert set(threading.enumerate()) - before == set()


# -- submit, statistics, supervision, validation --------------------------------------


def test_submit_returns_a_future(make_pool: Callable[..., WorkerPool]) -> None:
    pool = make_pool(size=2)
    assert pool.submit(pow, 2, 10).result(WAIT) == 1024
    assert pool.submit(int, "ff", base=16).result(WAIT) == 255
    with pytest.raises(ZeroDivisionError):
        pool.submit(lambda: 1 / 0).result(WAIT)
    lock = threading.Lock()
    calls = []

    def once_crashing() -> str:
        with lock:
            calls.append(1)
            first = len(calls) == 1
        if first:
            raise SystemExit("first attempt dies")
        return "second attempt"

    assert pool.submit(once_crashing).result(WAIT) == "second attempt"
    stats = pool.statistics()
    assert (stats.tasks_ok, stats.tasks_failed, stats.tasks_retried) == (3, 1, 1)
    assert stats.worker_restarts == 1 and stats.tasks_done == 4


def test_statistics_snapshot(make_pool: Callable[..., WorkerPool]) -> None:
    pool = make_pool(size=3, name="stats")
    list(pool.map(lambda x: 1 // x, range(5)))
    stats = pool.statistics()
    assert (stats.name, stats.size, stats.workers, stats.queued) == ("stats", 3, 3, 0)
    assert (stats.tasks_ok, stats.tasks_failed, stats.tasks_done) == (4, 1, 5)
    assert stats.uptime > 0
    assert repr(pool) == "WorkerPool(name='stats', size=3, running)"


def test_child_spec_starts_a_pool_a_supervisor_can_own() -> None:
    spec = WorkerPool.child_spec("evaluators", size=2, name="eval", restart=Restart.TRANSIENT)
    assert spec.id == "evaluators" and spec.restart is Restart.TRANSIENT
    ref = spec.start()
    try:
        pool = WorkerPool.of(ref)
        assert pool.name == "eval" and pool.ref is ref
        assert [r.unwrap() for r in pool.map(abs, [-1, -2])] == [1, 2]
    finally:
        assert shutdown(ref, spec.shutdown)
    assert not pool.is_alive()


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"size": 0}, "size=0"),
        ({"size": 2, "max_seconds": 0}, "max_seconds=0"),
        ({"size": 2, "max_retries": -1}, "max_retries=-1"),
        ({"size": 2, "name": ""}, "name=''"),
    ],
)
def test_bad_pool_options_are_named(options: dict[str, Any], field: str) -> None:
    with pytest.raises(UsageError, match=field.replace("(", r"\(")):
        WorkerPool(**options)


def test_bad_map_arguments_are_named(make_pool: Callable[..., WorkerPool]) -> None:
    pool = make_pool(size=2)
    with pytest.raises(UsageError, match="max_concurrency=3"):
        pool.map(abs, [1], max_concurrency=3)
    with pytest.raises(UsageError, match="timeout=-1"):
        pool.map(abs, [1], timeout=-1)
    with pytest.raises(UsageError, match="not iterable"):
        pool.map(abs, 5)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="retry_on"):
        pool.map(abs, [1], retry_on=ValueError)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="callable"):
        pool.submit(5)  # type: ignore[arg-type]
