"""Predict and ChainOfThought end to end with DummyLM and the real adapters."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import pytest

from dspex.errors import UsageError
from dspex.programs import (
    ChainOfThought,
    Example,
    InputField,
    Module,
    OutputField,
    Predict,
    Prediction,
    Signature,
    configure,
    context,
)
from dspex.programs._adapters import JSONAdapter
from dspex.testing import DummyLM

pytestmark = pytest.mark.usefixtures("clean_settings")


def _last_user(lm: DummyLM) -> str:
    content: str = lm.history[-1]["messages"][-1]["content"]
    return content


def test_list_mode_with_configured_lm() -> None:
    lm = DummyLM([{"answer": "Paris", "confidence": "0.9"}])
    configure(lm=lm)
    qa = Predict("question, context -> answer, confidence: float")
    pred = qa(question="Capital of France?", context="Geography")
    assert isinstance(pred, Prediction)
    assert pred.answer == "Paris"
    assert pred.confidence == 0.9  # parsed to the declared type
    prompt = _last_user(lm)
    assert "[[ ## question ## ]]\nCapital of France?" in prompt
    assert "[[ ## context ## ]]\nGeography" in prompt


def test_demos_are_sent_as_turns() -> None:
    lm = DummyLM([{"answer": "4"}])
    qa = Predict("question -> answer")
    qa.demos = [Example(question="1+1?", answer="2"), {"question": "2+1?", "answer": "3"}]
    qa(question="2+2?", lm=lm)
    messages = lm.history[-1]["messages"]
    assert [m["role"] for m in messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert "1+1?" in messages[1]["content"]
    assert "2" in messages[2]["content"]
    assert "2+1?" in messages[3]["content"]


def test_dict_mode_routes_by_prompt_substring() -> None:
    lm = DummyLM({"sky": {"answer": "blue"}, "grass": {"answer": "green"}})
    qa = Predict("question -> answer")
    with context(lm=lm):
        assert qa(question="What color is the grass?").answer == "green"
        assert qa(question="What color is the sky?").answer == "blue"


def test_follow_examples_answers_from_the_matching_demo() -> None:
    lm = DummyLM(follow_examples=True)
    qa = Predict("question, topic -> answer")
    qa.demos = [
        Example(question="sky?", topic="nature", answer="blue"),
        Example(question="sky?", topic="music", answer="a Coldplay song"),
        Example(question="grass?", topic="nature", answer="green"),
    ]
    with context(lm=lm):
        assert qa(question="sky?", topic="music").answer == "a Coldplay song"
        assert qa(question="grass?", topic="nature").answer == "green"


def test_n_completions_through_config_and_keyword() -> None:
    lm = DummyLM([{"answer": str(i)} for i in range(6)])
    qa = Predict("question -> answer")
    with context(lm=lm):
        pred = qa(question="q", config={"n": 3})
        assert pred.answer == "0"
        assert pred.completions is not None
        assert pred.completions.answer == ["0", "1", "2"]
        assert [c.answer for c in pred.completions] == ["0", "1", "2"]
        assert lm.history[-1]["params"]["n"] == 3
        assert lm.history[-1]["params"]["temperature"] == 0.7  # raised for n > 1
        again = qa(question="q", n=2, temperature=0.9, max_tokens=77)
        assert again.completions is not None
        assert again.completions.answer == ["3", "4"]
        params = lm.history[-1]["params"]
        assert (params["n"], params["temperature"], params["max_tokens"]) == (2, 0.9, 77)


def test_construction_config_and_per_call_config_merge() -> None:
    lm = DummyLM([{"answer": "a"}, {"answer": "b"}])
    qa = Predict("question -> answer", temperature=0.3, max_tokens=10)
    qa(question="q", lm=lm)
    assert lm.history[-1]["params"]["temperature"] == 0.3
    assert lm.history[-1]["params"]["max_tokens"] == 10
    qa(question="q", lm=lm, config={"max_tokens": 20})
    assert lm.history[-1]["params"]["max_tokens"] == 20
    assert qa.config == {"temperature": 0.3, "max_tokens": 10}  # per-call config is not kept


def test_an_input_named_like_a_parameter_stays_an_input() -> None:
    lm = DummyLM([{"answer": "x"}])
    qa = Predict("n, question -> answer")
    qa(n="five", question="q", lm=lm)
    assert "n" not in lm.history[-1]["params"]
    assert "[[ ## n ## ]]\nfive" in _last_user(lm)


def test_lm_resolution_order() -> None:
    global_lm, own_lm, call_lm = (DummyLM([{"answer": n}]) for n in ("g", "o", "c"))
    configure(lm=global_lm)
    qa = Predict("question -> answer")
    assert qa(question="q").answer == "g"
    qa.lm = own_lm
    assert qa(question="q").answer == "o"
    assert qa(question="q", lm=call_lm).answer == "c"


def test_per_call_demos_override() -> None:
    lm = DummyLM([{"answer": "x"}])
    qa = Predict("question -> answer")
    qa.demos = [Example(question="stored", answer="s")]
    qa(question="q", lm=lm, demos=[Example(question="given", answer="g")])
    text = " ".join(m["content"] for m in lm.history[-1]["messages"])
    assert "given" in text
    assert "stored" not in text


def test_positional_arguments_are_refused() -> None:
    qa = Predict("question, context -> answer")
    with pytest.raises(UsageError) as info:
        qa("what?")
    # DSPy's exact wording
    assert str(info.value) == (
        "Positional arguments are not allowed when calling `dspy.Predict`, "
        "must use keyword arguments that match your signature input fields: 'question, context'. "
        "For example: `predict(question=input_value, ...)`."
    )


def test_missing_and_extra_inputs_warn_without_crashing(caplog: pytest.LogCaptureFixture) -> None:
    lm = DummyLM([{"answer": "x"}, {"answer": "y"}])
    qa = Predict("question, context -> answer")
    with caplog.at_level(logging.WARNING, logger="dspex.programs"):
        assert qa(question="q", lm=lm).answer == "x"
    assert "Missing: ['context']" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dspex.programs"):
        qa(question="q", context="c", bogus=1, lm=lm)
    assert "bogus" in caplog.text


def test_optional_inputs_do_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    lm = DummyLM([{"answer": "x"}])
    qa = Predict("question, hint: Optional[str] -> answer")
    with caplog.at_level(logging.WARNING, logger="dspex.programs"):
        qa(question="q", lm=lm)
    assert "Missing" not in caplog.text


def test_no_lm_and_string_lm_errors() -> None:
    qa = Predict("question -> answer")
    with pytest.raises(UsageError, match="No LM is configured"):
        qa(question="q")
    with pytest.raises(UsageError, match=r"dspex\.LM\('openai/gpt-4o-mini'\)"):
        qa(question="q", lm="openai/gpt-4o-mini")
    with pytest.raises(UsageError, match="generate"):
        qa(question="q", lm=object())


def test_chain_of_thought_end_to_end() -> None:
    lm = DummyLM([{"reasoning": "2 plus 2 is 4", "answer": "4"}])
    cot = ChainOfThought("question -> answer: int")
    with context(lm=lm):
        pred = cot(question="2+2?")
    assert pred.reasoning == "2 plus 2 is 4"
    assert pred.answer == 4
    system = lm.history[-1]["messages"][0]["content"]
    assert system.index("`reasoning`") < system.index("`answer`")
    assert "`[[ ## reasoning ## ]]`" in _last_user(lm)


def test_chain_of_thought_n_completions_and_follow_examples() -> None:
    lm = DummyLM([{"reasoning": "r1", "answer": "a1"}, {"reasoning": "r2", "answer": "a2"}])
    cot = ChainOfThought("question -> answer", n=2)
    pred = cot(question="q", lm=lm)
    assert pred.completions is not None
    assert pred.completions.reasoning == ["r1", "r2"]
    follower = DummyLM(follow_examples=True)
    cot2 = ChainOfThought("question -> answer")
    cot2.predict.demos = [Example(question="q?", reasoning="because", answer="yes")]
    assert cot2(question="q?", lm=follower).answer == "yes"


def test_json_adapter_from_settings() -> None:
    lm = DummyLM([{"answer": "x", "count": 3}])
    qa = Predict("question -> answer, count: int")
    with context(lm=lm, adapter=JSONAdapter()):
        pred = qa(question="q")
    assert (pred.answer, pred.count) == ("x", 3)
    # As in DSPy: DummyLM lists no supported_params, so no response_format is sent.
    assert "response_format" not in lm.history[-1]["params"]


def test_trace_is_recorded_when_enabled() -> None:
    lm = DummyLM([{"answer": "x"}, {"answer": "y"}])
    qa = Predict("question -> answer")
    trace: list[tuple[object, dict[str, object], Prediction]] = []
    with context(lm=lm, trace=trace):
        pred = qa(question="q")
    assert trace == [(qa, {"question": "q"}, pred)]
    qa(question="q", lm=lm)  # no trace outside the context
    assert len(trace) == 1


def test_module_composition_and_threads() -> None:
    class Pipeline(Module):
        def __init__(self) -> None:
            super().__init__()
            self.draft = Predict("topic -> draft")
            self.polish = ChainOfThought("draft -> text")

        def forward(self, topic: str) -> Prediction:
            draft = self.draft(topic=topic).draft
            result: Prediction = self.polish(draft=draft)
            return result

    lm = DummyLM(
        {"[[ ## topic ## ]]": {"draft": "D"}, "[[ ## draft ## ]]": {"reasoning": "r", "text": "T"}}
    )
    configure(lm=lm)
    prog = Pipeline()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: prog(topic=f"t{i}").text, range(20)))
    assert results == ["T"] * 20
    assert lm.calls == 40


def test_acall_runs_the_module() -> None:
    lm = DummyLM([{"answer": "x"}])
    qa = Predict("question -> answer")

    async def main() -> Prediction:
        with context(lm=lm):
            result: Prediction = await qa.acall(question="q")
            return result

    assert asyncio.run(main()).answer == "x"


def test_signature_swapped_after_calls_is_honoured() -> None:
    lm = DummyLM([{"answer": "x"}, {"result": "y"}])
    qa = Predict("question -> answer")
    assert qa(question="q", lm=lm).answer == "x"
    qa.signature = qa.signature.delete("answer").append("result", _output())
    assert qa(question="q", lm=lm).result == "y"


def _output() -> Any:
    from dspex.programs import OutputField

    return OutputField()


# -- input type checks (DSPy's warn_on_type_mismatch) -------------------------------


def test_a_typed_input_of_the_wrong_type_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    class Typed(Signature):
        count: int = InputField()
        names: list[str] = InputField()
        mode: Literal["a", "b"] | None = InputField()
        pair: tuple[str, int] = InputField()
        answer: str = OutputField()

    lm = DummyLM([{"answer": "x"}] * 3)
    with context(lm=lm), caplog.at_level(logging.WARNING, logger="dspex.programs"):
        Predict(Typed)(count="3", names=["a", 1], mode="c", pair=("a", "b"))
    for text in (
        "Type mismatch for field 'count': expected int",
        "Type mismatch for field 'names': expected list[str]",
        "Type mismatch for field 'mode': expected Union",
        "Type mismatch for field 'pair': expected tuple[str, int]",
    ):
        assert text in caplog.text
    caplog.clear()
    with context(lm=lm), caplog.at_level(logging.WARNING, logger="dspex.programs"):
        Predict(Typed)(count=3, names=["a"], mode=None, pair=("a", 1))
        with context(warn_on_type_mismatch=False):
            Predict(Typed)(count="3", names=["a"], mode="a", pair=("a", 1))
    assert "Type mismatch" not in caplog.text


def test_untyped_inputs_are_not_type_checked(caplog: pytest.LogCaptureFixture) -> None:
    class Loose(Signature):
        name: str = InputField()
        count = InputField()
        answer = OutputField()

    lm = DummyLM([{"answer": "x"}] * 2)
    with context(lm=lm), caplog.at_level(logging.WARNING, logger="dspex.programs"):
        Predict(Loose)(name=["a", "b"], count=3)  # a list of str fits str, as in DSPy
        Predict("question -> answer")(question=42)
    assert "Type mismatch" not in caplog.text
