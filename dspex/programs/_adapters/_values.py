"""Typed values on their way into a prompt: type names and value text.

These mirror DSPy 3.x's observable formatting: the type names shown in the
field list (``list[str]``, ``Literal['a', 'b']``, ``Union[int, NoneType]``),
the numbered ``«blob»`` list for a list given to a ``str`` field, and JSON
for lists, dicts and pydantic models. Plain values (str, int, float, bool,
None, and containers of them) take a fast path; anything else goes through
pydantic's JSON serialisation, imported only when such a value shows up.
"""

from __future__ import annotations

import json
from typing import Any, Literal, get_args, get_origin

__all__ = ["annotation_name", "format_input_value", "to_jsonable"]


def annotation_name(annotation: Any) -> str:
    """The type name DSPy shows for ``annotation`` (``int``, ``list[str]``...)."""
    origin = get_origin(annotation)
    if origin is None:
        # A custom type may go by another name in prompts (Reasoning shows as str).
        name = getattr(annotation, "__dspex_type_name__", None) or getattr(
            annotation, "__name__", None
        )
        return name if isinstance(name, str) else str(annotation)
    args = get_args(annotation)
    if origin is Literal:
        inner = ", ".join(
            _quote_literal(a) if isinstance(a, str) else annotation_name(a) for a in args
        )
    else:
        inner = ", ".join(annotation_name(a) for a in args)
    return f"{annotation_name(origin)}[{inner}]"


def _quote_literal(text: str) -> str:
    # Python's repr style: single quotes unless the text holds only single quotes.
    has_single, has_double = "'" in text, '"' in text
    if has_single and not has_double:
        return f'"{text}"'
    if has_single:
        return "'" + text.replace("'", "\\'") + "'"
    return f"'{text}'"


def format_input_value(annotation: Any, value: Any) -> str:
    """The text for one field value in a prompt (a demo or the current inputs)."""
    if type(value) is str:
        return value
    if annotation is str and isinstance(value, list):
        return _format_blob_list(value)
    jsonable = to_jsonable(value)
    if isinstance(jsonable, dict | list):
        return _ENCODE(jsonable)
    return str(jsonable)


# json.dumps(..., ensure_ascii=False) would build a new encoder on every call.
_ENCODE = json.JSONEncoder(ensure_ascii=False).encode


def _format_blob_list(items: list[Any]) -> str:
    if not items:
        return "N/A"
    if len(items) == 1:
        return _format_blob(str(items[0]))
    return "\n".join(f"[{i}] {_format_blob(str(item))}" for i, item in enumerate(items, 1))


def _format_blob(blob: str) -> str:
    if "\n" not in blob and "«" not in blob and "»" not in blob:
        return f"«{blob}»"
    indented = blob.replace("\n", "\n    ")
    return f"«««\n    {indented}\n»»»"


class _NotPlain(Exception):
    """Internal: a value needs pydantic's serialiser."""


def to_jsonable(value: Any) -> Any:
    """``value`` as JSON-compatible Python data (what pydantic's JSON mode gives).

    Objects pydantic cannot serialise become their ``str()``.
    """
    try:
        return _plain(value)
    except _NotPlain:
        pass
    # Walk containers item by item, so an item with its own prompt form (a Tool, whose
    # str() DSPy's pydantic-based Tool serialises to) keeps it inside a list or dict.
    kind = type(value)
    if kind is list or kind is tuple:
        return [to_jsonable(item) for item in value]
    if kind is dict and all(type(key) is str for key in value):
        return {key: to_jsonable(item) for key, item in value.items()}
    return _pydantic_dump(value)


def _plain(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if kind is list or kind is tuple:
        return [_plain(item) for item in value]
    if kind is dict:
        out: dict[str, Any] = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _NotPlain
            out[key] = _plain(item)
        return out
    raise _NotPlain


# type -> its pydantic TypeAdapter, or None when pydantic cannot serialise it
_ADAPTERS: dict[type, Any] = {}


def _pydantic_dump(value: Any) -> Any:
    kind = type(value)
    try:
        adapter = _ADAPTERS[kind]
    except KeyError:
        from pydantic import TypeAdapter

        try:
            adapter = TypeAdapter(kind)
        except Exception:  # no schema for this class: fall back to str()
            adapter = None
        _ADAPTERS[kind] = adapter
    if adapter is None:
        return str(value)
    try:
        return adapter.dump_python(value, mode="json")
    except Exception:
        return str(value)
