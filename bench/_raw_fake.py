"""The cheapest fake OpenAI chat endpoint for the serve benchmark: an asyncio Protocol.

``bench/_fake_server.py --raw`` runs it. It stands in for a remote provider,
so its CPU is not dspex's: it parses only the request line's framing
(``Content-Length``), finds ``rollout <n>`` in the raw body with one regex,
and answers after the latency with a ``loop.call_later`` (no Task, no JSON
decode) from reply bytes built once per distinct answer. Keep-alive, HTTP/1.1,
non-streaming chat completions only; fault injection and everything else stay
with ``dspex.testing.FakeOpenAI`` (the non-raw mode).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

_ROLLOUT = re.compile(rb"rollout (\d+)")
_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


class Counts:
    """What the stats line reports: requests, most in flight, connections."""

    def __init__(self) -> None:
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.connections = 0


_MARK = "\x00"
_BODY = json.dumps(
    {
        "id": "chatcmpl-raw",
        "object": "chat.completion",
        "created": 0,
        "model": "bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": _MARK},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    },
    separators=(",", ":"),
).encode()
_PREFIX, _SUFFIX = _BODY.split(json.dumps(_MARK).encode())


def _reply_bytes(content: str) -> bytes:
    """A whole HTTP response: the canned body around ``content`` (spliced, not re-encoded)."""
    body = b"%s%s%s" % (_PREFIX, json.dumps(content).encode(), _SUFFIX)
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


class RawFake(asyncio.Protocol):
    """One connection: answers each POST after ``latency`` seconds with canned bytes."""

    def __init__(self, latency: float, answer: Callable[[int | None], str], counts: Counts) -> None:
        self._latency = latency
        self._answer = answer
        self._counts = counts
        self._buf = b""
        self._replies: dict[str | None, bytes] = {}
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: Any) -> None:
        self._transport = transport
        self._counts.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            found = _LENGTH.search(buf, 0, end + 2)
            size = int(found.group(1)) if found else 0
            stop = end + 4 + size
            if len(buf) < stop:
                break
            hit = _ROLLOUT.findall(buf, end + 4, stop)
            self._request(int(hit[-1]) if hit else None)
            buf = buf[stop:]
        self._buf = buf

    def _request(self, n: int | None) -> None:
        counts = self._counts
        counts.requests += 1
        counts.in_flight += 1
        if counts.in_flight > counts.max_in_flight:
            counts.max_in_flight = counts.in_flight
        reply = self._replies.get(n) if n is None else None
        if reply is None:  # the answer differs per rollout; "unknown" is built once
            reply = _reply_bytes(f"[[ ## answer ## ]]\n{self._answer(n)}\n\n[[ ## completed ## ]]")
            if n is None:
                self._replies[n] = reply
        if self._latency > 0:
            self._loop.call_later(self._latency, self._send, reply)
        else:
            self._send(reply)

    def _send(self, reply: bytes) -> None:
        self._counts.in_flight -= 1
        if self._transport is not None:
            self._transport.write(reply)


async def serve(
    latency: float,
    answer: Callable[[int | None], str],
    counts: Counts,
    ready: Callable[[str], None],
    done: asyncio.Event,
) -> None:
    """Listen on 127.0.0.1 until ``done`` is set; ``ready(url)`` once listening."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: RawFake(latency, answer, counts), "127.0.0.1", 0, backlog=4096
    )
    port = server.sockets[0].getsockname()[1]
    ready(f"http://127.0.0.1:{port}/v1")
    async with server:
        await done.wait()
