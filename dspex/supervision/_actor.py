"""The actor base class: pykka's ThreadingActor plus OTP-style death reports.

pykka 4.5 has no links or monitors. :class:`Actor` fills the gap: whatever
ends an actor — a failure in ``on_start``, an exception on the tell path
(``on_failure``), a normal ``stop()`` or a supervisor's shutdown — it records
one exit reason and, as the very last thing its thread does, delivers
``Down(ref, reason)`` to every monitor. It also turns a ``BaseException``
raised in a handler into :class:`ActorAbortError`, because pykka answers a
``BaseException`` by stopping every actor in the process.

Monitors live in a module-level table keyed by actor URN, guarded by one
lock, so registering a monitor and an actor's death can never race: a monitor
added after the death report gets ``Down(reason=NOPROC)`` at once.

A :class:`LightProcess` is a process without a thread of its own (a program
run executed by the thread that waits for it): it has a URN in the same
table, so it is monitored, shut down and waited for exactly like an actor.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, Self

import pykka

from dspex._record import Record
from dspex.errors import ActorStoppedError, StartError, SupervisionError

__all__ = [
    "NOPROC",
    "NORMAL",
    "SHUTDOWN",
    "Actor",
    "ActorAbortError",
    "Down",
    "ExitReason",
    "LightProcess",
    "MonitorRef",
    "ProcessRef",
    "Watcher",
    "await_started",
    "demonitor",
    "is_abnormal",
    "monitor",
    "shutdown",
    "wait_dead",
]

log = logging.getLogger("dspex.supervision")

NORMAL: Final = "normal"
"""The actor stopped because it (or its owner) called ``stop()``."""
SHUTDOWN: Final = "shutdown"
"""The actor was stopped by its supervisor (or :func:`shutdown`)."""
NOPROC: Final = "noproc"
"""The monitored actor was already dead when the monitor was set."""

ExitReason = str | BaseException
"""``NORMAL``, ``SHUTDOWN``, ``NOPROC`` or the exception that killed the actor."""


def is_abnormal(reason: ExitReason) -> bool:
    """True when the reason is a crash rather than a requested stop."""
    return isinstance(reason, BaseException)


class ActorAbortError(SupervisionError):
    """A handler raised a ``BaseException`` (``SystemExit``, ``KeyboardInterrupt``...).

    It is wrapped so pykka treats it as an ordinary failure of this actor
    instead of stopping every actor in the process. The original is ``__cause__``.
    """


# Messages and handles are NamedTuples, not frozen dataclasses: a dataclass
# costs ~0.5 ms to create at import on a slow machine, a first call's budget.
class Down(Record):
    """Delivered to a watcher when the actor (or light process) it monitors has died."""

    monitor: MonitorRef
    ref: ProcessRef
    reason: ExitReason


Watcher = pykka.ActorRef[Any] | Callable[[Down], None]
"""Who gets ``Down``: an actor (told the message) or a callable.

A callable runs in the dying actor's thread (or the caller's, for ``noproc``):
it must be quick and must not block.
"""

_ids = itertools.count(1)


class MonitorRef(Record):
    """Handle of one monitor; pass it to :func:`demonitor`."""

    id: int
    target_urn: str


class _Latch:
    """A flag set once that threads can wait for: an Event without its Python Condition.

    A light process lives for microseconds and is seldom waited for; its lock
    is held from birth and released by :meth:`set`, so a wait is one acquire.
    """

    __slots__ = ("_flag", "_lock")

    def __init__(self) -> None:
        self._flag = False
        self._lock = threading.Lock()
        self._lock.acquire()

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        if not self._flag:  # set once, by the one thread that reports the death
            self._flag = True
            self._lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        if self._flag:
            return True
        if self._lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            self._lock.release()  # let the next waiter through too
        return self._flag


class _Life:
    """Book-keeping for one live actor incarnation, shared across threads."""

    __slots__ = ("dead", "reason", "start_error", "started", "stop_reason", "watchers")

    def __init__(
        self,
        started: threading.Event | None = None,
        dead: threading.Event | _Latch | None = None,
    ) -> None:
        self.started = threading.Event() if started is None else started
        self.dead: threading.Event | _Latch = threading.Event() if dead is None else dead
        self.start_error: BaseException | None = None
        self.reason: ExitReason | None = None
        self.stop_reason: str = NORMAL
        self.watchers: dict[int, tuple[MonitorRef, Watcher]] = {}


_lock = threading.Lock()
_lives: dict[str, _Life] = {}
_STARTED = threading.Event()  # a light process is started when it exists
_STARTED.set()
_light_ids = itertools.count(1)


class LightProcess:
    """A process without a thread: identity, monitors, a stop request, one death report.

    The thread that executes it (the caller that would block on it anyway)
    calls :meth:`exit` once, with the reason, as its last act for it; until
    then it is alive. ``stop()`` (what :func:`shutdown` and a supervisor's
    terminate call) runs ``on_stop`` in the stopping thread: a request the
    executing code honours at its next check, since a thread cannot be
    interrupted. ``actor_class`` names it in ``rt.tree()``.
    """

    __slots__ = ("_dspex_life", "_on_stop", "actor_class", "actor_urn", "on_exit")

    def __init__(self, actor_class: type[Any], on_stop: Callable[[], None] | None = None) -> None:
        self.actor_urn = f"urn:dspex:light:{next(_light_ids)}"
        self.actor_class = actor_class
        self._on_stop = on_stop
        # Set by the supervisor that adopts it: books the exit (exiting thread).
        self.on_exit: Callable[[ExitReason], None] | None = None
        life = _Life(started=_STARTED, dead=_Latch())
        self._dspex_life = life
        with _lock:
            _lives[self.actor_urn] = life

    def is_alive(self) -> bool:
        return not self._dspex_life.dead.is_set()

    def stop(self, block: bool = False) -> None:
        """Ask the process to stop (any thread); it exits at its next check."""
        if self._on_stop is not None and self.is_alive():
            self._on_stop()

    def exit(self, reason: ExitReason = NORMAL) -> None:
        """Report the death (the executing thread, once): monitors get ``Down``."""
        life = self._dspex_life
        with _lock:
            _lives.pop(self.actor_urn, None)
            if life.reason is None:
                # A requested stop (shutdown) that ended normally reads as that stop.
                life.reason = life.stop_reason if reason is NORMAL else reason
            watchers = list(life.watchers.values())
            life.watchers.clear()
        life.dead.set()
        for mref, watcher in watchers:
            _deliver(Down(mref, self, life.reason), watcher)
        on_exit = self.on_exit
        if on_exit is not None:
            on_exit(life.reason)

    @property
    def exit_reason(self) -> ExitReason | None:
        """Why the process ended (None while it runs)."""
        return self._dspex_life.reason

    def __repr__(self) -> str:
        return f"<LightProcess {self.actor_class.__name__} ({self.actor_urn})>"


ProcessRef = pykka.ActorRef[Any] | LightProcess
"""What monitors, :func:`shutdown` and supervisors accept: an actor or a light process."""


def _deliver(down: Down, watcher: Watcher) -> None:
    try:
        if isinstance(watcher, pykka.ActorRef):
            watcher.tell(down)
        else:
            watcher(down)
    except pykka.ActorDeadError:
        pass  # the watcher died first; nobody is left to tell
    except Exception:
        log.exception("monitor callback for %s failed", down.ref)


def monitor(target: ProcessRef, watcher: Watcher) -> MonitorRef:
    """Watch ``target``: ``watcher`` gets exactly one ``Down`` when it dies.

    A target that is already dead (or not a dspex :class:`Actor` and no longer
    alive) yields ``Down(reason=NOPROC)`` immediately.
    """
    mref = MonitorRef(next(_ids), target.actor_urn)
    with _lock:
        life = _lives.get(target.actor_urn)
        if life is not None:
            life.watchers[mref.id] = (mref, watcher)
            return mref
    _deliver(Down(mref, target, NOPROC), watcher)
    return mref


def demonitor(mref: MonitorRef) -> bool:
    """Stop watching; True if the monitor was still active.

    A ``Down`` already on its way to an actor watcher may still arrive; the
    :class:`Actor` base drops those for monitors it set and later removed.
    """
    with _lock:
        life = _lives.get(mref.target_urn)
        return life is not None and life.watchers.pop(mref.id, None) is not None


def _life_of(ref: ProcessRef) -> _Life | None:
    # Pinned on the ref object (pykka hands out that one object), so it
    # outlives the _lives entry that death removes.
    life: _Life | None = getattr(ref, "_dspex_life", None)
    return life


def await_started(ref: pykka.ActorRef[Any], timeout: float) -> None:
    """Wait for an :class:`Actor` to finish ``on_start`` (OTP's init ack).

    Raises :class:`StartError` if ``on_start`` failed or did not finish within
    ``timeout`` seconds; in the latter case the actor is asked to stop.
    """
    life = _life_of(ref)
    if life is None:  # not a dspex Actor: nothing to wait for
        if ref.is_alive():
            return
        raise StartError(f"{ref} died before acknowledging its start")
    if not life.started.wait(timeout):
        ref.stop(block=False)
        raise StartError(
            f"{ref} did not finish on_start within {timeout}s; "
            "raise the child's start timeout or make on_start faster"
        )
    if life.start_error is not None:
        raise StartError(f"{ref} failed in on_start: {life.start_error!r}") from life.start_error


def wait_dead(ref: ProcessRef, timeout: float) -> bool:
    """Wait until the actor has reported its death; False on timeout."""
    life = _life_of(ref)
    if life is None:  # not a dspex Actor (a light process always has a life)
        assert isinstance(ref, pykka.ActorRef)
        return ref.actor_stopped.wait(timeout)
    return life.dead.wait(timeout)


def shutdown(ref: ProcessRef, timeout: float) -> bool:
    """Stop ``ref`` with reason ``SHUTDOWN`` and wait for its death report.

    Returns False if it did not die within ``timeout``: the thread cannot be
    killed, so the caller should report it as abandoned.
    """
    with _lock:
        life = _lives.get(ref.actor_urn)
        if life is not None:
            life.stop_reason = SHUTDOWN
    with contextlib.suppress(pykka.ActorDeadError):
        ref.stop(block=False)
    return wait_dead(ref, timeout)


class Actor(pykka.ThreadingActor):
    """Base for every supervised actor.

    Subclasses use pykka's hooks as usual (``on_start``, ``on_stop``,
    ``on_failure``, ``on_receive`` and proxy methods), all run in the actor's
    own thread. ``on_down(down)`` runs, also in the actor's thread, for each
    ``Down`` of a monitor the actor set with :meth:`monitor`.
    """

    _dspex_life: _Life
    _dspex_monitors: dict[int, MonitorRef]

    # Daemon threads: an actor never holds interpreter exit. A runtime stops
    # its tree at exit (see _runtime_registry); what is left (a worker stuck
    # in user code after Ctrl-C, a pool nobody stopped) must not hang Python.
    use_daemon_thread = True

    @classmethod
    def start_link(
        cls, *args: Any, start_timeout: float = 5.0, **kwargs: Any
    ) -> pykka.ActorRef[Self]:
        """Start the actor and wait for ``on_start`` to finish, like OTP's ``start_link``."""
        ref = cls.start(*args, **kwargs)
        await_started(ref, start_timeout)
        return ref

    # -- hooks for subclasses -------------------------------------------------

    def on_down(self, down: Down) -> None:
        """Handle the death of an actor this actor monitors (actor thread)."""

    def monitor(self, target: ProcessRef) -> MonitorRef:
        """Monitor ``target``; its ``Down`` reaches :meth:`on_down`. Call from the actor thread."""
        mref = monitor(target, self.actor_ref)
        self._dspex_monitors[mref.id] = mref
        return mref

    def demonitor(self, mref: MonitorRef) -> None:
        """Stop monitoring; a ``Down`` already queued for it is dropped."""
        self._dspex_monitors.pop(mref.id, None)
        demonitor(mref)

    @property
    def exit_reason(self) -> ExitReason | None:
        """Why the actor ended (None while it runs)."""
        return self._dspex_life.reason

    # -- pykka internals we wrap ----------------------------------------------
    # pykka funnels every failure through _handle_failure and runs the whole
    # life inside _actor_loop, so wrapping those two sees every way to die.

    @staticmethod
    def _create_actor_inbox() -> Any:
        # pykka only needs put/get/empty: SimpleQueue does them in C, without
        # queue.Queue's three Python-level Conditions per actor and per message.
        return queue.SimpleQueue()

    def _start_actor_loop(self) -> None:
        self._dspex_life = _Life()
        self._dspex_monitors = {}
        self.actor_ref._dspex_life = self._dspex_life  # type: ignore[attr-defined]
        with _lock:
            _lives[self.actor_urn] = self._dspex_life
        super()._start_actor_loop()

    def _actor_loop_setup(self) -> None:
        life = self._dspex_life
        try:
            try:
                super()._actor_loop_setup()
            except BaseException as exc:  # on_start raised SystemExit & co
                abort = ActorAbortError(f"on_start of {self} raised {exc!r}")
                abort.__cause__ = exc
                self._handle_failure(type(abort), abort, exc.__traceback__)
            if self.actor_stopped.is_set():
                life.start_error = (
                    life.reason
                    if isinstance(life.reason, BaseException)
                    else (ActorStoppedError(f"{self} stopped during on_start"))
                )
        finally:
            life.started.set()

    def _actor_loop(self) -> None:
        try:
            super()._actor_loop()
        except BaseException as exc:  # never let a thread die silently
            if self._dspex_life.reason is None:
                self._dspex_life.reason = exc
            log.exception("actor loop of %s crashed", self)
        finally:
            self._report_death()

    def _handle_receive(self, message: Any) -> Any:
        if isinstance(message, Down):
            if self._dspex_monitors.pop(message.monitor.id, None) is not None:
                self.on_down(message)
            return None
        try:
            return super()._handle_receive(message)
        except Exception:
            raise
        except BaseException as exc:
            raise ActorAbortError(f"handler in {self} raised {exc!r}") from exc

    def _handle_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        life = self._dspex_life
        if life.reason is None and exception_value is not None:
            life.reason = exception_value
        super()._handle_failure(exception_type, exception_value, traceback)

    def _report_death(self) -> None:
        life = self._dspex_life
        with _lock:
            _lives.pop(self.actor_urn, None)
            if life.reason is None:
                life.reason = life.stop_reason
            watchers = list(life.watchers.values())
            life.watchers.clear()
        # Unregister before telling anyone, so a Down never names a live entry.
        # pykka unregisters whenever it sets actor_stopped, so only a loop that
        # crashed outside pykka's handlers still needs both.
        if not self.actor_stopped.is_set():
            pykka.ActorRegistry.unregister(self.actor_ref)
            self.actor_stopped.set()
        if not life.started.is_set():
            life.started.set()
        life.dead.set()
        reason = life.reason
        for mref, watcher in watchers:
            _deliver(Down(mref, self.actor_ref, reason), watcher)
