"""Program runs: one transient actor per top-level module call.

The caller's ``contextvars`` (``dspex.context`` overrides included) do not
cross into actor threads on their own, so the caller copies its context into
the :class:`RunJob` message and the run executes the job inside it. Nested
modules see :func:`current_run` set and execute inline in the run's thread.

A failure in user code fails that run alone: the caller receives an error
that is both a :class:`~dspex.errors.ProgramError` and an instance of the
original exception's type (so ``except ValueError`` still works), with the
original, and its traceback from the run thread, as ``__cause__``.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

from dspex._record import Record
from dspex.errors import ProgramError
from dspex.supervision import Actor

__all__ = [
    "CancelEvent",
    "ProgramRun",
    "RunContext",
    "RunJob",
    "activate_run",
    "current_run",
    "enter_run",
    "leave_run",
    "scoped_run",
    "wrap_program_error",
]

log = logging.getLogger("dspex.runtime")

_run_ids = itertools.count(1)


class CancelEvent(threading.Event):
    """A run's cancel flag that also wakes whoever waits on the run's behalf.

    ``set()`` runs the registered wakers (in the setting thread), so an LM
    call blocked in a run that was cancelled (``max_errors`` reached, Ctrl-C,
    an optimizer that has enough) returns at once instead of when its answer
    arrives. Wakers must be quick and must not raise.

    Every run makes one and most are never waited on, so the condition a
    ``threading.Event`` builds up front (a Python-level object, most of a
    run's set-up cost) is made by the first :meth:`wait` instead.
    """

    def __init__(self) -> None:  # not Event.__init__: no condition until someone waits
        self._flag = False
        self._lazy_cond: threading.Condition | None = None
        self._wakers: set[Callable[[], None]] = set()
        self._wakers_lock = threading.Lock()

    def is_set(self) -> bool:
        return self._flag

    def wait(self, timeout: float | None = None) -> bool:
        if self._flag:
            return True
        with self._wakers_lock:
            cond = self._lazy_cond
            if cond is None:
                cond = self._lazy_cond = threading.Condition(threading.Lock())
        with cond:
            # set() flips the flag before it takes the condition, so a flag
            # still down here means the notify is yet to come.
            if not self._flag:
                cond.wait(timeout)
            return self._flag

    def clear(self) -> None:
        self._flag = False

    def add_waker(self, waker: Callable[[], None]) -> None:
        """Call ``waker()`` on :meth:`set` (at once if already set)."""
        with self._wakers_lock:
            self._wakers.add(waker)
        if self._flag:
            waker()

    def discard_waker(self, waker: Callable[[], None]) -> None:
        with self._wakers_lock:
            self._wakers.discard(waker)

    def set(self) -> None:
        with self._wakers_lock:
            self._flag = True
            cond = self._lazy_cond
            wakers, self._wakers = self._wakers, set()
        if cond is not None:
            with cond:
                cond.notify_all()
        for waker in wakers:
            try:
                waker()
            except Exception:  # one waiter's bug must not stop the others' wake-up
                log.exception("a run's cancel waker failed")

    def _at_fork_reinit(self) -> None:
        self._lazy_cond = None
        self._wakers_lock = threading.Lock()


class RunContext:
    """What a run carries: its id, the deadline and the trace of predictor calls.

    ``deadline`` is a ``time.monotonic()`` value (None: no limit); modules check
    it between LM calls via :meth:`check_deadline` (threads cannot be killed).
    ``cancelled`` lets an owner (e.g. an evaluation past its timeout) ask the
    run to stop at its next check; a :class:`CancelEvent` also ends the LM
    call the run is waiting for. ``lease`` is the pool slot the run may lend
    while an LM call waits out a retry (see ``dspex.supervision.Lease``); a
    run started for another (a ReAct trajectory) carries its parent's.
    """

    # A slotted class, not a frozen dataclass: one is made per run, and a dataclass
    # costs ~0.5 ms to define on a cold start. Read-only by convention.
    __slots__ = ("cancelled", "deadline", "label", "lease", "run_id", "runtime", "trace")

    def __init__(
        self,
        *,
        run_id: int | None = None,
        deadline: float | None = None,
        trace: list[Any] | None = None,
        cancelled: threading.Event | None = None,
        label: str = "",
        runtime: Any = None,
        lease: Any = None,
    ) -> None:
        self.run_id = next(_run_ids) if run_id is None else run_id
        self.deadline = deadline
        self.trace = [] if trace is None else trace
        self.cancelled = CancelEvent() if cancelled is None else cancelled
        self.label = label
        self.runtime = runtime
        self.lease = lease

    def replace(self, **changes: Any) -> RunContext:
        """A copy with ``changes`` (keyword: field value), as ``dataclasses.replace``."""
        fields = {name: getattr(self, name) for name in self.__slots__}
        return RunContext(**{**fields, **changes})

    def _key(self) -> tuple[Any, ...]:  # what equality compares (not runtime or lease)
        return (self.run_id, self.deadline, self.trace, self.cancelled, self.label)

    def __eq__(self, other: object) -> bool:
        if type(other) is not RunContext:
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]  # the trace is a list

    def __repr__(self) -> str:
        return (
            f"RunContext(run_id={self.run_id!r}, deadline={self.deadline!r}, "
            f"trace={self.trace!r}, cancelled={self.cancelled!r}, label={self.label!r})"
        )

    def check_deadline(self) -> None:
        """Raise ``ProgramError`` if the run was cancelled or its deadline passed."""
        if self.cancelled.is_set():
            raise ProgramError(f"program run {self.run_id} ({self.label}) was cancelled")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise ProgramError(
                f"program run {self.run_id} ({self.label}) passed its deadline; "
                "raise the timeout or make the program faster"
            )


_current: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "dspex_current_run", default=None
)


def current_run() -> RunContext | None:
    """The run this thread is executing inside, if any."""
    return _current.get()


@contextlib.contextmanager
def scoped_run(run: RunContext) -> Iterator[None]:
    """Make ``run`` current for the body of a ``with`` block (then the previous one again)."""
    token = _current.set(run)
    try:
        yield
    finally:
        _current.reset(token)


def activate_run(run: RunContext) -> None:
    """Make ``run`` current in this context, for executors that run programs inline.

    Call it inside a fresh ``contextvars`` copy (Evaluate's pool workers do),
    so nothing needs resetting afterwards.
    """
    _current.set(run)


def enter_run(run: RunContext) -> contextvars.Token[RunContext | None]:
    """Make ``run`` current in this context until :func:`leave_run` (an awaited run)."""
    return _current.set(run)


def leave_run(token: contextvars.Token[RunContext | None]) -> None:
    """Undo :func:`enter_run`."""
    _current.reset(token)


class RunJob(Record):  # not a frozen dataclass: cheaper to define on a cold start
    """Execute ``fn`` inside ``context`` (the caller's copied contextvars) and reply.

    ``before`` runs first, in the run's thread, while the caller waits anyway
    (the Runtime starts the spare run actor that replaces this one there); an
    exception from it is logged and does not fail the run.
    """

    fn: Callable[[], Any]
    context: contextvars.Context
    run: RunContext
    reply: Future[Any]
    before: Callable[[], None] | None = None


class ProgramRun(Actor):
    """A transient actor that runs one job, replies and stops (actor thread runs the job)."""

    def on_receive(self, message: Any) -> Any:
        if not isinstance(message, RunJob):
            return super().on_receive(message)
        try:
            if message.before is not None:
                _run_before(message.before, message.run)
            result = message.context.run(_execute, message)
        except Exception as exc:  # user code: fail this run only
            message.reply.set_exception(wrap_program_error(exc, message.run))
        except BaseException as exc:  # SystemExit & co in user code: contain it
            wrapped = ProgramError(
                f"program run {message.run.run_id} ({message.run.label}) raised {exc!r}",
                original=exc,
            )
            wrapped.__cause__ = exc
            message.reply.set_exception(wrapped)
        else:
            message.reply.set_result(result)
        finally:
            # Stop at once rather than by a message to ourselves: one job per run.
            self._stop()
        return None


def _run_before(before: Callable[[], None], run: RunContext) -> None:
    # Before the job rather than after the reply: the caller sleeps until the
    # reply anyway, so this work does not compete with it for the GIL.
    try:
        before()
    except Exception:  # housekeeping must not fail the user's run
        log.exception("the before-hook of program run %s failed", run.run_id)


def _execute(job: RunJob) -> Any:
    token = _current.set(job.run)
    try:
        return job.fn()
    finally:
        _current.reset(token)


_hybrids: dict[type[BaseException], type[ProgramError] | None] = {}


def _hybrid_type(original: type[BaseException]) -> type[ProgramError] | None:
    """A subclass of both ProgramError and ``original``, or None if they cannot mix."""
    if original in _hybrids:
        return _hybrids[original]
    hybrid: type[ProgramError] | None
    try:
        hybrid = type(
            f"ProgramError[{original.__name__}]",
            (ProgramError, original),
            {"__module__": ProgramError.__module__},
        )
    except TypeError:  # e.g. incompatible C layouts (OSError subclasses)
        hybrid = None
    _hybrids[original] = hybrid  # a benign race: both threads build equivalent types
    return hybrid


def wrap_program_error(exc: Exception, run: RunContext) -> ProgramError:
    """Wrap a user exception so both its type and ``ProgramError`` match.

    ``str()`` of the result is the original's (DSPy re-raises the user's own
    exception, and callers compare messages); the run is named in a note
    (shown under the traceback) and in ``run_id`` / ``run_label``.
    """
    if isinstance(exc, ProgramError):
        return exc
    hybrid = _hybrid_type(type(exc))
    wrapped: ProgramError
    if hybrid is not None:
        try:
            wrapped = hybrid.__new__(hybrid, *exc.args)
            # Not ProgramError.__init__: its super() call would reach the
            # original type's __init__, which may require other arguments
            # (AdapterParseError's raw=). The same args give the same str();
            # the attributes are copied.
            BaseException.__init__(wrapped, *exc.args)
            wrapped.__dict__.update(getattr(exc, "__dict__", {}))
            wrapped.original = exc
            if str(wrapped) != str(exc):  # e.g. OSError reads its args in __init__
                raise TypeError("the hybrid does not render as the original")
        except Exception:
            wrapped = ProgramError(str(exc), original=exc)
    else:
        wrapped = ProgramError(str(exc), original=exc)
    wrapped.run_id = run.run_id
    wrapped.run_label = run.label
    wrapped.add_note(f"raised in program run {run.run_id} ({run.label}): {type(exc).__name__}")
    wrapped.__cause__ = exc
    return wrapped
