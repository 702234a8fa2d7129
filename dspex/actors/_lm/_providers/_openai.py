"""The OpenAI-compatible chat completions wire format (``openai/<model>``).

With ``api_base`` it also covers vLLM, Ollama, llama.cpp's server, OpenRouter
and Together. llama.cpp's server wants JSON schemas as
``{"type": "json_object", "schema": ...}``; ``json_schema_style="llama_cpp"``
rewrites OpenAI's ``json_schema`` form into that.

A prompt longer than the context window is recognised in each server's words:
OpenAI's code ``context_length_exceeded`` ("This model's maximum context
length is M tokens. However, your messages resulted in N tokens"; vLLM,
OpenRouter and llama-cpp-python say the same), and llama.cpp's server type
``exceed_context_size_error`` with ``n_prompt_tokens``/``n_ctx`` (HTTP 400;
500 in builds from before October 2025).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Literal

from dspex.actors._lm._providers._base import (
    ContextOverflow,
    HTTPCall,
    Provider,
    _int_or_none,
)
from dspex.actors._lm._providers._documents import text_documents
from dspex.actors._lm._types import Completion, LMRequest, LMResponse, Usage
from dspex.errors import UsageError

__all__ = ["OpenAIProvider", "as_openai_format"]

JsonSchemaStyle = Literal["openai", "llama_cpp"]
_STYLES = ("openai", "llama_cpp")
_CONTEXT_CODES = frozenset({"context_length_exceeded", "exceed_context_size_error"})


class OpenAIProvider(Provider):
    """``POST {api_base}/chat/completions`` with ``Authorization: Bearer``."""

    name = "openai"
    default_api_base = "https://api.openai.com/v1"
    env_keys = ("OPENAI_API_KEY",)
    secret_headers = frozenset({"authorization"})
    context_patterns = (
        re.compile(
            r"maximum context length is (?P<window>\d+) tokens.*?"
            r"(?:resulted in|requested(?: about)?|has) (?P<prompt>\d+)",
            re.IGNORECASE | re.DOTALL,
        ),
        # llama-cpp-python's message when its server could not rephrase it
        re.compile(
            r"Requested tokens \((?P<prompt>\d+)\) exceed context window of (?P<window>\d+)"
        ),
        re.compile(
            r"maximum context length|exceeds the available context size|"
            r"context_length_exceeded",
            re.IGNORECASE,
        ),
    )

    def __init__(self, *, json_schema_style: JsonSchemaStyle = "openai") -> None:
        if json_schema_style not in _STYLES:
            raise UsageError(
                f"json_schema_style={json_schema_style!r} is not supported; use one of {_STYLES}"
            )
        self.json_schema_style = json_schema_style

    def __repr__(self) -> str:
        return f"OpenAIProvider(json_schema_style={self.json_schema_style!r})"

    def build(self, request: LMRequest, *, api_base: str | None, api_key: str | None) -> HTTPCall:
        key = self._key_or_fail(request, api_base, api_key)
        # A copy only where the body needs a dict: it is encoded, never mutated.
        messages = text_documents(
            [m if type(m) is dict else dict(m) for m in self._checked_messages(request)]
        )
        params = self._params(request)
        if "response_format" in params:
            params["response_format"] = self._response_format(params["response_format"])
        name = self.model_name(request.model)
        if "max_tokens" in params and self.json_schema_style == "openai":
            # As DSPy 3.4.1 sends it to every openai/ model: max_tokens is deprecated in
            # OpenAI's API and refused by its reasoning models. (llama.cpp keeps max_tokens.)
            params["max_completion_tokens"] = params.pop("max_tokens")
        body: dict[str, Any] = {"model": name, "messages": messages}
        body.update(params)
        headers = {"content-type": "application/json"}
        if key:
            headers["authorization"] = f"Bearer {key}"
        return HTTPCall(
            "POST",
            f"{self.base_url(api_base)}/chat/completions",
            headers,
            body,
            self.secret_headers,
        )

    def _response_format(self, value: Any) -> Any:
        fmt = as_openai_format(value)
        if self.json_schema_style != "llama_cpp" or not isinstance(fmt, Mapping):
            return fmt
        if fmt.get("type") != "json_schema":
            return fmt
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        return {"type": "json_object", "schema": schema} if schema else {"type": "json_object"}

    def _context_overflow(self, data: Any, detail: str) -> ContextOverflow | None:
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict) and (
            error.get("code") in _CONTEXT_CODES or error.get("type") in _CONTEXT_CODES
        ):
            stated = super()._context_overflow(data, detail) or ContextOverflow()
            return ContextOverflow(
                _int_or_none(error.get("n_prompt_tokens")) or stated.prompt_tokens,
                _int_or_none(error.get("n_ctx")) or stated.context_window,
            )
        return super()._context_overflow(data, detail)

    def _parse_body(self, data: Any, *, model: str) -> LMResponse:
        if "choices" not in data and "error" in data:
            # Some compatible servers report failures inside a 200 reply.
            code = data["error"].get("code") if isinstance(data["error"], dict) else None
            status = code if isinstance(code, int) and code >= 400 else 500
            raise self.error_for_status(status, {}, json.dumps(data).encode(), model=model)
        choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
        completions = tuple(_completion(c) for c in choices)
        usage = data.get("usage") or {}
        return LMResponse(
            completions,
            Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)),
            model,
        )


def _completion(choice: Mapping[str, Any]) -> Completion:
    message = choice.get("message") or {}
    calls = message.get("tool_calls")
    reasoning = message.get("reasoning_content")
    return Completion(
        _content_text(message.get("content")),
        choice.get("finish_reason"),
        tuple(c for c in calls if isinstance(c, Mapping)) if isinstance(calls, list) else (),
        reasoning if isinstance(reasoning, str) and reasoning else None,
    )


def as_openai_format(value: Any) -> Any:
    """A pydantic model class becomes OpenAI's ``json_schema`` form; dicts pass."""
    schema_of = getattr(value, "model_json_schema", None)
    if isinstance(value, type) and callable(schema_of):
        return {
            "type": "json_schema",
            "json_schema": {"name": value.__name__, "schema": schema_of(), "strict": False},
        }
    if isinstance(value, Mapping):
        return dict(value)
    raise UsageError(
        f"response_format={value!r} is not supported; pass a dict such as "
        '{"type": "json_object"} or a pydantic model class'
    )


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some servers answer in content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    raise TypeError(f"message.content is a {type(content).__name__}")
