"""The h11 transport: HTTP/1.1 parsed in pure Python, direct connections only.

:class:`H11Transport` is the pooled transport (``_transport_pool``) with h11
parsing straight from ``data_received``. The default is the httptools one
(``_transport_httptools``), which does the same with a C parser at a
fraction of the CPU; this one stays for ``lm_client.transport = "h11"``
(a platform without httptools wheels) and as the reference the transport
tests hold both to. Everything here runs on the loop thread.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11

from dspex.actors._lm._transport import (
    DEFAULT_MAX_RESPONSE_BYTES,
    BadHeader,
    BodyReader,
    ConnectionDropped,
    HTTPReply,
    TransportError,
    header_dict,
)
from dspex.actors._lm._transport_pool import Origin, PooledTransport

__all__ = ["H11Transport"]


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
        wire = self.h11.send(_request(method, target, headers))
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
        wire = self.h11.send(_request(method, target, headers))
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


def _request(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> h11.Request:
    try:
        return h11.Request(method=method, target=target, headers=headers)
    except h11.LocalProtocolError as exc:  # h11 checks every name and value
        raise BadHeader(f"a request header cannot be sent: {exc}") from exc


class H11Transport(PooledTransport):
    """The pooled HTTP/1.1 transport parsing with h11 (see :class:`PooledTransport`)."""

    name = "h11"

    def _protocol(self, origin: Origin) -> _Conn:
        return _Conn(origin)
