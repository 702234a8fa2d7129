"""The three fake provider dialects: OpenAI-compatible, Anthropic, Gemini.

The OpenAI-compatible fake also answers ``/v1/embeddings`` and the Responses
API's ``/v1/responses`` (see ``_fake_openai_routes``).

Each one answers its real API's route, checks auth and payload the way that
API does (so a client that sends the wrong shape fails here as it would in
production), and renders replies and errors in that API's JSON shapes.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from typing import Any, Literal

from dspex.errors import UsageError
from dspex.testing._fake_http import HTTPRequest, HTTPResponse
from dspex.testing._fake_openai_routes import (
    EMBEDDINGS_PATH,
    RESPONSES_PATH,
    EmbeddingsStyle,
    EmbedFn,
    check_embeddings,
    check_responses,
    embeddings_messages,
    render_embeddings,
    render_responses,
    responses_messages,
)
from dspex.testing._fake_servers import FakeProvider, Reply

__all__ = ["FakeAnthropic", "FakeGemini", "FakeOpenAI"]

_Headers = tuple[tuple[str, str], ...]


def _json(status: int, payload: dict[str, Any], headers: _Headers = ()) -> HTTPResponse:
    return HTTPResponse(status, json.dumps(payload).encode(), headers)


def _text_of(content: Any) -> str:
    """Plain text of a message content: a string, or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _body_model(body: Any) -> str:
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else ""


def _usage(reply: Reply, prompt: str, texts: Sequence[str]) -> tuple[int, int]:
    """(prompt, completion) tokens: the reply's own counts, else a word count."""
    prompt_tokens = reply.prompt_tokens
    if prompt_tokens is None:
        prompt_tokens = len(prompt.split())
    completion_tokens = reply.completion_tokens
    if completion_tokens is None:
        completion_tokens = sum(len(t.split()) for t in texts)
    return prompt_tokens, completion_tokens


def _texts(reply: Reply, n: int) -> tuple[str, ...]:
    return reply.texts if reply.texts is not None else (reply.text,) * n


def _pieces(text: str) -> list[str]:
    """``text`` cut into word-sized stream deltas that join back to it exactly."""
    return re.findall(r"\S+\s*|\s+", text)


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    text = data if isinstance(data, str) else json.dumps(data)
    return f"{head}data: {text}\n\n".encode()


# -- OpenAI ---------------------------------------------------------------

_OPENAI_ROLES = {"system", "developer", "user", "assistant", "tool"}
_OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "not_found_error",
    429: "requests",
}


class FakeOpenAI(FakeProvider):
    """A fake OpenAI-compatible ``POST /v1/chat/completions`` (``url`` ends in ``/v1``).

    Honours ``n``. ``reject_json_schema=True`` mimics llama.cpp's server: it
    answers 500 to ``response_format.type == "json_schema"`` and accepts
    ``{"type": "json_object", "schema": {...}}``. ``context_error="llama_cpp"``
    answers an over-long prompt as llama.cpp's server does
    (``exceed_context_size_error``) instead of as OpenAI does
    (``context_length_exceeded``).

    It also serves ``POST /v1/embeddings`` (vectors from ``embed(text)``,
    default: a hashed bag of words, so texts sharing words are close;
    ``embeddings_style="llama_cpp"`` answers as llama-cpp-python's server does
    for a model without pooling: one vector per word, and HTTP 500 for more
    than one input) and ``POST /v1/responses`` (OpenAI's Responses API,
    refusing chat-only parameters as the real one does).
    """

    name = "openai"
    base_path = "/v1"
    secret_headers = frozenset({"authorization", "api-key"})

    def __init__(
        self,
        *,
        reject_json_schema: bool = False,
        context_error: Literal["openai", "llama_cpp"] = "openai",
        embed: EmbedFn | None = None,
        embeddings_style: EmbeddingsStyle = "openai",
        **kwargs: Any,
    ) -> None:
        if context_error not in ("openai", "llama_cpp"):
            raise UsageError(
                f"context_error={context_error!r} is not a known style; use 'openai' or 'llama_cpp'"
            )
        super().__init__(**kwargs)
        if embeddings_style not in ("openai", "llama_cpp"):
            raise UsageError(
                f"embeddings_style={embeddings_style!r} is not a known style; use 'openai' "
                "or 'llama_cpp'"
            )
        self.reject_json_schema = reject_json_schema
        self.context_error = context_error
        self.embed = embed
        self.embeddings_style = embeddings_style

    def route(self, request: HTTPRequest, body: Any) -> str | None:
        paths = ("/v1/chat/completions", EMBEDDINGS_PATH, RESPONSES_PATH)
        if request.method != "POST" or request.path not in paths:
            return None
        return _body_model(body)

    def render_for(
        self, request: HTTPRequest, body: Any, model: str, reply: Reply
    ) -> dict[str, Any]:
        if request.path == EMBEDDINGS_PATH:
            return render_embeddings(body, self.embed, self.embeddings_style)
        if request.path == RESPONSES_PATH:
            return render_responses(body, reply, self.request_count)
        return self.render(body, model, reply)

    def api_key_of(self, request: HTTPRequest) -> str | None:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        return key.strip() if scheme.lower() == "bearer" and key.strip() else None

    def check_request(self, request: HTTPRequest, body: Any) -> HTTPResponse | None:
        sent = self.api_key_of(request)
        if self.key_rejected(sent):
            if not sent:
                return self.error_response(
                    401, "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'."
                )
            masked = f"{sent[:3]}****{sent[-4:]}" if len(sent) > 12 else "****"
            return self.error_response(401, f"Incorrect API key provided: {masked}.")
        if not isinstance(body, dict):
            return self.error_response(400, "the request body must be a JSON object")
        if not isinstance(body.get("model"), str):
            return self.error_response(400, "you must provide a model parameter")
        if request.path == EMBEDDINGS_PATH:
            problem = check_embeddings(body, self.embeddings_style)
            return None if problem is None else self.error_response(*problem)
        if request.path == RESPONSES_PATH:
            problem = check_responses(body)
            return None if problem is None else self.error_response(*problem)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self.error_response(400, "'messages' must be a non-empty array")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in _OPENAI_ROLES:
                return self.error_response(400, f"messages[{i}].role is missing or invalid")
        n = body.get("n", 1)
        if not isinstance(n, int) or not 1 <= n <= 128:
            return self.error_response(400, f"n={n!r} must be an integer in [1, 128]")
        fmt = body.get("response_format")
        if self.reject_json_schema and isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            return self.error_response(500, "Unsupported response_format type: json_schema")
        return None

    def render(self, body: Any, model: str, reply: Reply) -> dict[str, Any]:
        texts = _texts(reply, int(body.get("n", 1)))
        prompt = " ".join(m["content"] for m in self.messages_of(body))
        prompt_tokens, completion_tokens = _usage(reply, prompt, texts)
        return {
            "id": f"chatcmpl-fake-{self.request_count}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": reply.finish_reason,
                }
                for i, text in enumerate(texts)
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def stream_events(self, body: Any, model: str, reply: Reply) -> list[tuple[bytes, bool]]:
        whole = self.render(body, model, reply)
        head = {k: whole[k] for k in ("id", "created", "model")}
        head["object"] = "chat.completion.chunk"
        frames: list[tuple[bytes, bool]] = []
        for choice in whole["choices"]:
            index = choice["index"]
            for piece in _pieces(choice["message"]["content"]):
                delta = {"index": index, "delta": {"content": piece}, "finish_reason": None}
                frames.append((_sse({**head, "choices": [delta]}), True))
            end = {"index": index, "delta": {}, "finish_reason": choice["finish_reason"]}
            frames.append((_sse({**head, "choices": [end]}), False))
        if (body.get("stream_options") or {}).get("include_usage"):
            frames.append((_sse({**head, "choices": [], "usage": whole["usage"]}), False))
        frames.append((_sse("[DONE]"), False))
        return frames

    def error_response(self, status: int, message: str, headers: _Headers = ()) -> HTTPResponse:
        kind = _OPENAI_ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid")
        code = "invalid_api_key" if status == 401 else None
        error = {"message": message, "type": kind, "param": None, "code": code}
        return _json(status, {"error": error}, headers)

    def context_window_response(self, prompt_tokens: int, limit: int, status: int) -> HTTPResponse:
        if self.context_error == "llama_cpp":
            error: dict[str, Any] = {
                "code": status,
                "message": f"request ({prompt_tokens} tokens) exceeds the available context "
                f"size ({limit} tokens), try increasing it",
                "type": "exceed_context_size_error",
                "n_prompt_tokens": prompt_tokens,
                "n_ctx": limit,
            }
        else:
            error = {
                "message": f"This model's maximum context length is {limit} tokens. However, "
                f"your messages resulted in {prompt_tokens} tokens. Please reduce the length "
                "of the messages.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        return _json(status, {"error": error})

    def messages_of(self, body: Any) -> list[dict[str, str]]:
        if "messages" not in body and "input" in body:
            if "instructions" in body or not _all_strings(body["input"]):
                return responses_messages(body)
            return embeddings_messages(body)
        return [
            {"role": str(m.get("role")), "content": _text_of(m.get("content"))}
            for m in body.get("messages", [])
        ]


def _all_strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


# -- Anthropic ------------------------------------------------------------

_ANTHROPIC_KEYS = {
    "model",
    "messages",
    "max_tokens",
    "system",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "metadata",
    "stream",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
}
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens"}


class FakeAnthropic(FakeProvider):
    """A fake Anthropic Messages API, ``POST /v1/messages`` (``url`` ends in ``/v1``).

    Requires ``x-api-key`` and ``anthropic-version`` headers and ``max_tokens``,
    and rejects a ``system`` role inside ``messages`` and unknown top-level
    keys (such as ``n``), as the real API does.
    """

    name = "anthropic"
    base_path = "/v1"
    secret_headers = frozenset({"x-api-key", "authorization"})

    def route(self, request: HTTPRequest, body: Any) -> str | None:
        if request.method != "POST" or request.path != "/v1/messages":
            return None
        return _body_model(body)

    def api_key_of(self, request: HTTPRequest) -> str | None:
        return request.headers.get("x-api-key") or None

    def check_request(self, request: HTTPRequest, body: Any) -> HTTPResponse | None:
        sent = self.api_key_of(request)
        if self.key_rejected(sent):
            message = "x-api-key header is required" if not sent else "invalid x-api-key"
            return self.error_response(401, message)
        if not request.headers.get("anthropic-version"):
            return self.error_response(400, "anthropic-version: header is required")
        if not isinstance(body, dict):
            return self.error_response(400, "the request body must be a JSON object")
        for key in body:
            if key not in _ANTHROPIC_KEYS:
                return self.error_response(400, f"{key}: Extra inputs are not permitted")
        if not isinstance(body.get("model"), str):
            return self.error_response(400, "model: Field required")
        max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return self.error_response(400, "max_tokens: Field required (an integer >= 1)")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self.error_response(400, "messages: Field required (a non-empty list)")
        for i, message in enumerate(messages):
            role = message.get("role") if isinstance(message, dict) else None
            if role not in ("user", "assistant"):
                return self.error_response(
                    400,
                    f"messages.{i}.role: Input should be 'user' or 'assistant' (got {role!r}); "
                    "system prompts go in the top-level 'system' parameter",
                )
        return None

    def render(self, body: Any, model: str, reply: Reply) -> dict[str, Any]:
        text = reply.texts[0] if reply.texts else reply.text
        prompt = " ".join(m["content"] for m in self.messages_of(body))
        prompt_tokens, completion_tokens = _usage(reply, prompt, [text])
        return {
            "id": f"msg_fake_{self.request_count}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": text}],
            "stop_reason": _ANTHROPIC_STOP.get(reply.finish_reason, reply.finish_reason),
            "stop_sequence": None,
            "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens},
        }

    def stream_events(self, body: Any, model: str, reply: Reply) -> list[tuple[bytes, bool]]:
        whole = self.render(body, model, reply)
        usage = whole["usage"]
        start = {k: v for k, v in whole.items() if k not in ("content", "stop_reason")}
        start.update(content=[], stop_reason=None, usage={**usage, "output_tokens": 1})
        frames = [
            (_sse({"type": "message_start", "message": start}, "message_start"), False),
            (
                _sse(
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                    "content_block_start",
                ),
                False,
            ),
            (_sse({"type": "ping"}, "ping"), False),
        ]
        for piece in _pieces(whole["content"][0]["text"]):
            delta = {"type": "content_block_delta", "index": 0}
            delta["delta"] = {"type": "text_delta", "text": piece}
            frames.append((_sse(delta, "content_block_delta"), True))
        stop = {"type": "content_block_stop", "index": 0}
        frames.append((_sse(stop, "content_block_stop"), False))
        end = {
            "type": "message_delta",
            "delta": {"stop_reason": whole["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        }
        frames.append((_sse(end, "message_delta"), False))
        frames.append((_sse({"type": "message_stop"}, "message_stop"), False))
        return frames

    def error_response(self, status: int, message: str, headers: _Headers = ()) -> HTTPResponse:
        kind = _ANTHROPIC_ERROR_TYPES.get(status, "api_error")
        payload = {"type": "error", "error": {"type": kind, "message": message}}
        return _json(status, payload, headers)

    def context_window_response(self, prompt_tokens: int, limit: int, status: int) -> HTTPResponse:
        message = f"prompt is too long: {prompt_tokens} tokens > {limit} maximum"
        return self.error_response(status, message)

    def messages_of(self, body: Any) -> list[dict[str, str]]:
        system = body.get("system")
        out = [{"role": "system", "content": _text_of(system)}] if system else []
        out.extend(
            {"role": str(m.get("role")), "content": _text_of(m.get("content"))}
            for m in body.get("messages", [])
        )
        return out


# -- Gemini ---------------------------------------------------------------

_GEMINI_KEYS = {
    "contents",
    "systemInstruction",
    "generationConfig",
    "safetySettings",
    "tools",
    "toolConfig",
    "cachedContent",
}
_GEMINI_CONFIG_KEYS = {
    "temperature",
    "maxOutputTokens",
    "candidateCount",
    "stopSequences",
    "topP",
    "topK",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "responseModalities",
    "thinkingConfig",
}
_GEMINI_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_GEMINI_FINISH = {"stop": "STOP", "length": "MAX_TOKENS"}
_GENERATE = ":generateContent"
_STREAM = ":streamGenerateContent"
_MODELS = "/v1beta/models/"


def _camel(key: str) -> str:
    # The REST API takes proto field names in either spelling.
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)


class FakeGemini(FakeProvider):
    """A fake Gemini ``POST /v1beta/models/{model}:generateContent`` (``url`` ends
    in ``/v1beta``).

    Takes the key from ``x-goog-api-key`` or the ``key`` query parameter; an
    unknown key is a 400 with reason ``API_KEY_INVALID``, as in the real API.
    Honours ``generationConfig.candidateCount``.
    """

    name = "gemini"
    base_path = "/v1beta"
    secret_headers = frozenset({"x-goog-api-key", "authorization"})
    secret_query = frozenset({"key"})

    def route(self, request: HTTPRequest, body: Any) -> str | None:
        path = request.path
        if request.method != "POST" or not path.startswith(_MODELS):
            return None
        for action in (_GENERATE, _STREAM):
            if path.endswith(action):
                return path[len(_MODELS) : -len(action)] or None
        return None

    def api_key_of(self, request: HTTPRequest) -> str | None:
        return request.headers.get("x-goog-api-key") or request.query.get("key") or None

    def check_request(self, request: HTTPRequest, body: Any) -> HTTPResponse | None:
        sent = self.api_key_of(request)
        if not sent:
            return self.error_response(
                403, "Method doesn't allow unregistered callers. Please use an API key."
            )
        if self.key_rejected(sent):
            invalid_key = {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
            }
            message = "API key not valid. Please pass a valid API key."
            return self.error_response(400, message, details=[invalid_key])
        if not isinstance(body, dict):
            return self.error_response(400, "the request body must be a JSON object")
        for key in body:
            if _camel(key) not in _GEMINI_KEYS:
                return self.error_response(400, f'Invalid JSON payload: unknown name "{key}"')
        config = body.get("generationConfig", body.get("generation_config", {}))
        if not isinstance(config, dict):
            return self.error_response(400, "generationConfig must be an object")
        for key in config:
            if _camel(key) not in _GEMINI_CONFIG_KEYS:
                return self.error_response(
                    400, f"Invalid JSON payload: unknown name \"{key}\" at 'generation_config'"
                )
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            return self.error_response(400, "contents is not specified")
        for i, content in enumerate(contents):
            role = content.get("role", "user") if isinstance(content, dict) else None
            if role not in ("user", "model"):
                return self.error_response(
                    400, f"contents[{i}].role: please use a valid role: user, model (got {role!r})"
                )
        return None

    def render(self, body: Any, model: str, reply: Reply) -> dict[str, Any]:
        config = body.get("generationConfig", body.get("generation_config", {}))
        count = config.get("candidateCount", config.get("candidate_count", 1))
        texts = _texts(reply, int(count))
        prompt = " ".join(m["content"] for m in self.messages_of(body))
        prompt_tokens, completion_tokens = _usage(reply, prompt, texts)
        finish = _GEMINI_FINISH.get(reply.finish_reason, reply.finish_reason)
        return {
            "candidates": [
                {
                    "content": {"parts": [{"text": text}], "role": "model"},
                    "finishReason": finish,
                    "index": i,
                }
                for i, text in enumerate(texts)
            ],
            "usageMetadata": {
                "promptTokenCount": prompt_tokens,
                "candidatesTokenCount": completion_tokens,
                "totalTokenCount": prompt_tokens + completion_tokens,
            },
            "modelVersion": model,
        }

    def is_stream(self, request: HTTPRequest, body: Any) -> bool:
        return request.path.endswith(_STREAM) and request.query.get("alt") == "sse"

    def stream_events(self, body: Any, model: str, reply: Reply) -> list[tuple[bytes, bool]]:
        whole = self.render(body, model, reply)
        frames: list[tuple[bytes, bool]] = []
        for candidate in whole["candidates"]:
            pieces = _pieces(candidate["content"]["parts"][0]["text"]) or [""]
            for j, piece in enumerate(pieces):
                part = {"content": {"parts": [{"text": piece}], "role": "model"}}
                part["index"] = candidate["index"]
                chunk: dict[str, Any] = {"candidates": [part], "modelVersion": model}
                if j == len(pieces) - 1:
                    part["finishReason"] = candidate["finishReason"]
                    chunk["usageMetadata"] = whole["usageMetadata"]
                frames.append((_sse(chunk), bool(piece)))
        return frames

    def error_response(
        self,
        status: int,
        message: str,
        headers: _Headers = (),
        details: list[dict[str, Any]] | None = None,
    ) -> HTTPResponse:
        error: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": _GEMINI_STATUS.get(status, "INTERNAL" if status >= 500 else "UNKNOWN"),
        }
        if details:
            error["details"] = details
        return _json(status, {"error": error}, headers)

    def context_window_response(self, prompt_tokens: int, limit: int, status: int) -> HTTPResponse:
        message = (
            f"The input token count ({prompt_tokens}) exceeds the maximum number of tokens "
            f"allowed ({limit})."
        )
        return self.error_response(status, message)

    def messages_of(self, body: Any) -> list[dict[str, str]]:
        def text(content: Any) -> str:
            parts = content.get("parts", []) if isinstance(content, dict) else []
            return "".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))

        system = body.get("systemInstruction", body.get("system_instruction"))
        out = [{"role": "system", "content": text(system)}] if system else []
        for content in body.get("contents", []):
            role = content.get("role", "user") if isinstance(content, dict) else "user"
            out.append({"role": "assistant" if role == "model" else role, "content": text(content)})
        return out
