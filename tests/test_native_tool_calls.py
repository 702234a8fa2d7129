"""Native function calling: tools in the request's ``tools``, the reply's ``tool_calls``
back in the ``ToolCalls`` output (DSPy 3.4.1's rule), and the OpenAI wire format."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from runtime_helpers import SECRET, StartRuntime

import dspex
from dspex.actors._cache_store import decode_response, encode_response
from dspex.actors._lm._openai_shape import response_to_lm_response
from dspex.actors._lm._types import Completion, LMResponse
from dspex.errors import UsageError
from dspex.programs import (
    ChatAdapter,
    InputField,
    JSONAdapter,
    OutputField,
    Signature,
    Tool,
    ToolCalls,
    XMLAdapter,
)
from dspex.testing import FakeOpenAI


def search(query: str, k: int = 3) -> str:
    """Search for documents."""
    return query


class Native(Signature):
    question: str = InputField()
    tools: list[Tool] = InputField()
    tool_calls: ToolCalls = OutputField()


class CapturingLM:
    """Records the messages and parameters of the one call, answers with ``completion``."""

    model = "capture/model"
    kwargs: dict[str, Any] = {}

    def __init__(self, completion: Completion, *, function_calling: bool = True) -> None:
        self.completion = completion
        self.supports_function_calling = function_calling
        self.calls: list[tuple[list[dict[str, Any]], dict[str, Any]]] = []

    def generate(self, messages: Any, params: Any) -> LMResponse:
        self.calls.append((list(messages), dict(params)))
        return LMResponse((self.completion,), model=self.model)


_CALL = {
    "id": "call_1",
    "type": "function",
    # a slightly malformed argument string, repaired as DSPy repairs it
    "function": {"name": "search", "arguments": '{"query": "cats", "k": 2'},
}


@pytest.mark.parametrize("adapter_cls", [ChatAdapter, JSONAdapter, XMLAdapter])
def test_tools_go_to_the_request_and_calls_come_back(adapter_cls: type) -> None:
    lm = CapturingLM(Completion("", "tool_calls", (_CALL,)))
    adapter = adapter_cls(use_native_function_calling=True, parallel_tool_calls=True)
    [values] = adapter(lm, {}, Native, [], {"question": "Q?", "tools": [Tool(search)]})
    messages, params = lm.calls[0]
    assert params["tools"] == [Tool(search).format_as_litellm_function_call()]
    assert params["parallel_tool_calls"] is True and params["tool_choice"] == "auto"
    # both fields leave the prompt: the provider carries them
    assert "tools" not in messages[0]["content"].split("objective")[0]
    assert "`tool_calls`" not in messages[-1]["content"]
    [call] = values["tool_calls"].tool_calls
    assert (call.id, call.name, call.args) == ("call_1", "search", {"query": "cats", "k": 2})


def test_the_callers_parallel_choice_wins_and_text_fills_other_outputs() -> None:
    class WithNote(Native):
        note: str = OutputField()

    reply = "[[ ## note ## ]]\nlooking\n\n[[ ## completed ## ]]"
    lm = CapturingLM(Completion(reply, "tool_calls", (_CALL,)))
    adapter = ChatAdapter(use_native_function_calling=True, parallel_tool_calls=True)
    [values] = adapter(
        lm, {"parallel_tool_calls": False}, WithNote, [], {"question": "Q", "tools": [Tool(search)]}
    )
    assert lm.calls[0][1]["parallel_tool_calls"] is False
    assert values["note"] == "looking" and values["tool_calls"].tool_calls[0].name == "search"


def test_without_native_calling_tool_params_are_dropped_and_tools_stay_in_the_prompt() -> None:
    reply = '[[ ## tool_calls ## ]]\n{"tool_calls": [{"name": "search", "args": {"query": "x"}}]}'
    lm = CapturingLM(Completion(reply + "\n\n[[ ## completed ## ]]"))
    given = {"tools": [{"type": "function"}], "tool_choice": "auto", "temperature": 0.5}
    [values] = ChatAdapter()(lm, given, Native, [], {"question": "Q", "tools": [Tool(search)]})
    messages, params = lm.calls[0]
    assert params == {"temperature": 0.5}
    assert "search, whose description is" in messages[-1]["content"]
    assert values["tool_calls"].tool_calls[0].args == {"query": "x"}


def test_an_lm_without_function_calling_gets_the_tools_as_text() -> None:
    reply = '[[ ## tool_calls ## ]]\n{"tool_calls": []}\n\n[[ ## completed ## ]]'
    lm = CapturingLM(Completion(reply), function_calling=False)
    ChatAdapter(use_native_function_calling=True)(
        lm, {}, Native, [], {"question": "Q", "tools": [Tool(search)]}
    )
    assert "tools" not in lm.calls[0][1]


def test_a_tool_calls_output_without_a_tools_input_is_a_usage_error() -> None:
    sig = Signature("question -> tool_calls: ToolCalls", custom_types={"ToolCalls": ToolCalls})
    lm = CapturingLM(Completion(""))
    with pytest.raises(UsageError, match=r"`tool_calls`.*list\[Tool\]"):
        ChatAdapter(use_native_function_calling=True)(lm, {}, sig, [], {"question": "Q"})


def test_openai_wire_format_round_trip(start_runtime: StartRuntime) -> None:
    start_runtime()

    def reply(body: dict[str, Any]) -> dict[str, Any]:
        assert body["tools"][0]["function"]["name"] == "search"
        message = {
            "role": "assistant",
            "content": None,
            "reasoning_content": "I should search.",
            "tool_calls": [_CALL],
        }
        choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
        return {"body": {"choices": [choice], "model": body["model"], "usage": {}}}

    with FakeOpenAI(api_key=SECRET, reply=reply) as fake:
        lm = dspex.LM("openai/gpt-4o-mini", api_base=fake.url, api_key=SECRET, cache=False)
        assert lm.supports_function_calling
        program = dspex.Predict(Native)
        with dspex.context(lm=lm, adapter=ChatAdapter(use_native_function_calling=True)):
            pred = program(question="cats?", tools=[Tool(search)])
        [sent] = fake.requests
    assert sent.json["tools"] == [Tool(search).format_as_litellm_function_call()]
    [call] = pred.tool_calls.tool_calls
    assert (call.id, call.args) == ("call_1", {"query": "cats", "k": 2})


def test_tool_calls_and_reasoning_survive_the_cache_and_openai_shaped_replies() -> None:
    completion = Completion("", "tool_calls", (_CALL,), "thinking")
    again = decode_response(encode_response(LMResponse((completion,), model="m")))
    assert again.completions[0] == completion
    plain = decode_response(encode_response(LMResponse((Completion("hi", "stop"),))))
    assert plain.completions[0] == Completion("hi", "stop")
    shaped = {
        "choices": [
            {
                "message": {"content": None, "tool_calls": [_CALL], "reasoning_content": "r"},
                "finish_reason": "tool_calls",
            }
        ]
    }
    assert response_to_lm_response(shaped, "m").completions[0] == Completion(
        "", "tool_calls", (_CALL,), "r"
    )


# -- native reasoning -------------------------------------------------------------------


class Reasoned(Signature):
    question: str = InputField()
    reasoning: dspex.Reasoning = OutputField()
    answer: str = OutputField()


class ReasoningLM(CapturingLM):
    supports_reasoning = True


def test_a_reasoning_model_reasons_natively_and_the_field_leaves_the_prompt() -> None:
    reply = "[[ ## answer ## ]]\n4\n\n[[ ## completed ## ]]"
    lm = ReasoningLM(Completion(reply, "stop", (), "2 and 2 make 4"))
    [values] = ChatAdapter()(lm, {}, Reasoned, [], {"question": "2+2?"})
    messages, params = lm.calls[0]
    assert params == {"reasoning_effort": "low"}  # DSPy's default effort
    assert "[[ ## reasoning ## ]]" not in messages[0]["content"]
    assert values == {"reasoning": "2 and 2 make 4", "answer": "4"}
    assert isinstance(values["reasoning"], dspex.Reasoning)


def test_native_reasoning_respects_an_explicit_effort_and_none_turns_it_off() -> None:
    reply = "[[ ## answer ## ]]\n4\n\n[[ ## completed ## ]]"
    lm = ReasoningLM(Completion(reply, "stop"))
    [values] = ChatAdapter()(lm, {"reasoning_effort": "high"}, Reasoned, [], {"question": "q"})
    assert lm.calls[0][1] == {"reasoning_effort": "high"}
    assert values == {"reasoning": None, "answer": "4"}  # the reply carried no reasoning
    text = "[[ ## reasoning ## ]]\nsteps\n\n" + reply
    off = ReasoningLM(Completion(text, "stop"))
    [values] = ChatAdapter()(off, {"reasoning_effort": None}, Reasoned, [], {"question": "q"})
    assert "[[ ## reasoning ## ]]" in off.calls[0][0][0]["content"]
    assert values == {"reasoning": "steps", "answer": "4"}


def test_native_tool_calls_and_native_reasoning_together() -> None:
    class Both(Native):
        next_thought: dspex.Reasoning = OutputField()

    lm = ReasoningLM(Completion("", "tool_calls", (_CALL,), "search first"))
    adapter = ChatAdapter(use_native_function_calling=True)
    [values] = adapter(lm, {}, Both, [], {"question": "Q", "tools": [Tool(search)]})
    assert "tools" in lm.calls[0][1] and lm.calls[0][1]["reasoning_effort"] == "low"
    assert values["next_thought"] == "search first"
    assert values["tool_calls"].tool_calls[0].name == "search"


# -- the awaited path and DSPy's pre/postprocess hooks ----------------------------------


def test_acall_sends_tools_natively_and_reads_the_calls_back(start_runtime: StartRuntime) -> None:
    # Regression: Adapter.acall formatted the tools into the prompt and failed on the
    # tool-call-only reply (an "empty reply" parse error) instead of using the tools param.
    start_runtime()

    def reply(body: dict[str, Any]) -> dict[str, Any]:
        message = {"role": "assistant", "content": None, "tool_calls": [_CALL]}
        choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
        return {"body": {"choices": [choice], "model": body["model"], "usage": {}}}

    async def ask(program: Any) -> Any:
        return await program.acall(question="cats?", tools=[Tool(search)])

    with FakeOpenAI(api_key=SECRET, reply=reply) as fake:
        lm = dspex.LM("openai/gpt-4o-mini", api_base=fake.url, api_key=SECRET, cache=False)
        with dspex.context(lm=lm, adapter=ChatAdapter(use_native_function_calling=True)):
            pred = asyncio.run(ask(dspex.Predict(Native)))
        [sent] = fake.requests
    assert sent.json["tools"] == [Tool(search).format_as_litellm_function_call()]
    assert "search, whose description is" not in json.dumps(sent.json["messages"])
    [call] = pred.tool_calls.tool_calls
    assert (call.id, call.args) == ("call_1", {"query": "cats", "k": 2})


def test_call_postprocess_takes_dspys_output_shapes() -> None:
    class Answered(Native):
        answer: str = OutputField()
        next_thought: dspex.Reasoning = OutputField()

    adapter = ChatAdapter(use_native_function_calling=True)
    params = {"temperature": 0.1, "tools": [{"stale": True}]}
    processed = adapter._call_preprocess(
        ReasoningLM(Completion("")), params, Answered, {"question": "Q", "tools": [Tool(search)]}
    )
    assert set(processed.output_fields) == {"answer"}
    assert params["tools"] == [Tool(search).format_as_litellm_function_call()]
    responses_call = {  # the Responses API's id key, and argument JSON to repair
        "call_id": "call_r",
        "type": "function",
        "function": {"name": "search", "arguments": '{"query": "cats",}'},
    }
    outputs = [
        {"text": None, "tool_calls": [responses_call], "reasoning_content": "think"},
        {"text": "[[ ## answer ## ]]\nsure\n\n[[ ## completed ## ]]", "tool_calls": [_CALL]},
        {"text": "I will search now.", "tool_calls": [_CALL], "logprobs": {"content": []}},
    ]
    first, second, third = adapter._call_postprocess(processed, Answered, outputs, None, params)
    [call] = first["tool_calls"].tool_calls
    assert (call.id, call.args) == ("call_r", {"query": "cats"})
    assert first["answer"] is None and first["next_thought"] == "think"
    assert second["answer"] == "sure" and second["tool_calls"].tool_calls[0].id == "call_1"
    assert third["answer"] is None and third["logprobs"] == {"content": []}
    # Calls in a reply fill the ToolCalls output even when the prompt asked for it too
    [only] = adapter._call_postprocess(Native, Native, [{"tool_calls": [_CALL]}], None, {})
    assert only["tool_calls"].tool_calls[0].id == "call_1"
    qa = Signature("question -> answer")
    plain = adapter._call_postprocess(qa, qa, ["[[ ## answer ## ]]\nx"], None, {})
    assert plain == [{"answer": "x"}]
