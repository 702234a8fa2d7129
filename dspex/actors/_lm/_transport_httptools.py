"""The httptools transport: the default, HTTP/1.1 parsed in C, direct connections only.

:class:`HttptoolsTransport` is the pooled transport (``_transport_pool``)
with httptools (llhttp, the parser uvicorn uses) fed straight from
``data_received``. httpx's async stack (httpcore on anyio) costs more CPU per
request than the HTTP itself and its pool rescans every connection for
every queued request; h11 (``_transport_h11``, still selectable) parses in
Python, about 50 µs of CPU per exchange here against a few for llhttp. The
request head is written by hand (one ``bytes`` join) after a check that no
header can split the head (docs/architecture.md, departure 1).

It does not speak to proxies (nor HTTP/2); ``choose_transport`` sends
proxied URLs to the httpx transport. Everything here runs on the loop thread.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools

from dspex.actors._lm._transport import (
    DEFAULT_MAX_RESPONSE_BYTES,
    BadHeader,
    BodyReader,
    ConnectionDropped,
    HTTPReply,
    TransportError,
)
from dspex.actors._lm._transport_pool import Origin, PooledTransport

__all__ = ["HttptoolsTransport"]

_NO_BODY_STATUS = (204, 304)


class _Conn(asyncio.Protocol):
    """One HTTP/1.1 connection: the parser's callbacks drive the exchange in progress.

    An exchange ends on the parser's ``on_message_complete`` (or, for a body
    the server ends by closing, at EOF); its reply is a future the pool awaits.
    """

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.closed = False
        self.idle_since = 0.0
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._busy = False  # a request is out and its response not complete
        self._keep_alive = True
        self._reply: asyncio.Future[HTTPReply] | None = None
        # Streaming exchanges: the head, then decoded chunks, None at the end,
        # or the TransportError that broke it.
        self._head: asyncio.Future[None] | None = None
        self._chunks: asyncio.Queue[bytes | TransportError | None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._max_bytes = DEFAULT_MAX_RESPONSE_BYTES
        self._status = 0
        self._raw: list[tuple[bytes, bytes]] = []
        self._headers: dict[str, str] = {}
        self._reader: BodyReader | None = None
        self._until_eof = False  # the body ends when the server closes
        self._informational = False  # a 1xx head: the real response follows

    @property
    def host(self) -> str:
        return self.origin[1]

    @property
    def status(self) -> int:
        return self._status

    @property
    def headers(self) -> dict[str, str]:
        return self._headers

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's or uvloop's TCP transport (uvloop's does not subclass asyncio.Transport).
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            # A callback raised: a body too large or badly encoded, or a reply nobody asked for.
            cause = exc.__context__
            self.abort()
            self._fail(
                cause
                if isinstance(cause, TransportError)
                else ConnectionDropped(f"{self.host}: could not read the response: {cause!r}")
            )
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self.abort()
            self._fail(ConnectionDropped(f"{self.host}: malformed HTTP response: {exc}"))

    def eof_received(self) -> bool | None:
        self._end_at_close()
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._end_at_close()
        self._fail(
            ConnectionDropped(
                f"{self.host}: server disconnected without sending a complete response"
            )
        )

    # -- what the pool calls -------------------------------------------------

    def reusable(self) -> bool:
        return not self.closed and not self._busy and self._keep_alive

    def abort(self) -> None:
        self.closed = True
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abort()

    def finish_cycle(self) -> None:
        """Nothing to do: the parser is ready for the next response by itself."""

    def exchange(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        *,
        read_timeout: float | None,
        max_bytes: int,
    ) -> asyncio.Future[HTTPReply]:
        """Send the request; the future of its response (``TimeoutError`` past ``read_timeout``)."""
        wire = _request_bytes(method, target, headers, body)
        reply: asyncio.Future[HTTPReply] = self._start(read_timeout, max_bytes)
        self._reply = reply
        self._send(wire)
        return reply

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
        wire = _request_bytes(method, target, headers, body)
        head: asyncio.Future[None] = self._start(read_timeout, max_bytes)
        self._head = head
        # Kept here: a short reply may complete (and clear ``_chunks``) with its head.
        chunks: asyncio.Queue[bytes | TransportError | None] = asyncio.Queue()
        self._chunks = chunks
        self._send(wire)
        await head
        return chunks

    def _start(self, read_timeout: float | None, max_bytes: int) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._busy = True
        self._max_bytes = max_bytes
        self._status, self._headers, self._reader, self._raw = 0, {}, None, []
        self._until_eof = False
        if read_timeout is not None:
            # A timer handle rather than asyncio.timeout: no context manager per call.
            self._timer = loop.call_later(read_timeout, self._time_out, future)
        return future

    def _send(self, wire: bytes) -> None:
        assert self.transport is not None
        self.transport.write(wire)

    def _time_out(self, future: asyncio.Future[object]) -> None:
        self._timer = None
        if not future.done():
            future.set_exception(TimeoutError())

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    # -- parser callbacks (inside feed_data) ------------------------------------

    def on_message_begin(self) -> None:
        self._raw = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # 100 Continue and friends: the response proper follows
            self._informational = True
            return
        if not self._busy:
            raise ConnectionDropped(f"{self.host}: sent a response nobody asked for")
        headers = _header_dict(self._raw)
        self._status, self._headers = status, headers
        self._keep_alive = self._parser.should_keep_alive()
        self._until_eof = (
            "content-length" not in headers
            and "chunked" not in headers.get("transfer-encoding", "").lower()
            and status not in _NO_BODY_STATUS
        )
        self._reader = BodyReader(
            headers.get("content-encoding"),
            self._max_bytes,
            status=status,
            length=headers.get("content-length"),
        )
        head, self._head = self._head, None
        if head is not None:
            self._cancel_timer()  # streaming: the pool times each chunk from here
            if not head.done():
                head.set_result(None)

    def on_body(self, body: bytes) -> None:
        reader = self._reader
        assert reader is not None
        reader.feed(body)
        if self._chunks is not None:
            out = reader.take()
            if out:
                self._chunks.put_nowait(out)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self._complete()

    # -- ending an exchange ----------------------------------------------------------

    def _complete(self) -> None:
        reader = self._reader
        assert reader is not None
        body = reader.finish()  # may raise: the reply is still pending then
        self._busy = False
        self._reader = None
        self._cancel_timer()
        chunks, self._chunks = self._chunks, None
        if chunks is not None:
            if body:
                chunks.put_nowait(body)
            chunks.put_nowait(None)
            return
        reply, self._reply = self._reply, None
        if reply is not None and not reply.done():
            reply.set_result(HTTPReply(self._status, self._headers, body))

    def _end_at_close(self) -> None:
        """A body delimited by the connection's close is complete at EOF."""
        if self._busy and self._until_eof and self._reader is not None:
            self._keep_alive = False
            try:
                self._complete()
            except TransportError as exc:
                self._fail(exc)

    def _fail(self, error: TransportError) -> None:
        self._cancel_timer()
        self._busy = False
        head, self._head = self._head, None
        if head is not None and not head.done():
            head.set_exception(error)
        chunks, self._chunks = self._chunks, None
        if chunks is not None:
            chunks.put_nowait(error)
        reply, self._reply = self._reply, None
        if reply is not None and not reply.done():
            reply.set_exception(error)


def _header_dict(pairs: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """:func:`header_dict` for the parser's ``bytes`` pairs, without its type checks."""
    out: dict[str, str] = {}
    for name, value in pairs:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        out[key] = f"{out[key]}, {text}" if key in out else text
    return out


def _request_bytes(
    method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes
) -> bytes:
    """The request as sent: head and body in one ``bytes``; raises :class:`BadHeader`."""
    lines = b"".join([name + b": " + value + b"\r\n" for name, value in headers])
    # One CR and one LF per header line and no NUL: nothing in a name or value
    # can end the head early or smuggle in a second request.
    if lines.count(b"\n") != len(headers) or lines.count(b"\r") != len(headers):
        raise BadHeader("a request header name or value contains a line break")
    if b"\0" in lines:
        raise BadHeader("a request header name or value contains a NUL byte")
    return b"".join((method, b" ", target, b" HTTP/1.1\r\n", lines, b"\r\n", body))


class HttptoolsTransport(PooledTransport):
    """The pooled HTTP/1.1 transport parsing with httptools (see :class:`PooledTransport`)."""

    name = "httptools"

    def _protocol(self, origin: Origin) -> _Conn:
        return _Conn(origin)
