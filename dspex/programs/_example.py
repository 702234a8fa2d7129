"""``Example``: one row of data (a training example, a demo, an evaluation case).

A dict with attribute access and an input/label split, compatible with
``dspy.Example``: equality compares the stored fields only, the hash is the
hash of the items, and keys starting with ``dspy_`` are internal bookkeeping
hidden from ``len``/``keys``/``repr``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["Example"]

_INTERNAL_PREFIX = "dspy_"

# Attribute names defined on each class, so ``ex.x = 1`` can tell a field from
# a method or property without calling ``dir()`` on every assignment.
_CLASS_ATTRS: dict[type, frozenset[str]] = {}


def _class_attrs(cls: type) -> frozenset[str]:
    attrs = _CLASS_ATTRS.get(cls)
    if attrs is None:
        attrs = frozenset(dir(cls))
        _CLASS_ATTRS[cls] = attrs
    return attrs


def _hashable(value: Any) -> Any:
    """Reduce a field value to something ``hash()`` accepts (lists, dicts, models)."""
    if isinstance(value, dict):
        return tuple(sorted(((k, _hashable(v)) for k, v in value.items()), key=repr))
    if isinstance(value, list | tuple):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, set | frozenset):
        return tuple(sorted((_hashable(v) for v in value), key=repr))
    dump = getattr(value, "model_dump", None)  # pydantic models, without importing pydantic
    if callable(dump) and not isinstance(value, type):
        return _hashable(dump())
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def to_serializable(value: Any) -> Any:
    """Convert nested Examples, pydantic models, lists and dicts to plain data."""
    to_dict = getattr(value, "toDict", None)
    if callable(to_dict) and not isinstance(value, type):
        return to_dict()
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        return dump()
    if isinstance(value, list):
        return [to_serializable(v) for v in value]
    if isinstance(value, dict):
        return {k: to_serializable(v) for k, v in value.items()}
    return value


class Example:
    """A record of named fields with dict and attribute access.

    ``Example(base, **fields)`` copies ``base`` (a dict or another Example) and
    then applies ``fields``. ``with_inputs(*keys)`` marks the input fields;
    ``inputs()`` and ``labels()`` split the record along that line.
    """

    _store: dict[str, Any]
    _input_keys: set[str] | None
    _demos: list[Any]

    def __init__(self, base: Mapping[str, Any] | Example | None = None, **kwargs: Any) -> None:
        object.__setattr__(self, "_demos", [])
        object.__setattr__(self, "_input_keys", None)
        if isinstance(base, Example):
            store = dict(base._store)
            keys = getattr(base, "_input_keys", None)
            if keys is not None:
                object.__setattr__(self, "_input_keys", set(keys))
        elif base is not None:
            if not isinstance(base, Mapping):
                raise TypeError(
                    f"Example(base=...) takes a dict or an Example, got {type(base).__name__}; "
                    "pass fields as keyword arguments instead"
                )
            store = dict(base)
        else:
            store = {}
        if kwargs:
            store.update(kwargs)
        object.__setattr__(self, "_store", store)

    # -- attribute and item access -------------------------------------------------

    def __getattr__(self, key: str) -> Any:
        # Only called when normal lookup fails; `_store` may be missing while
        # copy/pickle rebuild the object, so never recurse on it.
        if key == "_store" or (key.startswith("__") and key.endswith("__")):
            raise AttributeError(key)
        store = self.__dict__.get("_store")
        if store is not None and key in store:
            return store[key]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{key}'")

    def __setattr__(self, key: str, value: Any) -> None:
        if key.startswith("_") or key in _class_attrs(type(self)):
            object.__setattr__(self, key, value)
        else:
            self._store[key] = value

    def __delattr__(self, key: str) -> None:
        if key in self._store and not key.startswith("_"):
            del self._store[key]
        else:
            object.__delattr__(self, key)

    def __getitem__(self, key: str) -> Any:
        return self._store[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._store[key] = value

    def __delitem__(self, key: str) -> None:
        del self._store[key]

    def __contains__(self, key: object) -> bool:
        return key in self._store

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._store))

    def __len__(self) -> int:
        return sum(1 for k in self._store if not k.startswith(_INTERNAL_PREFIX))

    # -- value semantics ---------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Example) and self._store == other._store

    def __hash__(self) -> int:
        return hash(frozenset((k, _hashable(v)) for k, v in self._store.items()))

    def __repr__(self) -> str:
        shown = {k: v for k, v in self._store.items() if not k.startswith(_INTERNAL_PREFIX)}
        return f"Example({shown}) (input_keys={self._input_keys})"

    __str__ = __repr__

    # -- dict-like views ---------------------------------------------------------------

    def keys(self, include_dspy: bool = False) -> list[str]:
        """Field names; ``include_dspy`` also lists internal ``dspy_*`` fields."""
        return [k for k in self._store if include_dspy or not k.startswith(_INTERNAL_PREFIX)]

    def values(self, include_dspy: bool = False) -> list[Any]:
        """Field values, in field order."""
        return [
            v for k, v in self._store.items() if include_dspy or not k.startswith(_INTERNAL_PREFIX)
        ]

    def items(self, include_dspy: bool = False) -> list[tuple[str, Any]]:
        """``(name, value)`` pairs, in field order."""
        return [
            (k, v)
            for k, v in self._store.items()
            if include_dspy or not k.startswith(_INTERNAL_PREFIX)
        ]

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` when the field is absent."""
        return self._store.get(key, default)

    # -- input/label split -----------------------------------------------------------

    def with_inputs(self, *keys: str) -> Example:
        """A copy with ``keys`` marked as the input fields (the rest are labels)."""
        copied = self.copy()
        object.__setattr__(copied, "_input_keys", set(keys))
        return copied

    def inputs(self) -> Example:
        """A new Example holding only the input fields (needs ``with_inputs`` first)."""
        keys = getattr(self, "_input_keys", None)
        if keys is None:
            raise ValueError(
                "Inputs have not been set for this example. "
                "Use `example.with_inputs(...)` to name the input fields."
            )
        new = type(self)(base={k: v for k, v in self._store.items() if k in keys})
        object.__setattr__(new, "_input_keys", keys)
        return new

    def labels(self) -> Example:
        """A new Example holding every field that is not an input."""
        keys = set(self.inputs().keys())
        return type(self)({k: v for k, v in self._store.items() if k not in keys})

    def copy(self, **kwargs: Any) -> Example:
        """A shallow copy, with ``kwargs`` added or overridden."""
        return type(self)(base=self, **kwargs)

    def without(self, *keys: str) -> Example:
        """A copy with ``keys`` removed (each must exist)."""
        copied = self.copy()
        for key in keys:
            del copied[key]
        return copied

    def toDict(self) -> dict[str, Any]:  # noqa: N802  (DSPy's name)
        """The fields as a plain dict, nested Examples and models converted too."""
        return {k: to_serializable(v) for k, v in self._store.items()}
