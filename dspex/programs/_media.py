"""``Image``: a picture as a signature field, sent to the LM as an image content part.

An input value of type ``Image`` (also inside lists and pydantic models) is
written into the prompt text as a marked JSON list of OpenAI content parts
(``<<CUSTOM-TYPE-START-IDENTIFIER>>[...]<<CUSTOM-TYPE-END-IDENTIFIER>>``, DSPy's
markers); :func:`split_content_parts` then turns each user message holding
markers into a list of parts: text, the image part, text. The providers send
such a list as they send any multi-part content.

Construction never touches the network or the disk: ``Image(url)`` keeps an
http(s)/gs URL as it is and a ``data:`` URI as it is; bytes become a data
URI. ``Image.from_path(path)`` reads a local file explicitly.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic

__all__ = ["CUSTOM_TYPE_END", "CUSTOM_TYPE_START", "Image", "split_content_parts"]

CUSTOM_TYPE_START = "<<CUSTOM-TYPE-START-IDENTIFIER>>"
CUSTOM_TYPE_END = "<<CUSTOM-TYPE-END-IDENTIFIER>>"
_MARKED = re.compile(
    re.escape(CUSTOM_TYPE_START) + r"(.*?)" + re.escape(CUSTOM_TYPE_END), re.DOTALL
)

# Leading bytes of the image formats providers accept -> MIME type.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"RIFF", "image/webp"),
)


def _data_uri(data: bytes, mime: str | None = None) -> str:
    if mime is None:
        mime = next((m for magic, m in _MAGIC if data.startswith(magic)), "image/png")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _normalize(source: Any) -> str:
    if isinstance(source, Image):
        return source.url
    if isinstance(source, bytes | bytearray):
        return _data_uri(bytes(source))
    if isinstance(source, str):
        text = source.strip()
        if text.startswith(("http://", "https://", "gs://", "data:")):
            return text
        raise ValueError(
            f"Image({text[:80]!r}): pass an http(s)/gs URL, a data: URI or bytes; "
            "for a local file use Image.from_path(path)"
        )
    raise ValueError(
        f"Image() cannot use a {type(source).__name__}; pass a URL, a data: URI or bytes"
    )


class Image(pydantic.BaseModel):
    """An image input: ``Image("https://...")``, ``Image(png_bytes)``, ``Image.from_path(p)``."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    url: str

    def __init__(self, source: Any = None, /, **data: Any) -> None:
        if source is not None and "url" in data:
            raise TypeError("Image received both a source and url=; give only one")
        if source is not None:
            data["url"] = source["url"] if isinstance(source, Mapping) else source
        if "url" in data:
            data["url"] = _normalize(data["url"])
        super().__init__(**data)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> Image:
        """The image in a local file, as a data URI (its MIME type from the file name)."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ValueError(f"Image.from_path({path!r}): no such file")
        mime = mimetypes.guess_type(path)[0]
        with open(path, "rb") as handle:
            return cls(
                _data_uri(handle.read(), mime if mime and mime.startswith("image/") else None)
            )

    from_file = from_path  # DSPy's older name

    def format(self) -> list[dict[str, Any]]:
        """The OpenAI content parts for this image."""
        return [{"type": "image_url", "image_url": {"url": self.url}}]

    @pydantic.model_serializer(mode="plain")
    def _marked(self) -> str:
        # How an Image is written into prompt text; split_content_parts finds it again.
        return (
            f"{CUSTOM_TYPE_START}{json.dumps(self.format(), ensure_ascii=False)}{CUSTOM_TYPE_END}"
        )

    def __str__(self) -> str:
        return self._marked()

    def __repr__(self) -> str:
        if self.url.startswith("data:") and "base64," in self.url:
            head, payload = self.url.split("base64,", 1)
            kind = head[len("data:") :].split(";")[0].split("/")[-1]
            return f"Image(url=data:image/{kind};base64,<IMAGE_BASE_64_ENCODED({len(payload)})>)"
        return f"Image(url='{self.url}')"


def _parse_marked(body: str) -> Any:
    """The JSON list inside markers; it may sit JSON-escaped inside another JSON string."""
    for parse in (json.loads, lambda text: json.loads(json.loads(f'"{text}"'))):
        try:
            return parse(body)
        except (ValueError, TypeError):
            continue
    return None


def split_content_parts(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` with each user message holding media markers split into content parts.

    Messages without markers (all, when no input is an Image) are returned unchanged.
    """
    out = list(messages)
    for index, message in enumerate(out):
        content = message.get("content")
        if message.get("role") != "user" or not isinstance(content, str):
            continue
        if CUSTOM_TYPE_START not in content:
            continue
        parts: list[dict[str, Any]] = []
        last = 0
        for match in _MARKED.finditer(content):
            if match.start() > last:
                parts.append({"type": "text", "text": content[last : match.start()]})
            parsed = _parse_marked(match.group(1).strip())
            if isinstance(parsed, list) and all(isinstance(p, dict) for p in parsed):
                parts.extend(parsed)
            else:
                parts.append({"type": "text", "text": match.group(1)})
            last = match.end()
        if last < len(content):
            parts.append({"type": "text", "text": content[last:]})
        out[index] = {**message, "content": parts}
    return out
