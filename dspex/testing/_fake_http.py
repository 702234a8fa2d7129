"""A small HTTP/1.1 server for test doubles: h11 over asyncio on one thread.

The fake provider servers sit on top of this. One background thread runs one
asyncio loop; every connection is a task, so hundreds of slow (latency-injected)
requests are in flight at once without threads. Keep-alive is supported, and a
handler may also ask to drop the connection or to hang until the client gives
up, which is how the fakes simulate broken networks.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import h11

from dspex.errors import CallTimeoutError, StartError, UsageError

__all__ = [
    "ConnectionAction",
    "HTTPRequest",
    "HTTPResponse",
    "HTTPServerThread",
    "StreamedResponse",
]

_READ_CHUNK = 65536
# asyncio's default backlog (100) makes a burst of 500 connects wait for SYN
# retries (about a second each); the kernel caps this at somaxconn anyway.
_BACKLOG = 4096


@dataclass(frozen=True, slots=True)
class HTTPRequest:
    """One request as received: header names are lower-case, the body is raw."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class HTTPResponse:
    """What a handler answers; ``Content-Length`` is added by the server."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "application/json"


class ConnectionAction(enum.Enum):
    """Answers a handler may give instead of a response."""

    DROP = "drop"
    """Close the socket at once, without a response."""
    HANG = "hang"
    """Send nothing; wait until the client closes the socket or the server stops."""


@dataclass(frozen=True, slots=True)
class StreamedResponse:
    """A response whose body the server writes piece by piece (chunked encoding).

    ``chunks`` yields body pieces as they should go out; yielding
    ``ConnectionAction.DROP`` aborts the connection there (a failure
    mid-stream). ``on_disconnect`` is called (server thread) if the client
    closes the connection before the body is complete.
    """

    chunks: AsyncIterator[bytes | ConnectionAction]
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "text/event-stream"
    on_disconnect: Callable[[], None] | None = None


Handler = Callable[[HTTPRequest], Awaitable[HTTPResponse | StreamedResponse | ConnectionAction]]


class HTTPServerThread:
    """An HTTP/1.1 server on ``host`` (port 0: the OS picks), run on its own thread.

    ``handler`` is a coroutine function called on the server's loop thread for
    every complete request; it must not block that thread. :meth:`stop` closes
    every connection and joins the thread. ``loop_factory`` (a class attribute)
    makes the loop; the benchmarks' fake process sets uvloop's, so the fake's
    own CPU per request stays small beside the client's.
    """

    loop_factory: ClassVar[Callable[[], asyncio.AbstractEventLoop] | None] = None

    def __init__(
        self,
        handler: Handler,
        *,
        name: str = "dspex-fake-http",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._handler = handler
        self._name = name
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._started = threading.Event()
        self._startup_error: BaseException | None = None
        self._tasks: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self.accepted = 0
        """TCP connections accepted since start (keep-alive reuses one)."""

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound port; only known once started."""
        if self._port is None:
            raise UsageError(f"{self._name} is not running: call start() first")
        return self._port

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def open_connections(self) -> int:
        return len(self._tasks)

    def start(self, timeout: float = 5.0) -> None:
        """Bind the socket and start serving; returns once the port is known."""
        if self._thread is not None:
            raise UsageError(f"{self._name} was already started; create a new server")
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise StartError(f"{self._name} did not start within {timeout} s")
        if self._startup_error is not None:
            self._thread.join(timeout)
            raise self._startup_error

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every connection, then join the thread."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None or not thread.is_alive():
            return
        if loop is not None and stopping is not None:
            # RuntimeError: the loop already closed, so the thread is ending anyway.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout)
        if thread.is_alive():
            raise CallTimeoutError(
                f"{self._name} did not stop within {timeout} s; a handler may be "
                "blocking the server's loop thread"
            )

    # -- loop thread -------------------------------------------------------

    def _run(self) -> None:
        try:
            with asyncio.Runner(loop_factory=type(self).loop_factory) as runner:
                runner.run(self._main())
        except BaseException as exc:  # reported to start(); never escapes the thread
            if not self._started.is_set():
                self._startup_error = exc
                self._started.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(
            self._serve, self._host, self._requested_port, backlog=_BACKLOG
        )
        self._port = server.sockets[0].getsockname()[1]
        self._started.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            tasks = list(self._tasks.items())
            for task, writer in tasks:
                writer.transport.abort()
                task.cancel()
            await asyncio.gather(*(t for t, _ in tasks), return_exceptions=True)
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks[task] = writer
        self.accepted += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await _next_request(conn, reader)
                if request is None:
                    return
                try:
                    result = await self._handler(request)
                except Exception as exc:  # a bug in a handler: answer, don't kill the conn
                    result = HTTPResponse(
                        500,
                        f"fake server handler raised {type(exc).__name__}: {exc}".encode(),
                        content_type="text/plain",
                    )
                if result is ConnectionAction.DROP:
                    writer.transport.abort()
                    return
                if result is ConnectionAction.HANG:
                    while await reader.read(_READ_CHUNK):
                        pass
                    return
                if isinstance(result, StreamedResponse):
                    if not await _stream(conn, reader, writer, result):
                        return
                    conn.start_next_cycle()
                    continue
                writer.write(_encode(conn, result))
                await writer.drain()
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError):
            return
        except asyncio.CancelledError:
            # Only stop() cancels these tasks. Ending normally keeps 3.11's
            # stream callback from logging the cancellation as an error.
            return
        finally:
            del self._tasks[task]
            writer.close()  # flushes what is buffered; a no-op after abort()


async def _next_request(conn: h11.Connection, reader: asyncio.StreamReader) -> HTTPRequest | None:
    """Read one whole request (head and body); None when the client closed."""
    head: h11.Request | None = None
    chunks: list[bytes] = []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(_READ_CHUNK))
        elif isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            return _to_request(head, b"".join(chunks))
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


def _to_request(head: h11.Request, body: bytes) -> HTTPRequest:
    parts = urlsplit(head.target.decode("latin-1"))
    headers: dict[str, str] = {}
    for name, value in head.headers:
        key = name.decode("latin-1")  # h11 already lower-cases names
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return HTTPRequest(
        method=head.method.decode("ascii"),
        path=parts.path,
        query=dict(parse_qsl(parts.query, keep_blank_values=True)),
        headers=headers,
        body=body,
    )


async def _stream(
    conn: h11.Connection,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    response: StreamedResponse,
) -> bool:
    """Write a streamed response; False when the connection cannot be reused."""
    headers = [
        ("content-type", response.content_type),
        ("cache-control", "no-cache"),
        ("server", "dspex-fake"),
        *response.headers,
    ]
    writer.write(conn.send(h11.Response(status_code=response.status, headers=headers)) or b"")
    # The client may hang up mid-stream: watch the socket so a disconnect is
    # seen even while the next chunk is still being produced.
    closed: asyncio.Future[bytes] = asyncio.ensure_future(reader.read(1))
    early = b""  # bytes of a next request that arrived early (kept for h11)
    produce = response.chunks.__aiter__()
    try:
        while True:
            step = asyncio.ensure_future(produce.__anext__())
            watched: set[asyncio.Future[Any]] = {step, closed}
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            if closed.done() and not closed.cancelled() and closed.result():
                early += closed.result()
                closed = asyncio.get_running_loop().create_future()  # watch no more
            if closed.done() and not step.done():
                step.cancel()
                if response.on_disconnect is not None:
                    response.on_disconnect()
                writer.transport.abort()
                return False
            try:
                piece = step.result()
            except StopAsyncIteration:
                break
            if piece is ConnectionAction.DROP:
                writer.transport.abort()
                return False
            assert isinstance(piece, bytes)
            writer.write(conn.send(h11.Data(data=piece)) or b"")
            await writer.drain()
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()
    except ConnectionError:
        if response.on_disconnect is not None:
            response.on_disconnect()
        writer.transport.abort()
        return False
    finally:
        if not closed.done():
            closed.cancel()
            # Let the read finish cancelling: a second reader on the stream is an error.
            with contextlib.suppress(asyncio.CancelledError):
                early += await closed
    if early:
        conn.receive_data(early)
    return conn.our_state is h11.DONE and conn.their_state is h11.DONE


def _encode(conn: h11.Connection, response: HTTPResponse) -> bytes:
    headers = [
        ("content-type", response.content_type),
        ("content-length", str(len(response.body))),
        ("server", "dspex-fake"),
        *response.headers,
    ]
    return b"".join(
        (
            conn.send(h11.Response(status_code=response.status, headers=headers)) or b"",
            conn.send(h11.Data(data=response.body)) or b"",
            conn.send(h11.EndOfMessage()) or b"",
        )
    )
