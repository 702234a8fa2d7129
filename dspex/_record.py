"""``Record``: ``typing.NamedTuple``'s class syntax at ``collections.namedtuple``'s cost.

Type checkers see ``typing.NamedTuple`` itself (``from dspex._record import
Record``, then ``class X(Record): ...``). At run time ``class X(Record):``
builds the class with ``collections.namedtuple`` from the field names in the
class body's annotations and the defaults assigned beside them, then copies
the body's docstring, methods and properties onto it, as ``typing`` does.
What it skips is ``typing``'s check of every annotation: under ``from
__future__ import annotations`` each one is a string that ``typing`` compiles
into a ``ForwardRef``, ~2.5x the class's cost, paid on every cold start (the
first call defines ~40 such records). ``__annotations__`` keeps the strings;
``typing.get_type_hints`` resolves them as it would any class's.

Imports nothing from dspex, so every layer may use it (the layering test
lists it beside ``dspex.errors``).
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

__all__ = ["Record"]

# As typing.NamedTuple: names a body may not define, and names not copied from it.
_PROHIBITED = frozenset(
    {
        "__new__",
        "__init__",
        "__slots__",
        "__getnewargs__",
        "_fields",
        "_field_defaults",
        "_make",
        "_replace",
        "_asdict",
        "_source",
    }
)
_SPECIAL = frozenset({"__module__", "__name__", "__annotations__"})
# Called with names known only at run time (mypy checks literal calls only).
_namedtuple: Any = collections.namedtuple


if TYPE_CHECKING:
    from typing import NamedTuple as Record


class _RecordMeta(type):
    """Turns a ``class X(Record)`` body into a namedtuple class (runs at class creation)."""

    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> Any:
        if bases != (Record,):
            raise TypeError(f"class {name}: a Record subclasses Record alone")
        fields = list(namespace.get("__annotations__", {}))
        defaults: list[Any] = []
        for field in fields:
            if field in namespace:
                defaults.append(namespace[field])
            elif defaults:
                raise TypeError(
                    f"class {name}: field {field!r} without a default follows a field "
                    "with one; give it a default or move it up"
                )
        cls = _namedtuple(name, fields, defaults=defaults, module=namespace["__module__"])
        annotations = dict(namespace.get("__annotations__", {}))
        cls.__annotations__ = cls.__new__.__annotations__ = annotations
        for key, value in namespace.items():
            if key in _PROHIBITED:
                raise AttributeError(f"class {name}: a Record may not define {key}")
            if key not in _SPECIAL and key not in cls._fields:
                setattr(cls, key, value)
        return cls


if not TYPE_CHECKING:
    Record = type.__new__(_RecordMeta, "Record", (), {"__module__": __name__})
