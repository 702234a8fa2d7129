"""Building signature classes from strings and dicts, with a cache for strings.

``make_signature("question, context: list[str] -> answer: int")`` parses the
text once (cached by text), resolves type names (builtins, typing and datetime
names, ``custom_types``, then the caller's frame) and caches the finished class
by text plus the objects those names resolved to, so building the same string
signature again costs a dict lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, overload

from dspex.errors import SignatureError

from ._fields import FieldInfo
from ._signature import Signature, SignatureMeta, check_type, new_signature
from ._signature_parse import field_name_problem, parse_signature_text, signature_error
from ._signature_types import TypeExprError, caller_lookup, evaluate_type, type_roots

__all__ = ["ensure_signature", "make_signature"]

_MISSING = object()
_STRING_CACHE: dict[Any, type[Signature]] = {}
_STRING_CACHE_MAX = 2048


def make_signature(
    signature: str | Mapping[str, Any],
    instructions: str | None = None,
    signature_name: str = "StringSignature",
    custom_types: Mapping[str, Any] | None = None,
) -> type[Signature]:
    """Build a signature class from a string or a ``{name: field}`` dict (DSPy's make_signature).

    Dict values are ``InputField()``/``OutputField()`` or ``(type, field)`` pairs.
    Type names in a string resolve from builtins, typing and datetime names,
    ``custom_types`` and the caller's frame.
    """
    if instructions is not None and not isinstance(instructions, str):
        raise SignatureError(
            f"instructions must be a str, got {type(instructions).__name__} ({instructions!r})."
        )
    if isinstance(signature, str):
        return _from_string(signature, instructions, signature_name, custom_types)
    if isinstance(signature, Mapping):
        return _from_dict(signature, instructions, signature_name)
    raise SignatureError(
        f"cannot build a signature from {type(signature).__name__} ({signature!r}); "
        'pass a string like "question -> answer", a dict of fields, or a Signature class.'
    )


def _from_string(
    text: str, instructions: str | None, name: str, custom_types: Mapping[str, Any] | None
) -> type[Signature]:
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
        return cached
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
    cls = new_signature(name, fields, instructions)
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


def _from_dict(spec: Mapping[str, Any], instructions: str | None, name: str) -> type[Signature]:
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
    return new_signature(name, fields, instructions)


@overload
def ensure_signature(signature: None, instructions: str | None = None) -> None: ...


@overload
def ensure_signature(
    signature: str | type[Signature] | Mapping[str, Any], instructions: str | None = None
) -> type[Signature]: ...


def ensure_signature(
    signature: str | type[Signature] | Mapping[str, Any] | None, instructions: str | None = None
) -> type[Signature] | None:
    """A signature class from a string (or dict), or the given class unchanged."""
    if signature is None:
        return None
    if isinstance(signature, SignatureMeta):
        if instructions is not None:
            raise SignatureError(
                f"ensure_signature() got instructions together with the signature class "
                f"{signature.__name__}; use {signature.__name__}.with_instructions(...) instead."
            )
        return signature
    return make_signature(signature, instructions)
