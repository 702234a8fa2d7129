"""``History``: the conversation-history input type, and its layout as chat turns.

The expected turns were produced by DSPy 3.4.1's ``ChatAdapter.format`` /
``JSONAdapter.format`` for the same signature, demo and history.
"""

from __future__ import annotations

import pydantic
import pytest

from dspex.programs import (
    ChatAdapter,
    Example,
    History,
    InputField,
    JSONAdapter,
    OutputField,
    Predict,
    Signature,
)
from dspex.programs._history_format import find_history_field, format_with_history
from dspex.testing import DummyLM


class QA(Signature):
    question: str = InputField()
    history: History = InputField()
    answer: str = OutputField()


HISTORY = History(
    messages=[
        {"question": "capital of France?", "answer": "Paris"},
        {"question": "and Italy?", "answer": "Rome"},
    ]
)
CHAT_REMINDER = (
    "Respond with the corresponding output fields, starting with the field "
    "`[[ ## answer ## ]]`, and then ending with the marker for `[[ ## completed ## ]]`."
)
JSON_REMINDER = "Respond with a JSON object in the following order of fields: `answer`."


def test_history_is_a_frozen_pydantic_model_with_an_appendable_list() -> None:
    history = History(messages=[])
    history.messages.append({"question": "q1", "answer": "a1"})
    assert history.messages == [{"question": "q1", "answer": "a1"}]
    with pytest.raises(pydantic.ValidationError):
        history.messages = []
    with pytest.raises(pydantic.ValidationError, match="extra"):
        History(messages=[], turns=3)
    longer = history.with_messages([{"question": "q2", "answer": "a2"}])
    assert [m["question"] for m in longer.messages] == ["q1", "q2"]
    assert len(history.messages) == 1


def test_the_history_field_is_found_by_its_type() -> None:
    assert find_history_field(QA) == "history"
    assert find_history_field(Predict("question -> answer").signature) is None
    assert format_with_history(ChatAdapter(), Predict("q -> a").signature, [], {"q": "x"}) is None


def test_chat_layout_matches_dspy() -> None:
    demos = [Example(question="1+1", answer="2")]
    inputs = {"question": "and Germany?", "history": HISTORY}
    messages = format_with_history(ChatAdapter(), QA, demos, inputs)
    assert messages is not None
    assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    system = messages[0]["content"]
    assert "2. `history` (History):" in system  # the system message keeps the whole signature
    assert messages[3:] == [
        {"role": "user", "content": f"[[ ## question ## ]]\ncapital of France?\n\n{CHAT_REMINDER}"},
        {"role": "assistant", "content": "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]\n"},
        {"role": "user", "content": f"[[ ## question ## ]]\nand Italy?\n\n{CHAT_REMINDER}"},
        {"role": "assistant", "content": "[[ ## answer ## ]]\nRome\n\n[[ ## completed ## ]]\n"},
        {"role": "user", "content": f"[[ ## question ## ]]\nand Germany?\n\n{CHAT_REMINDER}"},
    ]
    assert "history" not in messages[-1]["content"]


def test_json_layout_matches_dspy() -> None:
    inputs = {"question": "and Germany?", "history": HISTORY}
    messages = format_with_history(JSONAdapter(), QA, [], inputs)
    assert messages is not None
    assert messages[1:] == [
        {"role": "user", "content": f"[[ ## question ## ]]\ncapital of France?\n\n{JSON_REMINDER}"},
        {"role": "assistant", "content": '{\n  "answer": "Paris"\n}'},
        {"role": "user", "content": f"[[ ## question ## ]]\nand Italy?\n\n{JSON_REMINDER}"},
        {"role": "assistant", "content": '{\n  "answer": "Rome"\n}'},
        {"role": "user", "content": f"[[ ## question ## ]]\nand Germany?\n\n{JSON_REMINDER}"},
    ]


def test_an_output_only_entry_gets_no_user_turn() -> None:
    history = History(messages=[{"answer": "Hello!"}])
    messages = format_with_history(ChatAdapter(), QA, [], {"question": "hi", "history": history})
    assert messages is not None
    assert [m["role"] for m in messages] == ["system", "assistant", "user"]


def test_a_chat_loop_with_history_runs_and_the_lm_sees_earlier_turns() -> None:
    lm = DummyLM([{"answer": "Paris"}, {"answer": "Berlin"}])
    predict = Predict(QA)
    history = History(messages=[])
    for question in ["capital of France?", "and Germany?"]:
        outputs = predict(question=question, history=history, lm=lm)
        history.messages.append({"question": question, **outputs})
    assert history.messages == [
        {"question": "capital of France?", "answer": "Paris"},
        {"question": "and Germany?", "answer": "Berlin"},
    ]
    conversation = "\n".join(str(m["content"]) for m in lm.history[-1]["messages"])
    assert "capital of France?" in conversation and "Paris" in conversation


def test_predict_sends_history_as_earlier_turns() -> None:
    # Through Predict and the adapter, not format_with_history directly.
    lm = DummyLM([{"answer": "Berlin"}])
    Predict(QA)(question="and Germany?", history=HISTORY, lm=lm)
    messages = lm.history[-1]["messages"]
    assert [m["role"] for m in messages] == ["system", *["user", "assistant"] * 2, "user"]
    assert messages[2]["content"].startswith("[[ ## answer ## ]]\nParis")
    assert "history" not in messages[-1]["content"]


def test_an_adapter_may_lay_history_out_its_own_way() -> None:
    class OneLineHistory(ChatAdapter):
        def format_conversation_history(
            self, signature: object, history_field_name: str, inputs: dict[str, object]
        ) -> list[dict[str, object]]:
            history = inputs.pop(history_field_name)
            return [{"role": "user", "content": f"{len(history.messages)} earlier turn(s)"}]

    inputs = {"question": "Q2", "history": History(messages=[{"question": "Q1"}])}
    messages = OneLineHistory().format(QA, [], inputs)
    assert messages[1] == {"role": "user", "content": "1 earlier turn(s)"}
    assert [m["role"] for m in messages] == ["system", "user", "user"]
    assert messages[2]["content"].startswith("[[ ## question ## ]]\nQ2")
    assert "history" in inputs  # the caller's inputs are left alone


def _tool_history_case() -> tuple[type, dict[str, object]]:
    from dspex.programs import Tool, ToolCallResults, ToolCalls

    def search(query: str) -> str:
        return query

    class ToolHistory(Signature):
        question: str = InputField()
        history: History = InputField()
        tools: list[Tool] = InputField()
        next_thought: str = OutputField()
        tool_calls: ToolCalls = OutputField()

    call = ToolCalls.ToolCall(id="call_1", name="search", args={"query": "cats"})
    results = ToolCallResults.from_tool_calls_and_values([call], ["cat"])
    entry = {
        "question": "Q1",
        "next_thought": "I should search.",
        "tool_calls": ToolCalls(tool_calls=[call], tool_call_results=results),
    }
    inputs = {"question": "Q2", "history": History(messages=[entry]), "tools": [Tool(search)]}
    return ToolHistory, inputs


@pytest.mark.parametrize("adapter", [ChatAdapter(), JSONAdapter()], ids=["chat", "json"])
def test_tool_results_in_history_are_replayed_as_a_user_turn_without_native_calling(
    adapter: ChatAdapter,
) -> None:
    sig, inputs = _tool_history_case()
    messages = adapter.format(sig, [], inputs)
    assert [m["role"] for m in messages[1:]] == ["user", "assistant", "user", "user"]
    assert "tool_call_results" not in messages[2]["content"]  # not inside the calls
    assert messages[3]["content"] == (
        "[[ ## tool_call_results ## ]]\n"
        '{"tool_call_results": [{"call_id": "call_1", "name": "search", "value": "cat", '
        '"is_error": false}]}'
    )
    assert messages[4]["content"].startswith("[[ ## question ## ]]\nQ2")


def test_tool_results_in_history_are_replayed_natively_as_tool_messages() -> None:
    sig, inputs = _tool_history_case()
    messages = ChatAdapter(use_native_function_calling=True).format(sig, [], inputs)
    assistant, tool = messages[2], messages[3]
    assert assistant["role"] == "assistant" and "I should search." in assistant["content"]
    assert assistant["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "search", "arguments": '{"query": "cats"}'},
        }
    ]
    assert tool == {"role": "tool", "tool_call_id": "call_1", "name": "search", "content": "cat"}
