"""Typed values: prompt formatting, parsing of every supported type, round trips."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time
from enum import Enum, IntEnum
from typing import Annotated, Any, Literal, Optional, Union

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dspex.programs import ChatAdapter, InputField, JSONAdapter, OutputField, Signature, XMLAdapter
from dspex.programs._adapters._parse import ConversionError, decode_data, parser_for
from dspex.programs._adapters._values import annotation_name, format_input_value, to_jsonable


class Color(Enum):
    RED = "red"
    DARK_BLUE = "dark blue"


class Level(IntEnum):
    LOW = 1
    HIGH = 2


class Point(pydantic.BaseModel):
    x: int
    y: int


class Shape(pydantic.BaseModel):
    name: str
    points: list[Point]
    color: Color | None = None


# --- type names ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotation", "name"),
    [
        (str, "str"),
        (int, "int"),
        (list[str], "list[str]"),
        (dict[str, list[int]], "dict[str, list[int]]"),
        (Literal["a", "b"], "Literal['a', 'b']"),
        (Literal["she's", 'say "hi"', 3, True], """Literal["she's", 'say "hi"', 3, True]"""),
        (Literal["both'\""], "Literal['both\\'\"']"),
        (Optional[int], "Union[int, NoneType]"),  # noqa: UP045 - DSPy's spelling
        (int | None, "UnionType[int, NoneType]"),
        (tuple[int, ...], "tuple[int, Ellipsis]"),
        (Color, "Color"),
        (Shape, "Shape"),
        (date, "date"),
    ],
)
def test_annotation_names_match_dspy(annotation: Any, name: str) -> None:
    assert annotation_name(annotation) == name


# --- formatting values into prompts ---------------------------------------------


@pytest.mark.parametrize(
    ("annotation", "value", "text"),
    [
        (str, "plain text", "plain text"),
        (int, 42, "42"),
        (float, 0.25, "0.25"),
        (bool, False, "False"),
        (str, None, "None"),
        (list[str], ["a", "é"], '["a", "é"]'),
        (dict[str, int], {"a": 1}, '{"a": 1}'),
        (tuple[int, int], (1, 2), "[1, 2]"),
        (str, ["one"], "«one»"),
        (str, ["one", "two"], "[1] «one»\n[2] «two»"),
        (str, [], "N/A"),
        (str, ["a\nb"], "«««\n    a\n    b\n»»»"),
        (Color, Color.DARK_BLUE, "dark blue"),
        (Level, Level.HIGH, "2"),
        (date, date(2024, 2, 29), "2024-02-29"),
        (datetime, datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "2024-01-02T03:04:05Z"),
        (Shape, Shape(name="s", points=[Point(x=1, y=2)]), None),
        (list[Point], [Point(x=1, y=2)], '[{"x": 1, "y": 2}]'),
        (dict, {1: "int key"}, '{"1": "int key"}'),
    ],
)
def test_format_input_value(annotation: Any, value: Any, text: str | None) -> None:
    expected = text or '{"name": "s", "points": [{"x": 1, "y": 2}], "color": null}'
    assert format_input_value(annotation, value) == expected


def test_unserialisable_objects_fall_back_to_str() -> None:
    class Opaque:
        def __str__(self) -> str:
            return "<opaque>"

    assert to_jsonable(Opaque()) == "<opaque>"
    assert format_input_value(str, Opaque()) == "<opaque>"
    assert format_input_value(str, [Opaque()]) == "«<opaque>»"


def test_a_list_of_tools_shows_each_tool_as_its_prompt_line() -> None:
    from dspex.programs import Tool

    def search(query: str, k: int = 3) -> str:
        """Search for documents."""
        return query

    tool = Tool(search)
    line = (
        "search, whose description is <desc>Search for documents.</desc>. It takes "
        "arguments {'query': {'type': 'string'}, 'k': {'type': 'integer', 'default': 3}}."
    )
    # DSPy's Tool serialises to this line, so a list of tools is a JSON list of lines
    assert format_input_value(list[Tool], [tool]) == '["' + line + '"]'
    assert to_jsonable({"tools": (tool,)}) == {"tools": [line]}


# --- parsing every supported type ------------------------------------------------


@pytest.mark.parametrize(
    ("annotation", "reply", "value"),
    [
        (str, "  kept as is ", "  kept as is "),
        (str, 12, "12"),
        (int, "42", 42),
        (int, " `-7` ", -7),
        (int, '"5"', 5),
        (int, "3.0", 3),
        (int, 8.0, 8),
        (float, "2.5", 2.5),
        (float, "1e-3", 0.001),
        (float, 4, 4.0),
        (bool, "True", True),
        (bool, "false", False),
        (bool, "yes", True),
        (bool, 0, False),
        (list[int], "[1, 2, 3]", [1, 2, 3]),
        (list[int], "[1, '2']", [1, 2]),
        (list[str], '```json\n["a", "b"]\n```', ["a", "b"]),
        (list[str], "['single', 'quotes']", ["single", "quotes"]),
        (list[list[int]], "[[1], [2, 3]]", [[1], [2, 3]]),
        (set[int], "[1, 1, 2]", {1, 2}),
        (dict[str, int], '{"a": 1, "b": 2}', {"a": 1, "b": 2}),
        (dict[str, int], "{'a': 1,}", {"a": 1}),
        (dict[int, bool], '{"1": true}', {1: True}),
        (dict[str, Any], "{'a': true, 'b': null}", {"a": True, "b": None}),
        (dict, "{'k': [1, 2]}", {"k": [1, 2]}),
        (list, "[1, 'a']", [1, "a"]),
        (tuple[int, str], "[1, 'a']", (1, "a")),
        (tuple[int, ...], "(1, 2, 3)", (1, 2, 3)),
        (tuple, "[1]", (1,)),
        (Literal["yes", "no"], "yes", "yes"),
        (Literal["yes", "no"], "'no'", "no"),
        (Literal["yes", "no"], '"YES"', "yes"),
        (Literal["yes", "no"], "No.", "no"),
        (Literal["yes", "no"], "Literal['yes']", "yes"),
        (Literal[1, 2], "2", 2),
        (Literal[True, "maybe"], "true", True),
        (Literal["A", "a"], "a", "a"),
        (Optional[int], "7", 7),  # noqa: UP045
        (Optional[int], "None", None),  # noqa: UP045
        (Optional[int], "null", None),  # noqa: UP045
        (Optional[int], None, None),  # noqa: UP045
        (int | None, "", None),
        (Optional[str], "None", "None"),  # noqa: UP045 - DSPy keeps text when str is allowed
        (Optional[str], None, None),  # noqa: UP045
        (Union[int, float], "3", 3),  # noqa: UP007
        (Union[int, float], "3.5", 3.5),  # noqa: UP007
        (int | list[int], "[4]", [4]),
        (Color, "red", Color.RED),
        (Color, "dark blue", Color.DARK_BLUE),
        (Color, "DARK_BLUE", Color.DARK_BLUE),
        (Color, "Color.RED", Color.RED),
        (Color, "'Red'", Color.RED),
        (Level, "2", Level.HIGH),
        (Level, 1, Level.LOW),
        (Level, "HIGH", Level.HIGH),
        (date, "2024-02-29", date(2024, 2, 29)),
        (date, "'2024-02-29'", date(2024, 2, 29)),
        (date, "2024-02-29T00:00:00", date(2024, 2, 29)),
        (datetime, "2024-01-02T03:04:05Z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        (datetime, "2024-01-02", datetime(2024, 1, 2)),
        (time, "12:30", time(12, 30)),
        (Point, '{"x": 1, "y": 2}', Point(x=1, y=2)),
        (Point, "{'x': 1, 'y': '2'}", Point(x=1, y=2)),
        (Point, {"x": 3, "y": 4}, Point(x=3, y=4)),
        (
            Shape,
            '{"name": "tri", "points": [{"x": 0, "y": 0}], "color": "red"}',
            Shape(name="tri", points=[Point(x=0, y=0)], color=Color.RED),
        ),
        (list[Point], '[{"x": 1, "y": 1}]', [Point(x=1, y=1)]),
        (Optional[Point], "null", None),  # noqa: UP045
        (Annotated[int, "meta"], "9", 9),
        (Any, "[1, 2]", [1, 2]),
        (Any, "plain words", "plain words"),
        (bytes, "abc", b"abc"),
    ],
)
def test_parse_every_supported_type(annotation: Any, reply: Any, value: Any) -> None:
    parsed = parser_for(annotation)(reply)
    assert parsed == value
    assert type(parsed) is type(value)


@pytest.mark.parametrize(
    ("annotation", "reply", "needle"),
    [
        (int, "forty-two", "int"),
        (int, "3.5", "int"),
        (int, True, "int"),
        (float, "n/a", "float"),
        (bool, "perhaps", "True or False"),
        (list[int], "1 2 3", "neither JSON nor a Python literal"),
        (list[int], '{"a": 1}', "expected a list"),
        (list[int], "['x']", "int"),
        (dict[str, int], "[1, 2]", "expected an object"),
        (tuple[int, int], "[1, 2, 3]", "2 items"),
        (Literal["yes", "no"], "maybe", "exactly one of 'yes', 'no'"),
        (Literal["Yes", "YES"], "yes", "exactly one of"),
        (Color, "green", "Color"),
        (Optional[int], "lots", "Union[int, NoneType]"),  # noqa: UP045
        (date, "yesterday", "ISO date"),
        (date, "2024-01-01T10:00:00", "time of day"),
        (datetime, "noon", "ISO datetime"),
        (Point, '{"x": 1}', "Point"),
        (Point, "not json", "neither JSON"),
        (type(None), "something", "NoneType"),
    ],
)
def test_failed_conversions_name_the_type(annotation: Any, reply: Any, needle: str) -> None:
    with pytest.raises(ConversionError, match=needle.replace("[", r"\[")):
        parser_for(annotation)(reply)


def test_literal_eval_never_evaluates_code() -> None:
    with pytest.raises(ConversionError):
        decode_data("__import__('os').getcwd()")
    with pytest.raises(ConversionError):
        parser_for(list[int])("[1 for _ in range(3)]")


def test_decode_data_accepts_json_python_and_mixed_words() -> None:
    assert decode_data('{"a": [true, null]}') == {"a": [True, None]}
    assert decode_data("{'a': (1, 2), 'b': None}") == {"a": (1, 2), "b": None}
    assert decode_data("{'it''s': true, 'q': \"null\"}") == {"its": True, "q": "null"}


def test_parsers_are_compiled_once_per_annotation() -> None:
    assert parser_for(list[int]) is parser_for(list[int])


# --- hypothesis round trips -------------------------------------------------------

_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp", "Zs"))
    | st.sampled_from(" \n\t"),
    max_size=40,
).map(str.strip)
_safe_text = _text.filter(lambda s: "[[" not in s and "<" not in s)
_floats = st.floats(allow_nan=False)

# (annotation, strategy) pairs covering every supported type
_TYPED: list[tuple[Any, st.SearchStrategy[Any]]] = [
    (str, _safe_text),
    (int, st.integers()),
    (float, _floats),
    (bool, st.booleans()),
    (list[int], st.lists(st.integers(), max_size=5)),
    (list[str], st.lists(_text, max_size=5)),
    (dict[str, float], st.dictionaries(_text, _floats, max_size=4)),
    (tuple[int, ...], st.lists(st.integers(), max_size=4).map(tuple)),
    (tuple[str, bool], st.tuples(_text, st.booleans())),
    (Literal["alpha", "beta gamma", 7], st.sampled_from(["alpha", "beta gamma", 7])),
    (Optional[int], st.none() | st.integers()),  # noqa: UP045
    (Color, st.sampled_from(Color)),
    (Level, st.sampled_from(Level)),
    (date, st.dates()),
    (datetime, st.datetimes(timezones=st.none() | st.just(UTC))),
    (Point, st.builds(Point, x=st.integers(), y=st.integers())),
    (
        Shape,
        st.builds(
            Shape,
            name=_text,
            points=st.lists(st.builds(Point, x=st.integers(), y=st.integers()), max_size=3),
            color=st.none() | st.sampled_from(Color),
        ),
    ),
]


def _type_id(value: Any) -> str | None:
    return None if isinstance(value, st.SearchStrategy) else annotation_name(value)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isinf(a) and a == b)
    return bool(a == b) and type(a) is type(b)


@pytest.mark.parametrize(("annotation", "values"), _TYPED, ids=_type_id)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_value_round_trip_through_prompt_text(
    annotation: Any, values: st.SearchStrategy[Any], data: st.DataObject
) -> None:
    value = data.draw(values)
    text = format_input_value(annotation, value)
    assert _equal(parser_for(annotation)(text), value)


def _signature_for(annotation: Any) -> type[Signature]:
    class RoundTrip(Signature):
        question: str = InputField()
        value: annotation = OutputField()  # type: ignore[valid-type]
        note: str = OutputField()

    return RoundTrip


@pytest.mark.parametrize(("annotation", "values"), _TYPED, ids=_type_id)
@pytest.mark.parametrize("adapter", [ChatAdapter(), JSONAdapter(), XMLAdapter()], ids=repr)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_demo_outputs_parse_back_to_the_same_values(
    adapter: ChatAdapter, annotation: Any, values: st.SearchStrategy[Any], data: st.DataObject
) -> None:
    """What an adapter writes as a demo's reply, it reads back unchanged."""
    signature = _signature_for(annotation)
    outputs = {"value": data.draw(values), "note": data.draw(_safe_text)}
    reply = adapter.format_assistant_message_content(signature, outputs)
    parsed = adapter.parse(signature, reply)
    assert _equal(parsed["value"], outputs["value"])
    assert parsed["note"] == outputs["note"]


def test_strings_inside_decoded_data_stay_strings_for_any_items() -> None:
    # Only the reply text is decoded: "2024" as a tool argument stays text.
    parsed = parser_for(dict[str, Any])('{"year": "2024", "flag": "true", "raw": "[1]", "n": 3}')
    assert parsed == {"year": "2024", "flag": "true", "raw": "[1]", "n": 3}
    assert parser_for(list[Any])('["2", 2]') == ["2", 2]
    assert parser_for(tuple[Any, ...])('["x", "1.5"]') == ("x", "1.5")
    # Typed items are still converted, and a bare Any field still decodes its text.
    assert parser_for(dict[str, int])('{"a": "2"}') == {"a": 2}
    assert parser_for(Any)("[1, 2]") == [1, 2]
