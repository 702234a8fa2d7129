"""The h11 transport: lean HTTP/1.1 over asyncio protocols, direct connections only.

:class:`H11Transport` is the LM client's default way to speak HTTP. It keeps
an O(1) keep-alive pool per origin and parses with h11 straight from
``data_received``: httpx's async stack (httpcore on anyio) costs more CPU per
request than the HTTP itself, and its pool rescans every connection for every
queued request, which is quadratic at hundreds in flight.

It does not speak to proxies (nor HTTP/2); ``choose_transport`` sends
proxied URLs to the httpx transport instead. Everything here runs on the
loop thread.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import h11

from dspex.actors._lm._transport import (
    ACCEPT_ENCODING,
    DEFAULT_MAX_RESPONSE_BYTES,
    USER_AGENT,
    BadURL,
    BodyReader,
    ConnectFailed,
    ConnectionDropped,
    HTTPReply,
    HTTPStream,
    TransportError,
    TransportTimeout,
    header_dict,
)

if TYPE_CHECKING:
    import ssl

__all__ = ["H11Transport"]

Origin = tuple[str, str, int]


class _Conn(asyncio.Protocol):
    """One HTTP/1.1 connection: h11 state plus the exchange in progress."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.h11 = h11.Connection(h11.CLIENT)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._reply: asyncio.Future[HTTPReply] | None = None
        self._max_bytes = DEFAULT_MAX_RESPONSE_BYTES
        self._status = 0
        self._headers: dict[str, str] = {}
        self._reader: BodyReader | None = None
        # Streaming exchanges: the head, then decoded chunks, None at the end,
        # or the TransportError that broke it.
        self._head: asyncio.Future[None] | None = None
        self._chunks: asyncio.Queue[bytes | TransportError | None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's or uvloop's TCP transport (uvloop's does not subclass asyncio.Transport).
        self.transport = transport  # type: ignore[assignment]

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
            self._fail(ConnectionDropped(f"{self.host}: server sent data after closing"))
            return
        self._pump()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(
            ConnectionDropped(
                f"{self.host}: server disconnected without sending a complete response"
            )
        )

    @property
    def host(self) -> str:
        return self.origin[1]

    def reusable(self) -> bool:
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
        *,
        read_timeout: float | None,
        max_bytes: int,
    ) -> HTTPReply:
        assert self.transport is not None
        self._reply = asyncio.get_running_loop().create_future()
        self._max_bytes = max_bytes
        self._status, self._headers, self._reader = 0, {}, None
        wire = self.h11.send(h11.Request(method=method, target=target, headers=headers))
        if body:
            wire = (wire or b"") + (self.h11.send(h11.Data(data=body)) or b"")
        self.transport.write((wire or b"") + (self.h11.send(h11.EndOfMessage()) or b""))
        async with asyncio.timeout(read_timeout):
            return await self._reply

    async def open_stream(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        *,
        read_timeout: float | None,
        max_bytes: int,
    ) -> asyncio.Queue[bytes | TransportError | None]:
        """Send the request; return (once the head is in) the queue its body streams into."""
        assert self.transport is not None
        self._head = asyncio.get_running_loop().create_future()
        # Kept here: a short reply may complete (and clear ``_chunks``) with its head.
        chunks: asyncio.Queue[bytes | TransportError | None] = asyncio.Queue()
        self._chunks = chunks
        self._max_bytes = max_bytes
        self._status, self._headers, self._reader = 0, {}, None
        wire = self.h11.send(h11.Request(method=method, target=target, headers=headers))
        if body:
            wire = (wire or b"") + (self.h11.send(h11.Data(data=body)) or b"")
        self.transport.write((wire or b"") + (self.h11.send(h11.EndOfMessage()) or b""))
        async with asyncio.timeout(read_timeout):
            await self._head
        return chunks

    @property
    def status(self) -> int:
        return self._status

    @property
    def headers(self) -> dict[str, str]:
        return self._headers

    def finish_cycle(self) -> None:
        """After a complete exchange: make the connection ready for the next one."""
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()

    def _pump(self) -> None:
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._fail(ConnectionDropped(f"{self.host}: malformed HTTP response: {exc}"))
                self.abort()
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            try:
                if self._on(event):
                    return
            except TransportError as exc:  # too large or badly encoded: stop reading here
                self._fail(exc)
                self.abort()
                return

    def _on(self, event: Any) -> bool:
        """Handle one h11 event; True when the exchange is over."""
        if isinstance(event, h11.Response):
            self._status, self._headers = event.status_code, header_dict(event.headers)
            self._reader = BodyReader(
                self._headers.get("content-encoding"),
                self._max_bytes,
                status=self._status,
                length=self._headers.get("content-length"),
            )
            head, self._head = self._head, None
            if head is not None and not head.done():
                head.set_result(None)
        elif isinstance(event, h11.Data):
            assert self._reader is not None
            self._reader.feed(bytes(event.data))
            if self._chunks is not None:
                out = self._reader.take()
                if out:
                    self._chunks.put_nowait(out)
        elif isinstance(event, h11.EndOfMessage):
            assert self._reader is not None
            body = self._reader.finish()  # may raise: the reply is still pending then
            chunks, self._chunks = self._chunks, None
            if chunks is not None:
                if body:
                    chunks.put_nowait(body)
                chunks.put_nowait(None)
                return True
            reply, self._reply = self._reply, None
            if reply is not None and not reply.done():
                reply.set_result(HTTPReply(self._status, self._headers, body))
            return True
        elif isinstance(event, h11.ConnectionClosed):
            self._fail(ConnectionDropped(f"{self.host}: server closed the connection early"))
            return True
        return False

    def _fail(self, error: TransportError) -> None:
        head, self._head = self._head, None
        if head is not None and not head.done():
            head.set_exception(error)
        chunks, self._chunks = self._chunks, None
        if chunks is not None:
            chunks.put_nowait(error)
        reply, self._reply = self._reply, None
        if reply is not None and not reply.done():
            reply.set_exception(error)


@functools.lru_cache(maxsize=256)
def _split(url: str) -> tuple[Origin, bytes, str]:
    """``(origin, request target, Host header)`` of an absolute http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"unsupported URL {url!r}: use http(s)://host[:port]/path")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (parts.scheme, parts.hostname, port), target.encode(), parts.netloc


class H11Transport:
    """HTTP/1.1 requests on the running loop with an O(1) keep-alive pool.

    ``max_connections`` bounds open connections (callers beyond wait, within
    their timeout); idle ones are reused newest first and dropped after
    ``keepalive_expiry`` seconds. TLS uses ``ssl_context``, else httpx's
    defaults (certifi, or ``SSL_CERT_FILE``/``SSL_CERT_DIR`` with ``trust_env``).
    """

    name = "h11"

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
            self._slots.release()
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
        conn: _Conn | None = None
        try:
            conn = self._checkout(origin) or await self._connect(origin, timeout)
            chunks = await conn.open_stream(
                method.encode(), target, wire, body, read_timeout=timeout, max_bytes=max_bytes
            )
        except BaseException as exc:
            if conn is not None:
                conn.abort()
            self._slots.release()
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
                self._slots.release()

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
        if self._slots.locked():
            try:
                async with asyncio.timeout(timeout):
                    await self._slots.acquire()
            except TimeoutError as exc:
                raise TransportTimeout(f"no free connection to {host} in time") from exc
        else:
            await self._slots.acquire()

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
        scheme, host, port = origin
        tls: dict[str, Any] = {}
        if scheme == "https":
            tls = {"ssl": self._ssl_context(), "server_hostname": host}
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(lambda: _Conn(origin), host, port, **tls)
        except TimeoutError as exc:
            raise TransportTimeout(f"connecting to {host}:{port} timed out") from exc
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {host}:{port}: {exc}") from exc
        self.connections_opened += 1
        return conn

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            import httpx

            # httpx's own defaults, so both transports trust the same roots.
            context = httpx.create_ssl_context(trust_env=self._trust_env)
            context.set_alpn_protocols(["http/1.1"])
            self._ssl = context
        return self._ssl

    def __repr__(self) -> str:
        return f"<H11Transport connections_opened={self.connections_opened}>"
