"""The keep-alive connection pool both native HTTP/1.1 transports share.

:class:`PooledTransport` keeps an O(1) pool of idle connections per origin,
bounds open connections, connects (TLS with httpx's default trust), and runs
one exchange per connection at a time. The parser lives in the connection
class a subclass names (``_transport_httptools``: the default, a C parser;
``_transport_h11``: pure Python). Nothing here imports a parser, so loading
the pool costs neither. Everything here runs on the loop thread.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast
from urllib.parse import urlsplit

from dspex.actors._lm._gate import Gate
from dspex.actors._lm._transport import (
    ACCEPT_ENCODING,
    DEFAULT_MAX_RESPONSE_BYTES,
    USER_AGENT,
    BadURL,
    ConnectFailed,
    HTTPReply,
    HTTPStream,
    TransportError,
    TransportTimeout,
)

if TYPE_CHECKING:
    import ssl

__all__ = ["Connection", "Origin", "PooledTransport"]

Origin = tuple[str, str, int]


class Connection(Protocol):
    """One HTTP/1.1 connection as the pool drives it (an ``asyncio.Protocol``)."""

    origin: Origin
    closed: bool
    idle_since: float

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> dict[str, str]: ...

    def reusable(self) -> bool: ...

    def abort(self) -> None: ...

    def finish_cycle(self) -> None: ...

    def exchange(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        *,
        read_timeout: float | None,
        max_bytes: int,
    ) -> Awaitable[HTTPReply]:
        """Send the request; the reply (``TimeoutError`` past ``read_timeout``)."""
        ...

    def open_stream(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        *,
        read_timeout: float | None,
        max_bytes: int,
    ) -> Awaitable[asyncio.Queue[bytes | TransportError | None]]:
        """Send the request; once the head is in, the queue its body streams into."""
        ...


@functools.lru_cache(maxsize=256)
def _split(url: str) -> tuple[Origin, bytes, str]:
    """``(origin, request target, Host header)`` of an absolute http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"unsupported URL {url!r}: use http(s)://host[:port]/path")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (parts.scheme, parts.hostname, port), target.encode(), parts.netloc


class PooledTransport:
    """HTTP/1.1 requests on the running loop with an O(1) keep-alive pool.

    ``max_connections`` bounds open connections (callers beyond wait, within
    their timeout); idle ones are reused newest first and dropped after
    ``keepalive_expiry`` seconds. TLS uses ``ssl_context``, else httpx's
    defaults (certifi, or ``SSL_CERT_FILE``/``SSL_CERT_DIR`` with ``trust_env``).
    """

    name: str

    def __init__(
        self,
        *,
        max_connections: int = 512,
        keepalive_expiry: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        trust_env: bool = True,
    ) -> None:
        self._slots = Gate(max_connections)
        self._keepalive = keepalive_expiry
        self._idle: dict[Origin, list[Connection]] = {}
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
        max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> HTTPReply:
        """Send one request and read the whole response, each step within ``timeout``."""
        origin, target, host, wire = self._prepare(url, headers, body)
        await self._acquire(host, timeout)
        try:
            conn = self._checkout(origin) or await self._connect(origin, timeout)
            try:
                reply = await conn.exchange(
                    method.encode(), target, wire, body, read_timeout=timeout, max_bytes=max_bytes
                )
            except TimeoutError as exc:
                conn.abort()
                raise TransportTimeout(f"no response from {host} in time") from exc
            except BaseException:
                conn.abort()  # failed or cancelled mid-exchange: the connection is unusable
                raise
            conn.finish_cycle()
            self._checkin(conn)
        finally:
            self._slots.give()
        return reply

    async def stream(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes = b"",
        *,
        timeout: float | None = None,
        max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> HTTPStream:
        """Send one request; return at the response head with the body still streaming."""
        origin, target, host, wire = self._prepare(url, headers, body)
        await self._acquire(host, timeout)
        conn: Connection | None = None
        try:
            conn = self._checkout(origin) or await self._connect(origin, timeout)
            chunks = await conn.open_stream(
                method.encode(), target, wire, body, read_timeout=timeout, max_bytes=max_bytes
            )
        except BaseException as exc:
            if conn is not None:
                conn.abort()
            self._slots.give()
            if isinstance(exc, TimeoutError):
                raise TransportTimeout(f"no response from {host} in time") from exc
            raise
        held = conn
        done = False

        async def body_chunks() -> AsyncIterator[bytes]:
            nonlocal done
            while True:
                try:
                    async with asyncio.timeout(timeout):
                        item = await chunks.get()
                except TimeoutError as exc:
                    raise TransportTimeout(f"{host} stopped sending mid-stream") from exc
                if item is None:
                    done = True
                    return
                if isinstance(item, TransportError):
                    raise item
                yield item

        closed = False

        async def close() -> None:
            nonlocal closed
            if closed:
                return
            closed = True
            try:
                if done:
                    held.finish_cycle()
                    self._checkin(held)
                else:
                    held.abort()  # unfinished (cancelled, failed): the connection is unusable
            finally:
                self._slots.give()

        return HTTPStream(conn.status, conn.headers, body_chunks(), close)

    def _prepare(
        self, url: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[Origin, bytes, str, list[tuple[bytes, bytes]]]:
        try:
            origin, target, host = _split(url)
        except ValueError as exc:
            raise BadURL(str(exc)) from exc
        wire = [(b"host", host.encode())]
        wire += [(k.encode(), v.encode()) for k, v in headers.items()]
        wire.append((b"content-length", str(len(body)).encode()))
        lowered = {k.lower() for k in headers}
        if "user-agent" not in lowered:
            wire.append((b"user-agent", USER_AGENT.encode()))
        if "accept-encoding" not in lowered:
            wire.append((b"accept-encoding", ACCEPT_ENCODING.encode()))
        return origin, target, host, wire

    async def _acquire(self, host: str, timeout: float | None) -> None:
        if self._slots.try_take():
            return
        try:
            async with asyncio.timeout(timeout):
                await self._slots.take()
        except TimeoutError as exc:
            raise TransportTimeout(f"no free connection to {host} in time") from exc

    def _checkout(self, origin: Origin) -> Connection | None:
        conns = self._idle.get(origin)
        now = asyncio.get_running_loop().time()
        while conns:
            conn = conns.pop()
            if conn.reusable() and now - conn.idle_since < self._keepalive:
                return conn
            conn.abort()
        return None

    def _checkin(self, conn: Connection) -> None:
        if not conn.reusable():
            conn.abort()
            return
        conn.idle_since = asyncio.get_running_loop().time()
        self._idle.setdefault(conn.origin, []).append(conn)

    async def _connect(self, origin: Origin, timeout: float | None) -> Connection:
        scheme, host, port = origin
        tls: dict[str, Any] = {}
        if scheme == "https":
            tls = {"ssl": self._ssl_context(), "server_hostname": host}
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, made = await loop.create_connection(
                    lambda: cast(asyncio.Protocol, self._protocol(origin)), host, port, **tls
                )
        except TimeoutError as exc:
            raise TransportTimeout(f"connecting to {host}:{port} timed out") from exc
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {host}:{port}: {exc}") from exc
        self.connections_opened += 1
        return cast(Connection, made)

    def _protocol(self, origin: Origin) -> Connection:
        """The protocol object (parser side) of a new connection to ``origin``."""
        raise NotImplementedError

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            import httpx

            # httpx's own defaults, so both transports trust the same roots.
            context = httpx.create_ssl_context(trust_env=self._trust_env)
            context.set_alpn_protocols(["http/1.1"])
            self._ssl = context
        return self._ssl

    def __repr__(self) -> str:
        return f"<{type(self).__name__} connections_opened={self.connections_opened}>"
