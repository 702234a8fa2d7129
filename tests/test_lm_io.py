"""The LM client's I/O: the event-loop thread, and both HTTP transports (h11, httpx) on it."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import ssl
import subprocess
import threading
import tracemalloc
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from transport_helpers import TRANSPORTS, Wire

from dspex.actors._lm._loop import IOLoop
from dspex.actors._lm._transport import (
    BadEncoding,
    BadURL,
    BodyReader,
    BodyTooLarge,
    ConnectFailed,
    ConnectionDropped,
    TransportName,
    TransportTimeout,
    choose_transport,
)
from dspex.errors import ActorStoppedError, CallTimeoutError, LMTimeoutError
from dspex.testing import FakeOpenAI, Fault

# -- the I/O loop ----------------------------------------------------------------------


@pytest.fixture
def io() -> Iterator[IOLoop]:
    loop = IOLoop("test-io")
    loop.start()
    yield loop
    assert loop.stop(5)


def test_io_loop_runs_coroutines_and_callbacks(io: IOLoop) -> None:
    async def add(a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a + b

    assert io.run(add(2, 3), 5) == 5
    seen = threading.Event()
    io.call_soon(seen.set)
    assert seen.wait(5)
    assert io.running


def test_io_loop_run_reraises_a_timeout_error_of_the_coroutine(io: IOLoop) -> None:
    # A coroutine that *failed* with a TimeoutError once read as the wait for
    # it timing out, and came back as a CallTimeoutError "did not finish".
    class Slow(TimeoutError):
        pass

    async def fails() -> None:
        raise Slow("upstream too slow")

    with pytest.raises(Slow, match="upstream too slow"):
        io.run(fails(), 5)


def test_io_loop_stop_cancels_tasks_runs_cleanup_and_joins() -> None:
    io = IOLoop("test-io-stop")
    io.start()
    started = threading.Event()
    cancelled = threading.Event()
    cleaned = threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def cleanup() -> None:
        cleaned.set()

    io.call_soon(lambda: asyncio.get_running_loop().create_task(forever()))
    assert started.wait(5)  # stop must cancel a task that is running, not one never begun
    assert io.run(asyncio.sleep(0), 5) is None
    assert io.stop(5, cleanup=cleanup)
    assert cleaned.is_set() and cancelled.is_set()
    assert not io.running
    assert io.stop(5)  # idempotent
    with pytest.raises(ActorStoppedError):
        io.call_soon(print)
    with pytest.raises(ActorStoppedError):
        io.run(asyncio.sleep(0), 1)


def test_io_loop_run_passes_on_the_coroutines_own_timeout_error(io: IOLoop) -> None:
    # LMTimeoutError is a TimeoutError: it must not pass for run()'s own timeout.
    async def fails() -> None:
        raise LMTimeoutError("the provider did not answer", model="m")

    with pytest.raises(LMTimeoutError, match="did not answer"):
        io.run(fails(), 5)

    async def slow() -> None:
        await asyncio.sleep(3600)

    with pytest.raises(CallTimeoutError, match="did not finish"):
        io.run(slow(), 0.05)


# -- the transports -------------------------------------------------------------------


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> TransportName:
    name: TransportName = request.param
    return name


@pytest.fixture
def wire(transport: TransportName) -> Iterator[Wire]:
    w = Wire(transport)
    yield w
    w.close()


class TLSServer:
    """A tiny keep-alive HTTPS server on 127.0.0.1 that answers every request with JSON."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.connections = 0
        self.requests = 0
        self.io = IOLoop("test-tls-server")
        self.io.start()
        self.server = self.io.run(asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=context), 5)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                self.requests += 1
                reply = json.dumps({"got": json.loads(body or b"null")}).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(reply)}\r\n\r\n".encode()
                    + reply
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        async def close() -> None:
            self.server.close()

        self.io.stop(5, cleanup=close)


def _self_signed(tmp: Any) -> tuple[str, str]:
    cert, key = str(tmp / "cert.pem"), str(tmp / "key.pem")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", key, "-out", cert,
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_transports_speak_tls_and_reuse_connections(
    tmp_path: Any, transport: TransportName
) -> None:
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    server = TLSServer(server_ctx)
    wires: list[Wire] = []
    url = f"https://localhost:{server.port}/v1/x"
    try:
        trusted = Wire(transport, ssl_context=ssl.create_default_context(cafile=cert))
        wires.append(trusted)
        replies = [
            trusted.request("POST", url, {}, json.dumps({"i": i}).encode(), timeout=5)
            for i in range(3)
        ]
        got = [(r.status, r.headers["content-type"], json.loads(r.body)) for r in replies]
        assert got == [(200, "application/json", {"got": {"i": i}}) for i in range(3)]
        assert (server.connections, server.requests) == (1, 3)

        untrusted = Wire(transport)  # certifi's roots do not vouch for a self-signed cert
        wires.append(untrusted)
        with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
            untrusted.request("GET", url, timeout=5)
    finally:
        for w in wires:
            w.close()
        server.stop()


def test_transport_failures_are_the_same_kinds_on_both(wire: Wire) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(ConnectFailed):
        wire.request("GET", f"http://127.0.0.1:{port}/", timeout=5)
    with pytest.raises(BadURL):
        wire.request("GET", "ftp://127.0.0.1/", timeout=5)

    with FakeOpenAI(schedule=[Fault.drop(), Fault.timeout(), None]) as fake:
        url = f"{fake.url}/chat/completions"
        headers = {"content-type": "application/json", "authorization": "Bearer k"}
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}]})
        with pytest.raises(ConnectionDropped):
            wire.request("POST", url, headers, body.encode(), timeout=5)
        with pytest.raises(TransportTimeout):
            wire.request("POST", url, headers, body.encode(), timeout=0.3)
        reply = wire.request("POST", url, headers, body.encode(), timeout=5)
        assert reply.status == 200 and json.loads(reply.body)["choices"]
        [first, *_] = fake.requests
        assert first.headers["accept-encoding"] == "gzip, deflate"
        assert first.headers["user-agent"] == "dspex"


# -- response bodies: decoded as they stream, bounded --------------------------------------

PAYLOAD = json.dumps({"choices": [{"message": {"content": "ok " * 2000}}]}).encode()


def gzip_bomb(inflated: int) -> bytes:
    """A gzip body of ``inflated`` zero bytes (about 1000 times smaller on the wire)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    parts = [packer.compress(block) for _ in range(inflated >> 20)]
    return b"".join([*parts, packer.flush()])


def test_gzip_and_deflate_bodies_are_decoded(wire: Wire) -> None:
    wrapped = zlib.compress(PAYLOAD)
    raw_deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    bare = raw_deflate.compress(PAYLOAD) + raw_deflate.flush()
    two_members = gzip.compress(PAYLOAD[:100]) + gzip.compress(PAYLOAD[100:])
    bodies = [
        (gzip.compress(PAYLOAD), "gzip"),
        (wrapped, "deflate"),
        (bare, "deflate"),
        (two_members, "gzip"),
        (PAYLOAD, "identity"),
    ]
    schedule = [Fault.raw(b, headers={"content-encoding": e}) for b, e in bodies]
    with FakeOpenAI(schedule=schedule) as fake:
        for _ in bodies:
            reply = wire.request("POST", f"{fake.url}/chat/completions", timeout=5)
            assert reply.body == PAYLOAD
        assert fake.request_count == len(bodies)


def test_a_gzip_bomb_is_cut_off_at_the_limit_with_memory_bounded(wire: Wire) -> None:
    limit = 1 << 20
    bomb = gzip_bomb(64 << 20)  # 64 MiB once inflated, about 64 KB sent
    assert len(bomb) < 100_000
    with FakeOpenAI(schedule=[Fault.raw(bomb, headers={"content-encoding": "gzip"})]) as fake:
        tracemalloc.start()
        try:
            with pytest.raises(BodyTooLarge) as info:
                wire.request("POST", f"{fake.url}/chat/completions", timeout=10, max_bytes=limit)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert info.value.limit == limit and info.value.status == 200
    assert "1048576-byte limit" in str(info.value)
    # Inflating it whole would take 64 MiB; the reader holds at most the limit.
    assert peak < 8 * limit


def test_an_oversized_plain_body_is_refused(wire: Wire) -> None:
    limit = 1 << 20
    big = b'{"pad": "' + b"x" * (3 * limit) + b'"}'
    with FakeOpenAI(schedule=[Fault.raw(big), Fault.raw(big[: limit - 1])]) as fake:
        url = f"{fake.url}/chat/completions"
        with pytest.raises(BodyTooLarge, match="Content-Length"):
            wire.request("POST", url, timeout=10, max_bytes=limit)
        assert len(wire.request("POST", url, timeout=10, max_bytes=limit).body) == limit - 1


class RunawayServer:
    """Answers every request with an endless chunked body; counts the bytes it got out."""

    CAP = 256 << 20  # stop here if the client never does

    def __init__(self) -> None:
        self.sent = 0
        self.stopped_by_client = threading.Event()
        self.io = IOLoop("test-runaway-server")
        self.io.start()
        self.server = self.io.run(asyncio.start_server(self._serve, "127.0.0.1", 0), 5)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1/x"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            while self.sent < self.CAP:
                writer.write(chunk)
                await writer.drain()
                self.sent += 65536
        except (ConnectionError, asyncio.IncompleteReadError):
            self.stopped_by_client.set()
        finally:
            writer.close()

    def stop(self) -> None:
        async def close() -> None:
            self.server.close()

        self.io.stop(5, cleanup=close)


def test_a_runaway_body_without_a_length_stops_being_read(wire: Wire) -> None:
    limit = 1 << 20
    server = RunawayServer()
    try:
        with pytest.raises(BodyTooLarge):
            wire.request("POST", server.url, timeout=30, max_bytes=limit)
        assert server.stopped_by_client.wait(10)
        # The client hung up once past the limit; only socket buffers hold more.
        assert server.sent < 64 << 20
    finally:
        server.stop()


def test_a_body_that_is_not_gzip_is_a_bad_encoding(wire: Wire) -> None:
    schedule = [
        Fault.raw(PAYLOAD, headers={"content-encoding": "gzip"}),
        Fault.raw(gzip.compress(PAYLOAD)[:-12], headers={"content-encoding": "gzip"}),
        Fault.raw(PAYLOAD, headers={"content-encoding": "br"}),
    ]
    with FakeOpenAI(schedule=schedule) as fake:
        url = f"{fake.url}/chat/completions"
        with pytest.raises(BadEncoding, match="not valid gzip") as info:
            wire.request("POST", url, timeout=5)
        assert info.value.encoding == "gzip" and info.value.status == 200
        with pytest.raises(BadEncoding, match="truncated"):
            wire.request("POST", url, timeout=5)
        with pytest.raises(BadEncoding, match="cannot decode 'br'"):
            wire.request("POST", url, timeout=5)


def test_body_reader_bounds_a_body_without_a_length() -> None:
    reader = BodyReader(None, 10)
    reader.feed(b"12345")
    reader.feed(b"67890")
    with pytest.raises(BodyTooLarge):
        reader.feed(b"1")
    empty = BodyReader("gzip", 10)  # a 204 may carry the header with no body
    assert empty.finish() == b""
    with pytest.raises(BodyTooLarge):
        BodyReader("identity", 10, length="11")
    packed = gzip.compress(b"a" * 100)
    exact = BodyReader("gzip", 100)
    for i in range(len(packed)):  # byte by byte: the stream is decoded incrementally
        exact.feed(packed[i : i + 1])
    assert exact.finish() == b"a" * 100
    over = BodyReader("gzip", 99)
    with pytest.raises(BodyTooLarge):
        over.feed(gzip.compress(b"a" * 100_000))
    assert over.size == 100  # inflation stopped one byte past the limit


def test_choose_transport() -> None:
    proxies = {"http": "http://proxy:3128"}
    assert choose_transport("auto", "http://api.example/v1", {}) == "httptools"
    assert choose_transport("auto", "http://api.example/v1", proxies) == "httpx"
    assert choose_transport("auto", "https://api.example/v1", proxies) == "httptools"
    assert choose_transport("h11", "http://api.example/v1", proxies) == "h11"
    assert choose_transport("httptools", "http://api.example/v1", proxies) == "httptools"
    assert choose_transport("httpx", "https://api.example/v1", {}) == "httpx"
    everything = {"all": "socks5://proxy:1080"}
    assert choose_transport("auto", "https://api.example/v1", everything) == "httpx"


@pytest.mark.parametrize("name", ["httptools", "h11"])
def test_native_transports_run_on_uvloop(name: TransportName) -> None:
    """Under uvloop's loop policy (Ray workers, uvicorn) the native transports still connect.

    uvloop's transports are not ``asyncio.Transport`` subclasses; an
    ``isinstance`` check in ``connection_made`` failed every request there.
    """
    import uvloop

    previous = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        with FakeOpenAI() as fake:
            wire = Wire(name)
            try:
                reply = wire.request("GET", f"{fake.url}/models", timeout=5)
                assert "uvloop" in type(wire.io.loop).__module__
            finally:
                wire.close()
    finally:
        asyncio.set_event_loop_policy(previous)
    assert reply.status in (200, 404)  # an HTTP answer: the connection was made
