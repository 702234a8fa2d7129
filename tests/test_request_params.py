"""Request parameters as DSPy 3.4.1 sends them: reasoning models, ``max_completion_tokens``,
and when JSONAdapter asks for structured output.

The expected values were read off DSPy 3.4.1 (its LM against a recording server,
and its capability catalog) for the same models.
"""

from __future__ import annotations

from typing import Any

import pytest
from runtime_helpers import StartRuntime, make_lm

import dspex
from dspex.actors._lm._capabilities import is_openai_reasoning_model
from dspex.errors import UsageError
from dspex.programs import JSONAdapter, Signature
from dspex.testing import DummyLM, FakeOpenAI

QA = Signature("question -> answer")
OPEN = Signature({"question": (str, dspex.InputField()), "data": (dict, dspex.OutputField())})


@pytest.mark.parametrize(
    ("model", "reasoning"),
    [
        ("openai/o1", True),
        ("openai/o3-mini", True),
        ("openai/o4-mini-2025-04-16", True),
        ("openai/gpt-5", True),
        ("openai/gpt-5.1", True),
        ("openai/gpt-5-mini", True),
        ("openai/gpt-5-chat", False),  # the documented exception
        ("openai/gpt-5-chat-latest", False),
        ("openai/o1-preview", False),  # not in DSPy's pattern
        ("openai/gpt-4o", False),
        ("openai/omni-moderation", False),
    ],
)
def test_reasoning_families_follow_dspys_pattern(model: str, reasoning: bool) -> None:
    assert is_openai_reasoning_model(model) is reasoning


def test_a_reasoning_model_keeps_its_limit_as_max_completion_tokens() -> None:
    lm = dspex.LM("openai/gpt-5", temperature=1.0, max_tokens=16000)
    assert lm.kwargs == {"temperature": 1.0, "max_completion_tokens": 16000}
    assert lm.dump_state()["max_tokens"] == 16000  # DSPy saves it under max_tokens
    assert "max_completion_tokens" not in lm.dump_state()
    assert lm.copy().kwargs == lm.kwargs
    assert dspex.LM("openai/gpt-4o", max_tokens=100).kwargs == {"max_tokens": 100}
    assert dspex.LM("openai/gpt-5").kwargs == {}


@pytest.mark.parametrize(
    "kwargs", [{"temperature": 0.7}, {"max_tokens": 1000}, {"temperature": 0.5, "max_tokens": 9}]
)
def test_a_reasoning_model_refuses_dspy_forbidden_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError, match=r"temperature=1\.0 or None and max_tokens >= 16000"):
        dspex.LM("openai/o3-mini", **kwargs)
    dspex.LM("openai/gpt-5-chat", **kwargs)  # not a reasoning model: accepted


def test_openai_models_are_sent_max_completion_tokens(start_runtime: StartRuntime) -> None:
    start_runtime(max_tokens=50)
    reply = "[[ ## answer ## ]]\nok\n\n[[ ## completed ## ]]"
    with FakeOpenAI(reply=reply) as fake:
        lm = make_lm(fake, "openai/gpt-5", max_tokens=20000)
        lm("hi")  # the LM's own limit outranks the runtime's max_tokens setting
        lm("hi", max_tokens=30000)  # and a call's own beats both
        plain = make_lm(fake, "openai/gpt-4o-mini")
        plain("hi")
        bodies = [r.json for r in fake.requests]
    assert [b.get("max_completion_tokens") for b in bodies] == [20000, 30000, 50]
    assert not any("max_tokens" in b for b in bodies)


@pytest.mark.parametrize(
    ("model", "sent"),
    [
        ("openai/gpt-4o-mini", "json_schema"),
        ("openai/gpt-4.1-nano", "json_schema"),
        ("openai/o3-mini", "json_schema"),
        ("openai/gpt-4", "json_object"),  # JSON mode only
        ("openai/gpt-3.5-turbo", "json_object"),
        ("openai/my-vllm-model", None),  # a model DSPy does not know: no response_format
        ("openai/o1-preview", None),
        ("anthropic/claude-sonnet-4-5", "json_schema"),
        ("anthropic/claude-3-5-sonnet-20241022", None),
        ("gemini/gemini-2.5-flash", "json_schema"),
        ("gemini/gemini-2.0-flash", "json_object"),
        ("local/smollm2", "json_schema"),  # dspex's own: llama.cpp decodes under the schema
    ],
)
def test_json_adapter_asks_for_structured_output_by_dspys_rule(
    model: str, sent: str | None
) -> None:
    params = JSONAdapter().lm_params(QA, {}, dspex.LM(model))
    assert params.get("response_format", {}).get("type") == sent


def test_json_adapter_rule_for_open_mappings_custom_lms_and_callers() -> None:
    adapter = JSONAdapter()
    # An open dict has no strict schema: JSON mode, as in DSPy.
    fmt = adapter.lm_params(OPEN, {}, dspex.LM("openai/gpt-4o-mini"))["response_format"]
    assert fmt == {"type": "json_object"}
    # DummyLM lists no supported_params (DSPy's BaseLM default): nothing is sent.
    assert "response_format" not in adapter.lm_params(QA, {}, DummyLM([]))
    # An LM object that says nothing about itself keeps the schema.
    assert adapter.lm_params(QA, {}, object())["response_format"]["type"] == "json_schema"
    # A caller's own response_format wins.
    mine = {"type": "json_object"}
    assert adapter.lm_params(QA, {"response_format": mine}, DummyLM([]))["response_format"] == mine


def test_dummy_lm_still_answers_json_adapter_in_json() -> None:
    lm = DummyLM([{"answer": "42"}])
    with dspex.context(lm=lm, adapter=JSONAdapter()):
        assert dspex.Predict(QA)(question="q").answer == "42"
    assert lm.history[-1]["outputs"][0].lstrip().startswith("{")
