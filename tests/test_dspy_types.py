"""DSPy's experimental Document / Citations, optional output fields that fall back to their
defaults, json-repair of malformed JSON replies, Adapter.acall."""

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


# -- Document / Citations --------------------------------------------------------------


def test_citations_from_a_list_and_documents_as_blocks() -> None:
    item = {"cited_text": "sky", "document_index": 0, "start_char_index": 4, "end_char_index": 7}
    citations = Citations.model_validate([item])
    assert citations == Citations.from_dict_list([item])
    assert citations.format() == [{"type": "char_location", **item}]
    assert isinstance(citations[0], Citations.Citation) and len(citations) == 1
    [block] = Document(data="The sky is blue", title="Sky").format()
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


def test_citations_get_dspys_type_description_line() -> None:
    class Sig(dspex.Signature):
        question: str = dspex.InputField()
        citations: Citations = dspex.OutputField()

    system = dspex.ChatAdapter().format(Sig, [], {"question": "q"})[0]["content"]
    described = "\n    Type description of Citations: " + Citations.description()
    assert "1. `citations` (Citations): " + described in system


def test_a_citations_demo_is_written_as_dspy_writes_it_and_still_parses() -> None:
    class Sig(dspex.Signature):
        question: str = dspex.InputField()
        citations: Citations = dspex.OutputField()

    item = {"cited_text": "alpha", "document_index": 0, "start_char_index": 0, "end_char_index": 5}
    demo = {"question": "Q1", "citations": Citations.from_dict_list([item])}
    messages = dspex.ChatAdapter().format(Sig, [demo], {"question": "Q2"})
    # DSPy's custom-type serialisation: the format() list between the markers, no None keys
    assert messages[2]["content"] == (
        "[[ ## citations ## ]]\n<<CUSTOM-TYPE-START-IDENTIFIER>>"
        '[{"type": "char_location", "cited_text": "alpha", "document_index": 0, '
        '"start_char_index": 0, "end_char_index": 5}]<<CUSTOM-TYPE-END-IDENTIFIER>>\n\n'
        "[[ ## completed ## ]]\n"
    )
    reply = '[[ ## citations ## ]]\n[{"cited_text": "alpha", "document_index": 0, '
    reply += '"start_char_index": 0, "end_char_index": 5}]\n\n[[ ## completed ## ]]'
    parsed = dspex.ChatAdapter().parse(Sig, reply)["citations"]
    assert parsed == Citations.from_dict_list([item])
