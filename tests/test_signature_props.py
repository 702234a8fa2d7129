"""Property tests: a signature's typed string form parses back to an equal signature."""

from __future__ import annotations

import datetime
import enum
from typing import Any, Literal, Optional, Union

import pydantic
from hypothesis import given, settings
from hypothesis import strategies as st

from dspex.errors import SignatureError
from dspex.programs import InputField, OutputField, Signature, make_signature
from dspex.programs._signature_parse import field_name_problem


class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = "sad"


class Doc(pydantic.BaseModel):
    title: str

    class Section(pydantic.BaseModel):
        heading: str


class Library(pydantic.BaseModel):
    docs: list[Doc]


CUSTOM = {"Mood": Mood, "Doc": Doc, "Library": Library}

names = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,12}", fullmatch=True).filter(
    lambda n: field_name_problem(n) is None
)

literal_values = st.one_of(
    st.text(max_size=8),
    st.integers(min_value=-1000, max_value=1000),
    st.booleans(),
    st.none(),
)

base_types = st.sampled_from(
    [str, int, float, bool, Any, datetime.date, datetime.datetime, Mood, Doc, Doc.Section, Library]
)


# Subscripting with runtime values: typed Any so the type checker allows it.
_list: Any = list
_dict: Any = dict
_tuple: Any = tuple
_Optional: Any = Optional
_Union: Any = Union
_Literal: Any = Literal


def _compound(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        inner.map(lambda t: _list[t]),
        inner.map(lambda t: _dict[str, t]),
        st.tuples(inner, inner).map(lambda p: _tuple[p[0], p[1]]),
        inner.map(lambda t: _tuple[t, ...]),
        inner.map(lambda t: _Optional[t]),
        inner.map(lambda t: t | None),
        st.tuples(inner, inner).map(lambda p: _Union[p[0], p[1]]),
        st.lists(literal_values, min_size=1, max_size=4).map(lambda vs: _Literal[tuple(vs)]),
    )


types = st.recursive(base_types, _compound, max_leaves=6)


@st.composite
def signatures(draw: st.DrawFn) -> type[Signature]:
    field_names = draw(st.lists(names, min_size=2, max_size=7, unique=True))
    split = draw(st.integers(min_value=1, max_value=len(field_names) - 1))
    spec: dict[str, Any] = {}
    for index, name in enumerate(field_names):
        field = InputField() if index < split else OutputField()
        spec[name] = (draw(types), field)
    instructions = draw(st.none() | st.text(max_size=30).map(str.strip))
    return make_signature(spec, instructions)


@settings(max_examples=300, deadline=None, database=None)
@given(signatures())
def test_typed_string_form_round_trips(sig: type[Signature]) -> None:
    text = sig.to_string()
    parsed = Signature(text, sig.instructions, custom_types=CUSTOM)
    assert parsed == sig, text
    assert hash(parsed) == hash(sig)
    # typing caches Literal by set equality, so Literal[None, 1] may come back as
    # an earlier-built, equal Literal[1, None]: compare the text up to that, and
    # require the rendering to be stable from then on.
    again = Signature(parsed.to_string(), sig.instructions, custom_types=CUSTOM)
    assert again == sig and again.to_string() == parsed.to_string()
    assert parsed.signature == sig.signature


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(alphabet=st.sampled_from(list("ab:,->[]' |\n_1")), max_size=30))
def test_any_text_builds_a_signature_or_raises_signature_error(text: str) -> None:
    try:
        sig = Signature(text)
    except SignatureError as err:
        assert err.signature == text
        assert err.position is not None and 0 <= err.position <= len(text)
        assert f"(position {err.position})" in str(err)
    else:
        assert sig.input_fields and sig.output_fields
        assert Signature(sig.to_string()) == sig
