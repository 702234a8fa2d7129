"""What a :class:`~dspex.supervision.WorkerPool` hands back: results, statistics, event names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, NoReturn, TypeVar

__all__ = [
    "POOL_INTENSITY_EXCEEDED",
    "POOL_TASK_RETRIED",
    "POOL_WORKER_ABANDONED",
    "POOL_WORKER_RESTARTED",
    "Failed",
    "Ok",
    "PoolStats",
    "Result",
]

POOL_WORKER_RESTARTED = "pool.worker_restarted"
"""A worker died (crash or stray stop) and the pool started a new one."""
POOL_TASK_RETRIED = "pool.task_retried"
"""A task lost with its worker (or raising a ``retry_on`` type) was queued again."""
POOL_WORKER_ABANDONED = "pool.worker_abandoned"
"""A worker stuck past a task timeout was given up on and replaced."""
POOL_INTENSITY_EXCEEDED = "pool.intensity_exceeded"
"""Too many worker restarts within the window: the pool failed."""

R_co = TypeVar("R_co", covariant=True)


@dataclass(frozen=True, slots=True)
class Ok(Generic[R_co]):
    """A task that returned ``value``; ``index`` and ``item`` name its input."""

    value: R_co
    index: int = -1
    item: Any = None

    ok: ClassVar[Literal[True]] = True

    def unwrap(self) -> R_co:
        """The value (mirrors :meth:`Failed.unwrap`)."""
        return self.value


@dataclass(frozen=True, slots=True)
class Failed:
    """A task that raised, timed out, or lost its worker more than ``max_retries`` times.

    ``error`` is the task's own exception, a
    :class:`~dspex.errors.CallTimeoutError`, or the reason its last worker
    died; ``attempts`` counts how many times it was started.
    """

    error: BaseException
    index: int = -1
    item: Any = None
    attempts: int = 1

    ok: ClassVar[Literal[False]] = False

    def unwrap(self) -> NoReturn:
        """Raise :attr:`error`, so ``result.unwrap()`` reads like a plain call."""
        raise self.error


Result = Ok[R_co] | Failed
"""One streamed outcome: test ``result.ok`` or match on ``Ok``/``Failed``."""


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of a pool's counters since it started."""

    name: str
    size: int
    workers: int
    """Workers alive and taking tasks now."""
    queued: int
    """Tasks waiting for a free worker (approximate)."""
    tasks_ok: int
    tasks_failed: int
    """Tasks reported :class:`Failed`, including timeouts."""
    tasks_timed_out: int
    tasks_retried: int
    worker_restarts: int
    workers_abandoned: int
    """Workers given up on: stuck past a task timeout, or past the stop timeout."""
    uptime: float
    parked: int = 0
    """Tasks parked now, lending their slot while they wait (see ``Lease``)."""
    burst_workers: int = 0
    """Extra workers started (up to ``burst``) to run tasks while others were parked."""

    @property
    def tasks_done(self) -> int:
        """Tasks with a final result, successful or not."""
        return self.tasks_ok + self.tasks_failed
