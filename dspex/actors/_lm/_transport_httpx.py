"""The httpx transport: for proxies, and for anyone who asks for it.

:class:`HttpxTransport` sends through an ``httpx.AsyncClient``, which honours
``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY``/``NO_PROXY`` when ``trust_env``
is on. ``choose_transport`` routes proxied URLs here under
``lm_client.transport = "auto"``; ``"httpx"`` routes everything here.

The body is streamed raw (``aiter_raw``) through the same
:class:`~dspex.actors._lm._transport.BodyReader` as the native transports, so
decoding, the size bound and their errors are identical; httpx's own decoders
would inflate a whole network chunk before any bound could apply. httpx's
exceptions become :class:`~dspex.actors._lm._transport.TransportError` kinds
here. Runs on the loop thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

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

__all__ = ["HttpxTransport"]


class HttpxTransport:
    """HTTP through ``httpx.AsyncClient`` (proxies, HTTP/1.1), bounded and decoded as the others."""

    name = "httpx"

    def __init__(
        self,
        *,
        max_connections: int = 512,
        keepalive_expiry: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        trust_env: bool = True,
    ) -> None:
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=max_connections, keepalive_expiry=keepalive_expiry),
            verify=ssl_context if ssl_context is not None else True,
            trust_env=trust_env,
            headers={"user-agent": USER_AGENT, "accept-encoding": ACCEPT_ENCODING},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

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
        """Send one request and read the whole response within ``timeout``."""
        try:
            # httpx's timeout bounds each step; the outer one the whole
            # exchange, as the native transports do.
            async with (
                asyncio.timeout(timeout),
                self._client.stream(
                    method, url, headers=dict(headers), content=body, timeout=timeout
                ) as response,
            ):
                head = header_dict(response.headers.items())
                reader = BodyReader(
                    head.get("content-encoding"),
                    max_bytes,
                    status=response.status_code,
                    length=head.get("content-length"),
                )
                async for chunk in response.aiter_raw():
                    reader.feed(chunk)
                return HTTPReply(response.status_code, head, reader.finish())
        except TransportError:
            raise
        except TimeoutError as exc:
            raise TransportTimeout(f"no response from {_host(url)} in time") from exc
        except httpx.InvalidURL as exc:  # not an httpx.HTTPError
            raise BadURL(f"{type(exc).__name__}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise _translated(exc) from exc

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
        request = self._client.build_request(
            method, url, headers=dict(headers), content=body, timeout=timeout
        )
        try:
            async with asyncio.timeout(timeout):
                response = await self._client.send(request, stream=True)
        except TimeoutError as exc:
            raise TransportTimeout(f"no response from {_host(url)} in time") from exc
        except httpx.InvalidURL as exc:
            raise BadURL(f"{type(exc).__name__}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise _translated(exc) from exc
        head = header_dict(response.headers.items())
        try:
            reader = BodyReader(
                head.get("content-encoding"),
                max_bytes,
                status=response.status_code,
                length=head.get("content-length"),
            )
        except TransportError:
            await response.aclose()
            raise

        async def body_chunks() -> AsyncIterator[bytes]:
            # httpx's read timeout bounds each wait for the next chunk.
            try:
                async for raw in response.aiter_raw():
                    reader.feed(raw)
                    out = reader.take()
                    if out:
                        yield out
                rest = reader.finish()
            except TransportError:
                raise
            except httpx.HTTPError as exc:
                raise _translated(exc) from exc
            if rest:
                yield rest

        return HTTPStream(response.status_code, head, body_chunks(), response.aclose)

    def __repr__(self) -> str:
        return "<HttpxTransport>"


def _translated(exc: httpx.HTTPError) -> TransportError:
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, httpx.TimeoutException):
        return TransportTimeout(text)
    if isinstance(exc, httpx.UnsupportedProtocol):
        return BadURL(text)
    if isinstance(exc, httpx.ConnectError | httpx.ProxyError):
        return ConnectFailed(text)
    # ReadError, WriteError, RemoteProtocolError, LocalProtocolError, ...
    return ConnectionDropped(text)


def _host(url: str) -> str:
    return urlsplit(url).netloc or url
