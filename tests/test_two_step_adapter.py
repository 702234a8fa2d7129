"""TwoStepAdapter: a prose first pass, then extraction by a second LM through ChatAdapter."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.actors import Completion, LMResponse
from dspex.errors import AdapterParseError, UsageError
from dspex.testing import DummyLM
from dspex.utils.callback import BaseCallback

GOLDEN = Path(__file__).resolve().parent / "golden" / "two_step_dspy341.json"


class ProseLM:
    """A custom LM (the LM protocol only) answering every request with fixed prose."""

    model = "prose"
    kwargs: Mapping[str, Any] = {}

    def __init__(self, *texts: str) -> None:
        self.texts = texts
        self.requests: list[tuple[list[Any], dict[str, Any]]] = []

    def generate(self, messages: Sequence[Any], params: Mapping[str, Any]) -> LMResponse:
        self.requests.append((list(messages), dict(params)))
        return LMResponse(completions=tuple(Completion(t, "stop") for t in self.texts))


def test_prompts_match_dspys_for_both_steps() -> None:
    # The golden file holds DSPy 3.4.1's messages for the same signature, demos and inputs.
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    adapter = dspex.TwoStepAdapter(DummyLM([]))
    signature = dspex.Signature(
        "question: str, ctx: list[str] -> answer: int, note", "Answer well."
    )
    demos = [
        dspex.Example(question="q0", ctx=["a"], answer=3, note="n"),
        dspex.Example(question="q1", answer=1),
    ]
    assert (
        adapter.format(signature, demos, {"question": "Q", "ctx": ["x", "y"]}) == golden["messages"]
    )
    extractor = adapter.extractor_signature(signature)
    assert adapter.extractor_signature(signature) is extractor  # built once per signature
    formatted = dspex.ChatAdapter().format(extractor, [], {"text": "the answer is 3, note n"})
    assert formatted == golden["extraction"]


def test_a_program_gets_typed_outputs_extracted_from_prose() -> None:
    main = ProseLM("After some thought: the answer is 42, because of the guide.")
    extraction = DummyLM([{"answer": "42", "note": "because of the guide"}])
    program = dspex.Predict("question -> answer: int, note")
    with dspex.context(lm=main, adapter=dspex.TwoStepAdapter(extraction)):
        result = program(question="Meaning of life?")
    assert result.answer == 42 and result.note == "because of the guide"
    ((messages, params),) = main.requests
    assert "response_format" not in params
    assert messages[-1] == {"role": "user", "content": "question: Meaning of life?"}
    sent_to_extractor = extraction.history[0]["messages"][-1]["content"]
    assert "the answer is 42, because of the guide." in sent_to_extractor


def test_each_completion_is_extracted() -> None:
    main = ProseLM("first: yes", "second: no")
    extraction = DummyLM([{"answer": "yes"}, {"answer": "no"}])
    program = dspex.Predict("question -> answer", n=2)
    with dspex.context(lm=main, adapter=dspex.TwoStepAdapter(extraction)):
        result = program(question="?")
    assert [c.answer for c in result.completions] == ["yes", "no"]


def test_an_extraction_failure_is_an_adapter_parse_error_with_the_main_reply() -> None:
    main = ProseLM("I cannot decide.")
    extraction = DummyLM([{"wrong": "x"}, {"wrong": "x"}])  # also fails the JSON fallback
    adapter = dspex.TwoStepAdapter(extraction)
    with pytest.raises(AdapterParseError) as caught:
        adapter(main, {}, dspex.Signature("question -> answer: int"), [], {"question": "?"})
    assert caught.value.raw == "I cannot decide."
    assert caught.value.adapter == "TwoStepAdapter"
    assert "Failed to parse response from the original completion" in str(caught.value)
    assert "answer" in str(caught.value)


def test_extraction_model_must_be_an_lm() -> None:
    with pytest.raises(UsageError, match="extraction_model"):
        dspex.TwoStepAdapter("openai/gpt-4o-mini")


def test_callbacks_see_the_two_step_format_and_parse() -> None:
    seen: list[str] = []

    class Seen(BaseCallback):
        def on_adapter_format_start(self, call_id: str, instance: Any, inputs: Any) -> None:
            seen.append(f"format:{type(instance).__name__}")

        def on_adapter_parse_start(self, call_id: str, instance: Any, inputs: Any) -> None:
            seen.append(f"parse:{type(instance).__name__}")

    adapter = dspex.TwoStepAdapter(DummyLM([{"answer": "a"}]))
    with dspex.context(callbacks=[Seen()]):
        adapter(ProseLM("a"), {}, dspex.Signature("question -> answer"), [], {"question": "?"})
    assert seen[0] == "format:TwoStepAdapter"
    assert "parse:TwoStepAdapter" in seen and "parse:ChatAdapter" in seen
    from dspex.adapters import TwoStepAdapter

    assert TwoStepAdapter is dspex.TwoStepAdapter


def test_the_adapter_pickles_without_its_cache() -> None:
    import pickle

    adapter = dspex.TwoStepAdapter(ProseLM("[[ ## answer ## ]]\na\n\n[[ ## completed ## ]]"))
    signature = dspex.Signature("question -> answer")
    adapter.extractor_signature(signature)
    copy = pickle.loads(pickle.dumps(adapter))
    assert isinstance(copy.extraction_model, ProseLM)
    assert copy(ProseLM("a"), {}, signature, [], {"question": "?"}) == [{"answer": "a"}]
