"""``Image``, ``Audio`` and ``File``: inputs sent to the LM as content parts.

Construction never reads files or the network: pass a URL (images), a
``data:`` URI, raw ``bytes`` (the type is sniffed with ``puremagic``), or a
PIL image when Pillow is installed. ``from_path`` reads a local file and
``from_url`` downloads (with httpx), both explicitly. Each becomes an OpenAI
content part (``image_url``, ``input_audio``, ``file``); the Anthropic and
Gemini providers translate the parts to their own blocks.
"""

from __future__ import annotations

import base64
import mimetypes
import os
from typing import Any
from urllib.parse import urlparse

import pydantic

from dspex.programs._types._base import Type

__all__ = ["Audio", "File", "Image"]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _sniff(data: bytes, what: str) -> str:
    """The MIME type of ``data`` from its leading bytes."""
    import puremagic

    try:
        mime: str = puremagic.from_string(data, mime=True)
    except puremagic.PureError:
        mime = ""
    if not mime:
        raise ValueError(
            f"cannot tell what kind of {what} these {len(data)} bytes are; pass a data URI "
            f"instead, e.g. 'data:image/png;base64,...'"
        )
    return mime


def _mime_of_path(path: str, data: bytes, what: str) -> str:
    guessed, _ = mimetypes.guess_type(path)
    return guessed or _sniff(data, what)


def _read(path: str, cls: str) -> bytes:
    if not os.path.isfile(path):
        raise ValueError(f"File not found: {path} ({cls}.from_path reads a local file)")
    with open(path, "rb") as handle:
        return handle.read()


def _download(url: str, cls: str, verify: bool, timeout: float | None) -> tuple[bytes, str]:
    """The body and Content-Type of an HTTP(S) GET, raising on an error status."""
    if not _is_http_url(url):
        raise ValueError(f"{cls}.from_url needs an http(s) URL, got {url!r}")
    import httpx

    response = httpx.get(url, verify=verify, timeout=timeout, follow_redirects=True)
    response.raise_for_status()
    return response.content, response.headers.get("content-type", "").split(";")[0].strip()


def _is_http_url(text: str) -> bool:
    try:
        parsed = urlparse(text)
    except ValueError:
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.netloc)


def _is_remote(text: str) -> bool:
    try:
        parsed = urlparse(text)
    except ValueError:
        return False
    return parsed.scheme in ("http", "https", "gs") and bool(parsed.netloc)


def _data_uri_length(uri: str) -> int:
    return len(uri.split("base64,", 1)[1]) if "base64," in uri else len(uri)


# --- Image ---------------------------------------------------------------------------


def encode_image(image: Any) -> str:
    """An image source as a remote URL or a ``data:`` URI."""
    if isinstance(image, Image):
        return image.url
    if isinstance(image, dict) and "url" in image:
        return encode_image(image["url"])
    if isinstance(image, str):
        if image.startswith("data:") or _is_remote(image):
            return image
        raise ValueError(
            f"Image({image[:80]!r}): not a URL or data URI; load a local file with "
            "Image.from_path(path)"
        )
    if isinstance(image, bytes | bytearray):
        data = bytes(image)
        mime = _sniff(data, "image")
        if not mime.startswith("image/"):
            raise ValueError(f"Image(bytes): these bytes are {mime}, not an image")
        return f"data:{mime};base64,{_b64(data)}"
    if _is_pil_image(image):
        return _encode_pil(image)
    raise ValueError(f"Image({type(image).__name__}): pass a URL, a data URI, bytes or a PIL image")


def _is_pil_image(value: Any) -> bool:
    module = type(value).__module__
    return module.startswith("PIL.") and hasattr(value, "save")


def _encode_pil(image: Any) -> str:
    import io

    buffer = io.BytesIO()
    fmt = image.format or "PNG"
    image.save(buffer, format=fmt)
    mime, _ = mimetypes.guess_type(f"x.{fmt.lower()}")
    return f"data:{mime or 'image/png'};base64,{_b64(buffer.getvalue())}"


class Image(Type):
    # An image input: ``Image("https://...")``, ``Image(png_bytes)``, ``Image.from_path(p)``.
    # (No docstring: pydantic would show it in the JSON schema of an Image output.)

    url: str

    model_config = pydantic.ConfigDict(
        frozen=True, str_strip_whitespace=True, validate_assignment=True, extra="forbid"
    )

    def __init__(self, source: Any = None, /, **data: Any) -> None:
        if source is not None and "url" in data:
            raise TypeError("Image got both a source and url=; pass one")
        if source is not None:
            data["url"] = source
        if "url" in data:
            data["url"] = encode_image(data["url"])
        super().__init__(**data)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _from_value(cls, data: Any) -> Any:
        # Parsed values (JSON from an LM, a saved demo): a URL, data URI or {"url": ...}.
        if isinstance(data, str):
            return {"url": encode_image(data)}
        return data

    def format(self) -> list[dict[str, Any]]:
        return [{"type": "image_url", "image_url": {"url": self.url}}]

    @classmethod
    def from_url(cls, url: str, verify: bool = True, timeout: float | None = 30.0) -> Image:
        """Download an image now and keep it inline (a data URI)."""
        body, mime = _download(url, "Image", verify, timeout)
        if not mime:
            mime = mimetypes.guess_type(urlparse(url).path)[0] or _sniff(body, "image")
        return cls(f"data:{mime};base64,{_b64(body)}")

    @classmethod
    def from_path(cls, file_path: str) -> Image:
        """Read a local image file into a data URI."""
        data = _read(file_path, "Image")
        return cls(f"data:{_mime_of_path(file_path, data, 'image')};base64,{_b64(data)}")

    @classmethod
    def from_file(cls, file_path: str) -> Image:
        """DSPy's older name for :meth:`from_path`."""
        return cls.from_path(file_path)

    @classmethod
    def from_PIL(cls, pil_image: Any) -> Image:  # noqa: N802  (DSPy's name)
        """DSPy's older spelling of ``Image(pil_image)``."""
        return cls(pil_image)

    def __str__(self) -> str:
        return str(self.serialize_model())

    def __repr__(self) -> str:
        if "base64" in self.url:
            kind = self.url.split(";")[0].split("/")[-1]
            size = _data_uri_length(self.url)
            return f"Image(url=data:image/{kind};base64,<IMAGE_BASE_64_ENCODED({size})>)"
        return f"Image(url='{self.url}')"


# --- Audio ---------------------------------------------------------------------------


def _audio_format(mime: str) -> str:
    kind = mime.split("/", 1)[1] if "/" in mime else mime
    kind = kind.removeprefix("x-")
    return {"wave": "wav", "mpeg": "mp3"}.get(kind, kind)


def encode_audio(audio: Any, audio_format: str | None = None) -> dict[str, str]:
    """An audio source as ``{"data": base64, "audio_format": "wav"}``."""
    if isinstance(audio, Audio):
        return {"data": audio.data, "audio_format": audio.audio_format}
    if isinstance(audio, dict) and "data" in audio and "audio_format" in audio:
        return {"data": audio["data"], "audio_format": audio["audio_format"]}
    if isinstance(audio, str) and audio.startswith("data:audio/"):
        header, sep, data = audio.partition(",")
        mime = header.removeprefix("data:").split(";", 1)[0]
        if not sep or "/" not in mime or not mime.split("/", 1)[1]:
            raise ValueError(f"Audio: malformed data URI {audio[:60]!r}")
        return {"data": data, "audio_format": _audio_format(mime)}
    if isinstance(audio, str):
        raise ValueError(
            "Audio(str) takes a data:audio/... URI; load a file with Audio.from_path(path) "
            "or pass Audio(data=<base64>, audio_format='wav')"
        )
    if isinstance(audio, bytes | bytearray):
        raw = bytes(audio)
        if audio_format is None:  # DSPy assumes wav; the bytes say what they are
            sniffed = _sniff(raw, "audio")
            if not sniffed.startswith("audio/"):
                raise ValueError(f"Audio(bytes): these bytes are {sniffed}, not audio")
            audio_format = _audio_format(sniffed)
        return {"data": _b64(raw), "audio_format": audio_format}
    raise ValueError(f"Audio({type(audio).__name__}): pass bytes, a data URI or an Audio")


class Audio(Type):
    """An audio input: ``Audio(wav_bytes)``, ``Audio.from_path(p)``, ``Audio(data=b64, audio_format="mp3")``."""  # noqa: E501

    data: str
    audio_format: str

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    def __init__(self, *args: Any, **data: Any) -> None:
        if len(args) > 1:
            raise TypeError(f"Audio takes at most one source, got {len(args)}")
        if args:
            if "data" in data:
                raise TypeError("Audio got both a source and data=; pass one")
            audio_format = data.pop("audio_format", None)
            data = {**encode_audio(args[0], audio_format), **data}
        super().__init__(**data)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _from_value(cls, data: Any) -> Any:
        if isinstance(data, dict) and "data" in data and "audio_format" in data:
            return data
        return encode_audio(data)

    def format(self) -> list[dict[str, Any]]:
        return [
            {"type": "input_audio", "input_audio": {"data": self.data, "format": self.audio_format}}
        ]

    @classmethod
    def from_url(cls, url: str, verify: bool = True, timeout: float | None = 30.0) -> Audio:
        """Download an audio file now and keep it inline."""
        body, mime = _download(url, "Audio", verify, timeout)
        mime = mime or "audio/wav"
        if not mime.startswith("audio/"):
            raise ValueError(f"Audio.from_url({url!r}): the server sent {mime}, not audio")
        return cls(data=_b64(body), audio_format=_audio_format(mime))

    @classmethod
    def from_path(cls, file_path: str) -> Audio:
        """Read a local audio file."""
        data = _read(file_path, "Audio")
        mime = _mime_of_path(file_path, data, "audio")
        if not mime.startswith("audio/"):
            raise ValueError(f"Audio.from_path({file_path!r}): {mime} is not an audio type")
        return cls(data=_b64(data), audio_format=_audio_format(mime))

    @classmethod
    def from_file(cls, file_path: str) -> Audio:
        """DSPy's older name for :meth:`from_path`."""
        return cls.from_path(file_path)

    def __str__(self) -> str:
        return str(self.serialize_model())

    def __repr__(self) -> str:
        return (
            f"Audio(data=<AUDIO_BASE_64_ENCODED({len(self.data)})>, "
            f"audio_format='{self.audio_format}')"
        )


# --- File ----------------------------------------------------------------------------


def encode_file(value: Any) -> dict[str, Any]:
    """A file source as ``{"file_data": data URI}`` (or ``file_id`` / ``filename``)."""
    if isinstance(value, File):
        return {k: v for k, v in value._fields().items() if v is not None}
    if isinstance(value, dict):
        if {"file_data", "file_id", "filename"} & set(value):
            return dict(value)
        raise ValueError("File(dict) must contain at least one of: file_data, file_id, or filename")
    if isinstance(value, str):
        if value.startswith("data:"):
            return {"file_data": value}
        raise ValueError(
            f"File({value[:60]!r}): pass a data URI; read a local file with File.from_path(path)"
        )
    if isinstance(value, bytes | bytearray):
        return {"file_data": f"data:application/octet-stream;base64,{_b64(bytes(value))}"}
    raise ValueError(f"File({type(value).__name__}): pass bytes, a data URI or a dict")


class File(Type):
    """A document input (PDF, text...).

    ``File.from_path(p)``, ``File.from_bytes(b, mime_type=...)``, ``File.from_file_id(id)``.
    """

    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None

    model_config = pydantic.ConfigDict(
        frozen=True, str_strip_whitespace=True, validate_assignment=True, extra="forbid"
    )

    def __init__(self, *args: Any, **data: Any) -> None:
        if len(args) > 1:
            raise TypeError(f"File takes at most one source, got {len(args)}")
        if args:
            source = encode_file(args[0])
            both = sorted(set(source) & set(data))
            if both:
                raise TypeError(f"File got {', '.join(both)} both in the source and as keywords")
            data = {**source, **data}
        super().__init__(**data)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _from_value(cls, data: Any) -> Any:
        return encode_file(data)

    def _fields(self) -> dict[str, Any]:
        return {"file_data": self.file_data, "file_id": self.file_id, "filename": self.filename}

    def format(self) -> list[dict[str, Any]]:
        part = {k: v for k, v in self._fields().items() if v}
        return [{"type": "file", "file": part}]

    @classmethod
    def from_path(
        cls, file_path: str, filename: str | None = None, mime_type: str | None = None
    ) -> File:
        """Read a local file (its name and type from the path unless given)."""
        data = _read(file_path, "File")
        mime = mime_type or mimetypes.guess_type(file_path)[0] or "application/octet-stream"
        return cls(
            file_data=f"data:{mime};base64,{_b64(data)}",
            filename=filename if filename is not None else os.path.basename(file_path),
        )

    @classmethod
    def from_bytes(
        cls,
        file_bytes: bytes,
        filename: str | None = None,
        mime_type: str = "application/octet-stream",
    ) -> File:
        return cls(file_data=f"data:{mime_type};base64,{_b64(file_bytes)}", filename=filename)

    @classmethod
    def from_file_id(cls, file_id: str, filename: str | None = None) -> File:
        """A file already uploaded to the provider, by its id."""
        return cls(file_id=file_id, filename=filename)

    def __str__(self) -> str:
        return str(self.serialize_model())

    def __repr__(self) -> str:
        parts = []
        if self.file_data is not None:
            if self.file_data.startswith("data:"):
                mime = self.file_data.split(";")[0].split(":")[1]
                size = _data_uri_length(self.file_data)
                parts.append(f"file_data=<DATA_URI({mime}, {size} chars)>")
            else:
                parts.append(f"file_data=<DATA({len(self.file_data)} chars)>")
        if self.file_id is not None:
            parts.append(f"file_id='{self.file_id}'")
        if self.filename is not None:
            parts.append(f"filename='{self.filename}'")
        return f"File({', '.join(parts)})"
