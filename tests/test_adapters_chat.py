"""ChatAdapter: DSPy 3.x's exact prompts (golden files), reply parsing, JSON fallback."""

from __future__ import annotations

import gc
import weakref
from datetime import date
from enum import Enum
from typing import Any, Literal, Optional

import pydantic
import pytest
from adapter_helpers import ScriptedLM, assert_messages_equal, load_golden

from dspex.errors import AdapterParseError, ProviderError, RateLimitError
from dspex.programs import (
    Adapter,
    ChatAdapter,
    Example,
    InputField,
    JSONAdapter,
    OutputField,
    Predict,
    Signature,
)
from dspex.testing import DummyLM

# --- signatures used by the golden prompts ------------------------------------


class Person(pydantic.BaseModel):
    name: str
    age: int


class Citation(pydantic.BaseModel):
    source: str
    page: int


class Report(pydantic.BaseModel):
    headline: str
    citations: list[Citation]


class TypedSig(Signature):
    person: Person = InputField()
    numbers: list[int] = InputField()
    flag: bool = InputField()
    total: int = OutputField()
    ratio: float = OutputField()
    ok: bool = OutputField()
    tags: list[str] = OutputField()
    verdict: Literal["yes", "no"] = OutputField()
    report: Report = OutputField()


class Mood(Enum):
    HAPPY = "happy"
    SAD = "sad"


class MoreTypes(Signature):
    """Extract facts."""

    text: str = InputField(desc="Source text")
    when: date = InputField()
    mood: Mood = OutputField()
    count: Optional[int] = OutputField(desc="How many, if stated")  # noqa: UP045 - DSPy's type name
    day: date = OutputField()
    stats: dict[str, int] = OutputField()
    ids: tuple[int, ...] = OutputField()


class Classify(Signature):
    """Classify the sentiment of a review.

    Be strict about sarcasm."""

    review: str = InputField(desc="The review text", prefix="Review:")
    sentiment: Literal["positive", "negative", "neutral"] = OutputField(
        desc="The overall sentiment"
    )
    confidence: float = OutputField(desc="Between 0 and 1")


class RAG(Signature):
    """Answer from the context."""

    context: str = InputField()
    question: str = InputField()
    answer: str = OutputField()
    score: int = OutputField()


# --- golden prompts -----------------------------------------------------------


def test_golden_plain_string_signature() -> None:
    messages = ChatAdapter().format(
        Signature("question -> answer"), [], {"question": "What is the capital of France?"}
    )
    assert_messages_equal(messages, load_golden("chat_plain_str"))


def test_golden_typed_inputs_and_outputs() -> None:
    inputs = {"person": Person(name="Ada", age=36), "numbers": [1, 2, 3], "flag": True}
    messages = ChatAdapter().format(TypedSig, [], inputs)
    assert_messages_equal(messages, load_golden("chat_typed"))


def test_golden_enum_optional_date_dict_tuple() -> None:
    inputs = {"text": "Two cats on 2024-05-01.", "when": date(2024, 5, 1)}
    messages = ChatAdapter().format(MoreTypes, [], inputs)
    assert_messages_equal(messages, load_golden("chat_more_types"))


def test_golden_class_form_with_instructions_and_descs() -> None:
    messages = ChatAdapter().format(Classify, [], {"review": "Great, another Monday."})
    assert_messages_equal(messages, load_golden("chat_class_form"))


def test_golden_complete_demos() -> None:
    demos = [
        Example(
            context=["Paris is in France.", "Berlin is in Germany."],
            question="Where is Paris?",
            answer="France",
            score=5,
        ),
        {
            "context": ["Rome is in Italy.\nIt is old."],
            "question": "Where is Rome?",
            "answer": "Italy",
            "score": 4,
        },
    ]
    messages = ChatAdapter().format(RAG, demos, {"context": [], "question": "Where is Oslo?"})
    assert_messages_equal(messages, load_golden("chat_demos_complete"))


def test_golden_incomplete_demos_come_first_and_useless_demos_are_dropped() -> None:
    demos = [
        {"question": "Q0", "context": "C0", "answer": "A0", "score": 0},  # complete
        Example(question="Q1", answer="A1"),  # no context, no score
        {"question": "only input"},  # no output at all: dropped
        {"question": "Q3", "score": 2},  # no answer (not the last field)
        {"question": "Q4", "context": None, "answer": "A4", "score": 1},  # None = incomplete
    ]
    messages = ChatAdapter().format(
        Signature("question, context -> answer, score: int"),
        demos,
        {"question": "Q5", "context": "C5"},
    )
    assert_messages_equal(messages, load_golden("chat_demos_incomplete"))


def test_system_message_is_built_once_per_signature() -> None:
    adapter = ChatAdapter()
    first = adapter.format(RAG, [], {"question": "a", "context": "b"})[0]["content"]
    again = adapter.format(RAG, [], {"question": "c", "context": "d"})[0]["content"]
    assert first is again  # the cached string itself
    assert adapter.plan(RAG) is ChatAdapter().plan(RAG)  # shared by the class


def test_plan_cache_forgets_collected_signatures() -> None:
    class Temporary(Signature):
        topic: str = InputField()
        summary: str = OutputField()

    adapter = ChatAdapter()
    sig = Temporary
    del Temporary
    adapter.plan(sig)
    assert id(sig) in ChatAdapter._plans
    key, ref = id(sig), weakref.ref(sig)
    del sig
    gc.collect()
    assert ref() is None
    assert key not in ChatAdapter._plans


def test_user_message_content_skips_inputs_not_given() -> None:
    content = ChatAdapter().format_user_message_content(RAG, {"question": "Why?"})
    assert content == "[[ ## question ## ]]\nWhy?"


# --- parsing --------------------------------------------------------------------


def test_parse_splits_sections_and_types_values() -> None:
    reply = (
        "[[ ## total ## ]]\n 42 \n\n[[ ## ratio ## ]]\n0.5\n\n[[ ## ok ## ]]\nfalse\n\n"
        "[[ ## tags ## ]]\n['a', 'b']\n\n[[ ## verdict ## ]]\n'Yes'\n\n"
        '[[ ## report ## ]]\n```json\n{"headline": "H", "citations": '
        '[{"source": "s", "page": 3}]}\n```\n\n[[ ## completed ## ]]\n'
    )
    values = ChatAdapter().parse(TypedSig, reply)
    assert values == {
        "total": 42,
        "ratio": 0.5,
        "ok": False,
        "tags": ["a", "b"],
        "verdict": "yes",
        "report": Report(headline="H", citations=[Citation(source="s", page=3)]),
    }


def test_parse_multiline_text_same_line_content_first_wins_and_crlf() -> None:
    reply = (
        "Sure!\r\n  [[ ## answer ## ]] Line one\r\nline two\r\n\r\n"
        "[[ ## score ## ]]\r\n7\r\n[[ ## answer ## ]]\r\nignored\r\n[[ ## completed ## ]]"
    )
    values = ChatAdapter().parse(RAG, reply)
    assert values == {"answer": "Line one\nline two", "score": 7}


def test_parse_ignores_markers_not_at_line_start() -> None:
    reply = "[[ ## answer ## ]]\nsee [[ ## score ## ]] inline\n\n[[ ## score ## ]]\n1"
    assert ChatAdapter().parse(RAG, reply) == {"answer": "see [[ ## score ## ]] inline", "score": 1}


def test_missing_field_raises_with_field_type_and_raw() -> None:
    reply = "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]"
    with pytest.raises(AdapterParseError) as info:
        ChatAdapter().parse(RAG, reply)
    err = info.value
    assert err.raw == reply
    assert err.field == "score"
    assert err.adapter == "ChatAdapter"
    assert "`score` (int)" in str(err)
    assert "[[ ## name ## ]]" in str(err)


def test_failed_conversion_raises_with_field_type_and_raw() -> None:
    reply = "[[ ## answer ## ]]\nParis\n\n[[ ## score ## ]]\nvery high\n\n[[ ## completed ## ]]"
    with pytest.raises(AdapterParseError) as info:
        ChatAdapter().parse(RAG, reply)
    err = info.value
    assert err.raw == reply
    assert err.field == "score"
    assert "output field `score` as int" in str(err)
    assert "'very high'" in str(err)
    assert isinstance(err.__cause__, ValueError)


def test_literal_outside_the_choices_is_a_parse_error() -> None:
    reply = "[[ ## sentiment ## ]]\nmixed\n\n[[ ## confidence ## ]]\n0.4"
    with pytest.raises(AdapterParseError, match=r"sentiment.*'positive', 'negative'"):
        ChatAdapter().parse(Classify, reply)


# --- calling an LM --------------------------------------------------------------


def test_call_parses_every_completion_and_passes_params() -> None:
    good = "[[ ## answer ## ]]\nA\n[[ ## score ## ]]\n1"
    lm = ScriptedLM([good, "[[ ## answer ## ]]\nB\n[[ ## score ## ]]\n3"])
    kwargs = {"n": 2, "temperature": 0.7}
    values = ChatAdapter()(lm, kwargs, RAG, [], {"question": "q", "context": "c"})
    assert values == [{"answer": "A", "score": 1}, {"answer": "B", "score": 3}]
    assert len(lm.calls) == 1
    messages, params = lm.calls[0]
    assert params == {"n": 2, "temperature": 0.7}
    assert messages[-1]["content"].startswith("[[ ## context ## ]]\nc")
    assert kwargs == {"n": 2, "temperature": 0.7}  # the caller's dict is not touched


def test_one_bad_completion_fails_the_call() -> None:
    lm = ScriptedLM(["[[ ## answer ## ]]\nA\n[[ ## score ## ]]\n1", "[[ ## answer ## ]]\nB"])
    with pytest.raises(AdapterParseError, match="score"):
        ChatAdapter(use_json_adapter_fallback=False)(lm, {"n": 2}, RAG, [], {"question": "q"})


def test_string_signature_is_accepted_by_call() -> None:
    lm = ScriptedLM("[[ ## answer ## ]]\n4\n\n[[ ## completed ## ]]")
    assert ChatAdapter()(lm, {}, "question -> answer: int", [], {"question": "2+2"}) == [
        {"answer": 4}
    ]


def test_empty_reply_is_a_parse_error() -> None:
    lm = ScriptedLM("   ")
    with pytest.raises(AdapterParseError, match="empty reply"):
        ChatAdapter(use_json_adapter_fallback=False)(lm, {}, RAG, [], {"question": "q"})


def test_fallback_to_json_adapter_exactly_once() -> None:
    lm = ScriptedLM(
        "I think the answer is Paris, with a score of about 9.",
        'Here you go: {"answer": "Paris", "score": 9}',
    )
    values = ChatAdapter()(lm, {"temperature": 0.0}, RAG, [], {"question": "Capital?"})
    assert values == [{"answer": "Paris", "score": 9}]
    assert len(lm.calls) == 2
    (first_messages, first_params), (second_messages, second_params) = lm.calls
    assert "response_format" not in first_params
    assert second_params["response_format"]["type"] == "json_schema"
    assert second_params["temperature"] == 0.0
    assert "[[ ## answer ## ]]" in first_messages[-1]["content"]
    assert "Respond with a JSON object" in second_messages[-1]["content"]


def test_when_json_fallback_also_fails_its_error_is_raised_chained() -> None:
    lm = ScriptedLM("no markers here", "still no JSON object")
    with pytest.raises(AdapterParseError) as info:
        ChatAdapter()(lm, {}, RAG, [], {"question": "q"})
    assert info.value.adapter == "JSONAdapter"
    assert isinstance(info.value.__cause__, AdapterParseError)
    assert info.value.__cause__.adapter == "ChatAdapter"
    assert len(lm.calls) == 2


@pytest.mark.parametrize(
    "error", [ProviderError("boom", status=500), RateLimitError("slow down", retry_after=1.0)]
)
def test_lm_errors_do_not_trigger_the_fallback(error: Exception) -> None:
    lm = ScriptedLM(error, '{"answer": "x", "score": 1}')
    with pytest.raises(type(error)):
        ChatAdapter()(lm, {}, RAG, [], {"question": "q"})
    assert len(lm.calls) == 1


def test_fallback_can_be_turned_off() -> None:
    lm = ScriptedLM("garbage", '{"answer": "x", "score": 1}')
    with pytest.raises(AdapterParseError) as info:
        ChatAdapter(use_json_adapter_fallback=False)(lm, {}, RAG, [], {"question": "q"})
    assert info.value.adapter == "ChatAdapter"
    assert len(lm.calls) == 1


def test_json_adapter_does_not_fall_back_to_itself() -> None:
    lm = ScriptedLM("garbage", '{"answer": "x", "score": 1}')
    with pytest.raises(AdapterParseError):
        JSONAdapter()(lm, {}, RAG, [], {"question": "q"})
    assert len(lm.calls) == 1


def test_predict_with_dummy_lm_goes_through_the_chat_adapter() -> None:
    lm = DummyLM([{"answer": "Paris", "score": "9"}])
    predict = Predict(RAG)
    result = predict(question="Capital of France?", context="Europe", lm=lm)
    assert result.answer == "Paris"
    assert result.score == 9


def test_custom_adapter_defining_only_format_and_parse_works() -> None:
    class Plain(Adapter):
        def format(self, signature: Any, demos: Any, inputs: Any) -> list[dict[str, Any]]:
            return [{"role": "user", "content": inputs["question"]}]

        def parse(self, signature: Any, completion: str) -> dict[str, Any]:
            return {"answer": completion.strip()}

    lm = ScriptedLM(" 42 ")
    assert Plain()(lm, {"n": 1}, Signature("question -> answer"), [], {"question": "q"}) == [
        {"answer": "42"}
    ]
    assert lm.calls == [([{"role": "user", "content": "q"}], {"n": 1})]


def test_output_type_without_a_schema_gets_a_plain_note() -> None:
    class Opaque:
        pass

    class Odd(Signature):
        question: str = InputField()
        thing: Opaque = OutputField()

    system = ChatAdapter().format(Odd, [], {"question": "q"})[0]["content"]
    assert "{thing}        # note: the value you produce must be a valid Opaque" in system


def test_when_both_fail_the_message_leads_with_the_most_specific_cause() -> None:
    # The chat reply holds `person` with a wrong-typed age; the JSON fallback's reply
    # lacks `person` altogether. The wrong type is what the user must see first.
    class Who(Signature):
        question: str = InputField()
        person: Person = OutputField()

    lm = DummyLM([{"person": {"name": "Al", "age": "about seven"}}, {"name": "Al"}])
    with pytest.raises(AdapterParseError) as info:
        ChatAdapter()(lm, {}, Who, [], {"question": "who?"})
    message = str(info.value)
    assert message.startswith(
        "Adapter ChatAdapter failed to parse the LM response: could not parse output field `person`"
    ), message
    assert "about seven" in message.split("JSONAdapter fallback", maxsplit=1)[0]
    assert "The JSONAdapter fallback failed too" in message and "lacks output field" in message
    assert (info.value.adapter, info.value.field) == ("ChatAdapter", "person")
    first = info.value.__cause__
    assert isinstance(first, AdapterParseError) and first.adapter == "ChatAdapter"
    assert isinstance(first.__cause__, ValueError | TypeError)
    fallback = info.value.__context__
    assert isinstance(fallback, AdapterParseError) and fallback.adapter == "JSONAdapter"
    assert len(lm.history) == 2
