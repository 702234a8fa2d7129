"""Drive an LM transport (httptools, h11 or httpx) on its own IOLoop from a test's thread."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dspex.actors._lm._loop import IOLoop
from dspex.actors._lm._providers import HTTPCall, Provider, send
from dspex.actors._lm._transport import (
    DEFAULT_MAX_RESPONSE_BYTES,
    HTTPReply,
    Transport,
    TransportName,
)
from dspex.actors._lm._transport_h11 import H11Transport
from dspex.actors._lm._transport_httptools import HttptoolsTransport
from dspex.actors._lm._transport_httpx import HttpxTransport
from dspex.actors._lm._types import LMResponse

TRANSPORTS: tuple[TransportName, ...] = ("httptools", "h11", "httpx")
"""Every transport; fixtures parametrized over it run each test over each."""


class Wire:
    """One transport on a private loop thread; ``close()`` stops both."""

    def __init__(self, name: TransportName, **options: Any) -> None:
        self.name = name
        self.io = IOLoop(f"test-wire-{name}")
        self.io.start()

        async def make() -> Transport:
            kinds: dict[str, type[Transport]] = {
                "httptools": HttptoolsTransport,
                "h11": H11Transport,
                "httpx": HttpxTransport,
            }
            return kinds[name](**options)

        self.transport = self.io.run(make(), 5)

    def send(
        self,
        provider: Provider,
        call: HTTPCall,
        *,
        model: str,
        timeout: float | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> LMResponse:
        coro = send(
            self.transport,
            provider,
            call,
            model=model,
            timeout=timeout,
            max_response_bytes=max_response_bytes,
        )
        return self.io.run(coro, 30)

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        **options: Any,
    ) -> HTTPReply:
        return self.io.run(self.transport.request(method, url, headers or {}, body, **options), 30)

    def close(self) -> None:
        assert self.io.stop(5, cleanup=self.transport.aclose)

    def __repr__(self) -> str:
        return f"Wire({self.name!r})"
