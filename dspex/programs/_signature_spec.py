"""The fields a signature spec (a string or a dict) describes, with a cache for strings.

``make_signature("question, context: list[str] -> answer: int")`` (in
``_signature``) comes here: the text is parsed once (cached by text), its type
names resolved (builtins, typing and datetime names, ``custom_types``, then
the caller's frame), and the finished class cached by text plus the objects
those names resolved to, so building the same string signature again costs a
dict lookup. This module knows no signature class: the caller passes in how
to build one from the fields, so ``_signature`` can build on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from dspex.errors import SignatureError

from ._fields import FieldInfo
from ._signature_parse import field_name_problem, parse_signature_text, signature_error
from ._signature_types import TypeExprError, caller_lookup, evaluate_type, is_type_like, type_roots

__all__ = ["Build", "check_instructions", "check_type", "fields_from_dict", "from_string"]

T = TypeVar("T")
Build = Callable[[str, Mapping[str, FieldInfo], "str | None"], T]
"""Makes the class: ``build(name, fields, instructions)``."""

_MISSING = object()
_STRING_CACHE: dict[Any, Any] = {}
_STRING_CACHE_MAX = 2048


def check_instructions(instructions: Any) -> None:
    """Refuse instructions that are not a string (None means the default)."""
    if instructions is not None and not isinstance(instructions, str):
        raise SignatureError(
            f"instructions must be a str, got {type(instructions).__name__} ({instructions!r})."
        )


def check_type(name: str, type_: Any) -> Any:
    """``type_`` if it can annotate field ``name``, else a SignatureError."""
    if not is_type_like(type_):
        raise SignatureError(
            f"field `{name}`: {type_!r} is not a type. Pass a type such as int, "
            "list[str] or a pydantic model."
        )
    return type_


def from_string(
    text: str,
    instructions: str | None,
    name: str,
    custom_types: Mapping[str, Any] | None,
    build: Build[T],
) -> T:
    """The class ``build`` makes from the fields of ``text`` (cached, see the module doc)."""
    parsed = parse_signature_text(text)
    roots = _roots_of(text)
    resolved: tuple[tuple[str, Any], ...] = ()
    if roots:
        frame_lookup: Callable[[str], Any] | None = None
        found = []
        for root in roots:
            if custom_types is not None and root in custom_types:
                found.append((root, custom_types[root]))
                continue
            if frame_lookup is None:
                frame_lookup = caller_lookup()
            try:
                found.append((root, frame_lookup(root)))
            except KeyError:
                found.append((root, _MISSING))
        resolved = tuple(found)
    key: Any = (text, instructions, name, resolved)
    try:
        cached = _STRING_CACHE.get(key)
    except TypeError:  # an unhashable custom type: build without caching
        key, cached = None, None
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    names = {root: obj for root, obj in resolved if obj is not _MISSING}
    fields: dict[str, FieldInfo] = {}
    for pf in parsed:
        annotation: Any = str
        if pf.type_tree is not None:
            try:
                annotation = evaluate_type(pf.type_tree, pf.type_text, names.__getitem__)
            except TypeExprError as exc:
                raise signature_error(
                    text,
                    pf.type_position + exc.offset,
                    f"{exc.problem} in field `{pf.name}`",
                    exc.fix,
                ) from None
        # DSPy's marker of a field written without a type (str by default): Predict
        # does not type-check values given for it.
        extra = {"IS_TYPE_UNDEFINED": True} if pf.type_tree is None else {}
        fields[pf.name] = FieldInfo(kind=pf.kind, annotation=annotation, extra=extra).bind(pf.name)
    cls = build(name, fields, instructions)
    if key is not None:
        if len(_STRING_CACHE) >= _STRING_CACHE_MAX:
            _STRING_CACHE.clear()
        _STRING_CACHE[key] = cls
    return cls


_ROOTS_CACHE: dict[str, tuple[str, ...]] = {}


def _roots_of(text: str) -> tuple[str, ...]:
    roots = _ROOTS_CACHE.get(text)
    if roots is None:
        found: set[str] = set()
        for pf in parse_signature_text(text):
            if pf.type_tree is not None:
                found |= type_roots(pf.type_tree)
        roots = tuple(sorted(found))
        if len(_ROOTS_CACHE) >= _STRING_CACHE_MAX:
            _ROOTS_CACHE.clear()
        _ROOTS_CACHE[text] = roots
    return roots


def fields_from_dict(spec: Mapping[str, Any]) -> dict[str, FieldInfo]:
    """The fields of a ``{name: field}`` or ``{name: (type, field)}`` dict, checked."""
    fields: dict[str, FieldInfo] = {}
    for field_name, value in spec.items():
        if not isinstance(field_name, str):
            raise SignatureError(f"field names must be strings, got {field_name!r}.")
        problem = field_name_problem(field_name)
        if problem is not None:
            raise SignatureError(f"field {field_name!r}: {problem[0]}. {problem[1]}")
        type_: Any = None
        field = value
        if isinstance(value, tuple) and len(value) == 2:
            type_, field = value
        if not isinstance(field, FieldInfo):
            raise SignatureError(
                f"field `{field_name}`: expected InputField()/OutputField() or a "
                f"(type, field) pair, got {value!r}. Write "
                f'{{"{field_name}": InputField()}} or {{"{field_name}": (int, OutputField())}}.'
            )
        if type_ is not None:
            field = field.replace(annotation=check_type(field_name, type_))
        fields[field_name] = field.bind(field_name)
    return fields
