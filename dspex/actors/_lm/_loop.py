"""The LM client's event loop thread (:class:`IOLoop`).

The LM client actor keeps its mailbox free by doing all HTTP on such a loop:
hundreds of requests in flight cost coroutines, not threads. Other threads
hand work over with :meth:`IOLoop.call_soon` (fire and forget) or
:meth:`IOLoop.run` (wait for a coroutine's result, bounded). The thread is not
a daemon, so its owner must call :meth:`IOLoop.stop`; that cancels what is
still running, lets an async ``cleanup`` close resources, and joins.

The HTTP that runs on it is a :class:`~dspex.actors._lm._transport.Transport`
(``_transport``, ``_transport_httptools``, ``_transport_h11``,
``_transport_httpx``).

The loop is uvloop's when uvloop is installed (the ``serve`` extra brings
it), else asyncio's: every LM call crosses this loop twice (the hand-over
and the reply) and runs its HTTP on it, and uvloop does that work with
less CPU (measured in docs/architecture.md, departure 23).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from dspex.errors import ActorStoppedError, CallTimeoutError

__all__ = ["HostedLoop", "IOLoop", "engine_loop", "host_engines", "new_loop"]

log = logging.getLogger("dspex.lm")

T = TypeVar("T")


class IOLoop:
    """One event loop thread. ``start``/``stop`` from the owner; the rest from any thread."""

    def __init__(self, name: str = "dspex-io") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise ActorStoppedError(f"{self.name}: the loop was never started; call start()")
        return self._loop

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    def in_loop_thread(self) -> bool:
        return self._thread is threading.current_thread()

    def start(self, timeout: float = 5.0) -> None:
        """Start the thread and wait until its loop runs."""
        if self._thread is not None:
            raise ActorStoppedError(f"{self.name} was already started; make a new IOLoop")
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=False)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise CallTimeoutError(f"{self.name}: event loop did not start within {timeout}s")

    def call_soon(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop thread soon; raises ActorStoppedError once stopped."""
        loop = self._loop
        if loop is None or self._stopping:
            raise ActorStoppedError(f"{self.name} is not running")
        if asyncio._get_running_loop() is loop:
            # A caller on the loop's own thread (one sharing it): no wake-up write.
            loop.call_soon(fn, *args)
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError as exc:  # closed between the check and the call
            raise ActorStoppedError(f"{self.name} is not running") from exc

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coro`` on the loop and wait (from another thread) for its result."""
        if self.in_loop_thread():
            coro.close()
            raise ActorStoppedError(f"{self.name}: run() called on the loop thread would deadlock")
        loop = self._loop
        if loop is None or loop.is_closed():
            coro.close()
            raise ActorStoppedError(f"{self.name} is not running")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout)
        except TimeoutError as exc:
            if future.done() and not future.cancelled() and future.exception() is exc:
                raise  # the coroutine's own TimeoutError (an LMTimeoutError, say)
            future.cancel()
            raise CallTimeoutError(
                f"{self.name}: coroutine did not finish within {timeout}s"
            ) from exc

    def stop(
        self,
        timeout: float = 5.0,
        *,
        cleanup: Callable[[], Awaitable[None]] | None = None,
    ) -> bool:
        """Run ``cleanup`` on the loop, cancel leftover tasks, stop and join the thread.

        Returns False if the thread did not end within ``timeout`` (it is then
        abandoned; the caller should report it). Safe to call more than once.
        """
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return True
        if self.in_loop_thread():
            raise ActorStoppedError(f"{self.name}: stop() cannot be called on the loop thread")
        if not self._stopping:
            self._stopping = True
            with contextlib.suppress(RuntimeError):  # already closed: the thread is ending
                asyncio.run_coroutine_threadsafe(self._shutdown(cleanup), loop)
        thread.join(timeout)
        if thread.is_alive():
            log.error("%s did not stop within %ss; abandoning its thread", self.name, timeout)
            return False
        return True

    async def _shutdown(self, cleanup: Callable[[], Awaitable[None]] | None) -> None:
        try:
            if cleanup is not None:
                await cleanup()
        except Exception:
            log.exception("%s: cleanup failed", self.name)
        finally:
            asyncio.get_running_loop().stop()

    def _main(self) -> None:
        loop = new_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        loop.call_soon(self._ready.set)
        try:
            loop.run_forever()
        finally:
            try:
                _cancel_all(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            except Exception:
                log.exception("%s: error while closing the event loop", self.name)
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"IOLoop({self.name!r}, {state})"


class HostedLoop:
    """An LM client engine's share of another owner's :class:`IOLoop` (same interface).

    ``dspex serve`` runs its HTTP server and the LM clients' I/O on one loop,
    so no call crosses a thread (docs/architecture.md, departure 33).
    ``start`` only checks that the host runs; ``stop`` runs the engine's
    ``cleanup`` there (which cancels its work and closes its connections)
    and leaves the loop running for its owner.
    """

    def __init__(self, host: IOLoop, name: str) -> None:
        self.name = name
        self._host = host
        self._stopping = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._host.loop

    @property
    def running(self) -> bool:
        return self._host.running and not self._stopping

    def in_loop_thread(self) -> bool:
        return self._host.in_loop_thread()

    def start(self, timeout: float = 5.0) -> None:
        """Check the host runs (there is no thread of its own to start)."""
        if not self._host.running:
            raise ActorStoppedError(f"{self.name}: its host loop {self._host.name} is not running")

    def call_soon(self, fn: Callable[..., object], *args: Any) -> None:
        if self._stopping:
            raise ActorStoppedError(f"{self.name} is not running")
        self._host.call_soon(fn, *args)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        if self._stopping:
            coro.close()
            raise ActorStoppedError(f"{self.name} is not running")
        return self._host.run(coro, timeout)

    def stop(
        self,
        timeout: float = 5.0,
        *,
        cleanup: Callable[[], Awaitable[None]] | None = None,
    ) -> bool:
        """Run ``cleanup`` on the host's loop and wait for it (bounded); idempotent."""
        if self._stopping:
            return True
        self._stopping = True
        if not self._host.running:
            return True  # the host has stopped, and cancelled the engine's work with its own
        try:
            self._host.run(self._cleanup(cleanup), timeout)
        except (ActorStoppedError, CallTimeoutError):
            log.error("%s did not stop within %ss on %s", self.name, timeout, self._host.name)
            return False
        return True

    async def _cleanup(self, cleanup: Callable[[], Awaitable[None]] | None) -> None:
        try:
            if cleanup is not None:
                await cleanup()
        except Exception:
            log.exception("%s: cleanup failed", self.name)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"HostedLoop({self.name!r} on {self._host.name!r}, {state})"


_host: IOLoop | None = None


def host_engines(io: IOLoop | None) -> None:
    """Let LM client engines started from now on share ``io`` (None: own threads again).

    For an owner that runs its own work on ``io`` and wants the LM I/O there
    too (``dspex serve``). Engines already running keep their loops.
    """
    global _host
    _host = io


def engine_loop(name: str) -> IOLoop | HostedLoop:
    """The loop of a new LM client engine: a share of the host's, or a thread of its own."""
    host = _host
    if host is not None and host.running:
        return HostedLoop(host, name)
    return IOLoop(name)


def new_loop() -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's if it is installed, else asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
