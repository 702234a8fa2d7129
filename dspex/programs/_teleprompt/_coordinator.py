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

Items run through the shared fan-out engine (``dspex.programs._fanout``),
each as its own program run inline in a pool worker, like Evaluate's. One
difference: a ``BaseException`` (``SystemExit``...) is not contained. It
kills the worker; the pool starts a new one and retries the item once.
Results come back in input order, so callers can accept them in a
deterministic order whatever the thread timing. On Ctrl-C the coordinator is
stopped without waiting for items stuck in user code.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final, TypeVar

import pykka

from dspex.programs._fanout import (
    SHUTDOWN_SECONDS,
    Flow,
    coordination,
    fan_out,
    fan_out_runtime,
    pools_under,
    spare_threads,
)
from dspex.supervision import (
    ChildSpec,
    Restart,
    Supervisor,
    WorkerPool,
    shutdown,
    start_child,
    terminate_child,
    which_children,
)

__all__ = ["Coordination", "Coordinator", "coordinate"]

logger = logging.getLogger("dspex.programs")

R = TypeVar("R")

_CALL_TIMEOUT: Final = 10.0
"""Bound for the asks that find the pool of a freshly started coordinator."""


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
    ) -> Iterator[Flow[R]]:
        """Run ``body(item)`` for each item on the pool; yields results in input order.

        Each result's ``index`` is the item's position. At most ``num_threads``
        items are in flight or waiting to be read (see :func:`fan_out`);
        ``timeout`` is each item's run deadline; ``error_of(value)`` names the
        failure a returned value stands for, for the runtime's run metrics.
        Leaving the ``with`` block cancels the items still running.
        """
        with fan_out(
            body,
            list(enumerate(items)),
            pool=self.pool,
            num_threads=num_threads,
            label=self.label,
            runtime=self.runtime,
            timeout=timeout,
            ordered=True,
            error_of=error_of,
        ) as flow:
            yield flow

    def close(self, wait: bool = True) -> None:
        """Stop the coordinator and its pool (the pool alone when unsupervised).

        ``wait=False`` (after Ctrl-C) only asks them to stop: items stuck in
        user code are not waited for.
        """
        if not wait:
            self.pool.stop(timeout=0.0, abandon=True)
            if self.ref is not None:  # its supervisor drops the temporary child once down
                shutdown(self.ref, 0.0)
            return
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
    active = coordination.get()
    if active is not None:
        yield active
        return
    runtime = fan_out_runtime()
    size = max(1, min(num_threads, work))
    crew = _open(runtime, label, size, max(0, min(spare_threads(runtime), work - size)))
    token = coordination.set(crew)
    interrupted = False
    try:
        with pools_under(crew.ref):  # its evaluations' pools join its subtree
            yield crew
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        coordination.reset(token)
        crew.close(wait=not interrupted)


def _open(runtime: Any, label: str, size: int, burst: int) -> Coordination:
    options: dict[str, Any] = {
        "size": size,
        "burst": burst,
        "name": f"{label}.workers",
        "shutdown_timeout": SHUTDOWN_SECONDS,
    }
    if runtime is None:
        return Coordination(label, WorkerPool(**options), None, None, SHUTDOWN_SECONDS)
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
        assert isinstance(child.ref, pykka.ActorRef), "a coordinator starts its pool first"
        pool = WorkerPool.of(child.ref, timeout=_CALL_TIMEOUT)
        crew = Coordination(label, pool, runtime, ref, spec.shutdown)
        return crew
    finally:
        if crew is None:
            shutdown(ref, spec.shutdown)
