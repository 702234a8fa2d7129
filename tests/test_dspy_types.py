"""DSPy's ToolCalls / ToolCallResults, experimental Document / Citations, optional output
fields that fall back to their defaults, json-repair of malformed JSON replies, Adapter.acall."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from adapter_helpers import ScriptedLM

import dspex
from dspex.experimental import Citations, Document
from dspex.programs import settings
from dspex.testing import DummyLM


@pytest.fixture(autouse=True)
def clean_settings() -> Iterator[None]:
    yield
    settings.reset()


# -- ToolCalls -------------------------------------------------------------------------


def test_tool_calls_accept_dspy_and_provider_shapes() -> None:
    calls = dspex.ToolCalls.from_dict_list(
        [
            {"name": "search", "args": {"q": "cats"}},
            # a provider's shape, with slightly broken argument JSON that json-repair mends
            {"id": "call_1", "function": {"name": "lookup", "arguments": '{"id": 3,'}},
        ]
    )
    assert [(c.id, c.name, c.args) for c in calls.tool_calls] == [
        (None, "search", {"q": "cats"}),
        ("call_1", "lookup", {"id": 3}),
    ]
    assert dspex.ToolCalls.model_validate({"name": "a", "args": {}}).tool_calls[0].name == "a"
    assert calls.model_dump() == {
        "tool_calls": [
            {"name": "search", "args": {"q": "cats"}},
            {"name": "lookup", "args": {"id": 3}},
        ]
    }
    with pytest.raises(ValueError, match="invalid value for `ToolCalls`"):
        dspex.ToolCalls.model_validate(42)


def test_tool_call_execute_finds_the_function_by_name() -> None:
    call = dspex.ToolCalls.ToolCall(name="add", args={"x": 1, "y": 2})
    assert call.execute({"add": lambda x, y: x + y}) == 3
    assert call.execute([dspex.Tool(lambda x, y: x * y, name="add")]) == 2
    with pytest.raises(ValueError, match="Tool function 'add' not found"):
        call.execute({})
    with pytest.raises(RuntimeError, match="Error executing tool 'add'"):
        call.execute({"add": lambda x, y: 1 / 0})


def test_tool_call_results_pair_calls_with_values() -> None:
    calls = dspex.ToolCalls.from_dict_list([{"id": "c1", "name": "search", "args": {}}])
    results = dspex.ToolCallResults.from_tool_calls_and_values(calls, ["found"], [False])
    (result,) = results.tool_call_results
    assert (result.call_id, result.name, result.value, result.is_error) == (
        "c1",
        "search",
        "found",
        False,
    )
    with pytest.raises(ValueError, match="same length"):
        dspex.ToolCallResults.from_tool_calls_and_values(calls, [1, 2])


def test_a_tool_calls_output_field_is_parsed_from_the_reply() -> None:
    sig = dspex.Signature("question -> calls: dspex.ToolCalls")
    lm = DummyLM([{"calls": {"tool_calls": [{"name": "search", "args": {"q": "x"}}]}}])
    pred = dspex.Predict(sig)(question="q", lm=lm)
    assert isinstance(pred.calls, dspex.ToolCalls)
    assert pred.calls.tool_calls[0].args == {"q": "x"}


# -- Document / Citations --------------------------------------------------------------


def test_citations_from_a_list_and_documents_as_blocks() -> None:
    item = {"cited_text": "sky", "document_index": 0, "start_char_index": 4, "end_char_index": 7}
    citations = Citations.model_validate([item])
    assert citations == Citations.from_dict_list([item])
    assert citations.format() == [{"type": "char_location", **item}]
    assert isinstance(citations[0], Citations.Citation) and len(citations) == 1
    block = Document(data="The sky is blue", title="Sky").format()
    assert block["source"]["data"] == "The sky is blue" and block["title"] == "Sky"


# -- optional output fields ------------------------------------------------------------


class Optional_(dspex.Signature):
    question: str = dspex.InputField()
    answer: str = dspex.OutputField()
    note: str | None = dspex.OutputField(default="No note")
    tags: list[str] = dspex.OutputField(default_factory=list)
    maybe: str | None = dspex.OutputField()


@pytest.mark.parametrize("adapter", [dspex.ChatAdapter(), dspex.JSONAdapter()])
def test_missing_optional_outputs_take_their_defaults(adapter: dspex.Adapter) -> None:
    lm = DummyLM([{"answer": "42"}], adapter=adapter)
    with dspex.context(lm=lm, adapter=adapter):
        pred = dspex.Predict(Optional_)(question="q")
    assert (pred.answer, pred.note, pred.tags, pred.maybe) == ("42", "No note", [], None)


def test_xml_adapter_fills_missing_optional_outputs() -> None:
    values = dspex.XMLAdapter().parse(Optional_, "<answer>42</answer><maybe>yes</maybe>")
    assert values == {"answer": "42", "note": "No note", "tags": [], "maybe": "yes"}


def test_a_missing_required_output_still_fails() -> None:
    lm = ScriptedLM("[[ ## note ## ]]\npresent\n\n[[ ## completed ## ]]", '{"note": "present"}')
    with pytest.raises(dspex.AdapterParseError):
        dspex.ChatAdapter()(lm, {}, Optional_, [], {"question": "q"})


# -- json-repair and acall -------------------------------------------------------------


def test_json_adapter_repairs_a_truncated_object() -> None:
    lm = ScriptedLM('Here: {"answer": "Paris", "score": 3')
    sig = dspex.Signature("question -> answer, score: int")
    assert dspex.JSONAdapter()(lm, {}, sig, [], {"question": "q"}) == [
        {"answer": "Paris", "score": 3}
    ]


def test_adapter_acall() -> None:
    lm = DummyLM([{"answer": "Paris"}])
    sig = dspex.Signature("question -> answer")
    result = asyncio.run(dspex.ChatAdapter().acall(lm, {}, sig, [], {"question": "q"}))
    assert result == [{"answer": "Paris"}]


def test_types_that_describe_themselves_get_dspys_description_line() -> None:
    class Sig(dspex.Signature):
        question: str = dspex.InputField()
        citations: Citations = dspex.OutputField()
        calls: list[dspex.ToolCalls] = dspex.OutputField(desc="what to run")

    system = dspex.ChatAdapter().format(Sig, [], {"question": "q"})[0]["content"]
    assert (
        "1. `citations` (Citations): \n    Type description of Citations: "
        + Citations.description()
    ) in system
    assert (
        "2. `calls` (list[ToolCalls]): what to run\n    Type description of ToolCalls: "
        + dspex.ToolCalls.description()
    ) in system
    plain = dspex.ChatAdapter().format(dspex.Signature("q -> a"), [], {"q": "x"})[0]["content"]
    assert "Type description" not in plain
