"""The Anthropic Messages wire format (``anthropic/<model>``).

System messages move to the top-level ``system`` field, ``max_tokens`` is
required (defaulted here), ``stop`` becomes ``stop_sequences``. The API has no
``n``: the client fans ``n > 1`` out into single calls (``native_n`` is False),
and :meth:`AnthropicProvider.build` refuses ``n > 1`` so a mistake cannot
silently return fewer completions. ``response_format`` has no native form and
is dropped: the adapter's prompt asks for the format instead. A prompt over the
context window is a 400 ``invalid_request_error`` saying "prompt is too long:
N tokens > M maximum" (or, counting ``max_tokens``, "input length and
`max_tokens` exceed context limit: N + K > M").
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from dspex.actors._lm._providers._base import HTTPCall, Provider, split_data_url, text_parts
from dspex.actors._lm._types import Completion, LMRequest, LMResponse, Usage
from dspex.errors import UsageError

__all__ = ["DEFAULT_MAX_TOKENS", "AnthropicProvider"]

DEFAULT_MAX_TOKENS = 4096
API_VERSION = "2023-06-01"

# OpenAI-only knobs with no Messages API meaning; sending them is a 400.
_DROPPED = frozenset(
    {
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "n",
        "parallel_tool_calls",
        "presence_penalty",
        "response_format",
        "seed",
        "top_logprobs",
        "user",
    }
)
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


class AnthropicProvider(Provider):
    """``POST {api_base}/messages`` with ``x-api-key`` and ``anthropic-version``."""

    name = "anthropic"
    default_api_base = "https://api.anthropic.com/v1"
    env_keys = ("ANTHROPIC_API_KEY",)
    secret_headers = frozenset({"x-api-key"})
    native_n = False
    context_patterns = (
        re.compile(
            r"prompt is too long(?:: (?P<prompt>\d+) tokens > (?P<window>\d+) maximum)?",
            re.IGNORECASE,
        ),
        re.compile(
            r"exceed context limit(?:: (?P<prompt>\d+) \+ \d+ > (?P<window>\d+))?", re.IGNORECASE
        ),
    )

    def build(self, request: LMRequest, *, api_base: str | None, api_key: str | None) -> HTTPCall:
        key = self._key_or_fail(request, api_base, api_key)
        params = self._params(request)
        n = params.get("n", 1)
        if n != 1:
            raise UsageError(
                f"n={n!r}: the Anthropic API returns one completion per call; split the "
                "request with split_n() and merge_responses() (the LM client does this)"
            )
        system: list[str] = []
        messages: list[dict[str, Any]] = []
        for i, message in enumerate(self._checked_messages(request)):
            role = message["role"]
            where = f"messages[{i}]"
            if role in ("system", "developer"):
                system.extend(
                    v for kind, v in text_parts(message.get("content", ""), where) if kind == "text"
                )
            elif role in ("user", "assistant"):
                messages.append({"role": role, "content": _content(message.get("content"), where)})
            else:
                raise UsageError(
                    f"{where}.role={role!r} is not supported by Anthropic; use system, user "
                    "or assistant"
                )
        if not messages:
            raise UsageError(
                f"model {request.model!r}: Anthropic needs at least one user message, "
                "not only system messages"
            )
        body: dict[str, Any] = {
            "model": self.model_name(request.model),
            "max_tokens": int(params.pop("max_tokens", DEFAULT_MAX_TOKENS)),
            "messages": messages,
        }
        if system:
            body["system"] = "\n\n".join(system)
        stop = params.pop("stop", None)
        if stop:
            body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        body.update({k: v for k, v in params.items() if k not in _DROPPED})
        headers = {"content-type": "application/json", "anthropic-version": API_VERSION}
        if key:
            headers["x-api-key"] = key
        return HTTPCall(
            "POST", f"{self.base_url(api_base)}/messages", headers, body, self.secret_headers
        )

    def _parse_body(self, data: Any, *, model: str) -> LMResponse:
        if data.get("type") == "error":
            raise self.error_for_status(500, {}, json.dumps(data).encode(), model=model)
        texts = [b for b in data["content"] if b.get("type") == "text"]
        text = "".join(b["text"] for b in texts)
        # Native citations of the documents sent (a document block with citations
        # enabled): each text block lists the spans it rests on, and the block's text is
        # kept as the citation's supported_text (a field of DSPy's Citation).
        citations = tuple(
            {**c, "supported_text": b["text"]}
            for b in texts
            for c in (b.get("citations") or ())
            if isinstance(c, dict)
        )
        reason = data.get("stop_reason")
        usage = data.get("usage") or {}
        prompt = sum(
            int(usage.get(k) or 0)
            for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        return LMResponse(
            (Completion(text, _FINISH.get(reason, reason), citations=citations),),
            Usage(prompt, int(usage.get("output_tokens") or 0)),
            model,
        )


def _content(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    blocks: list[dict[str, Any]] = []
    for kind, value in text_parts(content, where, native_documents=True):
        if kind == "text":
            blocks.append({"type": "text", "text": value})
            continue
        if kind == "document":  # Anthropic's own block (DSPy's Document): sent as it is
            blocks.append(_native_document(json.loads(value)))
            continue
        if kind != "image":
            blocks.append(_document(kind, value, where))
            continue
        inline = split_data_url(value)
        source = (
            {"type": "base64", "media_type": inline[0], "data": inline[1]}
            if inline
            else {"type": "url", "url": value}
        )
        blocks.append({"type": "image", "source": source})
    return blocks


def _native_document(part: dict[str, Any]) -> dict[str, Any]:
    """A ``document`` part as Anthropic's block: only the keys its API takes."""
    keys = ("type", "source", "title", "context", "citations", "cache_control")
    return {k: part[k] for k in keys if part.get(k) is not None}


def _document(kind: str, value: str, where: str) -> dict[str, Any]:
    """A file part as Anthropic's block: a PDF or text document, an image, or a file id."""
    if kind == "file_id":
        return {"type": "document", "source": {"type": "file", "file_id": value}}
    inline = split_data_url(value)
    if kind == "audio" or inline is None:
        what = "audio" if kind == "audio" else f"file {value[:40]!r}"
        raise UsageError(
            f"{where}: Anthropic does not take {what} input; send PDFs, text files and "
            "images (as data: URLs)"
        )
    media_type, data = inline
    if media_type == "application/pdf":
        return {
            "type": "document",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    if media_type.startswith("text/"):
        text = base64.b64decode(data).decode("utf-8", errors="replace")
        return {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": text},
        }
    if media_type.startswith("image/"):
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    raise UsageError(f"{where}: Anthropic takes PDF, text and image files, not {media_type}")
