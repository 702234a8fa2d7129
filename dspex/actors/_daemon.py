"""Daemon mode: block until SIGTERM/SIGINT, then shut the runtime down in order.

:func:`run_forever` is what ``rt.run_forever()`` runs. On the first signal it
stops every program server from accepting work, drains what was admitted up
to a deadline, flushes the cache and telemetry, stops the supervision tree in
reverse start order and returns the process exit code::

    sys.exit(rt.run_forever(drain_timeout=30))

The signal handler only writes a byte to a pipe that the main thread is
waiting on: no lock is ever taken inside a handler, so a signal arriving at
any instant cannot deadlock the shutdown.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any, Protocol, runtime_checkable

from dspex.errors import UsageError

__all__ = ["DaemonRuntime", "run_forever"]

log = logging.getLogger("dspex.daemon")

_POLL_SECONDS = 0.25  # how often a stop_event is checked while waiting for a signal
STOP_EVENT = 0
"""The "signal number" :func:`run_forever` reports when ``stop_event`` ended it."""


@runtime_checkable
class DaemonRuntime(Protocol):
    """What :func:`run_forever` needs from a runtime (``dspex.Runtime`` provides it)."""

    def drain_servers(self, timeout: float) -> object:
        """Stop accepting on every program server, then drain them within ``timeout`` s."""
        ...

    def flush(self) -> None:
        """Write pending cache entries and let telemetry catch up."""
        ...

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the tree in reverse start order; True if everything stopped in time."""
        ...


class _Waker:
    """A pipe the main thread waits on; signal handlers write one byte to it."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self.signals = 0

    def wake(self, signum: int) -> None:
        self.signals += 1
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._write, bytes([signum & 0xFF]))

    def wait(self, stop_event: threading.Event | None) -> int:
        """Block until a wake-up; returns the signal number (``STOP_EVENT`` for the event)."""
        while True:
            if stop_event is not None and stop_event.is_set():
                return STOP_EVENT
            ready, _, _ = select.select([self._read], [], [], _POLL_SECONDS)
            if ready:
                return os.read(self._read, 1)[0]

    def close(self) -> None:
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)


def run_forever(
    runtime: DaemonRuntime,
    *,
    drain_timeout: float = 30.0,
    install_signals: bool = True,
    stop_event: threading.Event | None = None,
    signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
    on_ready: Callable[[], None] | None = None,
    on_signal: Callable[[int], None] | None = None,
    stop_timeout: float | None = None,
) -> int:
    """Serve until a signal (or ``stop_event``), then shut down in order; returns the exit code.

    ``on_ready()`` runs once the handlers are installed (announce readiness
    there: a SIGTERM before that point would still kill the process). Steps
    after the wake-up: ``on_signal(signum)`` (0 for ``stop_event``;
    runs in this thread, e.g. to stop the application's own intake), then
    ``runtime.drain_servers(drain_timeout)``, ``runtime.flush()`` and
    ``runtime.stop(stop_timeout)``. Returns 0, or 1 if some actor did not
    stop in time. A second signal during the shutdown is logged and ignored.

    Signal handlers can only be installed from the main thread; elsewhere
    pass ``install_signals=False`` and a ``stop_event``.
    """
    _check_args(drain_timeout, install_signals, stop_event)
    waker = _Waker()
    previous: dict[signal.Signals, Any] = {}
    try:
        if install_signals:
            previous = _install(signals, waker)
        log.info("dspex daemon running (pid %d); waiting for SIGTERM/SIGINT", os.getpid())
        if on_ready is not None:
            on_ready()
        signum = waker.wait(stop_event)
        return _shutdown(runtime, signum, drain_timeout, stop_timeout, on_signal)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        waker.close()


def _check_args(
    drain_timeout: float, install_signals: bool, stop_event: threading.Event | None
) -> None:
    if isinstance(drain_timeout, bool) or not isinstance(drain_timeout, int | float):
        raise UsageError(f"run_forever(drain_timeout={drain_timeout!r}): must be seconds >= 0")
    if drain_timeout < 0:
        raise UsageError(f"run_forever(drain_timeout={drain_timeout!r}): must be seconds >= 0")
    if install_signals and threading.current_thread() is not threading.main_thread():
        raise UsageError(
            "run_forever(install_signals=True) must be called from the main thread (Python "
            f"installs signal handlers only there; called from {threading.current_thread().name!r}"
            "); call it from the main thread, or pass install_signals=False and a stop_event"
        )
    if not install_signals and stop_event is None:
        raise UsageError(
            "run_forever(install_signals=False) needs a stop_event, or nothing could ever stop "
            "it; pass stop_event=threading.Event() and set it to shut down"
        )


def _install(signals: Iterable[signal.Signals], waker: _Waker) -> dict[signal.Signals, Any]:
    def handler(signum: int, frame: FrameType | None) -> None:
        if waker.signals:
            log.warning("dspex daemon: signal %d received while already shutting down", signum)
        waker.wake(signum)

    previous: dict[signal.Signals, Any] = {}
    try:
        for sig in signals:
            previous[sig] = signal.signal(sig, handler)
    except BaseException:
        for sig, old in previous.items():
            signal.signal(sig, old)
        raise
    return previous


def _shutdown(
    runtime: DaemonRuntime,
    signum: int,
    drain_timeout: float,
    stop_timeout: float | None,
    on_signal: Callable[[int], None] | None,
) -> int:
    started = time.monotonic()
    cause = "stop_event" if signum == STOP_EVENT else signal.Signals(signum).name
    log.info("dspex daemon: %s received; draining for up to %.1fs", cause, drain_timeout)
    if on_signal is not None:
        try:
            on_signal(signum)
        except Exception:
            log.exception("dspex daemon: on_signal callback failed; shutting down anyway")
    try:
        report = runtime.drain_servers(drain_timeout)
        log.info("dspex daemon: drained: %s", report)
    except Exception:
        log.exception("dspex daemon: draining the program servers failed; stopping anyway")
    try:
        runtime.flush()
    except Exception:
        log.exception("dspex daemon: flushing cache/telemetry failed; stopping anyway")
    stopped = runtime.stop(stop_timeout)
    log.info(
        "dspex daemon: stopped in %.2fs (%s)",
        time.monotonic() - started,
        "clean" if stopped else "some actors did not stop in time",
    )
    return 0 if stopped else 1
