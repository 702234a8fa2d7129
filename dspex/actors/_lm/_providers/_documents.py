"""``document`` content parts (DSPy's ``Document``, Anthropic's document block) for
providers without a document part: OpenAI's chat and Responses APIs and Gemini get
the document as text; the Anthropic provider sends the block itself."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from dspex.errors import UsageError

__all__ = ["document_text", "text_documents"]


def document_text(part: Mapping[str, Any], where: str) -> str:
    """A text ``document`` part as the text a model without native documents reads:
    the JSON of its title, context and text (as dspex wrote ``Document`` before)."""
    source = part.get("source")
    if not isinstance(source, Mapping) or source.get("type") != "text":
        raise UsageError(
            f"{where}: a document part needs a text source, {{'type': 'text', 'data': ...}} "
            f"(got {source!r:.80}); send PDFs and other files as 'file' parts"
        )
    shown = {"title": part.get("title"), "context": part.get("context"), "data": source.get("data")}
    return json.dumps({k: v for k, v in shown.items() if v is not None}, ensure_ascii=False)


def text_documents(messages: list[Any]) -> list[Any]:
    """``messages`` with each ``document`` content part as a text part (OpenAI's chat
    API has no document part); the messages without one are returned as they are."""
    out = messages
    for index, message in enumerate(messages):
        content = message.get("content")
        if type(content) is not list or not any(
            isinstance(p, Mapping) and p.get("type") == "document" for p in content
        ):
            continue
        if out is messages:
            out = list(messages)
        where = f"messages[{index}].content"
        out[index] = {
            **message,
            "content": [
                {"type": "text", "text": document_text(p, f"{where}[{i}]")}
                if isinstance(p, Mapping) and p.get("type") == "document"
                else p
                for i, p in enumerate(content)
            ],
        }
    return out
