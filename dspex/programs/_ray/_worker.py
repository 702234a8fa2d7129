"""The Ray worker actor: runs units of shipped jobs on its process's dspex runtime.

One :class:`UnitWorker` per Ray worker process. Units and their outcomes
travel in batches, like messages between two mailboxes, not one Ray call
each: the driver sends whatever queued up meanwhile in one :meth:`submit`,
and long-polls :meth:`collect` for every outcome and lease signal since the
last poll. A Ray call costs about a millisecond of CPU on each side; per
unit that was more than the unit's own work (bench/ray_pool.py).

Each unit runs in a thread of the worker's own pool as a dspex program run
on the node runtime (:mod:`._node`): a :class:`RunContext` with the driver's
remaining deadline, a cancel event the driver can set (:meth:`cancel`) and,
when the driver's slot can be lent, a :class:`RemoteLease` whose *park* and
*resume* go to the driver through :meth:`collect`, so an example waiting
out a ``Retry-After`` on a worker frees its slot in the driver's pool as it
would locally.
"""

from __future__ import annotations

import contextvars
import copy
import os
import pickle
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from dspex.actors._program_run import CancelEvent, RunContext, activate_run
from dspex.errors import DSPexError
from dspex.programs._ray._jobs import Job
from dspex.programs._ray._node import node_runtime
from dspex.programs._settings import context

__all__ = [
    "DONE",
    "PARK",
    "RAISED",
    "RESUME",
    "UNPARK",
    "RemoteLease",
    "RemoteUnitError",
    "UnitWorker",
]

# What collect() returns, as (unit_id, kind, payload).
DONE: Final = "done"  # payload: the unit's return value
RAISED: Final = "raised"  # payload: the exception that escaped the unit
PARK: Final = "park"  # lease signals: payload None
RESUME: Final = "resume"
UNPARK: Final = "unpark"

UNIT_THREADS: Final = 512
"""Units one worker runs at once (its thread pool, started lazily); more wait in its queue."""

JOBS_BUILT: Final = 64
"""Jobs a worker keeps built (least recently used dropped); a dropped one is built again."""


class RemoteUnitError(DSPexError):
    """A unit's error that could not travel back from the Ray worker as itself."""


class RemoteLease:
    """A remote unit's claim on its driver-side pool slot; the LM pipeline parks it.

    Same methods as ``dspex.supervision.Lease``: the LM stack calls them from
    its IO loop; the driver answers a resume with :meth:`UnitWorker.grant`.
    """

    __slots__ = ("_callbacks", "_lock", "_parked", "_send", "_unit")

    def __init__(self, unit: int, send: Callable[[tuple[int, str, Any]], None]) -> None:
        self._unit = unit
        self._send = send
        self._lock = threading.Lock()
        self._parked = False
        self._callbacks: list[Callable[[], None]] = []

    @property
    def parked(self) -> bool:
        return self._parked

    def park(self) -> None:
        with self._lock:
            if self._parked:
                return
            self._parked = True
        self._send((self._unit, PARK, None))

    def resume(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if self._parked:
                self._callbacks.append(callback)
        if not self._parked:
            callback()
            return
        self._send((self._unit, RESUME, None))

    def unpark(self) -> None:
        with self._lock:
            if not self._parked:
                return
        self._send((self._unit, UNPARK, None))
        self.granted()

    def granted(self) -> None:
        with self._lock:
            self._parked = False
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()


def _portable(value: Any) -> Any:
    """``value`` ready to travel back to the driver (Ray pickles it).

    A prediction's completions drop their signature class (a string
    signature's class is built at run time: it would travel by value with
    every result); an error that cannot be pickled travels as text.
    """
    prediction = getattr(value, "prediction", None)
    completions = getattr(prediction, "_completions", None)
    if completions is not None and getattr(completions, "signature", None) is not None:
        light = copy.copy(completions)
        light.signature = None
        object.__setattr__(prediction, "_completions", light)
    error = getattr(value, "error", None)
    if isinstance(error, BaseException) and hasattr(value, "_replace"):
        try:
            pickle.loads(pickle.dumps(error))
        except Exception:
            return value._replace(error=RemoteUnitError(f"{type(error).__name__}: {error}"))
    return value


def _inline(run: RunContext, scope: Mapping[str, Any], fn: Callable[[Any], Any], item: Any) -> Any:
    activate_run(run)
    with context(**scope):
        return fn(item)


def _portable_error(error: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RemoteUnitError(f"{type(error).__name__}: {error}")
    return error


class UnitWorker:
    """The body of the Ray actor (wrapped with ``ray.remote`` by the dispatcher)."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self._runtime = node_runtime(settings)
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._outbox: list[tuple[int, str, Any]] = []
        # GEPA and SIMBA ship a job per candidate: keep the recent ones built.
        self._jobs: OrderedDict[str, tuple[Callable[[Any], Any], Mapping[str, Any]]] = OrderedDict()
        self._units: dict[int, tuple[CancelEvent, RemoteLease | None]] = {}
        self._threads = ThreadPoolExecutor(UNIT_THREADS, thread_name_prefix="dspex-ray-unit")

    def where(self) -> dict[str, Any]:
        """Node id and pid of this worker (for ``rt.tree()`` and tests)."""
        import ray

        return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}

    def ping(self) -> bool:
        return True

    # -- the driver's mailbox calls (Ray's actor threads) ------------------------------

    def submit(self, units: list[tuple[Any, ...]]) -> None:
        """Start each ``(unit, digest, box, item, left, label, parkable)``; returns at once."""
        for unit in units:
            cancel = CancelEvent()
            parkable = unit[6]
            lease = RemoteLease(unit[0], self._emit) if parkable else None
            with self._lock:
                self._units[unit[0]] = (cancel, lease)
            self._threads.submit(self._run, unit[:6], cancel, lease)

    def collect(self, timeout: float) -> list[tuple[int, str, Any]]:
        """Every outcome and lease signal since the last call; waits up to ``timeout`` for one."""
        with self._ready:
            if not self._outbox:
                self._ready.wait(timeout)
            out, self._outbox = self._outbox, []
        return out

    def cancel(self, unit: int) -> None:
        """The driver cancelled ``unit`` (max_errors, Ctrl-C): it stops at its next check."""
        with self._lock:
            entry = self._units.get(unit)
        if entry is not None:
            entry[0].set()

    def grant(self, unit: int) -> None:
        """The driver gave ``unit`` its slot back: let its parked LM call go on."""
        with self._lock:
            entry = self._units.get(unit)
        if entry is not None and entry[1] is not None:
            entry[1].granted()

    # -- running units (the worker's unit threads) -----------------------------------------

    def _emit(self, message: tuple[int, str, Any]) -> None:
        with self._ready:
            self._outbox.append(message)
            self._ready.notify()

    def _job(self, digest: str, box: list[Any]) -> tuple[Callable[[Any], Any], Mapping[str, Any]]:
        with self._lock:
            built = self._jobs.get(digest)
            if built is not None:
                self._jobs.move_to_end(digest)
        if built is None:
            import ray

            job: Job = ray.get(box[0])
            made = (job.make(), job.scope())
            with self._lock:
                built = self._jobs.setdefault(digest, made)
                while len(self._jobs) > JOBS_BUILT:
                    self._jobs.popitem(last=False)
        return built

    def _run(self, fields: tuple[Any, ...], cancel: CancelEvent, lease: RemoteLease | None) -> None:
        unit, digest, box, item, left, label = fields
        try:
            fn, scope = self._job(digest, box)
            run = RunContext(
                deadline=None if left is None else time.monotonic() + left,
                cancelled=cancel,
                label=label,
                runtime=self._runtime,
                lease=lease,
            )
            result = contextvars.Context().run(_inline, run, scope, fn, item)
            message: tuple[int, str, Any] = (unit, DONE, _portable(result))
        except BaseException as exc:  # SystemExit & co too: the driver decides, as locally
            message = (unit, RAISED, _portable_error(exc))
        finally:
            with self._lock:
                self._units.pop(unit, None)
        self._emit(message)
