"""WorkerPool failures: task errors, worker crashes and retries, timeouts, intensity."""

from __future__ import annotations

import queue
import random
import threading
from collections import Counter
from collections.abc import Callable

import pykka
import pytest

from dspex.errors import CallTimeoutError, SupervisionError
from dspex.supervision import (
    POOL_INTENSITY_EXCEEDED,
    POOL_TASK_RETRIED,
    POOL_WORKER_ABANDONED,
    POOL_WORKER_RESTARTED,
    ActorAbortError,
    Event,
    EventBus,
    Failed,
    Ok,
    VirtualClock,
    WorkerPool,
    shutdown,
)
from dspex.supervision._pool_worker import Worker

pytestmark = pytest.mark.timeout(60)

WAIT = 5.0  # bound on every wait that should succeed


def _recorder(bus: EventBus) -> queue.Queue[Event]:
    events: queue.Queue[Event] = queue.Queue()
    bus.subscribe(events.put)
    return events


def _names(events: queue.Queue[Event]) -> list[str]:
    names = []
    while not events.empty():
        names.append(events.get_nowait().name)
    return names


# -- failures --------------------------------------------------------------------


def test_task_exception_is_failed_without_retry(make_pool: Callable[..., WorkerPool]) -> None:
    calls = Counter[int]()

    def fn(x: int) -> int:
        calls[x] += 1
        if x == 2:
            raise ValueError("bad input 2")
        return x

    pool = make_pool(size=4)
    results = list(pool.map(fn, range(5)))
    failed = results[2]
    assert isinstance(failed, Failed)
    assert isinstance(failed.error, ValueError) and failed.attempts == 1
    assert failed.item == 2
    with pytest.raises(ValueError, match="bad input 2"):
        failed.unwrap()
    assert calls[2] == 1
    stats = pool.statistics()
    assert (stats.tasks_ok, stats.tasks_failed, stats.tasks_retried) == (4, 1, 0)
    assert stats.worker_restarts == 0


def test_retry_on_retries_chosen_exceptions(make_pool: Callable[..., WorkerPool]) -> None:
    calls = Counter[int]()
    lock = threading.Lock()

    def fn(x: int) -> int:
        with lock:
            calls[x] += 1
            n = calls[x]
        if x == 1 and n == 1:
            raise ConnectionError("flaky")
        if x == 2:
            raise ConnectionError("always")
        return x

    pool = make_pool(size=4)
    results = list(pool.map(fn, range(3), retry_on=(ConnectionError,), max_retries=2))
    assert results[1] == Ok(1, 1, 1)
    assert isinstance(results[2], Failed) and results[2].attempts == 3
    assert calls[2] == 3
    assert pool.statistics().tasks_retried == 3


def test_worker_crash_restarts_worker_and_retries_task_elsewhere() -> None:
    bus = EventBus()
    events = _recorder(bus)
    threads: dict[int, list[str]] = {}
    lock = threading.Lock()

    def fn(x: int) -> int:
        with lock:
            threads.setdefault(x, []).append(threading.current_thread().name)
            first = len(threads[x]) == 1
        if x == 3 and first:
            raise SystemExit("worker dies")
        return x * 10

    with WorkerPool(size=4, events=bus) as pool:
        results = list(pool.map(fn, range(8)))
        stats = pool.statistics()
        assert stats.workers == 4
    assert [r.unwrap() for r in results] == [x * 10 for x in range(8)]
    assert len(threads[3]) == 2 and threads[3][0] != threads[3][1]
    assert (stats.worker_restarts, stats.tasks_retried, stats.tasks_ok) == (1, 1, 8)
    names = _names(events)
    assert names.count(POOL_WORKER_RESTARTED) == 1
    assert names.count(POOL_TASK_RETRIED) == 1


def test_crash_beyond_max_retries_is_failed_with_the_reason(
    make_pool: Callable[..., WorkerPool],
) -> None:
    def fn(x: int) -> int:
        if x == 0:
            raise SystemExit("always dies")
        return x

    pool = make_pool(size=3, max_restarts=100)
    results = list(pool.map(fn, range(4), max_retries=2))
    failed = results[0]
    assert isinstance(failed, Failed)
    assert isinstance(failed.error, ActorAbortError)
    assert isinstance(failed.error.__cause__, SystemExit)
    assert failed.attempts == 3
    assert [r.unwrap() for r in results[1:]] == [1, 2, 3]
    stats = pool.statistics()
    assert (stats.worker_restarts, stats.tasks_retried, stats.tasks_failed) == (3, 2, 1)
    assert stats.workers == 3


def test_no_result_is_lost_or_delivered_twice_under_random_crashes(
    make_pool: Callable[..., WorkerPool],
) -> None:
    rng = random.Random(1234)
    crash = {(x, attempt) for x in range(400) for attempt in range(4) if rng.random() < 0.15}
    attempts = Counter[int]()
    lock = threading.Lock()

    def fn(x: int) -> int:
        with lock:
            n = attempts[x]
            attempts[x] += 1
        if (x, n) in crash:
            raise SystemExit(f"crash {x}/{n}")
        return x

    pool = make_pool(size=8, max_restarts=10_000, max_retries=2)
    for ordered in (True, False):
        attempts.clear()
        results = list(pool.map(fn, range(400), ordered=ordered))
        per_index = Counter(r.index for r in results)
        assert set(per_index) == set(range(400))
        assert max(per_index.values()) == 1
        for r in results:
            died = sum((r.index, n) in crash for n in range(3))
            if died == 3:
                assert isinstance(r, Failed) and r.attempts == 3
            else:
                assert r == Ok(r.index, r.index, r.index)
    assert pool.statistics().workers == 8


# -- timeouts --------------------------------------------------------------------


def test_task_timeout_fails_the_task_and_replaces_its_worker() -> None:
    bus = EventBus()
    events = _recorder(bus)
    release = threading.Event()
    returned = threading.Event()

    def fn(x: int) -> str:
        if x == 0:
            release.wait(WAIT)
            returned.set()
            return "late"
        assert returned.wait(WAIT)  # task 0's worker is done: its reply is stale
        return "ok"

    try:
        with WorkerPool(size=2, events=bus) as pool:
            results = []
            # One at a time: task 1 starts (with its own deadline) after 0 timed out.
            for result in pool.map(fn, range(2), timeout=0.3, max_concurrency=1):
                results.append(result)
                if result.index == 0:
                    release.set()
            stats = pool.statistics()
            assert stats.workers == 2  # capacity kept
            assert pool.stop() is True  # the abandoned worker exited once released
    finally:
        release.set()
    assert [r.index for r in results] == [0, 1]
    assert isinstance(results[0], Failed)
    assert isinstance(results[0].error, CallTimeoutError)
    assert results[1] == Ok("ok", 1, 1)
    assert (stats.tasks_timed_out, stats.workers_abandoned, stats.tasks_failed) == (1, 1, 1)
    assert POOL_WORKER_ABANDONED in _names(events)


# -- restart intensity -----------------------------------------------------------


def _crash() -> None:
    raise SystemExit("crash")


def test_crashes_spread_out_in_time_do_not_fail_the_pool() -> None:
    clock = VirtualClock()
    with WorkerPool(size=2, clock=clock, max_restarts=2, max_seconds=5, max_retries=0) as pool:
        for _ in range(6):
            with pytest.raises(ActorAbortError):
                pool.submit(_crash).result(WAIT)
            clock.advance(5.1)
        assert pool.is_alive()
        assert pool.statistics().worker_restarts == 6


def test_too_many_crashes_in_the_window_fail_the_pool() -> None:
    clock = VirtualClock()
    bus = EventBus()
    events = _recorder(bus)
    pool = WorkerPool(size=2, clock=clock, events=bus, max_restarts=2, max_seconds=5, max_retries=0)
    try:
        for _ in range(2):  # restarts 1 and 2: within the limit
            with pytest.raises(ActorAbortError):
                pool.submit(_crash).result(WAIT)
            clock.advance(1)
        assert pool.is_alive()
        with pytest.raises(SupervisionError, match="max_restarts=2"):
            pool.submit(_crash).result(WAIT)  # the third in 5s: intensity exceeded
        assert shutdown(pool.ref, WAIT)
        assert not pool.is_alive()
        with pytest.raises(SupervisionError):
            list(pool.map(lambda x: x, [1]))
        assert POOL_INTENSITY_EXCEEDED in _names(events)
    finally:
        pool.stop()


def test_pool_failure_raises_supervision_error_in_the_stream(
    make_pool: Callable[..., WorkerPool],
) -> None:
    pool = make_pool(size=2, max_restarts=1, max_seconds=60)
    with pytest.raises(SupervisionError, match="max_restarts=1"):
        for _ in pool.map(lambda _x: _crash(), range(10), max_retries=5):
            pass
    assert not pool.is_alive()


def test_stray_stop_of_a_worker_restarts_it() -> None:
    bus = EventBus()
    events = _recorder(bus)
    with WorkerPool(size=2, events=bus) as pool:
        victim = pykka.ActorRegistry.get_by_class(Worker)[0]
        assert shutdown(victim, WAIT)  # an idle worker notices within its poll
        event = events.get(timeout=WAIT)
        assert event.name == POOL_WORKER_RESTARTED and event.data["pool"] == "pool"
        assert [r.unwrap() for r in pool.map(str, range(4))] == ["0", "1", "2", "3"]
        assert pool.statistics().worker_restarts == 1
