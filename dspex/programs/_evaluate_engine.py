"""The engine under ``Evaluate`` and ``Module.batch``: one pool task per example.

Each example runs in a :class:`~dspex.supervision.WorkerPool` worker as its
own program run: a :class:`~dspex.actors.RunContext` with the example's
deadline and the evaluation's shared ``cancelled`` event is made current in
the worker, so the program executes inline in that (isolated, supervised)
worker thread and checks the deadline between LM calls. Going through
``Runtime.run`` instead would start a ProgramRun actor per example, measured
at ~0.45 ms of CPU each: over half the per-example budget. The
caller's ``contextvars`` (``dspex.context`` overrides) are copied into every
task. Nothing is deep-copied per example: runs share the program read-only.

Outcomes are consumed in the calling thread, in completion order, which is
where the journal and progress bar are fed. Stopping (``max_errors``, Ctrl-C)
sets the shared cancel event, stops feeding the pool and closes it.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from dspex.actors._program_run import CancelEvent, RunContext, activate_run, current_run
from dspex.supervision import ChildSpec, Restart, WorkerPool, current_lease, start_child

__all__ = [
    "Outcome",
    "RunSummary",
    "execute",
    "pools_under",
    "resolve_max_errors",
    "resolve_num_threads",
]

logger = logging.getLogger("dspex.programs")

_SHUTDOWN_SECONDS: Final = 1.0
"""How long closing the pool waits for a worker stuck in user code before abandoning it."""

_DEFAULT_SPARE_THREADS: Final = 256
"""Burst workers when no runtime is running (the ``runtime.spare_threads`` default)."""

_pool_owner: contextvars.ContextVar[Any] = contextvars.ContextVar("dspex_pool_owner", default=None)
"""The supervisor (an actor ref) that evaluation pools start under; None: coordinators."""
_pool_ids = itertools.count(1)


class Outcome(NamedTuple):
    """What one example produced: prediction, raw score, score as float, error."""

    prediction: Any
    score: Any
    value: float
    error: BaseException | None


class _Interrupted:
    """Returned by a task whose user code raised KeyboardInterrupt."""


_INTERRUPTED: Final = _Interrupted()


@dataclass(slots=True)
class RunSummary:
    """How a parallel run ended."""

    finished: int = 0
    errors: int = 0
    stopped_early: bool = False
    """``max_errors`` was reached before every example ran."""
    interrupted: bool = False
    """Ctrl-C (KeyboardInterrupt) stopped the run."""


def resolve_num_threads(num_threads: int | None, settings: Any) -> int:
    """``num_threads`` or the ``num_threads`` setting, checked (an int >= 1)."""
    value = num_threads if num_threads is not None else settings.get("num_threads") or 8
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        from dspex.errors import UsageError

        raise UsageError(
            f"num_threads={value!r}: must be an int >= 1 (the number of examples run at "
            "once), e.g. num_threads=16"
        )
    return value


def resolve_max_errors(max_errors: float | None, settings: Any) -> float:
    """``max_errors`` or the ``max_errors`` setting, checked (a number >= 0)."""
    value = max_errors if max_errors is not None else settings.get("max_errors")
    if value is None:
        return float("inf")
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        from dspex.errors import UsageError

        raise UsageError(
            f"max_errors={value!r}: must be a number >= 0 (stop after that many failed "
            "examples), e.g. max_errors=10, or float('inf') to never stop"
        )
    return value


def execute(
    body: Callable[[Any], Outcome],
    items: Sequence[tuple[int, Any]],
    *,
    num_threads: int,
    timeout: float | None,
    max_errors: float,
    on_outcome: Callable[[int, Any, Outcome], None],
    provide_traceback: bool = False,
    label: str = "evaluate",
) -> RunSummary:
    """Run ``body(example)`` for each ``(index, example)``; feed ``on_outcome`` as they finish.

    ``body`` catches its own exceptions into ``Outcome.error``. ``timeout`` is
    each example's run deadline (cooperative); the pool's per-task timeout, a
    little later, is the backstop for code that never checks. ``on_outcome``
    runs in the calling thread. Returns how the run ended; never raises for
    a failing example, ``max_errors`` or Ctrl-C.
    """
    summary = RunSummary()
    if not items:
        return summary
    cancel = CancelEvent()  # setting it also ends the LM calls the examples wait for
    context = contextvars.copy_context()
    outer = current_run()
    outer_deadline = outer.deadline if outer is not None else None
    runtime = outer.runtime if outer is not None else _runtime_or_none()
    monotonic = time.monotonic

    def task(item: tuple[int, Any]) -> Any:
        index, example = item
        deadline = None if timeout is None else monotonic() + timeout
        if outer_deadline is not None:
            deadline = outer_deadline if deadline is None else min(deadline, outer_deadline)
        run = RunContext(
            deadline=deadline,
            cancelled=cancel,
            label=f"{label}[{index}]",
            runtime=runtime,
            lease=current_lease(),
        )
        if runtime is not None:
            runtime.telemetry.emit("program.run.start", run_id=run.run_id, label=run.label)
        started = time.perf_counter()
        try:
            outcome: Outcome = context.copy().run(_run_inline, run, body, example)
        except KeyboardInterrupt:
            return _INTERRUPTED
        except BaseException as exc:  # SystemExit & co: this example's failure only
            outcome = Outcome(None, None, 0.0, exc)
        if runtime is not None:  # each example is a program run in the metrics too
            runtime.record_run(run, (time.perf_counter() - started) * 1000, outcome.error)
        return outcome

    backstop = None if timeout is None else timeout * 1.25 + 1.0
    size = max(1, min(num_threads, len(items)))
    burst = min(_spare_threads(runtime), len(items) - size)
    with _sigint_cancels(cancel):
        pool = _open_pool(runtime, size, burst, label)
        try:
            stream = pool.map(task, items, ordered=False, timeout=backstop)
            try:
                for result in stream:
                    if result.ok:
                        outcome = result.value
                        if outcome is _INTERRUPTED:
                            summary.interrupted = True
                            break
                    else:
                        outcome = Outcome(None, None, 0.0, result.error)
                    index, example = result.item
                    summary.finished += 1
                    on_outcome(index, example, outcome)
                    if outcome.error is not None:
                        summary.errors += 1
                        _log_failure(label, index, outcome.error, provide_traceback)
                        if summary.errors >= max_errors and summary.finished < len(items):
                            summary.stopped_early = True
                            logger.warning(
                                "%s: stopping after %d failed examples (max_errors=%s); "
                                "returning the %d finished so far",
                                label,
                                summary.errors,
                                max_errors,
                                summary.finished,
                            )
                            break
            except KeyboardInterrupt:
                summary.interrupted = True
            finally:
                cancel.set()  # running examples stop at their next check
                if summary.interrupted:
                    logger.warning(
                        "%s interrupted: returning the %d examples finished so far",
                        label,
                        summary.finished,
                    )
                stream.close()
        finally:
            pool.stop()
    return summary


def _runtime_or_none() -> Any:
    """The runtime these examples belong to (starting the default one if none runs)."""
    from dspex.programs._runtime_access import current_runtime

    try:
        return current_runtime()
    except Exception:  # no runtime can start: run the pool unsupervised
        logger.warning("no dspex runtime available; the evaluation pool runs unsupervised")
        return None


def _spare_threads(runtime: Any) -> int:
    """``runtime.spare_threads``: burst workers for examples parked in a retry wait."""
    if runtime is None:
        return _DEFAULT_SPARE_THREADS
    spare: int = runtime.settings.runtime.spare_threads
    return spare


@contextmanager
def pools_under(owner: Any) -> Iterator[None]:
    """Evaluations started in this block put their pool under ``owner`` (a supervisor).

    An optimizer's coordinator uses it, so the pools of the evaluations it
    runs show (and stop) inside its own subtree. None: the default place.
    """
    token = _pool_owner.set(owner)
    try:
        yield
    finally:
        _pool_owner.reset(token)


def _open_pool(runtime: Any, size: int, burst: int, label: str) -> WorkerPool:
    """The evaluation's WorkerPool, a temporary child of the runtime's coordinators.

    Under the tree it shows in ``rt.tree()`` while it runs and is stopped with
    the runtime; ``pool.stop()`` ends it (a temporary child is then dropped).
    Inside :func:`pools_under` it goes under that owner instead. ``burst``
    workers start only while examples are parked in a retry wait (see
    ``dspex.supervision.Lease``): ``size`` examples keep working meanwhile.
    """
    options: dict[str, Any] = {
        "size": size,
        "burst": burst,
        "name": label,
        "shutdown_timeout": _SHUTDOWN_SECONDS,
    }
    if runtime is None:
        return WorkerPool(**options)
    owner = _pool_owner.get()
    if owner is not None and owner.is_alive():
        parent, child_id = owner, f"{label}-{next(_pool_ids)}"  # ids are unique in a supervisor
    else:
        parent, child_id = runtime.whereis("coordinators"), label
    spec: ChildSpec = WorkerPool.child_spec(id=child_id, restart=Restart.TEMPORARY, **options)
    ref = start_child(parent, spec, timeout=spec.start_timeout)
    return WorkerPool.of(ref)


def _run_inline(run: RunContext, body: Callable[[Any], Outcome], example: Any) -> Outcome:
    # Runs inside a fresh copy of the caller's context, so nothing to reset.
    activate_run(run)
    return body(example)


def _log_failure(label: str, index: int, error: BaseException, traceback: bool) -> None:
    if traceback:
        logger.error("%s: example %d failed: %r", label, index, error, exc_info=error)
    else:
        logger.error(
            "%s: example %d failed: %s: %s (set provide_traceback=True for the traceback)",
            label,
            index,
            type(error).__name__,
            error,
        )


@contextmanager
def _sigint_cancels(cancel: threading.Event) -> Iterator[None]:
    """While active, Ctrl-C first cancels running examples, then raises as usual.

    Only in the main thread and only over Python's default handler: a program
    that installed its own SIGINT handler keeps it untouched.
    """
    installed = False
    previous: Any = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGINT)
        if previous is signal.default_int_handler:

            def handler(signum: int, frame: Any) -> None:
                cancel.set()
                signal.default_int_handler(signum, frame)

            try:
                signal.signal(signal.SIGINT, handler)
                installed = True
            except ValueError:  # not the main interpreter
                installed = False
    try:
        yield
    finally:
        if installed:
            signal.signal(signal.SIGINT, previous)
