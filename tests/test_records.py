"""``dspex._record.Record`` behaves as the ``typing.NamedTuple`` it stands in for.

It builds NamedTuple-style classes with ``collections.namedtuple`` (issue 11's
cold start); each behaviour is held here to a NamedTuple twin.
"""

from __future__ import annotations

import inspect
import pickle
import typing
from collections.abc import Mapping
from typing import Any, NamedTuple

import pytest

from dspex._record import Record

# -- Record against typing.NamedTuple --------------------------------------------------------


class _Typed(NamedTuple):
    """A record."""

    x: int
    y: Mapping[str, Any] = {}  # a shared default, as NamedTuple allows
    z: str = ""

    @property
    def bigger(self) -> int:
        return self.x + 1

    def label(self) -> str:
        return f"x{self.x}"


class _Cheap(Record):
    """A record."""

    x: int
    y: Mapping[str, Any] = {}
    z: str = ""

    @property
    def bigger(self) -> int:
        return self.x + 1

    def label(self) -> str:
        return f"x{self.x}"


class _Outer:
    class Inner(Record):
        a: int


def test_a_record_behaves_as_its_namedtuple_twin() -> None:
    typed, cheap = _Typed(1, z="q"), _Cheap(1, z="q")
    assert repr(cheap) == repr(typed).replace("_Typed", "_Cheap")
    assert tuple(cheap) == tuple(typed) and isinstance(cheap, tuple)
    assert _Cheap.__mro__ == (_Cheap, tuple, object)
    assert _Cheap._fields == _Typed._fields == _Cheap.__match_args__
    assert _Cheap._field_defaults == _Typed._field_defaults
    assert cheap._asdict() == typed._asdict()
    assert cheap._replace(x=5) == _Cheap(5, {}, "q") and type(cheap._replace(x=5)) is _Cheap
    assert _Cheap._make([2, {}, ""]) == _Cheap(2)
    assert (cheap.bigger, cheap.label()) == (typed.bigger, typed.label()) == (2, "x1")
    assert _Cheap.__doc__ == _Typed.__doc__ == "A record."
    assert (_Cheap.__module__, _Cheap.__qualname__) == (__name__, "_Cheap")
    assert typing.get_type_hints(_Cheap) == typing.get_type_hints(_Typed)
    # typing keeps each annotation as a ForwardRef, a Record as the string itself
    assert {k: v.__forward_arg__ for k, v in _Typed.__annotations__.items()} == (
        _Cheap.__annotations__
    )
    typed_params = inspect.signature(_Typed).parameters.values()
    assert [(p.name, p.kind, p.default) for p in typed_params] == [
        (p.name, p.kind, p.default) for p in inspect.signature(_Cheap).parameters.values()
    ]
    assert pickle.loads(pickle.dumps(cheap)) == cheap
    inner = _Outer.Inner(3)
    assert _Outer.Inner.__qualname__ == "_Outer.Inner"
    assert pickle.loads(pickle.dumps(inner)) == inner and repr(inner) == "Inner(a=3)"
    with pytest.raises(AttributeError):
        cheap.x = 2  # type: ignore[misc]


def test_a_record_refuses_what_namedtuple_refuses() -> None:
    with pytest.raises(TypeError, match="field 'b' without a default follows"):

        class _Bad(Record):
            a: int = 1
            b: int

    with pytest.raises(AttributeError, match="may not define _replace"):

        class _Worse(Record):
            a: int

            def _replace(self) -> None: ...

    with pytest.raises(TypeError, match="subclasses Record alone"):

        class _Mixed(Record, int):  # type: ignore[misc]
            a: int
