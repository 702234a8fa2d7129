"""OpenAI's Responses API wire format (``LM(..., model_type="responses")``).

``POST {api_base}/responses``. The chat-shaped request maps onto it as DSPy
maps it: leading system messages become ``instructions``, the other messages
``input`` items (text parts typed ``input_text``, or ``output_text`` for the
assistant's own earlier turns; images ``input_image``, files ``input_file``,
audio as it is); ``max_tokens`` (or
``max_completion_tokens``) becomes ``max_output_tokens``; ``reasoning_effort``
becomes ``reasoning={"effort": ..., "summary": "auto"}`` unless ``reasoning``
is given; ``response_format`` becomes ``text.format``. The API has no ``n``,
so the client fans ``n > 1`` out.

The reply's ``output`` items become one completion: the text of its
``message`` items, the summaries of its ``reasoning`` items as the
completion's ``reasoning``, ``finish_reason`` "length" when the answer was
cut at ``max_output_tokens``. Errors are OpenAI's (the same error body).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from dspex.actors._lm._providers._base import HTTPCall, text_parts
from dspex.actors._lm._providers._documents import document_text
from dspex.actors._lm._providers._openai import OpenAIProvider, as_openai_format
from dspex.actors._lm._types import Completion, LMRequest, LMResponse, Usage
from dspex.errors import UsageError

__all__ = ["ResponsesProvider"]


class ResponsesProvider(OpenAIProvider):
    """``POST {api_base}/responses`` with ``Authorization: Bearer``."""

    native_n = False

    def __repr__(self) -> str:
        return "ResponsesProvider()"

    def build(self, request: LMRequest, *, api_base: str | None, api_key: str | None) -> HTTPCall:
        key = self._key_or_fail(request, api_base, api_key)
        messages = self._checked_messages(request)
        instructions: list[str] = []
        items: list[dict[str, Any]] = []
        for i, message in enumerate(messages):
            role = message["role"]
            content = message.get("content")
            if role == "system" and not items and isinstance(content, str):
                instructions.append(content)
                continue
            items.append({"role": role, "content": _input_content(role, content, i)})
        body: dict[str, Any] = {"model": self.model_name(request.model), "input": items}
        if instructions:
            body["instructions"] = "\n\n".join(instructions)
        body.update(self._responses_params(self._params(request)))
        headers = {"content-type": "application/json"}
        if key:
            headers["authorization"] = f"Bearer {key}"
        return HTTPCall(
            "POST", f"{self.base_url(api_base)}/responses", headers, body, self.secret_headers
        )

    @staticmethod
    def _responses_params(params: dict[str, Any]) -> dict[str, Any]:
        out = dict(params)
        for name in ("max_tokens", "max_completion_tokens"):
            if name in out:
                out["max_output_tokens"] = out.pop(name)
        effort = out.pop("reasoning_effort", None)
        if effort is not None and out.get("reasoning") is None:
            out["reasoning"] = {"effort": effort, "summary": "auto"}
        if "response_format" in out:
            text = dict(out.pop("text", None) or {})
            text["format"] = _text_format(out.pop("response_format"))
            out["text"] = text
        return out

    def _parse_body(self, data: Any, *, model: str) -> LMResponse:
        error = data.get("error")
        if error and data.get("status") in (None, "failed"):
            # A failed response arrives as HTTP 200 with its error inside.
            raise self.error_for_status(500, {}, json.dumps(data).encode(), model=model)
        texts: list[str] = []
        reasoning: list[str] = []
        for item in data["output"]:
            kind = item.get("type")
            if kind == "message":
                for part in item.get("content") or []:
                    if part.get("type") == "output_text":
                        texts.append(str(part.get("text", "")))
                    elif part.get("type") == "refusal":
                        texts.append(str(part.get("refusal", "")))
            elif kind == "reasoning":
                for part in item.get("summary") or item.get("content") or []:
                    if part.get("text"):
                        reasoning.append(str(part["text"]))
        finish = "stop"
        if data.get("status") == "incomplete":
            reason = (data.get("incomplete_details") or {}).get("reason")
            finish = "length" if reason == "max_output_tokens" else str(reason or "incomplete")
        usage = data.get("usage") or {}
        return LMResponse(
            (Completion("".join(texts), finish, reasoning_content="\n\n".join(reasoning) or None),),
            Usage(int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)),
            model,
        )


def _input_content(role: str, content: Any, index: int) -> list[dict[str, Any]]:
    """A chat message's content as Responses input parts (DSPy's mapping)."""
    # The Responses API types text by direction: an assistant turn replays the
    # model's own output, and "input_text" there is refused.
    text_type = "output_text" if role == "assistant" else "input_text"
    if isinstance(content, str):
        return [{"type": text_type, "text": content}]
    text_parts(content, f"messages[{index}]")  # validates the parts, naming a bad one
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part["type"]
        if kind == "text":
            parts.append({"type": text_type, "text": str(part.get("text", ""))})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else image
            item: dict[str, Any] = {"type": "input_image", "image_url": str(url)}
            if isinstance(image, Mapping) and image.get("detail") is not None:
                item["detail"] = image["detail"]
            parts.append(item)
        elif kind == "document":  # no document part in OpenAI's APIs: its text
            parts.append({"type": text_type, "text": document_text(part, f"messages[{index}]")})
        elif kind == "file":
            spec = part.get("file") or {}
            item = {"type": "input_file"}
            item.update({k: spec[k] for k in ("file_data", "filename", "file_id") if spec.get(k)})
            parts.append(item)
        else:  # input_audio: the same part in both APIs
            parts.append(dict(part))
    return parts


def _text_format(value: Any) -> Any:
    """OpenAI chat's ``response_format`` as the Responses API's ``text.format``."""
    fmt = as_openai_format(value)
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, Mapping):
            raise UsageError(
                f"response_format={value!r}: a json_schema format needs "
                '"json_schema": {"name": ..., "schema": {...}}'
            )
        return {"type": "json_schema", **spec}
    return fmt
