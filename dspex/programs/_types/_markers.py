"""How a custom type's content parts travel through prompt text (no pydantic here).

A type whose ``format()`` returns content parts (an image, audio, a file)
serializes as ``<<CUSTOM-TYPE-START-IDENTIFIER>>[parts as JSON]<<CUSTOM-TYPE-END-IDENTIFIER>>``
inside the field's text, as in DSPy. Once the messages are built,
:func:`expand_content_parts` turns each user message holding such markers
into OpenAI content parts: the text around each marker, and the parts
themselves. The adapters call it on every format; a message without the
start marker costs one substring test.

Types are recognised by class attributes (``__dspex_custom_type__`` and
friends), so prompt code never imports pydantic to ask.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, get_args, get_origin

__all__ = [
    "CUSTOM_TYPE_END_IDENTIFIER",
    "CUSTOM_TYPE_START_IDENTIFIER",
    "custom_types_in",
    "expand_content_parts",
]

CUSTOM_TYPE_START_IDENTIFIER = "<<CUSTOM-TYPE-START-IDENTIFIER>>"
CUSTOM_TYPE_END_IDENTIFIER = "<<CUSTOM-TYPE-END-IDENTIFIER>>"
_MARKED = re.compile(
    re.escape(CUSTOM_TYPE_START_IDENTIFIER) + "(.*?)" + re.escape(CUSTOM_TYPE_END_IDENTIFIER),
    re.DOTALL,
)


def custom_types_in(annotation: Any) -> Iterator[Any]:
    """Every custom type class named in ``annotation``, at any depth (``list[Image]``)."""
    if isinstance(annotation, type) and getattr(annotation, "__dspex_custom_type__", False):
        yield annotation
        return
    if get_origin(annotation) is None:
        return
    for arg in get_args(annotation):
        yield from custom_types_in(arg)


def expand_content_parts(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` with each marked user message split into content parts."""
    if not any(_marked(m) for m in messages):
        return messages
    return [_expand(m) if _marked(m) else m for m in messages]


def _marked(message: dict[str, Any]) -> bool:
    content = message.get("content")
    return (
        message.get("role") == "user"
        and isinstance(content, str)
        and CUSTOM_TYPE_START_IDENTIFIER in content
    )


def _expand(message: dict[str, Any]) -> dict[str, Any]:
    text: str = message["content"]
    parts: list[dict[str, Any]] = []
    last = 0
    for match in _MARKED.finditer(text):
        if match.start() > last:
            parts.append({"type": "text", "text": text[last : match.start()]})
        parts.extend(_payload_parts(match.group(1).strip()))
        last = match.end()
    if last < len(text):
        parts.append({"type": "text", "text": text[last:]})
    return {**message, "content": parts}


def _payload_parts(payload: str) -> list[dict[str, Any]]:
    parsed = _decode(payload)
    if isinstance(parsed, list):
        return [p if isinstance(p, dict) else {"type": "text", "text": str(p)} for p in parsed]
    return [{"type": "text", "text": payload}]


def _decode(payload: str) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        pass
    # Inside a JSON-encoded container (``list[Image]``) the payload was escaped once more.
    try:
        return json.loads(json.loads(f'"{payload}"'))
    except ValueError:
        return None
