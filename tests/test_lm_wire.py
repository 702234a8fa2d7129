"""HTTP/1.1 framing the transports must read alike: replies written byte by byte.

Each test runs over every transport (httptools, the default; h11; httpx)
against :class:`ScriptedServer`, which answers each request with the next
raw reply of its script, so the framing (close-delimited bodies, 1xx heads,
``Connection: close``, chunks split anywhere, garbage) is exactly what the
test says.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from transport_helpers import TRANSPORTS, Wire

from dspex.actors._lm._loop import IOLoop
from dspex.actors._lm._providers import HTTPCall, resolve_provider
from dspex.actors._lm._transport import BadHeader, ConnectionDropped, TransportName
from dspex.errors import LMError

# (bytes to write, close the connection after it)
Reply = tuple[bytes, bool]


class ScriptedServer:
    """Reads each request (head and Content-Length body) and writes the script's next reply.

    Replies are written in pieces of ``piece`` bytes with a pause between, so
    a parser sees heads and bodies split at arbitrary points.
    """

    def __init__(self, script: list[Reply], piece: int = 0) -> None:
        self.script = list(script)
        self.piece = piece
        self.connections = 0
        self.requests: list[bytes] = []
        self.io = IOLoop("test-scripted-server")
        self.io.start()
        self.server = self.io.run(asyncio.start_server(self._serve, "127.0.0.1", 0), 5)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1/x"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.script:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                self.requests.append(head + await reader.readexactly(length))
                data, close = self.script.pop(0)
                step = self.piece or len(data)
                for i in range(0, len(data), step):
                    writer.write(data[i : i + step])
                    await writer.drain()
                    if self.piece:
                        await asyncio.sleep(0.001)
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        async def close() -> None:
            self.server.close()

        self.io.stop(5, cleanup=close)


@pytest.fixture(params=TRANSPORTS)
def wire(request: pytest.FixtureRequest) -> Iterator[Wire]:
    name: TransportName = request.param
    w = Wire(name)
    yield w
    w.close()


def ok(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + b"".join(extra)
    return head + b"content-length: %d\r\n\r\n" % len(body) + body


def test_split_replies_and_keep_alive(wire: Wire) -> None:
    """Heads and bodies split every 7 bytes read whole; the connection is reused."""
    bodies = [json.dumps({"i": i}).encode() for i in range(3)]
    server = ScriptedServer([(ok(b), False) for b in bodies], piece=7)
    try:
        got = [wire.request("POST", server.url, {}, b"{}", timeout=5).body for _ in bodies]
        assert got == bodies
        assert server.connections == 1
    finally:
        server.stop()


def test_chunked_body_is_joined(wire: Wire) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
    )
    server = ScriptedServer([(chunked, False), (ok(b"next"), False)], piece=5)
    try:
        assert wire.request("GET", server.url, timeout=5).body == b"abcdefg"
        assert wire.request("GET", server.url, timeout=5).body == b"next"
        assert server.connections == 1
    finally:
        server.stop()


def test_a_body_ended_by_the_close_is_complete(wire: Wire) -> None:
    """No Content-Length and not chunked: the body runs until the server closes."""
    until_close = b'HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n{"whole": true}'
    server = ScriptedServer([(until_close, True), (ok(b"again"), False)])
    try:
        reply = wire.request("GET", server.url, timeout=5)
        assert (reply.status, reply.body) == (200, b'{"whole": true}')
        # That connection is gone: the next request opens another one.
        assert wire.request("GET", server.url, timeout=5).body == b"again"
        assert server.connections == 2
    finally:
        server.stop()


def test_connection_close_is_not_reused(wire: Wire) -> None:
    server = ScriptedServer([(ok(b"one", b"connection: close\r\n"), True), (ok(b"two"), False)])
    try:
        assert wire.request("GET", server.url, timeout=5).body == b"one"
        assert wire.request("GET", server.url, timeout=5).body == b"two"
        assert server.connections == 2
    finally:
        server.stop()


def test_an_informational_head_is_skipped(wire: Wire) -> None:
    server = ScriptedServer([(b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"final"), False)])
    try:
        reply = wire.request("POST", server.url, {}, b"{}", timeout=5)
        assert (reply.status, reply.body) == (200, b"final")
    finally:
        server.stop()


def test_garbage_is_a_dropped_connection(wire: Wire) -> None:
    server = ScriptedServer([(b"SMTP ready\r\n\r\n", True)])
    try:
        with pytest.raises(ConnectionDropped):
            wire.request("GET", server.url, timeout=5)
    finally:
        server.stop()


def test_a_reply_cut_short_is_a_dropped_connection(wire: Wire) -> None:
    cut = ok(b'{"long": "body"}')[:-5]
    server = ScriptedServer([(cut, True)])
    try:
        with pytest.raises(ConnectionDropped):
            wire.request("GET", server.url, timeout=5)
    finally:
        server.stop()


@pytest.mark.parametrize("name", ["httptools", "h11"])
@pytest.mark.parametrize(
    "headers",
    [
        {"x-extra": "v\r\nx-smuggled: 1"},
        {"x-extra": "v\nGET / HTTP/1.1"},
        {"x-bad\r\nname": "v"},
        {"x-extra": "nul\0byte"},
    ],
)
def test_a_header_that_would_split_the_head_is_refused(
    name: TransportName, headers: dict[str, str]
) -> None:
    """Nothing reaches the server; the provider layer makes it a non-retried LMError."""
    server = ScriptedServer([(ok(b"never"), False)])
    w = Wire(name)
    try:
        with pytest.raises(BadHeader):
            w.request("GET", server.url, headers, timeout=5)
        provider, _ = resolve_provider("openai/m")
        call = HTTPCall("POST", server.url, headers, {"model": "m", "messages": []})
        with pytest.raises(LMError, match="cannot send the request") as caught:
            w.send(provider, call, model="openai/m", timeout=5)
        assert caught.value.retryable is False
        assert server.requests == []
    finally:
        w.close()
        server.stop()
