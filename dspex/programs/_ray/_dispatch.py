"""The driver side of the Ray backend: a crew of worker actors and the body that uses them.

The fan-out engine is unchanged: the driver's :class:`WorkerPool` still
runs one task per unit (ordering, ``max_errors``, journal, progress,
cancellation and parking all stay in the driver), but the task's body is a
:class:`RemoteBody`, which sends the unit to one of the :class:`RayCrew`'s
worker actors and waits for its result. A driver thread waiting on a Ray
object costs nothing but its stack, as it would waiting on an LM.

**A worker that dies** (``ray.kill``, a crashed process, a lost node) is
restarted by Ray (``runtime.ray.max_restarts``); every unit it held fails in
its driver thread with a ``RayActorError`` and is sent again (to the least
busy live worker) up to :data:`REDISPATCH` times. The driver records a unit
when its result arrives, exactly once, so a re-sent unit is neither lost nor
counted twice (an LM call it had made may be made again; the disk cache, if
shared, answers it).

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
import uuid
from collections import OrderedDict
from typing import Any, Final

from dspex.actors._program_run import current_run
from dspex.errors import UsageError
from dspex.programs._ray._cluster import ensure_ray, import_ray
from dspex.programs._ray._jobs import Job
from dspex.programs._ray._node import shippable_settings
from dspex.programs._ray._worker import PARK, RESUME, UNPARK, UnitWorker
from dspex.programs._runtime_access import current_runtime
from dspex.supervision import current_lease

__all__ = ["REDISPATCH", "RayCrew", "RemoteBody", "crew", "shutdown_crew"]

logger = logging.getLogger("dspex.programs")

REDISPATCH: Final = 3
"""Times a unit is sent again after the worker holding it died."""

WORKER_CONCURRENCY: Final = 512
"""Units one worker actor runs at once (its thread pool); more wait in its queue."""

_RELAY_POLL: Final = 0.25
"""Seconds the relay thread's fetch waits, which bounds how long stopping it takes."""

_JOBS_KEPT: Final = 32

_units = itertools.count(1)


class _Relay:
    """Ray actor: lease signals from workers, fetched in batches by the driver's relay thread."""

    def __init__(self) -> None:
        import asyncio

        self._queue: asyncio.Queue[Any] = asyncio.Queue()

    async def put(self, signal: Any) -> None:
        self._queue.put_nowait(signal)

    async def take(self, timeout: float) -> list[Any]:
        import asyncio

        try:
            first = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return []
        out = [first]
        while not self._queue.empty():
            out.append(self._queue.get_nowait())
        return out


class _Worker:
    """A worker actor as the driver tracks it."""

    __slots__ = ("busy", "handle", "index")

    def __init__(self, index: int, handle: Any) -> None:
        self.index = index
        self.handle = handle
        self.busy = 0


class RayCrew:
    """This driver's Ray worker actors, the relay for their lease signals, and the jobs put."""

    def __init__(self, size: int, settings: Any, max_restarts: int) -> None:
        ray = import_ray()
        self._ray = ray
        self._lock = threading.Lock()
        strategy = "SPREAD"  # one per node first: spread over the cluster
        # Workers find the relay by name: an actor handle as a constructor
        # argument would live in the object store, and a restart could lose it.
        relay_name = f"dspex-relay-{uuid.uuid4().hex}"
        self._relay = ray.remote(num_cpus=0)(_Relay).options(name=relay_name).remote()
        remote = ray.remote(
            num_cpus=0,
            max_restarts=max_restarts,
            max_task_retries=0,  # the driver re-sends a lost unit itself, knowing it once
            max_concurrency=WORKER_CONCURRENCY,
            scheduling_strategy=strategy,
        )(UnitWorker)
        shipped = shippable_settings(settings)
        self.workers = [_Worker(i, remote.remote(shipped, relay_name)) for i in range(size)]
        # Started before any unit is sent: a worker that cannot start fails here, clearly.
        try:
            ray.get([w.handle.ping.remote() for w in self.workers], timeout=120)
        except Exception as exc:
            self._kill()
            raise UsageError(
                f"the Ray backend's worker actors did not start ({type(exc).__name__}: {exc}); "
                "check that dspex is installed on every node"
            ) from exc
        self._jobs: OrderedDict[str, Any] = OrderedDict()
        self._leases: dict[int, Any] = {}
        self._stopping = threading.Event()
        self._relay_thread = threading.Thread(
            target=self._relay_loop, name="dspex-ray-relay", daemon=True
        )
        self._relay_thread.start()

    # -- dispatch (driver pool threads) --------------------------------------------

    def job_ref(self, job: Job) -> Any:
        """The object ref of ``job`` in Ray's store, put once per job."""
        with self._lock:
            ref = self._jobs.get(job.digest)
            if ref is not None:
                self._jobs.move_to_end(job.digest)
                return ref
        ref = self._ray.put(job)
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
        ray = self._ray
        errors = ray.exceptions
        lost = (errors.RayActorError, errors.ActorUnavailableError)
        run = current_run()
        if run is not None:
            run.check_deadline()  # cancelled while queued: do not send it
        lease = current_lease()
        box = [self.job_ref(job)]  # in a list: Ray hands the worker the ref, not the job
        unit = next(_units)
        last: BaseException | None = None
        for attempt in range(REDISPATCH + 1):
            worker = self._pick()
            left = None
            if run is not None and run.deadline is not None:
                left = max(0.0, run.deadline - time.monotonic())
            if lease is not None:
                with self._lock:
                    self._leases[unit] = (lease, worker)
            waker = _Canceller(worker.handle, unit)
            cancelled = getattr(run, "cancelled", None) if run is not None else None
            add = getattr(cancelled, "add_waker", None)
            if add is not None:
                add(waker)
            try:
                ref = worker.handle.run.remote(
                    unit, job.digest, box, item, left=left, label=label, parkable=lease is not None
                )
                return ray.get(ref)
            except lost as exc:
                last = exc
                logger.warning(
                    "%s: Ray worker %d died holding unit %d (attempt %d); sending it again",
                    label,
                    worker.index,
                    unit,
                    attempt + 1,
                )
            except errors.RayTaskError as exc:
                raise _cause(exc) from None
            finally:
                discard = getattr(cancelled, "discard_waker", None)
                if discard is not None:
                    discard(waker)
                with self._lock:
                    self._leases.pop(unit, None)
                if lease is not None and lease.parked:
                    lease.unpark()
                self._done(worker)
        assert last is not None
        raise last

    # -- lease signals (the relay thread) ------------------------------------------

    def _relay_loop(self) -> None:
        ray = self._ray
        while not self._stopping.is_set():
            try:
                signals = ray.get(self._relay.take.remote(_RELAY_POLL), timeout=30)
            except Exception:
                if self._stopping.is_set():
                    return
                logger.debug("Ray relay fetch failed; retrying", exc_info=True)
                self._stopping.wait(_RELAY_POLL)
                continue
            for unit, kind in signals:
                with self._lock:
                    entry = self._leases.get(unit)
                if entry is None:
                    continue  # the unit finished (or was re-sent) before its signal came
                lease, worker = entry
                if kind == PARK:
                    lease.park()
                elif kind == RESUME:
                    lease.resume(_Granter(worker.handle, unit))
                elif kind == UNPARK:
                    lease.unpark()

    # -- lifecycle --------------------------------------------------------------------

    def where(self) -> list[dict[str, Any]]:
        """Node id and pid of each worker actor (asks them; for ``rt.tree()`` and tests)."""
        return list(self._ray.get([w.handle.where.remote() for w in self.workers], timeout=30))

    def stop(self) -> None:
        self._stopping.set()
        self._relay_thread.join(timeout=_RELAY_POLL + 5.0)
        self._kill()

    def _kill(self) -> None:
        for worker in getattr(self, "workers", []):
            try:
                self._ray.kill(worker.handle, no_restart=True)
            except Exception:
                logger.debug("killing a Ray worker failed", exc_info=True)
        try:
            self._ray.kill(self._relay, no_restart=True)
        except Exception:
            logger.debug("killing the Ray relay failed", exc_info=True)


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


def _cause(exc: Any) -> BaseException:
    """The user's exception a ``RayTaskError`` carries (re-raised as in the local pool)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


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
