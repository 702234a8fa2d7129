"""The driver side of the Ray backend: a crew of worker actors and the body that uses them.

The fan-out engine is unchanged: the driver's :class:`WorkerPool` still
runs one task per unit (ordering, ``max_errors``, journal, progress,
cancellation and parking all stay in the driver), but the task's body is a
:class:`RemoteBody`, which hands the unit to one of the :class:`RayCrew`'s
worker actors and waits for its outcome. Units travel in batches: per worker
a *sender* thread sends what queued up since its last send in one
``submit`` call, and a *collector* thread long-polls ``collect`` for the
outcomes and lease signals (see ``_worker``). A Ray call per unit cost more
CPU than the unit's own work.

**A worker that dies** (``ray.kill``, a crashed process, a lost node) is
restarted by Ray (``runtime.ray.max_restarts``). The collector's poll fails;
every unit the worker held is marked lost and its driver thread sends it
again (as a new unit id, to the least busy worker) up to :data:`REDISPATCH`
times. The driver records a unit when its outcome arrives, once: a late
outcome of a lost attempt is dropped, so a re-sent unit is neither lost nor
counted twice (an LM call it had made may be made again; a shared disk
cache answers it).

The crew is per driver process and outlives fan-outs: its workers keep their
runtimes (LM clients, connection pools, memory caches) warm between
evaluations. :func:`shutdown_crew` stops it (at exit, or in tests before
``ray.shutdown()``).
"""

from __future__ import annotations

import atexit
import itertools
import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Final

from dspex.actors._lm._budget import Budget, active_budgets
from dspex.actors._program_run import CancelEvent, current_run
from dspex.errors import ActorStoppedError, UsageError
from dspex.programs._ray._cluster import ensure_ray, import_ray
from dspex.programs._ray._jobs import Job
from dspex.programs._ray._limits import kill_budgets
from dspex.programs._ray._node import shippable_settings
from dspex.programs._ray._worker import DONE, PARK, RAISED, RESUME, UNPARK, UnitWorker
from dspex.programs._runtime_access import current_runtime
from dspex.supervision import current_lease

__all__ = ["REDISPATCH", "RayCrew", "RemoteBody", "crew", "shutdown_crew"]

logger = logging.getLogger("dspex.programs")

REDISPATCH: Final = 3
"""Times a unit is sent again after the worker holding it died."""

_ACTOR_THREADS: Final = 16
"""Ray threads of a worker actor: for the mailbox calls only (units run in its own pool)."""

_POLL: Final = 0.25
"""Seconds a ``collect`` long-poll waits, which bounds how long stopping the crew takes."""

_SUBMIT_TIMEOUT: Final = 60.0
_RESTART_WAIT: Final = 120.0
"""How long a unit waits for its restarting worker before that counts as a lost attempt."""

_JOBS_KEPT: Final = 32

_units = itertools.count(1)

# How a waiting unit ended, besides DONE and RAISED from the worker.
_LOST: Final = "lost"  # its worker died: send it again
_STOPPED: Final = "stopped"  # the crew stopped


class _Pending:
    """A unit sent to a worker, waited for by the driver pool thread that sent it."""

    __slots__ = ("done", "kind", "lease", "payload", "unit")

    def __init__(self, unit: int, lease: Any) -> None:
        self.unit = unit
        self.lease = lease
        self.done = threading.Event()
        self.kind = ""
        self.payload: Any = None

    def finish(self, kind: str, payload: Any) -> None:
        if not self.done.is_set():  # the first outcome counts; a late one is dropped
            self.kind, self.payload = kind, payload
            self.done.set()


class _Worker:
    """A worker actor as the driver sees it: its outbox, its pending units, two threads.

    The *sender* sends what queued up since its last send in one ``submit``;
    the *collector* long-polls ``collect`` and hands each outcome to its
    pending unit and each lease signal to that unit's lease.
    """

    def __init__(self, crew: RayCrew, index: int, handle: Any) -> None:
        self.crew = crew
        self.index = index
        self.handle = handle
        self.busy = 0
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.outbox: list[tuple[Any, ...]] = []
        self.pending: dict[int, _Pending] = {}
        self.threads = [
            threading.Thread(target=self._send_loop, name=f"dspex-ray-send-{index}", daemon=True),
            threading.Thread(
                target=self._collect_loop, name=f"dspex-ray-collect-{index}", daemon=True
            ),
        ]
        for thread in self.threads:
            thread.start()

    def send(self, pending: _Pending, unit: tuple[Any, ...]) -> None:
        with self.wake:
            self.pending[pending.unit] = pending
            self.outbox.append(unit)
            self.wake.notify()

    def forget(self, unit: int) -> None:
        with self.lock:
            self.pending.pop(unit, None)

    def _send_loop(self) -> None:
        ray, stopping = self.crew.ray, self.crew.stopping
        while True:
            with self.wake:
                while not self.outbox and not stopping.is_set():
                    self.wake.wait()
                if stopping.is_set():
                    return
                batch, self.outbox = self.outbox, []
            try:
                # Waiting for the ack batches what queues up meanwhile, and shows a dead worker.
                ray.get(self.handle.submit.remote(batch), timeout=_SUBMIT_TIMEOUT)
            except Exception as exc:
                self._lose([unit[0] for unit in batch], exc)

    def _collect_loop(self) -> None:
        ray, stopping = self.crew.ray, self.crew.stopping
        while not stopping.is_set():
            try:
                messages = ray.get(self.handle.collect.remote(_POLL), timeout=_POLL + 30.0)
            except Exception as exc:
                if stopping.is_set():
                    return
                with self.lock:
                    held = list(self.pending)
                self._lose(held, exc)  # the units it held died with it; Ray restarts it
                stopping.wait(_POLL)
                continue
            for unit, kind, payload in messages:
                with self.lock:
                    pending = self.pending.get(unit)
                if pending is None:
                    continue  # finished, cancelled or re-sent meanwhile
                if kind in (DONE, RAISED):
                    pending.finish(kind, payload)
                elif pending.lease is not None:
                    _signal(pending.lease, kind, _Granter(self.handle, unit))

    def _lose(self, units: list[int], error: BaseException) -> None:
        for unit in units:
            with self.lock:
                pending = self.pending.get(unit)
            if pending is not None:
                pending.finish(_LOST, error)

    def stop(self) -> None:
        with self.wake:
            self.wake.notify_all()
            pending, self.pending = list(self.pending.values()), {}
        for item in pending:
            item.finish(_STOPPED, None)
        for thread in self.threads:
            thread.join(timeout=_POLL + 5.0)


def _budgets_in_force() -> tuple[Budget, ...]:
    """The limited budgets a unit started here answers to: the runtime's and those in scope.

    A worker's LM calls cannot see them (they are this process's), so the driver
    checks them before it sends a unit and charges them with what the unit's
    calls spent: a budget is overshot by at most the units in flight.
    """
    budgets = [b for b in active_budgets() if b.limited]
    runtime_budget = getattr(current_runtime(), "budget", None)
    if runtime_budget is not None and runtime_budget.limited:
        budgets.insert(0, runtime_budget)
    return tuple(budgets)


def _restarting(error: BaseException | None) -> bool:
    """Whether ``error`` says the worker is down for now (Ray is restarting it)."""
    return isinstance(error, import_ray().exceptions.ActorUnavailableError)


def _signal(lease: Any, kind: str, granter: _Granter) -> None:
    """A lease signal from a worker, applied to the driver-side lease (collector thread)."""
    if kind == PARK:
        lease.park()
    elif kind == RESUME:
        lease.resume(granter)
    elif kind == UNPARK:
        lease.unpark()


class RayCrew:
    """This driver's Ray worker actors and the jobs put in Ray's object store."""

    def __init__(self, size: int, settings: Any, max_restarts: int) -> None:
        ray = import_ray()
        self.ray = ray
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        remote = ray.remote(
            num_cpus=0,
            max_restarts=max_restarts,
            max_task_retries=0,  # the driver re-sends a lost unit itself, knowing it once
            max_concurrency=_ACTOR_THREADS,
            scheduling_strategy="SPREAD",  # one per node first: spread over the cluster
        )(UnitWorker)
        shipped = shippable_settings(settings)
        handles = [remote.remote(shipped) for _ in range(size)]
        # Started before any unit is sent: a worker that cannot start fails here, clearly.
        try:
            ray.get([h.ping.remote() for h in handles], timeout=120)
        except Exception as exc:
            for handle in handles:
                ray.kill(handle, no_restart=True)
            raise UsageError(
                f"the Ray backend's worker actors did not start ({type(exc).__name__}: {exc}); "
                "check that dspex is installed on every node"
            ) from exc
        self.workers = [_Worker(self, i, h) for i, h in enumerate(handles)]
        self._jobs: OrderedDict[str, Any] = OrderedDict()

    # -- dispatch (driver pool threads) --------------------------------------------

    def job_ref(self, job: Job) -> Any:
        """The object ref of ``job`` in Ray's store, put once per job."""
        with self._lock:
            ref = self._jobs.get(job.digest)
            if ref is not None:
                self._jobs.move_to_end(job.digest)
                return ref
        ref = self.ray.put(job)
        with self._lock:
            self._jobs[job.digest] = ref
            while len(self._jobs) > _JOBS_KEPT:
                self._jobs.popitem(last=False)
        return ref

    def _pick(self) -> _Worker:
        with self._lock:
            worker = min(self.workers, key=lambda w: w.busy)
            worker.busy += 1
            return worker

    def _done(self, worker: _Worker) -> None:
        with self._lock:
            worker.busy -= 1

    def run(self, job: Job, item: Any, label: str) -> Any:
        """Run one unit on a worker; its result (re-sent if its worker died)."""
        run = current_run()
        if run is not None:
            run.check_deadline()  # cancelled while queued: do not send it
        lease = current_lease()
        budgets = _budgets_in_force()
        box = [self.job_ref(job)]  # in a list: Ray hands the worker the ref, not the job
        cancelled = run.cancelled if run is not None else None
        last: BaseException | None = None
        attempt = 0
        while attempt <= REDISPATCH:
            if self.stopping.is_set():
                break
            for budget in budgets:
                budget.check()  # spent: no new unit starts (its LM calls would be refused)
            worker = self._pick()
            unit = next(_units)  # a new id per attempt: a late outcome of a lost one is dropped
            pending = _Pending(unit, lease)
            left = None
            if run is not None and run.deadline is not None:
                left = max(0.0, run.deadline - time.monotonic())
            waker = _Canceller(worker.handle, unit)
            if isinstance(cancelled, CancelEvent):
                cancelled.add_waker(waker)
            try:
                worker.send(pending, (unit, job.digest, box, item, left, label, lease is not None))
                pending.done.wait()
            finally:
                if isinstance(cancelled, CancelEvent):
                    cancelled.discard_waker(waker)
                worker.forget(unit)
                if lease is not None and lease.parked:
                    lease.unpark()
                self._done(worker)
            if pending.kind in (DONE, RAISED):
                value, spent = pending.payload
                for budget in budgets:
                    budget.charge_spend(*spent)
                if pending.kind == RAISED:
                    raise value
                return value
            if pending.kind == _STOPPED:
                break
            last = pending.payload
            logger.warning(
                "%s: Ray worker %d died holding unit %d; sending it again",
                label,
                worker.index,
                unit,
            )
            # A worker Ray is restarting refuses calls until it is back: wait for it, and
            # that loss does not use up a re-send (a slow restart on a busy machine would
            # otherwise spend them all in a moment).
            if not (_restarting(last) and self._await_restart(worker)):
                attempt += 1
        if last is not None and not self.stopping.is_set():
            raise last
        raise ActorStoppedError(f"{label}: the Ray backend stopped while this unit waited")

    def _await_restart(self, worker: _Worker) -> bool:
        """Wait until ``worker`` answers again (True), up to ``_RESTART_WAIT`` seconds (False).

        A restarting actor refuses calls at once instead of queueing them, so this
        asks it again with a growing pause; it returns early when the crew stops.
        """
        deadline = time.monotonic() + _RESTART_WAIT
        pause = 0.05
        while not self.stopping.is_set():
            try:
                self.ray.get(worker.handle.ping.remote(), timeout=_RESTART_WAIT)
                return True
            except Exception as exc:
                if not _restarting(exc) or time.monotonic() + pause > deadline:
                    return False
            self.stopping.wait(pause)
            pause = min(pause * 2, 1.0)
        return False

    # -- lifecycle --------------------------------------------------------------------

    def where(self) -> list[dict[str, Any]]:
        """Node id and pid of each worker actor (asks them; for ``rt.tree()`` and tests)."""
        return list(self.ray.get([w.handle.where.remote() for w in self.workers], timeout=30))

    def stop(self) -> None:
        self.stopping.set()
        for worker in self.workers:
            worker.stop()
        for worker in self.workers:
            try:
                self.ray.kill(worker.handle, no_restart=True)
            except Exception:
                logger.debug("killing a Ray worker failed", exc_info=True)


class _Canceller:
    """Cancel waker: tells the unit's worker to cancel it (runs in the setting thread)."""

    __slots__ = ("handle", "unit")

    def __init__(self, handle: Any, unit: int) -> None:
        self.handle = handle
        self.unit = unit

    def __call__(self) -> None:
        try:
            self.handle.cancel.remote(self.unit)
        except Exception:  # the worker is gone: nothing left to cancel
            logger.debug("cancelling a Ray unit failed", exc_info=True)


class _Granter:
    """Resume callback: gives a parked remote unit its slot back (quick, never blocks)."""

    __slots__ = ("handle", "unit")

    def __init__(self, handle: Any, unit: int) -> None:
        self.handle = handle
        self.unit = unit

    def __call__(self) -> None:
        self.handle.grant.remote(self.unit)


_crew: RayCrew | None = None
_crew_lock = threading.Lock()


def crew() -> RayCrew:
    """This process's crew, started on first use (joins or starts Ray first)."""
    global _crew
    with _crew_lock:
        if _crew is not None:
            return _crew
        runtime = current_runtime()
        options = runtime.settings.runtime.ray
        ensure_ray(options.address)
        ray = import_ray()
        size = options.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        _crew = RayCrew(size, runtime.settings, options.max_restarts)
        atexit.register(shutdown_crew)
        return _crew


def shutdown_crew() -> None:
    """Stop this process's Ray worker actors (before ``ray.shutdown()``); idempotent."""
    global _crew
    with _crew_lock:
        running, _crew = _crew, None
    if running is not None:
        running.stop()
        kill_budgets()  # the workers' rate budgets (detached actors) go with them


class RemoteBody:
    """A fan-out body that runs each unit of ``job`` on the Ray crew (driver pool threads)."""

    def __init__(self, job: Job, label: str) -> None:
        self.job = job
        self.label = label
        self._crew = crew()  # start (or reach) the cluster before any unit is queued

    def __call__(self, item: Any) -> Any:
        run = current_run()
        label = run.label if run is not None and run.label else self.label
        return self._crew.run(self.job, item, label)
