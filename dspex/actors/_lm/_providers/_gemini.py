"""The Gemini generateContent wire format (``gemini/<model>``).

Roles map to ``user``/``model``; system messages become ``systemInstruction``;
the sampling options live in ``generationConfig`` (``n`` is
``candidateCount``). A JSON ``response_format`` becomes ``responseMimeType``
plus, when the schema fits Gemini's OpenAPI subset, ``responseSchema``. The
key travels in the ``x-goog-api-key`` header, never in the URL, so it cannot
leak through logged URLs or httpx error messages. A prompt over the context
window is a 400 ``INVALID_ARGUMENT`` saying "The input token count (N) exceeds
the maximum number of tokens allowed (M)" (Vertex AI: "the input token count
is N but model only supports up to M").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from dspex.actors._lm._providers._base import HTTPCall, Provider, split_data_url, text_parts
from dspex.actors._lm._providers._openai import as_openai_format
from dspex.actors._lm._types import Completion, LMRequest, LMResponse, Usage
from dspex.errors import LMError, UsageError

__all__ = ["GeminiProvider", "gemini_schema"]

_CONFIG_NAMES = {
    "temperature": "temperature",
    "max_tokens": "maxOutputTokens",
    "top_p": "topP",
    "top_k": "topK",
    "seed": "seed",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
}
_TOP_LEVEL = {"safety_settings", "tools", "tool_config", "cached_content"}
_DROPPED = frozenset({"logit_bias", "logprobs", "parallel_tool_calls", "top_logprobs", "user"})
_FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter"}
_SCHEMA_SCALARS = ("description", "format", "minimum", "maximum", "minItems", "maxItems")
_MAX_SCHEMA_DEPTH = 32


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)


class GeminiProvider(Provider):
    """``POST {api_base}/models/{model}:generateContent`` with ``x-goog-api-key``."""

    name = "gemini"
    default_api_base = "https://generativelanguage.googleapis.com/v1beta"
    env_keys = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    secret_headers = frozenset({"x-goog-api-key"})
    context_patterns = (
        re.compile(
            r"input token count (?:is )?\(?(?P<prompt>\d+)\)? "
            r"(?:exceeds the maximum number of tokens allowed \(?|but model only supports up to )"
            r"(?P<window>\d+)",
            re.IGNORECASE,
        ),
    )

    def model_name(self, model: str) -> str:
        return super().model_name(model).removeprefix("models/")

    def build(self, request: LMRequest, *, api_base: str | None, api_key: str | None) -> HTTPCall:
        key = self._key_or_fail(request, api_base, api_key)
        system: list[str] = []
        contents: list[dict[str, Any]] = []
        for i, message in enumerate(self._checked_messages(request)):
            role, where = message["role"], f"messages[{i}]"
            parts = _parts(message.get("content"), where)
            if role in ("system", "developer"):
                system.extend(p["text"] for p in parts if "text" in p)
            elif role in ("user", "assistant"):
                contents.append(
                    {"role": "model" if role == "assistant" else "user", "parts": parts}
                )
            else:
                raise UsageError(
                    f"{where}.role={role!r} is not supported by Gemini; use system, user "
                    "or assistant"
                )
        if not contents:
            raise UsageError(
                f"model {request.model!r}: Gemini needs at least one user message, "
                "not only system messages"
            )
        body: dict[str, Any] = {"contents": contents}
        if system:
            body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
        config: dict[str, Any] = {}
        for name, value in self._params(request).items():
            if name in _CONFIG_NAMES:
                config[_CONFIG_NAMES[name]] = value
            elif name == "n":
                if value != 1:
                    config["candidateCount"] = value
            elif name == "stop":
                config["stopSequences"] = [value] if isinstance(value, str) else list(value)
            elif name == "response_format":
                config.update(_response_config(value))
            elif name in _TOP_LEVEL:
                body[_camel(name)] = value
            elif name not in _DROPPED:
                config[_camel(name)] = value
        if config:
            body["generationConfig"] = config
        headers = {"content-type": "application/json"}
        if key:
            headers["x-goog-api-key"] = key
        url = f"{self.base_url(api_base)}/models/{self.model_name(request.model)}:generateContent"
        return HTTPCall("POST", url, headers, body, self.secret_headers)

    def _parse_body(self, data: Any, *, model: str) -> LMResponse:
        candidates = data.get("candidates")
        if not candidates:
            blocked = (data.get("promptFeedback") or {}).get("blockReason")
            if blocked:
                raise LMError(
                    f"model {model!r}: Gemini blocked the prompt ({blocked})",
                    model=model,
                    retryable=False,
                )
            raise KeyError("candidates")
        completions = []
        for candidate in sorted(candidates, key=lambda c: c.get("index", 0)):
            parts = (candidate.get("content") or {}).get("parts") or []
            text = "".join(p.get("text", "") for p in parts if not p.get("thought"))
            reason = candidate.get("finishReason")
            completions.append(Completion(text, _FINISH.get(reason, reason and reason.lower())))
        usage = data.get("usageMetadata") or {}
        completion_tokens = int(usage.get("candidatesTokenCount") or 0) + int(
            usage.get("thoughtsTokenCount") or 0
        )
        return LMResponse(
            tuple(completions),
            Usage(int(usage.get("promptTokenCount") or 0), completion_tokens),
            model,
        )

    def _is_auth_failure(self, status: int, data: Any) -> bool:
        # An unknown key is a 400 INVALID_ARGUMENT with reason API_KEY_INVALID.
        return any(d.get("reason") == "API_KEY_INVALID" for d in _details(data))

    def _retry_after_from_body(self, data: Any) -> float | None:
        for detail in _details(data):
            delay = detail.get("retryDelay")
            if isinstance(delay, str) and delay.endswith("s"):
                try:
                    return max(0.0, float(delay[:-1]))
                except ValueError:
                    return None
        return None


def _details(data: Any) -> list[dict[str, Any]]:
    error = data.get("error") if isinstance(data, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def _parts(content: Any, where: str) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for kind, value in text_parts(content if content is not None else "", where):
        if kind == "text":
            parts.append({"text": value})
            continue
        if kind == "file_id":  # a file uploaded through Gemini's Files API
            parts.append({"fileData": {"fileUri": value}})
            continue
        inline = split_data_url(value)
        if inline is None:
            raise UsageError(
                f"{where}: Gemini takes images, audio and files inline only; pass a "
                f"data:<type>;base64,... URL instead of {value[:60]!r}"
            )
        parts.append({"inlineData": {"mimeType": inline[0], "data": inline[1]}})
    return parts


def _response_config(value: Any) -> dict[str, Any]:
    fmt = as_openai_format(value)
    kind = fmt.get("type")
    if kind == "text":
        return {}
    if kind not in ("json_object", "json_schema"):
        raise UsageError(
            f"response_format type {kind!r} is not supported; use 'text', 'json_object' "
            "or 'json_schema'"
        )
    config: dict[str, Any] = {"responseMimeType": "application/json"}
    spec = fmt.get("json_schema") if kind == "json_schema" else fmt
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    converted = gemini_schema(schema) if isinstance(schema, Mapping) else None
    if converted is not None:
        config["responseSchema"] = converted
    return config


class _Unsupported(Exception):
    """The JSON schema uses something Gemini's Schema object cannot say."""


def gemini_schema(schema: Mapping[str, Any]) -> dict[str, Any] | None:
    """A JSON Schema in Gemini's OpenAPI subset (refs inlined), or None if it cannot be."""
    defs = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    try:
        return _convert(schema, defs, 0)
    except _Unsupported:
        return None


def _convert(node: Any, defs: Mapping[str, Any], depth: int) -> dict[str, Any]:
    if depth > _MAX_SCHEMA_DEPTH or not isinstance(node, Mapping):
        raise _Unsupported  # recursive or malformed schema
    rest = {k: v for k, v in node.items() if k not in ("$ref", "allOf")}
    if "$ref" in node:
        name = str(node["$ref"]).rsplit("/", 1)[-1]
        if name not in defs:
            raise _Unsupported
        return _convert({**defs[name], **rest}, defs, depth + 1)
    if "allOf" in node:
        if len(node["allOf"]) != 1:
            raise _Unsupported
        return _convert({**node["allOf"][0], **rest}, defs, depth + 1)
    options = node.get("anyOf") or node.get("oneOf")
    if options:
        real = [o for o in options if not (isinstance(o, Mapping) and o.get("type") == "null")]
        if len(real) == 1:
            out = _convert(real[0], defs, depth + 1)
        else:
            out = {"anyOf": [_convert(o, defs, depth + 1) for o in real]}
        if len(real) < len(options):
            out["nullable"] = True
        if "description" in node:
            out["description"] = node["description"]
        return out
    out = {}
    kind = node.get("type")
    if isinstance(kind, list):
        real_kinds = [k for k in kind if k != "null"]
        if len(real_kinds) != 1:
            raise _Unsupported
        if len(real_kinds) < len(kind):
            out["nullable"] = True
        kind = real_kinds[0]
    enum = [node["const"]] if "const" in node else node.get("enum")
    if kind is None:
        kind = "object" if "properties" in node else "string" if enum else None
    if kind not in ("string", "number", "integer", "boolean", "array", "object"):
        raise _Unsupported
    out["type"] = str(kind).upper()
    if enum and all(isinstance(e, str) for e in enum) and kind == "string":
        out["enum"] = list(enum)
    for key in _SCHEMA_SCALARS:
        if key in node:
            out[key] = node[key]
    if kind == "object":
        properties = node.get("properties") or {}
        if not properties:
            raise _Unsupported  # Gemini rejects an OBJECT without properties
        out["properties"] = {k: _convert(v, defs, depth + 1) for k, v in properties.items()}
        out["propertyOrdering"] = list(properties)
        required = [r for r in node.get("required", []) if r in properties]
        if required:
            out["required"] = required
    if kind == "array" and "items" in node:
        out["items"] = _convert(node["items"], defs, depth + 1)
    return out
