"""Streaming replies: server-sent events in each provider's dialect.

:func:`send_stream` makes a provider's streaming call over a transport's
:meth:`~dspex.actors._lm._transport.Transport.stream`, hands each text delta
of the first completion to ``on_chunk`` (on the loop thread) as it arrives,
and returns the complete :class:`LMResponse`, built by folding the events
back into the provider's non-streaming body and parsing that with the
provider's own parser (one parser, one error translation).

Failure rule: before the first delta reaches ``on_chunk`` a failure raises
the same ``LMError`` a non-streaming call would (so the pipeline retries it
as usual); after it, a failure raises a non-retryable ``LMError``: text has
already gone to the caller and must never be replayed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from dspex.actors._lm._providers._base import HTTPCall, Provider, _key_of, wire_json
from dspex.actors._lm._transport import DEFAULT_MAX_RESPONSE_BYTES, Transport, TransportError
from dspex.actors._lm._types import LMResponse
from dspex.errors import LMError

__all__ = ["SSEDecoder", "StreamFold", "send_stream", "streams"]

OnChunk = Callable[[str], None]
"""Receives each text delta of completion 0 (loop thread); quick, must not raise."""


class SSEDecoder:
    """Incremental ``text/event-stream`` parser: bytes in, ``(event, data)`` pairs out.

    Follows the WHATWG rules that matter to LM APIs: lines end in LF, CRLF
    or CR; ``data:`` lines of one event join with LF; a blank line ends the
    event; lines starting with ``:`` are comments (keep-alives).
    """

    __slots__ = ("_buffer", "_data", "_event")

    def __init__(self) -> None:
        self._buffer = ""
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes | str) -> list[tuple[str, str]]:
        text = chunk.decode("utf-8", "replace") if isinstance(chunk, bytes) else chunk
        self._buffer += text
        events: list[tuple[str, str]] = []
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                return events
            line, width = cut
            raw = self._buffer[:line]
            self._buffer = self._buffer[line + width :]
            if not raw:
                if self._data:
                    events.append((self._event or "message", "\n".join(self._data)))
                self._event, self._data = "", []
                continue
            if raw.startswith(":"):
                continue
            name, _, value = raw.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                self._data.append(value)
            elif name == "event":
                self._event = value

    def close(self) -> list[tuple[str, str]]:
        """Events a stream ending without its final blank line still completes."""
        tail = self.feed("\n\n") if self._buffer or self._data else []
        return tail


def _line_end(buffer: str) -> tuple[int, int] | None:
    """Index and width of the first line ending in ``buffer`` (a lone CR at the end waits)."""
    lf, cr = buffer.find("\n"), buffer.find("\r")
    if cr == -1 or (lf != -1 and lf < cr):
        return None if lf == -1 else (lf, 1)
    if cr + 1 == len(buffer):
        return None  # may be the first half of CRLF
    return (cr, 2) if buffer[cr + 1] == "\n" else (cr, 1)


# -- folding events back into a provider's whole reply ---------------------------------


class StreamFold:
    """Folds one provider's events into its non-streaming body; yields the text deltas."""

    done = False
    """True once the provider's end-of-stream event arrived."""

    needs_end = True
    """False when the dialect has no end marker (Gemini): the end of the body is the end."""

    def event(self, name: str, data: str) -> str | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def body(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError


class _OpenAIFold(StreamFold):
    def __init__(self) -> None:
        self._texts: dict[int, list[str]] = {}
        self._finish: dict[int, str | None] = {}
        self._usage: dict[str, Any] = {}
        self._error: dict[str, Any] | None = None

    def event(self, name: str, data: str) -> str | None:
        if data.strip() == "[DONE]":
            self.done = True
            return None
        chunk = json.loads(data)
        if "error" in chunk and "choices" not in chunk:
            self._error = chunk
            self.done = True
            return None
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        out: str | None = None
        for choice in chunk.get("choices") or ():
            index = int(choice.get("index", 0))
            parts = self._texts.setdefault(index, [])
            delta = (choice.get("delta") or {}).get("content")
            if delta:
                parts.append(delta)
                if index == 0:
                    out = delta if out is None else out + delta
            if choice.get("finish_reason"):
                self._finish[index] = choice["finish_reason"]
        return out

    def body(self) -> dict[str, Any]:
        if self._error is not None:
            return self._error
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": "".join(parts)},
                "finish_reason": self._finish.get(i),
            }
            for i, parts in sorted(self._texts.items())
        ] or [{"index": 0, "message": {"content": ""}, "finish_reason": None}]
        return {"choices": choices, "usage": self._usage}


class _AnthropicFold(StreamFold):
    def __init__(self) -> None:
        self._text: list[str] = []
        self._stop: str | None = None
        self._usage: dict[str, Any] = {}
        self._error: dict[str, Any] | None = None

    def event(self, name: str, data: str) -> str | None:
        payload = json.loads(data)
        kind = payload.get("type", name)
        if kind == "message_start":
            self._usage.update((payload.get("message") or {}).get("usage") or {})
        elif kind == "content_block_delta":
            delta = payload.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                self._text.append(delta["text"])
                return str(delta["text"])
        elif kind == "message_delta":
            self._stop = (payload.get("delta") or {}).get("stop_reason") or self._stop
            self._usage.update(payload.get("usage") or {})
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            self._error = payload
            self.done = True
        return None

    def body(self) -> dict[str, Any]:
        if self._error is not None:
            return self._error
        return {
            "content": [{"type": "text", "text": "".join(self._text)}],
            "stop_reason": self._stop,
            "usage": self._usage,
        }


class _GeminiFold(StreamFold):
    needs_end = False

    def __init__(self) -> None:
        self._texts: dict[int, list[str]] = {}
        self._finish: dict[int, str] = {}
        self._usage: dict[str, Any] = {}
        self._feedback: dict[str, Any] | None = None

    def event(self, name: str, data: str) -> str | None:
        payload = json.loads(data)
        if payload.get("usageMetadata"):
            self._usage = payload["usageMetadata"]
        if payload.get("promptFeedback"):
            self._feedback = payload["promptFeedback"]
        out: str | None = None
        for candidate in payload.get("candidates") or ():
            index = int(candidate.get("index", 0))
            parts = self._texts.setdefault(index, [])
            for part in (candidate.get("content") or {}).get("parts") or ():
                text = part.get("text")
                if text and not part.get("thought"):
                    parts.append(text)
                    if index == 0:
                        out = text if out is None else out + text
            if candidate.get("finishReason"):
                self._finish[index] = candidate["finishReason"]
        return out

    def body(self) -> dict[str, Any]:
        candidates = [
            {
                "index": i,
                "content": {"parts": [{"text": "".join(parts)}], "role": "model"},
                "finishReason": self._finish.get(i),
            }
            for i, parts in sorted(self._texts.items())
        ]
        body: dict[str, Any] = {"candidates": candidates, "usageMetadata": self._usage}
        if self._feedback is not None:
            body["promptFeedback"] = self._feedback
        return body


_FOLDS: dict[str, type[StreamFold]] = {
    "openai": _OpenAIFold,
    "anthropic": _AnthropicFold,
    "gemini": _GeminiFold,
}


def streams(provider: Provider) -> bool:
    """Whether dspex can stream ``provider``'s replies (others answer in one piece)."""
    return provider.name in _FOLDS and type(provider).__module__.startswith("dspex.")


def stream_call(provider: Provider, call: HTTPCall) -> HTTPCall:
    """``call`` turned into its provider's streaming form."""
    headers = {**call.headers, "accept": "text/event-stream", "accept-encoding": "identity"}
    body = dict(call.json)
    url = call.url
    if provider.name == "gemini":
        url = url.replace(":generateContent", ":streamGenerateContent")
        url += ("&" if "?" in url else "?") + "alt=sse"
    else:
        body["stream"] = True
        if provider.name == "openai":
            body["stream_options"] = {"include_usage": True}
    return call._replace(url=url, headers=headers, json=body)


async def send_stream(
    transport: Transport,
    provider: Provider,
    call: HTTPCall,
    on_chunk: OnChunk,
    *,
    model: str,
    timeout: float | None = None,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> LMResponse:
    """Make ``call`` as a stream; ``on_chunk`` gets each text delta; returns the whole reply."""
    key = _key_of(call)
    call = stream_call(provider, call)
    payload = wire_json(call.json)
    fold = _FOLDS[provider.name]()
    decoder = SSEDecoder()
    sent = False
    try:
        reply = await transport.stream(
            call.method,
            call.url,
            call.headers,
            payload,
            timeout=timeout,
            max_bytes=max_response_bytes,
        )
    except TransportError as exc:
        raise provider.error_for_exception(exc, model=model, api_key=key) from exc
    try:
        if not 200 <= reply.status < 300:
            try:
                whole = await reply.read()
            except TransportError as exc:
                raise provider.error_for_exception(exc, model=model, api_key=key) from exc
            return provider.parse(reply.status, reply.headers, whole, model=model, api_key=key)
        if "json" in reply.headers.get("content-type", ""):
            # A server that ignores the stream flag answers whole: one chunk.
            try:
                whole = await reply.read()
            except TransportError as exc:
                raise provider.error_for_exception(exc, model=model, api_key=key) from exc
            response = provider.parse(reply.status, reply.headers, whole, model=model, api_key=key)
            if response.texts and response.texts[0]:
                on_chunk(response.texts[0])
            return response
        try:
            async for raw in reply:
                for name, data in decoder.feed(raw):
                    if fold.done:
                        continue
                    delta = fold.event(name, data)
                    if delta:
                        sent = True
                        on_chunk(delta)
            for name, data in decoder.close():
                if not fold.done:
                    delta = fold.event(name, data)
                    if delta:
                        sent = True
                        on_chunk(delta)
        except TransportError as exc:
            error = provider.error_for_exception(exc, model=model, api_key=key)
            if sent:
                raise _interrupted(model, str(error)) from exc
            raise error from exc
        except ValueError as exc:  # an event that is not JSON
            if sent:
                raise _interrupted(model, f"bad event ({type(exc).__name__})") from exc
            raise LMError(
                f"model {model!r}: the stream sent an event that is not JSON",
                model=model,
                status=reply.status,
                retryable=True,
            ) from exc
        if fold.needs_end and not fold.done:
            error_text = "the stream ended before its end-of-stream event"
            if sent:
                raise _interrupted(model, error_text)
            raise LMError(f"model {model!r}: {error_text}", model=model, retryable=True)
        body = json.dumps(fold.body()).encode()
        try:
            return provider.parse(200, reply.headers, body, model=model, api_key=key)
        except LMError as exc:
            if sent:
                raise _interrupted(model, str(exc)) from exc
            raise
    finally:
        await reply.aclose()


def _interrupted(model: str, why: str) -> LMError:
    # Not retryable: the caller already has part of this reply.
    return LMError(
        f"model {model!r}: the stream broke after text was sent ({why}); it is not "
        "retried because the consumer already received part of the reply",
        model=model,
        retryable=False,
    )
