"""The Ray worker actor: runs units of shipped jobs on its process's dspex runtime.

One :class:`UnitWorker` per Ray worker process (a threaded actor: many
units at once, each in a thread of the actor's pool, like a local pool
worker). Each unit runs as a dspex program run on the node runtime
(:mod:`._node`): a :class:`RunContext` with the driver's remaining deadline,
a cancel event the driver can set (:meth:`UnitWorker.cancel`), and, when the
driver's slot can be lent, a :class:`RemoteLease` that forwards *park* and
*resume* to the driver through the relay queue, so an example waiting out a
``Retry-After`` on a worker frees its slot in the driver's pool as it would
locally.
"""

from __future__ import annotations

import contextvars
import copy
import os
import pickle
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from dspex.actors._program_run import CancelEvent, RunContext, activate_run
from dspex.errors import DSPexError
from dspex.programs._ray._jobs import Job
from dspex.programs._ray._node import node_runtime
from dspex.programs._settings import context

__all__ = ["PARK", "RESUME", "UNPARK", "RemoteLease", "RemoteUnitError", "UnitWorker"]

# Lease signals a worker sends to the driver's relay, as (unit_id, kind).
PARK: Final = "park"
RESUME: Final = "resume"
UNPARK: Final = "unpark"


class RemoteUnitError(DSPexError):
    """A unit's error that could not travel back from the Ray worker as itself."""


class RemoteLease:
    """A remote unit's claim on its driver-side pool slot; the LM pipeline parks it.

    Same methods as ``dspex.supervision.Lease``: the LM stack calls them from
    its IO loop; the driver answers a resume with :meth:`UnitWorker.grant`.
    """

    __slots__ = ("_callbacks", "_lock", "_parked", "_send", "_unit")

    def __init__(self, unit: int, send: Callable[[tuple[int, str]], None]) -> None:
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
        self._send((self._unit, PARK))

    def resume(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if self._parked:
                self._callbacks.append(callback)
        if not self._parked:
            callback()
            return
        self._send((self._unit, RESUME))

    def unpark(self) -> None:
        with self._lock:
            if not self._parked:
                return
        self._send((self._unit, UNPARK))
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


class UnitWorker:
    """The body of the Ray actor (wrapped with ``ray.remote`` by the dispatcher)."""

    def __init__(self, settings: Mapping[str, Any], relay: str) -> None:
        import ray

        self._runtime = node_runtime(settings)
        self._relay = ray.get_actor(relay)
        self._lock = threading.Lock()
        self._jobs: dict[str, tuple[Callable[[Any], Any], Mapping[str, Any]]] = {}
        self._units: dict[int, tuple[CancelEvent, RemoteLease | None]] = {}

    def where(self) -> dict[str, Any]:
        """Node id and pid of this worker (for ``rt.tree()`` and tests)."""
        import ray

        return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}

    def _job(self, digest: str, box: list[Any]) -> tuple[Callable[[Any], Any], Mapping[str, Any]]:
        with self._lock:
            built = self._jobs.get(digest)
        if built is None:
            import ray

            job: Job = ray.get(box[0])
            built = (job.make(), job.scope())
            with self._lock:
                built = self._jobs.setdefault(digest, built)
        return built

    def run(
        self,
        unit: int,
        digest: str,
        box: list[Any],
        item: Any,
        *,
        left: float | None,
        label: str,
        parkable: bool,
    ) -> Any:
        """Run one unit (``box[0]`` is the job's object ref, fetched once per job)."""
        fn, scope = self._job(digest, box)
        cancel = CancelEvent()
        lease = RemoteLease(unit, self._send) if parkable else None
        with self._lock:
            self._units[unit] = (cancel, lease)
        try:
            run = RunContext(
                deadline=None if left is None else time.monotonic() + left,
                cancelled=cancel,
                label=label,
                runtime=self._runtime,
                lease=lease,
            )
            result = contextvars.Context().run(_inline, run, scope, fn, item)
            return _portable(result)
        finally:
            with self._lock:
                self._units.pop(unit, None)

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

    def _send(self, signal: tuple[int, str]) -> None:
        self._relay.put.remote(signal)

    def ping(self) -> bool:
        return True
