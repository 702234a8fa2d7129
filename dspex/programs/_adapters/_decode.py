"""Reading LM reply text as data: code fences, JSON, Python literals.

Text that should hold a list, dict or model is read as JSON first, then as a
Python literal with ``ast.literal_eval`` (which never runs code), then with
JSON's bare ``true``/``false``/``null`` rewritten for Python.
"""

from __future__ import annotations

import ast
import json
from typing import Any

__all__ = ["ConversionError", "as_data", "data_or_text", "decode_data", "strip_fences", "unquote"]


class ConversionError(ValueError):
    """A value could not be converted to a field's type."""


def strip_fences(text: str) -> str:
    """``text`` without surrounding whitespace and a Markdown code fence."""
    text = text.strip()
    if text.startswith("```") and text.endswith("```") and len(text) >= 6:
        body = text[3:-3]
        newline = body.find("\n")
        # the opening fence may carry a language tag: ```json
        if newline != -1 and body[:newline].strip().isidentifier():
            body = body[newline + 1 :]
        text = body.strip()
    elif len(text) >= 2 and text[0] == "`" and text[-1] == "`":
        text = text.strip("`").strip()
    return text


def unquote(text: str) -> str:
    """``text`` without fences and one pair of surrounding quotes."""
    text = strip_fences(text)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


_MISSING = object()


def decode_data(text: str) -> Any:
    """``text`` read as JSON, else as a Python literal (never evaluated as code).

    Tolerates a code fence and JSON words (``true``/``null``) in Python syntax;
    raises ConversionError when neither reading works.
    """
    body = strip_fences(text)
    try:
        return json.loads(body)
    except ValueError:
        pass
    value = _literal(body)
    if value is _MISSING:
        value = _literal(_pythonize(body))
    if value is _MISSING:
        raise ConversionError(f"{_short(body)} is neither JSON nor a Python literal")
    return value


def _short(text: str) -> str:
    return repr(text if len(text) <= 200 else text[:200] + "...")


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return _MISSING


_JSON_WORDS = {"true": "True", "false": "False", "null": "None"}


def _pythonize(text: str) -> str:
    """JSON's bare ``true``/``false``/``null`` as Python words, outside strings.

    Lets ``{'a': true}`` (single quotes and JSON words mixed) be read.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "\"'":
            end = i + 1
            while end < n and text[end] != ch:
                end += 2 if text[end] == "\\" else 1
            out.append(text[i : end + 1])
            i = end + 1
        elif ch.isalpha():
            end = i
            while end < n and (text[end].isalnum() or text[end] == "_"):
                end += 1
            word = text[i:end]
            out.append(_JSON_WORDS.get(word, word))
            i = end
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def as_data(value: Any) -> Any:
    """Decode text into data for container and model types; pass data through."""
    return decode_data(value) if isinstance(value, str) else value


def data_or_text(value: Any) -> Any:
    """Like :func:`as_data`, but text that is not data stays text."""
    if not isinstance(value, str):
        return value
    try:
        return decode_data(value)
    except ConversionError:
        return value
