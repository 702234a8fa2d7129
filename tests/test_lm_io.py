"""The LM client's I/O layer: the event-loop thread and the HTTP/1.1 pool on it."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from dspex.actors._lm._io_loop import HTTPPool, IOLoop
from dspex.errors import ActorStoppedError
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


# -- the HTTP pool -------------------------------------------------------------------


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


def test_http_pool_speaks_tls_and_reuses_connections(tmp_path: Any) -> None:
    import httpx

    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    server = TLSServer(server_ctx)
    client_io = IOLoop("test-tls-client")
    client_io.start()
    pools: list[HTTPPool] = []
    url = f"https://localhost:{server.port}/v1/x"
    try:
        pool = HTTPPool(max_connections=4, ssl_context=ssl.create_default_context(cafile=cert))
        pools.append(pool)

        async def calls() -> list[Any]:
            replies = [
                await pool.request("POST", url, {}, json.dumps({"i": i}).encode(), timeout=5)
                for i in range(3)
            ]
            return [(r.status, r.headers["content-type"], json.loads(r.body)) for r in replies]

        expected = [(200, "application/json", {"got": {"i": i}}) for i in range(3)]
        assert client_io.run(calls(), 10) == expected
        assert (server.connections, server.requests, pool.connections_opened) == (1, 3, 1)

        untrusted = HTTPPool()  # certifi's roots do not vouch for a self-signed cert
        pools.append(untrusted)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            client_io.run(untrusted.request("GET", url, {}, timeout=5), 10)
    finally:

        async def close() -> None:
            for pool in pools:
                await pool.aclose()

        client_io.stop(5, cleanup=close)
        server.stop()


def test_http_pool_raises_httpx_errors_for_failures() -> None:
    import httpx

    io = IOLoop("test-pool-errors")
    io.start()
    pool = HTTPPool(max_connections=2)
    try:
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
        with pytest.raises(httpx.ConnectError):
            io.run(pool.request("GET", f"http://127.0.0.1:{port}/", {}, timeout=5), 10)
        with pytest.raises(httpx.UnsupportedProtocol):
            io.run(pool.request("GET", "ftp://127.0.0.1/", {}, timeout=5), 10)

        with FakeOpenAI(schedule=[Fault.drop(), Fault.timeout(), None]) as fake:
            url = f"{fake.url}/chat/completions"
            headers = {"content-type": "application/json", "authorization": "Bearer k"}
            body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}]})

            async def faults() -> list[str]:
                seen: list[str] = []
                for _ in range(3):
                    try:
                        reply = await pool.request("POST", url, headers, body.encode(), timeout=0.3)
                        seen.append(str(reply.status))
                    except httpx.HTTPError as exc:
                        seen.append(type(exc).__name__)
                return seen

            assert io.run(faults(), 10) == ["RemoteProtocolError", "ReadTimeout", "200"]
    finally:
        io.stop(5, cleanup=pool.aclose)
