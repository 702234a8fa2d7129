"""The seam between the LM client and HTTP: the :class:`Transport` protocol.

A transport sends one request on the running event loop and returns the
whole response as an :class:`HTTPReply`, its body already decoded. Three
implement it: :class:`~dspex.actors._lm._transport_httptools.HttptoolsTransport`
(the default: lean HTTP/1.1 parsed by httptools, direct connections only),
:class:`~dspex.actors._lm._transport_h11.H11Transport` (the same pool parsing
with h11, pure Python) and
:class:`~dspex.actors._lm._transport_httpx.HttpxTransport` (httpx, which also
speaks to proxies). :func:`choose_transport` picks one per URL from the
``lm_client.transport`` setting; the engine (``_client``) makes it. This
module imports no implementation: they import it.

All transports share what must behave the same whichever is used:

- failures raise the :class:`TransportError` kinds below, which the provider
  layer (``_providers.send``) turns into ``dspex.errors``;
- the body goes through a :class:`BodyReader`, which undoes gzip/deflate as
  bytes arrive and stops reading once the decoded size passes the limit
  (``lm_client.max_response_bytes``), so a compression bomb or a runaway
  reply never sits whole in memory.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Literal, Protocol
from urllib.parse import urlsplit

from dspex._record import Record
from dspex.errors import DSPexError

if TYPE_CHECKING:
    import zlib

__all__ = [
    "ACCEPT_ENCODING",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "TRANSPORTS",
    "BadEncoding",
    "BadHeader",
    "BadURL",
    "BodyReader",
    "BodyTooLarge",
    "ConnectFailed",
    "ConnectionDropped",
    "HTTPReply",
    "HTTPStream",
    "Transport",
    "TransportError",
    "TransportName",
    "TransportTimeout",
    "choose_transport",
    "env_proxies",
    "header_dict",
]

TransportName = Literal["httptools", "h11", "httpx"]
TRANSPORTS: tuple[str, ...] = ("auto", "httptools", "h11", "httpx")
"""Values of ``lm_client.transport``; ``auto`` picks per URL (:func:`choose_transport`)."""

DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024
"""Default bound on a decoded response body (``lm_client.max_response_bytes``)."""

ACCEPT_ENCODING = "gzip, deflate"
"""What both transports ask for: the codings :class:`BodyReader` can undo."""

USER_AGENT = "dspex"


class HTTPReply(Record):  # not a frozen dataclass: cheaper to define and to build
    """A complete HTTP response: status, headers (lower-case names), decoded body."""

    status: int
    headers: dict[str, str]
    body: bytes


class Transport(Protocol):
    """Sends HTTP requests on the running loop (loop thread only).

    ``request`` returns the complete, decoded response or raises a
    :class:`TransportError`; ``timeout`` (seconds, None: none) bounds
    connecting and the whole exchange; ``max_bytes`` bounds the decoded body.
    ``aclose`` closes every connection; call it on the loop before it stops.
    """

    name: str

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes = b"",
        *,
        timeout: float | None = None,
        max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> HTTPReply: ...

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
        """Send one request and return once the response head is in; the body streams.

        ``timeout`` bounds connecting, the head, and each wait for the next
        chunk; ``max_bytes`` bounds the decoded body as a whole.
        """
        ...

    async def aclose(self) -> None: ...


class HTTPStream:
    """A response whose decoded body arrives in pieces (loop thread only).

    Iterate it for the chunks as they come (raising a :class:`TransportError`
    if the exchange breaks); always ``aclose`` it, which gives a completed
    connection back to the pool and aborts an unfinished one (that is how a
    cancelled consumer reaches the server).
    """

    __slots__ = ("_chunks", "_close", "headers", "status")

    def __init__(
        self,
        status: int,
        headers: dict[str, str],
        chunks: AsyncIterator[bytes],
        close: Callable[[], Awaitable[None]],
    ) -> None:
        self.status = status
        self.headers = headers
        self._chunks = chunks
        self._close = close

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks

    async def read(self) -> bytes:
        """The rest of the body, whole (for error replies)."""
        return b"".join([chunk async for chunk in self._chunks])

    async def aclose(self) -> None:
        await self._close()


# -- failures, the same whichever transport ran ----------------------------------------


class TransportError(DSPexError):
    """An HTTP exchange failed below the provider's wire format.

    Never reaches users: ``_providers.send`` translates every kind into an
    ``LMError`` naming the model. ``status`` is the response's status when
    the failure came after its head arrived.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ConnectFailed(TransportError):
    """No connection: refused, unknown host, TLS verification, proxy refused."""


class TransportTimeout(TransportError):
    """Connecting, waiting for a free connection, or the exchange took too long."""


class ConnectionDropped(TransportError):
    """The connection broke mid-exchange, or the response was not valid HTTP."""


class BadURL(TransportError):
    """The URL is not ``http(s)://host[:port]/path``."""


class BadHeader(TransportError):
    """A request header cannot be sent: its name or value holds a line break or NUL."""


class BodyTooLarge(TransportError):
    """The decoded body passed ``limit`` bytes; reading stopped there."""

    def __init__(self, message: str, *, limit: int, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.limit = limit


class BadEncoding(TransportError):
    """The body does not decode as its ``Content-Encoding`` says (or that coding is unknown)."""

    def __init__(self, message: str, *, encoding: str, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.encoding = encoding


# -- the body: decoded as it arrives, bounded --------------------------------------------

# wbits for gzip framing: 16 + zlib.MAX_WBITS (15). zlib itself loads with the
# first compressed body: most servers answer uncompressed.
_GZIP = 16 + 15
_GZIP_MAGIC = b"\x1f\x8b"
_INFLATE_STEP = 256 * 1024


class BodyReader:
    """Collects one response body: decodes it while it streams and bounds its size.

    ``feed`` each raw chunk as it arrives, then ``finish`` for the body.
    Inflation runs in bounded steps and stops one byte past the limit, so a
    gzip bomb costs about ``limit`` bytes of memory before it is refused. A declared
    ``Content-Length`` already over the limit (no coding) is refused before
    any byte is read. Raises :class:`BodyTooLarge` or :class:`BadEncoding`.
    """

    __slots__ = (
        "_chunks",
        "_deflate_head",
        "_encoding",
        "_fed",
        "_inflater",
        "_limit",
        "_size",
        "_status",
    )

    def __init__(
        self,
        encoding: str | None,
        limit: int,
        *,
        status: int | None = None,
        length: str | None = None,
    ) -> None:
        self._limit = limit
        self._status = status
        self._size = 0
        self._chunks: list[bytes] = []
        self._inflater: zlib._Decompress | None = None
        self._deflate_head: bytes | None = None  # deflate: bytes kept until the header is known
        self._fed = False
        coding = (encoding or "").strip().lower()
        self._encoding = coding
        if coding in ("", "identity"):
            declared = _int_or_none(length)
            if declared is not None and declared > limit:
                raise self._too_large(f"it declares Content-Length {declared}")
        elif coding in ("gzip", "x-gzip"):
            import zlib

            self._inflater = zlib.decompressobj(_GZIP)
        elif coding == "deflate":
            self._deflate_head = b""
        else:
            raise BadEncoding(
                f"dspex cannot decode {coding!r} (it asks for {ACCEPT_ENCODING})",
                encoding=coding,
                status=status,
            )

    @property
    def size(self) -> int:
        """Decoded bytes kept so far."""
        return self._size

    def feed(self, data: bytes) -> None:
        """Take the next raw chunk of the body."""
        if not data:
            return
        if self._deflate_head is not None:
            head = self._deflate_head + data
            if len(head) < 2:
                self._deflate_head = head
                return
            self._deflate_head = None
            # "deflate" is meant to be zlib-wrapped, but some servers send raw
            # deflate; the two-byte zlib header tells which one this is.
            wrapped = head[0] & 0x0F == 8 and int.from_bytes(head[:2], "big") % 31 == 0
            import zlib

            self._inflater = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
            data = head
        if self._inflater is None:
            self._keep(data)
        else:
            self._inflate(data)

    def take(self) -> bytes:
        """Decoded bytes since the last ``take`` (streaming); the size bound counts them all."""
        out = b"".join(self._chunks)
        self._chunks.clear()
        return out

    def finish(self) -> bytes:
        """The decoded body not yet taken; raises if a compressed stream ended early."""
        inflater = self._inflater
        if self._deflate_head or (inflater is not None and self._fed and not inflater.eof):
            raise self._bad("the compressed stream is truncated")
        return b"".join(self._chunks)

    # -- internals ---------------------------------------------------------

    def _inflate(self, data: bytes) -> None:
        import zlib  # loaded already: an inflater exists

        inflater = self._inflater
        assert inflater is not None
        self._fed = True
        while data:
            if inflater.eof:
                # Data after the end of a gzip member: either another member
                # (concatenated gzip is valid) or padding some servers add.
                if self._encoding == "deflate" or data[:2] != _GZIP_MAGIC:
                    return
                inflater = self._inflater = zlib.decompressobj(_GZIP)
            # In steps: zlib builds each output in blocks and then copies them
            # into one bytes object, so one big step would cost twice its size.
            step = min(self._limit - self._size + 1, _INFLATE_STEP)
            try:
                out = inflater.decompress(data, step)
            except zlib.error as exc:
                raise self._bad(f"zlib: {exc}") from exc
            self._keep(out)
            # Input left over: more output is due; at a member's end the rest
            # of the input is in unused_data.
            rest = inflater.unconsumed_tail or (inflater.unused_data if inflater.eof else b"")
            if not out and rest == data:  # no progress: never expected from zlib
                raise self._bad("the decoder made no progress")
            data = rest

    def _keep(self, data: bytes) -> None:
        if not data:
            return
        self._size += len(data)
        if self._size > self._limit:
            self._chunks.clear()
            raise self._too_large("it is longer")
        self._chunks.append(data)

    def _too_large(self, why: str) -> BodyTooLarge:
        return BodyTooLarge(
            f"response body over the {self._limit}-byte limit once decoded ({why})",
            limit=self._limit,
            status=self._status,
        )

    def _bad(self, why: str) -> BadEncoding:
        return BadEncoding(
            f"the body is not valid {self._encoding} ({why})",
            encoding=self._encoding,
            status=self._status,
        )


def header_dict(pairs: Iterable[tuple[bytes, bytes]] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers as a dict with lower-case names; repeated names are joined with ", "."""
    out: dict[str, str] = {}
    for name, value in pairs:
        key = (name.decode("latin-1") if isinstance(name, bytes) else name).lower()
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        out[key] = f"{out[key]}, {text}" if key in out else text
    return out


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


# -- which transport, and making one -------------------------------------------------


def env_proxies() -> dict[str, str]:
    """The proxies the environment sets (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``)."""
    # urllib.request reads only variables named *_proxy; without one, skip loading it.
    if not any(name[-6:].lower() == "_proxy" for name in os.environ):
        return {}
    import urllib.request

    return urllib.request.getproxies_environment()


def choose_transport(setting: str, url: str, proxies: Mapping[str, str]) -> TransportName:
    """Which transport sends to ``url`` under ``lm_client.transport = setting``.

    ``"httptools"``, ``"h11"`` and ``"httpx"`` are taken as given (the
    first two always connect directly, ignoring proxy variables). ``"auto"``
    uses httptools, the fastest,
    unless the environment's ``proxies`` apply to ``url`` (as httpx reads
    them, ``NO_PROXY`` included); only httpx speaks to a proxy.
    """
    if setting == "h11":
        return "h11"
    if setting == "httptools":
        return "httptools"
    if setting == "httpx":
        return "httpx"
    if proxies and _proxied(url, proxies):
        return "httpx"
    return "httptools"


def _proxied(url: str, proxies: Mapping[str, str]) -> bool:
    import urllib.request

    parts = urlsplit(url)
    if parts.scheme not in proxies and "all" not in proxies:
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")
