"""The fake OpenAI server's routes beyond chat: ``/v1/embeddings`` and ``/v1/responses``.

Pure functions the :class:`~dspex.testing.FakeOpenAI` dialect calls: a check
(``(status, message)`` for a request the real API refuses, else None) and a
renderer (the success body) for each route.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from dspex.testing._fake_script import Reply

__all__ = [
    "EMBEDDINGS_PATH",
    "RESPONSES_PATH",
    "EmbedFn",
    "EmbeddingsStyle",
    "bag_of_words",
    "check_embeddings",
    "check_responses",
    "embeddings_messages",
    "render_embeddings",
    "render_responses",
    "responses_messages",
]

EMBEDDINGS_PATH = "/v1/embeddings"
RESPONSES_PATH = "/v1/responses"

EmbedFn = Callable[[str], Sequence[float]]
EmbeddingsStyle = Literal["openai", "llama_cpp"]

DEFAULT_DIMENSIONS = 16
_WORD = re.compile(r"[a-z0-9]+")

# Chat-completions parameters the Responses API refuses ("Unsupported parameter").
_CHAT_ONLY = ("messages", "max_tokens", "max_completion_tokens", "n", "response_format")


def bag_of_words(text: str, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """A deterministic vector: each lower-cased word adds 1 to a hashed bucket."""
    vector = [0.0] * dimensions
    for word in _WORD.findall(text.lower()):
        bucket = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big") % dimensions
        vector[bucket] += 1.0
    return vector


def _inputs(body: Any) -> list[str] | None:
    value = body.get("input")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def check_embeddings(body: Any, style: EmbeddingsStyle) -> tuple[int, str] | None:
    inputs = _inputs(body)
    if inputs is None:
        return 400, "'input' must be a string or a non-empty array of strings"
    if any(not text for text in inputs):
        return 400, "'input' cannot contain an empty string"
    dims = body.get("dimensions")
    if dims is not None and (not isinstance(dims, int) or dims < 1):
        return 400, f"dimensions={dims!r} must be a positive integer"
    if style == "llama_cpp" and len(inputs) > 1:
        # llama-cpp-python 0.3.16, model without pooling: the batch decode fails.
        return 500, "llama_decode returned -1"
    return None


def render_embeddings(body: Any, embed: EmbedFn | None, style: EmbeddingsStyle) -> dict[str, Any]:
    inputs = _inputs(body) or []
    dims = body.get("dimensions") or DEFAULT_DIMENSIONS
    data: list[dict[str, Any]] = []
    tokens = 0
    for index, text in enumerate(inputs):
        words = _WORD.findall(text.lower()) or [text]
        tokens += len(words)
        if style == "llama_cpp":
            vector: Any = [bag_of_words(word, dims) for word in words]  # one per token
        else:
            vector = list(embed(text)) if embed is not None else bag_of_words(text, dims)
        data.append({"object": "embedding", "index": index, "embedding": vector})
    return {
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def embeddings_messages(body: Any) -> list[dict[str, str]]:
    return [{"role": "user", "content": text} for text in _inputs(body) or []]


def check_responses(body: Any) -> tuple[int, str] | None:
    for name in _CHAT_ONLY:
        if name in body:
            return 400, f"Unsupported parameter: '{name}'. In the Responses API use its own name."
    value = body.get("input")
    if isinstance(value, str):
        return None
    if not isinstance(value, list) or not value:
        return 400, "'input' must be a string or a non-empty array of input items"
    for i, item in enumerate(value):
        if not isinstance(item, dict) or item.get("role") not in (
            "user",
            "assistant",
            "system",
            "developer",
        ):
            return 400, f"input[{i}].role is missing or invalid"
        content = item.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            return 400, f"input[{i}].content must be a string or an array"
        want = "output_text" if item["role"] == "assistant" else "input_text"
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in (want, "input_image", "input_file", "input_audio", "refusal"):
                return 400, f"Invalid value: '{kind}' at input[{i}].content[{j}].type"
    fmt = (body.get("text") or {}).get("format")
    if (
        isinstance(fmt, dict)
        and fmt.get("type") == "json_schema"
        and ("json_schema" in fmt or not isinstance(fmt.get("schema"), dict) or "name" not in fmt)
    ):
        return 400, "text.format json_schema needs 'name' and 'schema' at its top level"
    return None


def responses_messages(body: Any) -> list[dict[str, str]]:
    messages: list[dict[str, str]] = []
    if isinstance(body.get("instructions"), str):
        messages.append({"role": "system", "content": body["instructions"]})
    value = body.get("input")
    if isinstance(value, str):
        return [*messages, {"role": "user", "content": value}]
    for item in value if isinstance(value, list) else []:
        content = item.get("content") if isinstance(item, dict) else None
        if isinstance(content, list):
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        messages.append({"role": str(item.get("role")), "content": str(content or "")})
    return messages


def render_responses(body: Any, reply: Reply, index: int) -> dict[str, Any]:
    text = reply.texts[0] if reply.texts else reply.text
    prompt = " ".join(m["content"] for m in responses_messages(body))
    input_tokens = reply.prompt_tokens if reply.prompt_tokens is not None else len(prompt.split())
    output_tokens = (
        reply.completion_tokens if reply.completion_tokens is not None else len(text.split())
    )
    cut = reply.finish_reason == "length"
    return {
        "id": f"resp_fake_{index}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "incomplete" if cut else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "error": None,
        "model": body["model"],
        "output": [
            {
                "type": "message",
                "id": f"msg_fake_{index}",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
    }
