"""JSON schemas for output fields: the prompt's type note and ``response_format``.

Two different schemas live here:

* :func:`prompt_schema` is the schema DSPy prints in the system message after
  "must adhere to the JSON schema:" - pydantic's schema with ``type`` moved
  to the front of every object and the other keys sorted, exactly as DSPy
  shows it. It is computed once per signature, so importing pydantic here is
  a one-off cost.
* :func:`response_format` is what JSONAdapter sends to the provider: OpenAI's
  strict ``json_schema`` format (every object lists all its properties as
  required and forbids others), or ``{"type": "json_object"}`` when a field's
  type cannot be written as a strict schema (an open ``dict``, ``Any``...).
"""

from __future__ import annotations

import datetime as dt
import enum
import types
import typing
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Literal, Union, get_args, get_origin

__all__ = ["JSON_OBJECT", "SCHEMA_NAME", "prompt_schema", "response_format", "strict_schema"]

SCHEMA_NAME = "DSPyProgramOutputs"
JSON_OBJECT: dict[str, str] = {"type": "json_object"}


def prompt_schema(annotation: Any) -> Any:
    """pydantic's JSON schema for ``annotation``, keys ordered as DSPy prints them."""
    from pydantic import TypeAdapter

    return _type_first(TypeAdapter(annotation).json_schema())


def _type_first(node: Any) -> Any:
    if isinstance(node, Mapping):
        ordered = sorted(node.items(), key=lambda kv: (kv[0] != "type", kv[0]))
        return {key: _type_first(value) for key, value in ordered}
    if isinstance(node, list):
        return [_type_first(item) for item in node]
    return node


class NoStrictSchema(Exception):
    """Internal: a type has no strict JSON schema (an open mapping, ``Any``...)."""


def response_format(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The ``response_format`` parameter for output fields ``{name: annotation}``."""
    try:
        schema = strict_schema(fields)
    except NoStrictSchema:
        return dict(JSON_OBJECT)
    return {
        "type": "json_schema",
        "json_schema": {"name": SCHEMA_NAME, "schema": schema, "strict": True},
    }


def strict_schema(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A strict object schema with one required property per field.

    Raises :class:`NoStrictSchema` when some field's type cannot be expressed.
    """
    defs: dict[str, Any] = {}
    properties = {name: _schema(annotation, defs) for name, annotation in fields.items()}
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
    if defs:
        schema["$defs"] = defs
    return schema


_PRIMITIVES: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    type(None): {"type": "null"},
    None: {"type": "null"},
    dt.date: {"type": "string", "format": "date"},
    dt.datetime: {"type": "string", "format": "date-time"},
    dt.time: {"type": "string", "format": "time"},
}


def _schema(annotation: Any, defs: dict[str, Any]) -> dict[str, Any]:
    try:
        primitive = _PRIMITIVES.get(annotation)
    except TypeError:
        primitive = None
    if primitive is not None:
        return dict(primitive)
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is typing.Annotated:
        return _schema(args[0], defs)
    if origin is Literal:
        return _enum_schema(list(args))
    if origin is Union or origin is types.UnionType:
        return {"anyOf": [_schema(a, defs) for a in args]}
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _enum_schema([m.value for m in annotation])
    if isinstance(origin, type) and args:
        if issubclass(origin, tuple):
            if len(args) == 2 and args[1] is Ellipsis:
                return {"type": "array", "items": _schema(args[0], defs)}
            raise NoStrictSchema(f"fixed-length {annotation}")
        if issubclass(origin, AbstractSet) or (
            issubclass(origin, Sequence) and not issubclass(origin, str | bytes)
        ):
            return {"type": "array", "items": _schema(args[0], defs)}
    if annotation is Any or annotation is object or origin is not None:
        raise NoStrictSchema(f"open type {annotation}")
    if isinstance(annotation, type) and annotation in (list, dict, tuple, set, frozenset):
        raise NoStrictSchema(f"untyped {annotation.__name__}")
    return _pydantic_schema(annotation, defs)


def _enum_schema(values: list[Any]) -> dict[str, Any]:
    kinds = {type(v) for v in values}
    if not kinds <= {str, int, float, bool, type(None)}:
        raise NoStrictSchema(f"enum values {values!r}")
    schema: dict[str, Any] = {"enum": values}
    if kinds == {str}:
        schema = {"type": "string", "enum": values}
    elif kinds == {int}:
        schema = {"type": "integer", "enum": values}
    return schema


def _pydantic_schema(annotation: Any, defs: dict[str, Any]) -> dict[str, Any]:
    from pydantic import TypeAdapter

    try:
        raw = TypeAdapter(annotation).json_schema(ref_template="#/$defs/{model}")
    except Exception as exc:
        raise NoStrictSchema(f"no JSON schema for {annotation!r}") from exc
    for name, definition in raw.pop("$defs", {}).items():
        closed = _strictify(definition)
        if defs.setdefault(name, closed) != closed:
            raise NoStrictSchema(f"two different types are both named {name}")
    schema: dict[str, Any] = _strictify(raw)
    return schema


def _strictify(node: Any) -> Any:
    """OpenAI's strict rules: closed objects, all properties required, no defaults."""
    if isinstance(node, list):
        return [_strictify(item) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:  # siblings of $ref are rejected in strict mode
        return {"$ref": node["$ref"]}
    if "prefixItems" in node:
        raise NoStrictSchema("fixed-length tuple")
    all_of = node.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1:  # pydantic's wrapper around one $ref
        return _strictify(all_of[0])
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "default":
            continue
        name = "anyOf" if key == "oneOf" else key
        if name == "properties":
            out[name] = {prop: _strictify(schema) for prop, schema in value.items()}
        elif name in ("items", "anyOf", "additionalProperties"):
            out[name] = _strictify(value)
        else:
            out[name] = value
    if out.get("type") == "object":
        if "properties" not in out:
            raise NoStrictSchema("an object with open keys")
        out["required"] = list(out["properties"])
        out["additionalProperties"] = False
    return out
