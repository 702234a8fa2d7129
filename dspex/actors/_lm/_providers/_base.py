"""What every provider wire format shares: the call shape, key lookup, error translation.

A :class:`Provider` is pure: ``build`` turns an :class:`LMRequest` into an
:class:`HTTPCall`, ``parse`` turns status, headers and body bytes into an
:class:`LMResponse`. Failures become ``dspex.errors`` in one place,
:meth:`Provider.error_for_status` (HTTP answers) and
:meth:`Provider.error_for_exception` (a transport's failures: no connection,
timeout, dropped connection, a body too large or not decodable); dialects only
say where their error body keeps its message. :func:`send` makes a call over
any :class:`~dspex.actors._lm._transport.Transport` (httptools, h11 or httpx); it is
what the LM client's engine (and the tests) use.
"""

from __future__ import annotations

import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from dspex._record import Record
from dspex.actors._lm._cache_key import wire_params
from dspex.actors._lm._providers._documents import document_text
from dspex.actors._lm._transport import (
    DEFAULT_MAX_RESPONSE_BYTES,
    BadEncoding,
    BadHeader,
    BadURL,
    BodyTooLarge,
    Transport,
    TransportError,
    TransportTimeout,
)
from dspex.actors._lm._types import Completion, LMRequest, LMResponse, Message, Usage
from dspex.errors import (
    AuthenticationError,
    ContextWindowError,
    LMError,
    LMTimeoutError,
    ProviderError,
    RateLimitError,
    UsageError,
)

__all__ = [
    "ContextOverflow",
    "HTTPCall",
    "Provider",
    "merge_responses",
    "parse_retry_after",
    "send",
    "split_data_url",
    "split_n",
    "text_parts",
    "wire_json",
]

_REDACTED = "<redacted>"
_MAX_DETAIL = 500
_WORD_CHARS = "A-Za-z0-9_-"  # what keys are made of: a key is masked as a whole token
# A key this long cannot turn up inside other text by chance, so it is masked
# wherever it occurs (also glued to other characters, as in "%3D<key>").
_ANYWHERE_LENGTH = 12
# Shapes of well-known key formats, in case a provider echoes one back.
_KEY_PATTERN = re.compile(r"(sk-[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,})")


class HTTPCall(Record):  # not a frozen dataclass: cheaper to define and to build
    """One HTTP request to make. The API key, if any, is only in ``headers``."""

    method: str
    url: str
    headers: Mapping[str, str]
    json: Mapping[str, Any]
    secret_headers: frozenset[str] = frozenset()

    def __repr__(self) -> str:
        shown = {k: (_REDACTED if k in self.secret_headers else v) for k, v in self.headers.items()}
        return f"HTTPCall({self.method} {self.url}, headers={shown}, json={self.json!r})"


class ContextOverflow(Record):
    """A provider's "prompt too long" answer, with the token counts it stated (if any)."""

    prompt_tokens: int | None = None
    context_window: int | None = None


class Provider(ABC):
    """One provider's wire format. Stateless apart from its options; thread-safe."""

    name: ClassVar[str]
    default_api_base: ClassVar[str]
    env_keys: ClassVar[tuple[str, ...]]
    secret_headers: ClassVar[frozenset[str]]
    context_patterns: ClassVar[tuple[re.Pattern[str], ...]] = ()
    """How the provider's error message says the prompt exceeds the context
    window; optional named groups ``prompt`` and ``window`` capture the counts."""
    native_n: ClassVar[bool] = True
    """False: the provider returns one completion per call, so ``n > 1`` must be
    fanned out by the client (:func:`split_n` / :func:`merge_responses`)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # -- building ------------------------------------------------------------

    @abstractmethod
    def build(self, request: LMRequest, *, api_base: str | None, api_key: str | None) -> HTTPCall:
        """The HTTP call for ``request``; ``api_key`` falls back to the environment."""

    def resolve_api_key(self, api_key: str | None) -> str | None:
        """``api_key`` if given, else the first set variable of ``env_keys``."""
        if api_key:
            return api_key
        for var in self.env_keys:
            value = os.environ.get(var)
            if value:
                return value
        return None

    def base_url(self, api_base: str | None) -> str:
        return (api_base or self.default_api_base).rstrip("/")

    def model_name(self, model: str) -> str:
        """The provider's own model name: ``openai/gpt-4o`` -> ``gpt-4o``."""
        prefix = f"{self.name}/"
        name = model[len(prefix) :] if model.startswith(prefix) else model
        if not name:
            raise UsageError(f"model={model!r} names no model; use e.g. '{self.name}/<model>'")
        return name

    def _key_or_fail(
        self, request: LMRequest, api_base: str | None, api_key: str | None
    ) -> str | None:
        key = self.resolve_api_key(api_key)
        # Local OpenAI-compatible servers need no key, so only the public
        # endpoint insists on one before sending.
        if key is None and api_base is None:
            raise AuthenticationError(
                f"model {request.model!r}: no API key; pass api_key=... or set "
                f"{' or '.join(self.env_keys)}",
                model=request.model,
            )
        return key

    @staticmethod
    def _params(request: LMRequest) -> dict[str, Any]:
        """The parameters to send: the table in ``_cache_key`` says which."""
        return wire_params(request.params)

    @staticmethod
    def _checked_messages(request: LMRequest) -> list[Message]:
        if not request.messages:
            raise UsageError(f"model {request.model!r}: messages is empty; pass at least one")
        for i, message in enumerate(request.messages):
            if type(message) is dict and type(message.get("role")) is str:
                continue  # the common case, without the ABC check of isinstance(Mapping)
            if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
                raise UsageError(
                    f"messages[{i}]={message!r} is not a chat message; use "
                    '{"role": "user", "content": "..."}'
                )
        return list(request.messages)

    def split(self, request: LMRequest) -> tuple[LMRequest, ...]:
        """The requests to send for ``request`` (its ``n`` fanned out if not native)."""
        if not self.native_n and int(request.params.get("n") or 1) > 1:
            return split_n(request)
        return (request,)

    def merge(self, responses: list[LMResponse], *, model: str) -> LMResponse:
        """One response from the replies to :meth:`split`'s requests, in order."""
        return merge_responses(responses, model=model)

    # -- parsing ---------------------------------------------------------------

    def parse(
        self,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        *,
        model: str,
        api_key: str | None = None,
    ) -> LMResponse:
        """The response for a finished HTTP exchange, or raise its ``LMError``.

        ``api_key`` is only used to scrub it from error messages.
        """
        if not 200 <= status < 300:
            raise self.error_for_status(status, headers, body, model=model, api_key=api_key)
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise ProviderError(
                f"model {model!r}: HTTP {status} reply is not valid JSON ({type(exc).__name__})",
                model=model,
                status=status,
            ) from exc
        try:
            return self._parse_body(data, model=model)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise ProviderError(
                f"model {model!r}: HTTP {status} reply does not look like a {self.name} "
                f"response ({type(exc).__name__}: {_scrub(str(exc), api_key)})",
                model=model,
                status=status,
            ) from exc

    @abstractmethod
    def _parse_body(self, data: Any, *, model: str) -> LMResponse:
        """Completions and usage from a successful JSON body."""

    # -- failures: the one translation point -----------------------------------

    def error_for_status(
        self,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        *,
        model: str,
        api_key: str | None = None,
    ) -> LMError:
        """The ``LMError`` for a non-2xx answer (returned, for the caller to raise)."""
        data = _json_or_none(body)
        detail = self._error_detail(data) if data is not None else None
        if detail is None:
            detail = body[:200].decode("utf-8", "replace").strip() or "no error message"
        detail = _scrub(detail, api_key)
        where = f"model {model!r}: HTTP {status}"
        if status == 429:
            retry_after = parse_retry_after(headers)
            if retry_after is None and data is not None:
                retry_after = self._retry_after_from_body(data)
            hint = f" (retry after {retry_after:g} s)" if retry_after is not None else ""
            return RateLimitError(
                f"{where} rate limited{hint}: {detail}",
                model=model,
                status=status,
                retry_after=retry_after,
            )
        if status in (401, 403) or self._is_auth_failure(status, data):
            return AuthenticationError(
                f"{where} authentication failed: {detail.rstrip('. ')}. Check api_key or set "
                f"{' or '.join(self.env_keys)}",
                model=model,
                status=status,
            )
        overflow = self._context_overflow(data, detail) if status >= 400 else None
        if overflow is not None:
            return ContextWindowError(
                f"{where} the prompt exceeds the model's context window: "
                f"{detail.rstrip('. ')}. Shorten the prompt (fewer demos, shorter inputs or "
                "history) or use a model with a larger context window",
                model=model,
                status=status,
                prompt_tokens=overflow.prompt_tokens,
                context_window=overflow.context_window,
            )
        if status == 408 or status >= 500:
            return ProviderError(f"{where} provider error: {detail}", model=model, status=status)
        if 400 <= status < 500:
            return LMError(
                f"{where} request rejected: {detail}", model=model, status=status, retryable=False
            )
        return ProviderError(
            f"{where} unexpected status: {detail}", model=model, status=status, retryable=False
        )

    def error_for_exception(
        self, exc: BaseException, *, model: str, api_key: str | None = None
    ) -> LMError:
        """The ``LMError`` for a transport's failure (returned; raise it ``from exc``).

        The same error whichever transport ran: a timeout is an
        :class:`LMTimeoutError`; no connection or a dropped one a retryable
        :class:`ProviderError`; a body over ``lm_client.max_response_bytes`` a
        :class:`ProviderError` that is not retried (the same request would
        bring the same reply); a body that does not decode as its
        ``Content-Encoding`` says a retryable :class:`ProviderError`, like any
        other malformed reply.
        """
        kind = type(exc).__name__
        text = _scrub(str(exc), api_key)
        detail = f"{kind}: {text}" if text else kind
        status = getattr(exc, "status", None)
        reply = f"the HTTP {status} reply" if status is not None else "the reply"
        if isinstance(exc, TransportTimeout):
            return LMTimeoutError(f"model {model!r}: no answer in time ({detail})", model=model)
        if isinstance(exc, BadURL):
            return LMError(
                f"model {model!r}: bad api_base URL ({detail}); use http(s)://host[:port]/path",
                model=model,
                retryable=False,
            )
        if isinstance(exc, BadHeader):
            return LMError(
                f"model {model!r}: cannot send the request ({detail}); remove line breaks "
                "and NUL bytes from extra_headers and the API key",
                model=model,
                retryable=False,
            )
        if isinstance(exc, BodyTooLarge):
            return ProviderError(
                f"model {model!r}: {reply} is larger than "
                f"lm_client.max_response_bytes = {exc.limit} bytes ({_mib(exc.limit)}) once "
                "decoded; reading stopped there and the call is not retried. If replies "
                "this large are expected, raise lm_client.max_response_bytes "
                "(DSPEX_LM_CLIENT__MAX_RESPONSE_BYTES, or LM(..., max_response_bytes=...))",
                model=model,
                status=status,
                retryable=False,
            )
        if isinstance(exc, BadEncoding):
            return ProviderError(
                f"model {model!r}: {reply} says Content-Encoding "
                f"{exc.encoding!r} but {text}; a malformed reply, retried like one",
                model=model,
                status=status,
            )
        return ProviderError(f"model {model!r}: transport failed ({detail})", model=model)

    def _error_detail(self, data: Any) -> str | None:
        """The provider's error message inside an error body (``{"error": ...}``)."""
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            message = error.get("message")
            return str(message) if message else json.dumps(error)[:_MAX_DETAIL]
        if isinstance(error, str):
            return error
        return None

    def _context_overflow(self, data: Any, detail: str) -> ContextOverflow | None:
        """The overflow an error answer reports, or None when it is another failure.

        ``data`` is the parsed error body (None if not JSON), ``detail`` its
        message. The default matches ``detail`` against :attr:`context_patterns`.
        """
        for pattern in self.context_patterns:
            match = pattern.search(detail)
            if match is not None:
                groups = match.groupdict()
                return ContextOverflow(
                    _int_or_none(groups.get("prompt")), _int_or_none(groups.get("window"))
                )
        return None

    def _is_auth_failure(self, status: int, data: Any) -> bool:
        """Auth failures a provider signals with a status other than 401/403."""
        return False

    def _retry_after_from_body(self, data: Any) -> float | None:
        """A retry delay carried in a 429 body rather than in a header."""
        return None


# -- helpers the client uses ---------------------------------------------------


def parse_retry_after(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or HTTP-date) or ``retry-after-ms``."""
    lowered = {k.lower(): v for k, v in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = lowered.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import email.utils  # an HTTP date in Retry-After is rare: load the parser then

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def split_n(request: LMRequest) -> tuple[LMRequest, ...]:
    """``n`` copies of a request with ``n`` removed, for providers without native ``n``."""
    n = int(request.params.get("n") or 1)
    params = {k: v for k, v in request.params.items() if k != "n"}
    one = LMRequest(request.model, request.messages, params)
    return (one,) * max(1, n)


def merge_responses(responses: Sequence[LMResponse], *, model: str) -> LMResponse:
    """One response holding every completion of ``responses``, usage summed."""
    usage = Usage()
    completions: list[Completion] = []
    for response in responses:
        usage = usage + response.usage
        completions.extend(response.completions)
    return LMResponse(tuple(completions), usage, model)


async def send(
    transport: Transport,
    provider: Provider,
    call: HTTPCall,
    *,
    model: str,
    timeout: float | None = None,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> LMResponse:
    """Make ``call`` over ``transport`` (on its loop) and parse it; failures raise ``LMError``.

    ``timeout`` (seconds, None: none) bounds the exchange; ``max_response_bytes``
    the decoded body.
    """
    key = _key_of(call)
    body = wire_json(call.json)
    try:
        reply = await transport.request(
            call.method,
            call.url,
            call.headers,
            body,
            timeout=timeout,
            max_bytes=max_response_bytes,
        )
    except TransportError as exc:
        raise provider.error_for_exception(exc, model=model, api_key=key) from exc
    return provider.parse(reply.status, reply.headers, reply.body, model=model, api_key=key)


def text_parts(
    content: Any, where: str, *, native_documents: bool = False
) -> list[tuple[str, str]]:
    """A message content as ``[(kind, value)]``, from a string or OpenAI content parts.

    Kinds: ``("text", str)``, ``("image", url)``, ``("audio", data URL)``,
    ``("file", data URL)`` and ``("file_id", id)``; anything else raises naming ``where``.
    A ``document`` part (DSPy's ``Document``, Anthropic's block) is its text, or with
    ``native_documents`` ``("document", the block as JSON)``.
    """
    if isinstance(content, str):
        return [("text", content)]
    if not isinstance(content, Sequence):
        raise UsageError(f"{where}.content={content!r} must be a string or a list of parts")
    parts: list[tuple[str, str]] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text":
            parts.append(("text", str(part.get("text", ""))))
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else image
            parts.append(("image", str(url)))
        elif kind in ("input_audio", "file"):
            parts.append(_media_part(part, kind, f"{where}.content[{i}]"))
        elif kind == "document":
            if native_documents:
                parts.append(("document", json.dumps(part)))
            else:
                parts.append(("text", document_text(part, f"{where}.content[{i}]")))
        else:
            raise UsageError(
                f"{where}.content[{i}] has type {kind!r}; this provider takes 'text', "
                "'image_url', 'input_audio', 'file' and 'document' parts"
            )
    return parts


def _media_part(part: Mapping[str, Any], kind: str, where: str) -> tuple[str, str]:
    """An ``input_audio`` or ``file`` content part as ``(kind, data URL or file id)``."""
    body = part.get(kind)
    if kind == "input_audio":
        if isinstance(body, Mapping) and body.get("data") and body.get("format"):
            return "audio", f"data:audio/{body['format']};base64,{body['data']}"
        raise UsageError(
            f"{where}: an input_audio part needs {{'data': <base64>, 'format': 'wav'}}, "
            f"got {body!r}"[:300]
        )
    if isinstance(body, Mapping):
        if body.get("file_data"):
            return "file", str(body["file_data"])
        if body.get("file_id"):
            return "file_id", str(body["file_id"])
    raise UsageError(f"{where}: a file part needs file_data (a data: URL) or file_id")


def split_data_url(url: str) -> tuple[str, str] | None:
    """``(media_type, base64 data)`` of a ``data:`` URL, else None."""
    if not url.startswith("data:"):
        return None
    head, sep, data = url[5:].partition(",")
    media_type, _, encoding = head.partition(";")
    if not sep or encoding != "base64":
        return None
    return media_type or "application/octet-stream", data


_WIRE_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def wire_json(data: Mapping[str, Any]) -> bytes:
    """A request body as sent: compact UTF-8 JSON.

    One encoder made once: ``json.dumps`` with options builds a new encoder
    per call.
    """
    return _WIRE_ENCODER.encode(data).encode()


def _key_of(call: HTTPCall) -> str | None:
    for name in call.secret_headers:
        value = call.headers.get(name)
        if value:
            return value.removeprefix("Bearer ").strip()
    return None


def _mib(size: int) -> str:
    return f"{size / (1 << 20):g} MiB"


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def _scrub(text: str, api_key: str | None) -> str:
    """``text`` (a provider's or httpx's message) with the API key masked, and cut short."""
    if api_key:
        text = _key_pattern(api_key).sub(_REDACTED, text)
    text = _KEY_PATTERN.sub(_REDACTED, text)
    return text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL] + "..."


def _key_pattern(api_key: str) -> re.Pattern[str]:
    """Where ``api_key`` occurs in text: as a whole token, or anywhere if it is long.

    A short key (tests use "k" or "test") masked as a substring would mangle
    ordinary words ("un<redacted>nown"), and the message would no longer say
    what went wrong.
    """
    key = re.escape(api_key)
    if len(api_key) >= _ANYWHERE_LENGTH:
        return re.compile(key)
    return re.compile(rf"(?<![{_WORD_CHARS}]){key}(?![{_WORD_CHARS}])")
