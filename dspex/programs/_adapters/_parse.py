"""Typed values on their way out of an LM reply: text or JSON data -> Python values.

:func:`parser_for` compiles, once per annotation, a function that turns a
field's reply text (ChatAdapter) or decoded JSON value (JSONAdapter) into a
value of that type. Simple types are parsed by hand, so the common case never
touches pydantic; pydantic models and unusual annotations go through pydantic,
imported lazily. Text that should hold a list, dict or model is read as JSON,
then as a Python literal (``ast.literal_eval``, never ``eval``).

A failed conversion raises :class:`ConversionError` (a ``ValueError``) whose
message names the expected type; adapters turn it into ``AdapterParseError``.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Literal, Union, get_args, get_origin

from dspex.programs._adapters._decode import (
    ConversionError,
    as_data,
    data_or_text,
    decode_data,
    unquote,
)
from dspex.programs._adapters._values import annotation_name

__all__ = ["ConversionError", "Parser", "decode_data", "parser_for"]

Parser = Callable[[Any], Any]


def parser_for(annotation: Any) -> Parser:
    """A parser turning reply text or JSON data into a value of ``annotation``."""
    try:
        return _cached_parser(annotation)
    except TypeError:  # unhashable annotation metadata: build without the cache
        return _build(annotation)


@functools.lru_cache(maxsize=512)
def _cached_parser(annotation: Any) -> Parser:
    return _build(annotation)


def _fail(value: Any, annotation: Any, why: str = "") -> ConversionError:
    shown = repr(value)
    if len(shown) > 200:
        shown = shown[:200] + "..."
    detail = f": {why}" if why else ""
    return ConversionError(f"{shown} is not a valid {annotation_name(annotation)}{detail}")


# --- scalar parsers -------------------------------------------------------


def _parse_str(value: Any) -> str:
    return value if type(value) is str else str(value)


def _parse_int(value: Any) -> int:
    if type(value) is int:
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = unquote(value)
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            if number.is_integer():
                return int(number)
    raise _fail(value, int)


def _parse_float(value: Any) -> float:
    if type(value) is float:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(unquote(value))
        except ValueError:
            pass
    raise _fail(value, float)


_TRUE = frozenset({"true", "t", "yes", "y", "1", "on"})
_FALSE = frozenset({"false", "f", "no", "n", "0", "off"})


def _parse_bool(value: Any) -> bool:
    if type(value) is bool:
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = unquote(value).lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise _fail(value, bool, "expected True or False")


def _parse_none(value: Any) -> None:
    if value is None or (isinstance(value, str) and unquote(value) in ("", "None", "null")):
        return None
    raise _fail(value, type(None))


def _parse_date(value: Any) -> dt.date:
    if type(value) is dt.date:
        return value
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, str):
        text = unquote(value)
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            pass
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            raise _fail(value, dt.date, "expected an ISO date like 2024-01-31") from None
    else:
        raise _fail(value, dt.date, "expected an ISO date like 2024-01-31")
    if moment.time() == dt.time():
        return moment.date()
    raise _fail(value, dt.date, "it has a time of day")


def _parse_datetime(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(unquote(value))
        except ValueError:
            pass
    raise _fail(value, dt.datetime, "expected an ISO datetime like 2024-01-31T12:00:00")


def _parse_time(value: Any) -> dt.time:
    if isinstance(value, dt.time):
        return value
    if isinstance(value, str):
        try:
            return dt.time.fromisoformat(unquote(value))
        except ValueError:
            pass
    raise _fail(value, dt.time, "expected an ISO time like 12:30:00")


def _parse_any(value: Any) -> Any:
    return data_or_text(value)


_SCALARS: dict[Any, Parser] = {
    str: _parse_str,
    int: _parse_int,
    float: _parse_float,
    bool: _parse_bool,
    type(None): _parse_none,
    None: _parse_none,
    dt.date: _parse_date,
    dt.datetime: _parse_datetime,
    dt.time: _parse_time,
    Any: _parse_any,
    object: _parse_any,
}


# --- compound parsers -----------------------------------------------------


def _build(annotation: Any) -> Parser:
    scalar = _SCALARS.get(annotation) if _hashable(annotation) else None
    if scalar is not None:
        return scalar
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is typing.Annotated:
        return parser_for(args[0])
    if origin is Literal:
        return _literal_parser(annotation, args)
    if origin is Union or origin is types.UnionType:
        return _union_parser(annotation, args)
    if isinstance(annotation, type):
        if issubclass(annotation, enum.Enum):
            return _enum_parser(annotation)
        if getattr(annotation, "__dspex_custom_type__", False):
            return _custom_type_parser(annotation)
        if _is_pydantic_model(annotation):
            return _model_parser(annotation)
        if annotation in (list, tuple, set, frozenset, dict):
            origin, args = annotation, ()
    if isinstance(origin, type):
        if issubclass(origin, tuple):
            return _tuple_parser(annotation, args)
        if issubclass(origin, Mapping):
            return _dict_parser(annotation, args)
        if issubclass(origin, AbstractSet):
            return _sequence_parser(annotation, args, set if origin is not frozenset else frozenset)
        if issubclass(origin, Sequence) and not issubclass(origin, str | bytes):
            return _sequence_parser(annotation, args, list)
    return _pydantic_parser(annotation)


def _hashable(annotation: Any) -> bool:
    try:
        hash(annotation)
    except TypeError:
        return False
    return True


def _literal_parser(annotation: Any, allowed: tuple[Any, ...]) -> Parser:
    texts = {a: a for a in allowed if isinstance(a, str)}
    folded: dict[str, Any] = {}
    clashes: set[str] = set()
    for option in allowed:
        key = str(option).casefold()
        if key in folded and folded[key] != option:
            clashes.add(key)
        folded.setdefault(key, option)
    for key in clashes:  # "A" and "a" both allowed: only an exact match may pick
        del folded[key]
    others = [a for a in allowed if not isinstance(a, str)]

    def parse(value: Any) -> Any:
        for option in allowed:
            if value == option and type(value) is type(option):
                return option
        if isinstance(value, str):
            text = value.strip()
            for head in ("Literal[", "str["):
                if text.startswith(head) and text.endswith("]"):
                    text = text[len(head) : -1]
            for candidate in (unquote(text), unquote(text).rstrip(".").strip()):
                if candidate in texts:
                    return texts[candidate]
                for option in others:
                    if candidate == str(option):
                        return option
                key = candidate.casefold()
                if key in folded:
                    return folded[key]
        choices = ", ".join(repr(a) for a in allowed)
        raise _fail(value, annotation, f"expected exactly one of {choices}")

    return parse


def _enum_parser(enum_cls: type[enum.Enum]) -> Parser:
    members = list(enum_cls)
    by_text: dict[str, enum.Enum] = {}
    folded: dict[str, enum.Enum] = {}
    for member in members:
        for key in (str(member.value), member.name, f"{enum_cls.__name__}.{member.name}"):
            by_text.setdefault(key, member)
            folded.setdefault(key.casefold(), member)

    def parse(value: Any) -> enum.Enum:
        if isinstance(value, enum_cls):
            return value
        for member in members:  # by value first, as DSPy does
            if member.value == value and type(member.value) is type(value):
                return member
        if isinstance(value, str | int | float):
            text = unquote(str(value))
            if text in by_text:
                return by_text[text]
            if text.casefold() in folded:
                return folded[text.casefold()]
        choices = ", ".join(repr(m.value) for m in members)
        raise _fail(value, enum_cls, f"expected a value or name of {enum_cls.__name__}: {choices}")

    return parse


_EXACT_SCALARS = (str, int, float, bool, type(None))


def _union_parser(annotation: Any, members: tuple[Any, ...]) -> Parser:
    has_none = type(None) in members
    has_str = str in members
    options = [(m, parser_for(m)) for m in members if m is not type(None)]

    def parse(value: Any) -> Any:
        if value is None and has_none:
            return None
        if has_str and isinstance(value, str):
            return value  # DSPy keeps the text as-is when str is allowed
        data = data_or_text(value)
        if data is None and has_none:
            return None
        for member, _ in options:  # an exact type match wins, like pydantic's smart mode
            if member in _EXACT_SCALARS and type(data) is member:
                return data
        problems = []
        for _, parse_member in options:
            try:
                return parse_member(data)
            except (ValueError, TypeError) as exc:
                problems.append(str(exc))
        if has_none and isinstance(value, str) and unquote(value) in ("None", "null", ""):
            return None
        raise _fail(value, annotation, "; ".join(problems))

    return parse


def _sequence_parser(annotation: Any, args: tuple[Any, ...], build: type) -> Parser:
    item = _element_parser(args[0]) if args else _identity

    def parse(value: Any) -> Any:
        data = as_data(value)
        if not isinstance(data, list | tuple | set | frozenset):
            raise _fail(value, annotation, f"expected a list, got {type(data).__name__}")
        return build(item(x) for x in data)

    return parse


def _tuple_parser(annotation: Any, args: tuple[Any, ...]) -> Parser:
    if not args or (len(args) == 2 and args[1] is Ellipsis):
        item = _element_parser(args[0]) if args else _identity

        def parse_any_length(value: Any) -> tuple[Any, ...]:
            data = as_data(value)
            if not isinstance(data, list | tuple):
                raise _fail(value, annotation, f"expected a list, got {type(data).__name__}")
            return tuple(item(x) for x in data)

        return parse_any_length
    if args == ((),):  # tuple[()]
        args = ()
    items = [_element_parser(a) for a in args]

    def parse_fixed(value: Any) -> tuple[Any, ...]:
        data = as_data(value)
        if not isinstance(data, list | tuple) or len(data) != len(items):
            raise _fail(value, annotation, f"expected a list of {len(items)} items")
        return tuple(p(x) for p, x in zip(items, data, strict=True))

    return parse_fixed


def _dict_parser(annotation: Any, args: tuple[Any, ...]) -> Parser:
    key = _element_parser(args[0]) if args else _identity
    val = _element_parser(args[1]) if len(args) == 2 else _identity

    def parse(value: Any) -> dict[Any, Any]:
        data = as_data(value)
        if not isinstance(data, Mapping):
            raise _fail(value, annotation, f"expected an object, got {type(data).__name__}")
        return {key(k): val(v) for k, v in data.items()}

    return parse


def _identity(value: Any) -> Any:
    return value


def _element_parser(annotation: Any) -> Parser:
    """The parser for items of decoded data: an ``Any`` item is kept as decoded.

    Only the reply's own text is decoded; a string inside decoded JSON (a
    tool argument "2024", say) stays a string.
    """
    if annotation is Any or annotation is object:
        return _identity
    return parser_for(annotation)


def _is_pydantic_model(cls: type) -> bool:
    # Checked by attribute so plain classes never import pydantic.
    return hasattr(cls, "model_validate") and hasattr(cls, "model_fields")


def _model_parser(model: Any) -> Parser:
    def parse(value: Any) -> Any:
        if isinstance(value, model):
            return value
        try:
            return model.model_validate(as_data(value))
        except ConversionError:
            raise
        except ValueError as exc:  # pydantic's ValidationError
            raise _fail(value, model, _first_lines(str(exc))) from exc

    return parse


def _custom_type_parser(model: Any) -> Parser:
    """A dspex/DSPy custom type: from decoded data, else from the raw text (``Code``)."""

    def parse(value: Any) -> Any:
        if isinstance(value, model):
            return value
        try:
            return model.model_validate(data_or_text(value))
        except ValueError as exc:  # pydantic's ValidationError
            if isinstance(value, str):
                try:
                    return model.model_validate(value)
                except ValueError:
                    pass
            raise _fail(value, model, _first_lines(str(exc))) from exc

    return parse


def _pydantic_parser(annotation: Any) -> Parser:
    adapter: Any = None

    def parse(value: Any) -> Any:
        nonlocal adapter
        if adapter is None:
            from pydantic import TypeAdapter

            adapter = TypeAdapter(annotation)
        try:
            return adapter.validate_python(data_or_text(value))
        except ValueError as exc:
            raise _fail(value, annotation, _first_lines(str(exc))) from exc

    return parse


def _first_lines(text: str, limit: int = 6) -> str:
    lines = text.splitlines()
    return " ".join(line.strip() for line in lines[:limit])
