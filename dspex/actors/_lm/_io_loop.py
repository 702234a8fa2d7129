"""The LM client's I/O layer: an event loop thread, and lean HTTP/1.1 on it.

The LM client actor keeps its mailbox free by doing all HTTP on such a loop:
hundreds of requests in flight cost coroutines, not threads. Other threads
hand work over with :meth:`IOLoop.call_soon` (fire and forget) or
:meth:`IOLoop.run` (wait for a coroutine's result, bounded). The thread is not
a daemon, so its owner must call :meth:`IOLoop.stop`; that cancels what is
still running, lets an async ``cleanup`` close resources, and joins.

:class:`HTTPPool` is how the client speaks HTTP: h11 over asyncio protocols
with an O(1) keep-alive pool. httpx's async stack (httpcore on anyio) costs
more CPU per request than the HTTP itself, and its pool rescans every
connection for every queued request, which is quadratic at hundreds in flight.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
import zlib
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from dspex.errors import ActorStoppedError, CallTimeoutError

if TYPE_CHECKING:
    import ssl

__all__ = ["HTTPPool", "HTTPReply", "IOLoop"]

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
        # Done-or-not first: a coroutine that raised TimeoutError itself must
        # surface as that error, not as this wait timing out.
        if not concurrent.futures.wait((future,), timeout).done:
            future.cancel()
            raise CallTimeoutError(f"{self.name}: coroutine did not finish within {timeout}s")
        return future.result()

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
        loop = asyncio.new_event_loop()
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


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


# -- lean HTTP/1.1 transport ------------------------------------------------------

Origin = tuple[str, str, int]


class _Conn(asyncio.Protocol):
    """One HTTP/1.1 connection: h11 state plus the exchange in progress (loop thread)."""

    def __init__(self, origin: Origin) -> None:
        import h11

        self.origin = origin
        self.h11 = h11.Connection(h11.CLIENT)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._reply: asyncio.Future[tuple[int, list[tuple[bytes, bytes]], bytes]] | None = None
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._feed(data)

    def eof_received(self) -> bool | None:
        self._feed(b"")
        return None

    def _feed(self, data: bytes) -> None:
        try:
            self.h11.receive_data(data)
        except RuntimeError:  # data after the peer closed: the connection is done
            self.abort()
            self._fail("server sent data after closing the connection")
            return
        self._pump()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail("server disconnected without sending a complete response")

    def reusable(self) -> bool:
        import h11

        return (
            not self.closed and self.h11.our_state is h11.IDLE and self.h11.their_state is h11.IDLE
        )

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    async def exchange(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        read_timeout: float | None,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        import h11

        assert self.transport is not None
        self._reply = asyncio.get_running_loop().create_future()
        self._status, self._headers, self._body = 0, [], []
        wire = self.h11.send(h11.Request(method=method, target=target, headers=headers))
        if body:
            wire = (wire or b"") + (self.h11.send(h11.Data(data=body)) or b"")
        self.transport.write((wire or b"") + (self.h11.send(h11.EndOfMessage()) or b""))
        async with asyncio.timeout(read_timeout):
            return await self._reply

    def finish_cycle(self) -> None:
        """After a complete exchange: make the connection ready for the next one."""
        import h11

        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()

    def _pump(self) -> None:
        import h11

        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._fail(f"malformed HTTP response: {exc}")
                self.abort()
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Response):
                self._status, self._headers = event.status_code, list(event.headers)
            elif isinstance(event, h11.Data):
                self._body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                reply, self._reply = self._reply, None
                if reply is not None and not reply.done():
                    reply.set_result((self._status, self._headers, b"".join(self._body)))
                return
            elif isinstance(event, h11.ConnectionClosed):
                self._fail("server closed the connection without a response")
                return

    def _fail(self, message: str) -> None:
        reply, self._reply = self._reply, None
        if reply is not None and not reply.done():
            reply.set_exception(ConnectionResetError(message))


@dataclass(frozen=True, slots=True)
class HTTPReply:
    """A complete HTTP response: status, headers (lower-case names), body bytes."""

    status: int
    headers: dict[str, str]
    body: bytes


@functools.lru_cache(maxsize=256)
def _split(url: str) -> tuple[Origin, bytes, str]:
    """``(origin, request target, Host header)`` of an absolute http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"unsupported URL {url!r}: use http(s)://host[:port]/path")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (parts.scheme, parts.hostname, port), target.encode(), parts.netloc


class HTTPPool:
    """HTTP/1.1 requests on the running loop with an O(1) keep-alive pool.

    ``max_connections`` bounds open connections (callers beyond wait, within
    their timeout); idle ones are reused newest first and dropped after
    ``keepalive_expiry`` seconds. Failures raise httpx's exception types, so
    a provider's one error translation handles both this and httpx. It does
    not speak to proxies: the LM client routes proxied URLs through httpx.
    """

    def __init__(
        self,
        *,
        max_connections: int = 512,
        keepalive_expiry: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        trust_env: bool = True,
    ) -> None:
        self._slots = asyncio.Semaphore(max_connections)
        self._keepalive = keepalive_expiry
        self._idle: dict[Origin, list[_Conn]] = {}
        self._ssl = ssl_context
        self._trust_env = trust_env
        self.connections_opened = 0

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.abort()
        self._idle.clear()

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes = b"",
        *,
        timeout: float | None = None,
    ) -> HTTPReply:
        """Send one request and read the whole response, each step within ``timeout``."""
        import httpx

        try:
            origin, target, host = _split(url)
        except ValueError as exc:
            raise httpx.UnsupportedProtocol(str(exc)) from exc
        wire = [(b"host", host.encode())]
        wire += [(k.encode(), v.encode()) for k, v in headers.items()]
        wire.append((b"content-length", str(len(body)).encode()))
        if "user-agent" not in headers:
            wire.append((b"user-agent", b"dspex"))
        if self._slots.locked():
            try:
                async with asyncio.timeout(timeout):
                    await self._slots.acquire()
            except TimeoutError as exc:
                raise httpx.PoolTimeout(f"no free connection to {host} in time") from exc
        else:
            await self._slots.acquire()
        try:
            conn = self._checkout(origin) or await self._connect(origin, timeout)
            try:
                status, raw, content = await conn.exchange(
                    method.encode(), target, wire, body, timeout
                )
            except TimeoutError as exc:
                conn.abort()
                raise httpx.ReadTimeout(f"no response from {host} in time") from exc
            except ConnectionResetError as exc:
                conn.abort()
                raise httpx.RemoteProtocolError(f"{host}: {exc}") from exc
            except BaseException:
                conn.abort()  # cancelled mid-exchange: the connection is unusable
                raise
            conn.finish_cycle()
            self._checkin(conn)
        finally:
            self._slots.release()
        names: dict[str, str] = {}
        for name, value in raw:
            key, text = name.decode("latin-1").lower(), value.decode("latin-1")
            names[key] = f"{names[key]}, {text}" if key in names else text
        return HTTPReply(status, names, _decoded(content, names.get("content-encoding")))

    def _checkout(self, origin: Origin) -> _Conn | None:
        conns = self._idle.get(origin)
        now = asyncio.get_running_loop().time()
        while conns:
            conn = conns.pop()
            if conn.reusable() and now - conn.idle_since < self._keepalive:
                return conn
            conn.abort()
        return None

    def _checkin(self, conn: _Conn) -> None:
        if not conn.reusable():
            conn.abort()
            return
        conn.idle_since = asyncio.get_running_loop().time()
        self._idle.setdefault(conn.origin, []).append(conn)

    async def _connect(self, origin: Origin, timeout: float | None) -> _Conn:
        import httpx

        scheme, host, port = origin
        tls: dict[str, Any] = {}
        if scheme == "https":
            tls = {"ssl": self._ssl_context(), "server_hostname": host}
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(lambda: _Conn(origin), host, port, **tls)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from exc
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
        self.connections_opened += 1
        return conn

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            import httpx

            # httpx's own defaults: certifi, or SSL_CERT_FILE/SSL_CERT_DIR with trust_env.
            context = httpx.create_ssl_context(trust_env=self._trust_env)
            context.set_alpn_protocols(["http/1.1"])
            self._ssl = context
        return self._ssl


def _decoded(body: bytes, encoding: str | None) -> bytes:
    """Undo gzip/deflate (we ask for neither, but a server may send it anyway)."""
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompress(body, 16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        try:
            return zlib.decompress(body)
        except zlib.error:
            return zlib.decompress(body, -zlib.MAX_WBITS)
    return body
