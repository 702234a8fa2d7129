"""JSONAdapter: prompt format, response_format schemas, tolerant parsing, LM calls."""

from __future__ import annotations

from datetime import date, datetime, time
from enum import Enum
from typing import Any, Literal, Optional

import pydantic
import pytest
from adapter_helpers import ScriptedLM, assert_messages_equal, load_golden

from dspex.errors import AdapterParseError, AuthenticationError, ContextWindowError, ProviderError
from dspex.programs import Example, InputField, JSONAdapter, OutputField, Signature
from dspex.programs._adapters._json import find_json_object
from dspex.programs._adapters._schema import response_format


class Mood(Enum):
    HAPPY = "happy"
    SAD = "sad"


class Point(pydantic.BaseModel):
    x: int
    y: int = 0


class Shape(pydantic.BaseModel):
    """A named polygon."""

    name: str = pydantic.Field(description="What to call it")
    points: list[Point]
    tag: Optional[str] = None  # noqa: UP045


class Loose(pydantic.BaseModel):
    meta: dict[str, str]


class QA(Signature):
    """Answer with a confidence."""

    question: str = InputField()
    answer: str = OutputField()
    confidence: float = OutputField()


def test_golden_json_prompt_with_complete_and_incomplete_demos() -> None:
    demos = [
        Example(question="Q1", answer="A1", confidence=0.9),
        {"question": "Q0", "answer": "A0"},
    ]
    messages = JSONAdapter().format(
        Signature("question -> answer, confidence: float"), demos, {"question": "Q2"}
    )
    assert_messages_equal(messages, load_golden("json_demos"))


# --- response_format ----------------------------------------------------------


def _schema_of(annotation: Any) -> Any:
    fmt = response_format({"value": annotation})
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "DSPyProgramOutputs"
    assert fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert schema["type"] == "object"
    assert schema["required"] == ["value"]
    assert schema["additionalProperties"] is False
    return schema


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (str, {"type": "string"}),
        (int, {"type": "integer"}),
        (float, {"type": "number"}),
        (bool, {"type": "boolean"}),
        (list[str], {"type": "array", "items": {"type": "string"}}),
        (set[int], {"type": "array", "items": {"type": "integer"}}),
        (tuple[float, ...], {"type": "array", "items": {"type": "number"}}),
        (
            list[list[bool]],
            {"type": "array", "items": {"type": "array", "items": {"type": "boolean"}}},
        ),
        (Literal["yes", "no"], {"type": "string", "enum": ["yes", "no"]}),
        (Literal[1, 2], {"type": "integer", "enum": [1, 2]}),
        (Literal["a", 1], {"enum": ["a", 1]}),
        (Mood, {"type": "string", "enum": ["happy", "sad"]}),
        (Optional[int], {"anyOf": [{"type": "integer"}, {"type": "null"}]}),  # noqa: UP045
        (int | str, {"anyOf": [{"type": "integer"}, {"type": "string"}]}),
        (date, {"type": "string", "format": "date"}),
        (datetime, {"type": "string", "format": "date-time"}),
        (time, {"type": "string", "format": "time"}),
    ],
)
def test_strict_schema_for_each_type(annotation: Any, expected: dict[str, Any]) -> None:
    schema = _schema_of(annotation)
    assert schema["properties"] == {"value": expected}
    assert "$defs" not in schema


def test_strict_schema_for_nested_pydantic_models() -> None:
    schema = _schema_of(list[Shape])
    value = schema["properties"]["value"]
    assert value["type"] == "array"
    shape = value["items"]  # the outer model inline, nested ones under $defs
    assert list(schema["$defs"]) == ["Point"]
    assert shape["type"] == "object"
    assert shape["description"] == "A named polygon."
    assert shape["required"] == ["name", "points", "tag"]  # defaults are required too
    assert shape["additionalProperties"] is False
    assert shape["properties"]["name"] == {
        "description": "What to call it",
        "title": "Name",
        "type": "string",
    }
    assert shape["properties"]["points"] == {
        "items": {"$ref": "#/$defs/Point"},
        "title": "Points",
        "type": "array",
    }
    assert shape["properties"]["tag"] == {
        "anyOf": [{"type": "string"}, {"type": "null"}],
        "title": "Tag",
    }
    point = schema["$defs"]["Point"]
    assert point["required"] == ["x", "y"]
    assert point["additionalProperties"] is False
    assert "default" not in point["properties"]["y"]


def test_schema_lists_every_output_field_in_order() -> None:
    fmt = JSONAdapter().lm_params(QA, {})["response_format"]
    schema = fmt["json_schema"]["schema"]
    assert list(schema["properties"]) == ["answer", "confidence"]
    assert schema["required"] == ["answer", "confidence"]


@pytest.mark.parametrize(
    "annotation",
    [dict[str, int], dict, list, Any, tuple[int, str], Loose, Optional[dict[str, int]]],  # noqa: UP045
    ids=str,
)
def test_json_object_when_no_strict_schema_exists(annotation: Any) -> None:
    assert response_format({"ok": str, "value": annotation}) == {"type": "json_object"}


# --- tolerant parsing -----------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        '{"answer": "Paris", "confidence": 0.9}',
        '```json\n{"answer": "Paris", "confidence": 0.9}\n```',
        'Sure! Here it is:\n{"answer": "Paris", "confidence": 0.9}\nHope that helps.',
        "{'answer': 'Paris', 'confidence': 0.9}",
        "{'answer': 'Paris', 'confidence': '0.9',}",
        '{"answer": "Paris", "confidence": 0.9, "extra": true}',
        'Scratch {not json} then {"answer": "Paris", "confidence": "0.9"}',
    ],
)
def test_parse_tolerates_fences_prose_and_python_syntax(reply: str) -> None:
    assert JSONAdapter().parse(QA, reply) == {"answer": "Paris", "confidence": 0.9}


def test_parse_keeps_braces_and_quotes_inside_strings() -> None:
    reply = 'Result: {"answer": "use {x} and \\"y\\" or it\'s }", "confidence": 1}'
    assert JSONAdapter().parse(QA, reply) == {
        "answer": 'use {x} and "y" or it\'s }',
        "confidence": 1.0,
    }


def test_find_json_object_mixes_json_words_and_single_quotes() -> None:
    assert find_json_object("{'a': true, 'b': null, 'c': 'true'}") == {
        "a": True,
        "b": None,
        "c": "true",
    }
    assert find_json_object("no object here [1, 2]") is None
    assert find_json_object("{unclosed") is None


def test_parse_converts_each_field_to_its_type() -> None:
    class Typed(Signature):
        q: str = InputField()
        when: date = OutputField()
        mood: Mood = OutputField()
        shape: Shape = OutputField()
        counts: dict[str, int] = OutputField()
        text: str = OutputField()

    reply = (
        '{"when": "2024-03-01", "mood": "SAD", "shape": {"name": "t", "points": [{"x": 1}]}, '
        '"counts": {"a": "2"}, "text": 5}'
    )
    assert JSONAdapter().parse(Typed, reply) == {
        "when": date(2024, 3, 1),
        "mood": Mood.SAD,
        "shape": Shape(name="t", points=[Point(x=1)]),
        "counts": {"a": 2},
        "text": "5",
    }


def test_missing_field_is_a_parse_error_with_raw() -> None:
    reply = '{"answer": "Paris"}'
    with pytest.raises(AdapterParseError) as info:
        JSONAdapter().parse(QA, reply)
    assert info.value.raw == reply
    assert info.value.field == "confidence"
    assert info.value.adapter == "JSONAdapter"
    assert "`confidence` (float)" in str(info.value)


def test_no_object_is_a_parse_error_with_raw() -> None:
    with pytest.raises(AdapterParseError, match="no JSON object") as info:
        JSONAdapter().parse(QA, "I refuse.")
    assert info.value.raw == "I refuse."


def test_failed_conversion_is_a_parse_error_naming_field_and_type() -> None:
    reply = '{"answer": "Paris", "confidence": "high"}'
    with pytest.raises(AdapterParseError, match="`confidence` as float") as info:
        JSONAdapter().parse(QA, reply)
    assert info.value.raw == reply
    assert info.value.field == "confidence"


# --- calling an LM -------------------------------------------------------------


def test_call_sends_response_format_and_parses() -> None:
    lm = ScriptedLM('{"answer": "Paris", "confidence": 0.75}')
    values = JSONAdapter()(lm, {"max_tokens": 50}, QA, [], {"question": "Capital?"})
    assert values == [{"answer": "Paris", "confidence": 0.75}]
    (_, params) = lm.calls[0]
    assert params["max_tokens"] == 50
    assert params["response_format"]["json_schema"]["schema"]["required"] == [
        "answer",
        "confidence",
    ]


def test_callers_response_format_wins() -> None:
    lm = ScriptedLM('{"answer": "x", "confidence": 1}')
    JSONAdapter()(lm, {"response_format": {"type": "json_object"}}, QA, [], {"question": "q"})
    assert lm.calls[0][1]["response_format"] == {"type": "json_object"}


def test_open_dict_output_sends_json_object() -> None:
    lm = ScriptedLM('{"tags": {"a": 1}}')
    sig = Signature("text -> tags: dict[str, int]")
    assert JSONAdapter()(lm, {}, sig, [], {"text": "t"}) == [{"tags": {"a": 1}}]
    assert lm.calls[0][1]["response_format"] == {"type": "json_object"}


def test_rejected_schema_is_retried_once_with_json_object() -> None:
    lm = ScriptedLM(
        ProviderError("response_format json_schema not supported", status=400),
        '{"answer": "x", "confidence": 1}',
    )
    assert JSONAdapter()(lm, {}, QA, [], {"question": "q"}) == [{"answer": "x", "confidence": 1.0}]
    assert [p["response_format"]["type"] for _, p in lm.calls] == ["json_schema", "json_object"]


@pytest.mark.parametrize(
    "error",
    [
        ProviderError("down", status=503),
        AuthenticationError("bad key", status=401),
        # A 400 like a rejected schema, but a simpler format would not fit either.
        ContextWindowError("prompt is too long: 9000 tokens > 8192 maximum", status=400),
    ],
)
def test_other_lm_errors_propagate(error: Exception) -> None:
    lm = ScriptedLM(error)
    with pytest.raises(type(error)):
        JSONAdapter()(lm, {}, QA, [], {"question": "q"})
    assert len(lm.calls) == 1


def test_json_object_format_is_not_retried() -> None:
    lm = ScriptedLM(ProviderError("bad request", status=400))
    with pytest.raises(ProviderError):
        JSONAdapter()(lm, {"response_format": {"type": "json_object"}}, QA, [], {"question": "q"})
    assert len(lm.calls) == 1
