"""The adapters' demo-message cache: what a demo set's messages are made from.

``Adapter.format_demos`` keeps each signature's formatted demo messages keyed
by :func:`demos_key`, so an unchanged demo set is not formatted again on every
call (it was a sixth of a Predict call's CPU with four demos).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dspex.programs._example import Example

__all__ = ["DEMO_SETS_KEPT", "demos_key", "note_pure_formatters"]

DEMO_SETS_KEPT = 32  # per adapter class and signature
_MISSING = object()
_NUMBERS = frozenset({int, float, bool})
_FORMATTERS = (
    "format_user_message_content",
    "format_assistant_message_content",
    "format_field_block",
)
# dspex's own formatting methods: their text depends on the signature and the
# values alone (no instance state), which is what makes the cache sound.
_PURE_FORMATTERS: set[Any] = set()


def note_pure_formatters(cls: type) -> None:
    for name in _FORMATTERS:
        method = cls.__dict__.get(name)
        if method is not None:
            _PURE_FORMATTERS.add(method)


def demos_key(cls: type, names: tuple[str, ...], demos: Sequence[Any]) -> tuple[Any, ...] | None:
    """What the messages of ``demos`` are made from, or None when they are not cacheable.

    Cacheable: dspex's own formatting methods (a subclass's override may read
    anything), and demos that are ``Example``s or dicts holding only str, None,
    int, float and bool values in the signature's fields. Numbers are keyed by
    type and repr (``True == 1`` and ``-0.0 == 0.0``, but they print apart).
    """
    formatters = (
        cls.format_user_message_content,  # type: ignore[attr-defined]
        cls.format_assistant_message_content,  # type: ignore[attr-defined]
        cls.format_field_block,  # type: ignore[attr-defined]
    )
    pure = _PURE_FORMATTERS
    if formatters[0] not in pure or formatters[1] not in pure or formatters[2] not in pure:
        return None
    parts: list[Any] = [formatters]
    for demo in demos:
        kind = type(demo)
        if kind is Example:
            store = demo._store
        elif kind is dict:
            store = demo
        else:
            return None
        for name in names:
            value = store.get(name, _MISSING)
            kind = type(value)
            if kind is str or value is None or value is _MISSING:
                parts.append(value)
            elif kind in _NUMBERS:
                parts.append((kind, repr(value)))
            else:
                return None
    return tuple(parts)
