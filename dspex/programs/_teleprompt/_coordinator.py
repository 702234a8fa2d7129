"""Coordinators: where one optimizer compile lives in the supervision tree.

:func:`coordinate` starts a :class:`Coordinator` (a supervisor) as a temporary
child of the runtime's ``coordinators`` DynamicSupervisor. Its one child is the
WorkerPool that runs the compile's examples, so while a compile runs
``rt.tree()`` shows::

    coordinators (DynamicSupervisor, one_for_one)
    └── BootstrapFewShot (Coordinator, one_for_one) alive [temporary]
        └── workers (PoolActor) alive [temporary]

and both are gone once it returns (or when the runtime stops). A compile
nested in another (the BootstrapFewShot runs of a random search) shares the
outer coordinator and its pool. Without a runtime the pool runs unsupervised.

Each item runs as its own program run inline in a pool worker, like
Evaluate's engine does (a :class:`~dspex.actors.RunContext` with the deadline
and a shared cancel event, the caller's ``contextvars`` copied in). One
difference: a ``BaseException`` (``SystemExit``...) is not contained. It
kills the worker; the pool starts a new one and retries the item once.
Results come back in input order, so callers can accept them in a
deterministic order whatever the thread timing.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final, TypeVar

import pykka

from dspex.actors._program_run import CancelEvent, RunContext, activate_run, current_run
from dspex.programs._evaluate_engine import pools_under
from dspex.supervision import (
    ChildSpec,
    Restart,
    Result,
    Supervisor,
    WorkerPool,
    current_lease,
    shutdown,
    start_child,
    terminate_child,
    which_children,
)

__all__ = ["Coordination", "Coordinator", "coordinate"]

logger = logging.getLogger("dspex.programs")

R = TypeVar("R")

_SHUTDOWN_SECONDS: Final = 1.0
"""How long stopping the pool waits for a worker stuck in user code before abandoning it."""

_CALL_TIMEOUT: Final = 10.0
"""Bound for the asks that find the pool of a freshly started coordinator."""

_DEFAULT_SPARE_THREADS: Final = 256
"""Burst workers when no runtime is running (the ``runtime.spare_threads`` default)."""

_active: contextvars.ContextVar[Coordination | None] = contextvars.ContextVar(
    "dspex_coordination", default=None
)


class Coordinator(Supervisor):
    """One optimizer compile in the tree; supervises the WorkerPool its examples run on."""


class Coordination:
    """A running compile's pool, and how its items run there (caller's thread)."""

    def __init__(
        self,
        label: str,
        pool: WorkerPool,
        runtime: Any,
        ref: pykka.ActorRef[Any] | None,
        shutdown_timeout: float,
    ) -> None:
        self.label = label
        self.pool = pool
        self.runtime = runtime
        self.ref = ref
        """The Coordinator actor (None when running unsupervised)."""
        self._shutdown_timeout = shutdown_timeout

    @contextmanager
    def stream(
        self,
        body: Callable[[Any], R],
        items: Sequence[Any],
        *,
        num_threads: int,
        timeout: float | None = None,
        error_of: Callable[[R], BaseException | None] | None = None,
    ) -> Iterator[Iterator[Result[R]]]:
        """Run ``body(item)`` for each item on the pool; yields results in input order.

        Each result's ``index`` is the item's position. At most ``num_threads``
        items are in flight or waiting to be read, and input is pulled only as
        slots free up, so a consumer that stops reading stops the dispatching.
        ``timeout`` is each item's run deadline (cooperative; a pool timeout a
        little later is the backstop). ``error_of(value)`` names the failure
        a returned value stands for, for the runtime's run metrics. Leaving the
        ``with`` block cancels the items still running (at their next
        deadline check) and waits for them, up to the pool's shutdown timeout.
        """
        cancel = CancelEvent()  # setting it also ends the LM calls the items wait for
        context = contextvars.copy_context()
        outer = current_run()
        outer_deadline = outer.deadline if outer is not None else None
        runtime, label = self.runtime, self.label

        def task(item: tuple[int, Any]) -> R:
            index, value = item
            deadline = None if timeout is None else time.monotonic() + timeout
            if outer_deadline is not None:
                deadline = outer_deadline if deadline is None else min(deadline, outer_deadline)
            run = RunContext(
                deadline=deadline,
                cancelled=cancel,
                label=f"{label}[{index}]",
                runtime=runtime,
                lease=current_lease(),
            )
            if runtime is None:
                return context.copy().run(_run_inline, run, body, value)
            runtime.telemetry.emit("program.run.start", run_id=run.run_id, label=run.label)
            started = time.perf_counter()
            try:
                result = context.copy().run(_run_inline, run, body, value)
            except BaseException as exc:  # a crash: recorded, then the pool retries the item
                runtime.record_run(run, (time.perf_counter() - started) * 1000, exc)
                raise
            error = error_of(result) if error_of is not None else None
            runtime.record_run(run, (time.perf_counter() - started) * 1000, error)
            return result

        backstop = None if timeout is None else timeout * 1.25 + 1.0
        results: Generator[Result[R], None, None] = self.pool.map(
            task,
            list(enumerate(items)),
            max_concurrency=max(1, min(num_threads, self.pool.size)),
            ordered=True,
            timeout=backstop,
        )
        try:
            yield results
        finally:
            cancel.set()  # running items stop at their next check
            results.close()

    def close(self) -> None:
        """Stop the coordinator and its pool (the pool alone when unsupervised)."""
        if self.ref is None:
            self.pool.stop()
            return
        stopped = False
        try:
            stopped = terminate_child(self.runtime.whereis("coordinators"), self.ref)
        except Exception:  # the runtime is stopping: stop our subtree directly
            logger.debug("%s: coordinators supervisor unavailable; stopping directly", self.label)
        if not stopped and not shutdown(self.ref, self._shutdown_timeout + 2.0):
            logger.warning("%s: the coordinator did not stop in time; abandoned", self.label)


@contextmanager
def coordinate(label: str, *, num_threads: int, work: int) -> Iterator[Coordination]:
    """The coordination a compile dispatches to: a new one, or the enclosing compile's.

    ``num_threads`` sizes a new pool (capped by ``work``, the number of items
    the compile may run at most). Stopped when the outermost ``with`` ends.
    """
    active = _active.get()
    if active is not None:
        yield active
        return
    outer = current_run()
    runtime = outer.runtime if outer is not None else _runtime_or_none()
    size = max(1, min(num_threads, work))
    spare = (
        _DEFAULT_SPARE_THREADS if runtime is None else int(runtime.settings.runtime.spare_threads)
    )
    crew = _open(runtime, label, size, max(0, min(spare, work - size)))
    token = _active.set(crew)
    try:
        with pools_under(crew.ref):  # its evaluations' pools join its subtree
            yield crew
    finally:
        _active.reset(token)
        crew.close()


def _open(runtime: Any, label: str, size: int, burst: int) -> Coordination:
    options: dict[str, Any] = {
        "size": size,
        "burst": burst,
        "name": f"{label}.workers",
        "shutdown_timeout": _SHUTDOWN_SECONDS,
    }
    if runtime is None:
        return Coordination(label, WorkerPool(**options), None, None, _SHUTDOWN_SECONDS)
    options["events"] = runtime.events
    pool_spec = WorkerPool.child_spec(id="workers", restart=Restart.TEMPORARY, **options)
    spec = ChildSpec(
        id=label,
        start=functools.partial(Coordinator.start, [pool_spec], name=label, events=runtime.events),
        restart=Restart.TEMPORARY,
        shutdown=pool_spec.shutdown + 1.0,
        start_timeout=pool_spec.start_timeout + 5.0,
    )
    ref = start_child(runtime.whereis("coordinators"), spec, timeout=spec.start_timeout)
    crew: Coordination | None = None
    try:
        [child] = which_children(ref, timeout=_CALL_TIMEOUT)
        assert child.ref is not None, "a coordinator starts its pool before acknowledging"
        pool = WorkerPool.of(child.ref, timeout=_CALL_TIMEOUT)
        crew = Coordination(label, pool, runtime, ref, spec.shutdown)
        return crew
    finally:
        if crew is None:
            shutdown(ref, spec.shutdown)


def _runtime_or_none() -> Any:
    """The runtime the compile belongs to (starting the default one if none runs)."""
    from dspex.programs._runtime_access import current_runtime

    try:
        return current_runtime()
    except Exception:  # no runtime can start: run the pool unsupervised
        logger.warning("no dspex runtime available; the optimizer's pool runs unsupervised")
        return None


def _run_inline(run: RunContext, body: Callable[[Any], R], item: Any) -> R:
    # Runs inside a fresh copy of the caller's context, so nothing to reset.
    # A compile started from inside an item gets its own pool: sharing ours
    # from one of its workers could wait forever for a free slot.
    _active.set(None)
    activate_run(run)
    return body(item)
