"""DummyLM: scripted answers in the adapters' formats, recorded, thread-safe."""

from __future__ import annotations

import json
import threading
from datetime import date
from enum import Enum
from typing import Any

import pydantic

import dspex
from dspex.actors._lm._types import LMProtocol, LMResponse
from dspex.testing import DummyLM


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def test_implements_the_lm_protocol() -> None:
    lm = DummyLM([{"answer": "a"}])
    assert isinstance(lm, LMProtocol)
    assert lm.model == "dummy"
    assert lm.kwargs["temperature"] == 0.0
    response = lm.generate([_user("hi")], {})
    assert isinstance(response, LMResponse)
    assert response.completions[0].finish_reason == "stop"


def test_list_mode_returns_answers_in_order_in_chat_format() -> None:
    lm = DummyLM([{"answer": "red", "score": 1}, {"answer": "blue"}])
    first = lm.generate([_user("q")], {}).texts
    second = lm.generate([_user("q")], {}).texts
    assert first == ["[[ ## answer ## ]]\nred\n\n[[ ## score ## ]]\n1\n\n[[ ## completed ## ]]"]
    assert second == ["[[ ## answer ## ]]\nblue\n\n[[ ## completed ## ]]"]
    exhausted = lm.generate([_user("q")], {}).texts
    assert exhausted == ["[[ ## answer ## ]]\nNo more responses\n\n[[ ## completed ## ]]"]


def test_structured_values_are_formatted_as_json() -> None:
    class Color(Enum):
        RED = "red"

    class Item(pydantic.BaseModel):
        name: str
        when: date

    lm = DummyLM([{"items": [Item(name="x", when=date(2024, 1, 2))], "color": Color.RED}])
    text = lm.generate([_user("q")], {}).texts[0]
    items_block = text.split("[[ ## color ## ]]")[0].split("\n", 1)[1].strip()
    assert json.loads(items_block) == [{"name": "x", "when": "2024-01-02"}]
    assert "[[ ## color ## ]]\nred" in text


def test_json_when_the_request_has_a_response_format() -> None:
    lm = DummyLM([{"answer": "x", "n": 2}])
    text = lm.generate([_user("q")], {"response_format": {"type": "json_object"}}).texts[0]
    assert json.loads(text) == {"answer": "x", "n": 2}


def test_dict_mode_matches_a_substring_of_the_last_message_first() -> None:
    lm = DummyLM(
        {"sky": {"answer": "blue"}, "grass": {"answer": "green"}, "system": {"answer": "S"}}
    )
    messages = [{"role": "system", "content": "system prompt"}, _user("What color is the grass?")]
    assert "green" in lm.generate(messages, {}).texts[0]
    other = [{"role": "system", "content": "system prompt"}, _user("unrelated")]
    assert "S" in lm.generate(other, {}).texts[0]  # falls back to the whole conversation
    assert lm.generate([_user("nothing")], {}).texts == ["No more responses"]


def test_n_completions() -> None:
    lm = DummyLM([{"answer": "1"}, {"answer": "2"}, {"answer": "3"}])
    texts = lm.generate([_user("q")], {"n": 3}).texts
    assert [t.split("\n")[1] for t in texts] == ["1", "2", "3"]
    assert DummyLM({"q": {"a": "x"}}).generate([_user("q")], {"n": 2}).texts[0].count("x") == 1


def test_follow_examples_replays_the_matching_demo() -> None:
    demo_reply = "[[ ## answer ## ]]\nblue\n\n[[ ## completed ## ]]"
    messages = [
        {"role": "system", "content": "sys"},
        _user("[[ ## question ## ]]\nred?"),
        {"role": "assistant", "content": "[[ ## answer ## ]]\nred\n\n[[ ## completed ## ]]"},
        _user("[[ ## question ## ]]\nsky?"),
        {"role": "assistant", "content": demo_reply},
        _user("[[ ## question ## ]]\nsky?\n\nRespond with the corresponding output fields."),
    ]
    lm = DummyLM(follow_examples=True)
    assert lm.generate(messages, {}).texts == [demo_reply]
    unmatched = [*messages[:-1], _user("[[ ## question ## ]]\nnew?")]
    fallback = DummyLM([{"answer": "scripted"}], follow_examples=True)
    assert "scripted" in fallback.generate(unmatched, {}).texts[0]


def test_history_records_messages_params_and_outputs() -> None:
    lm = DummyLM([{"answer": "x"}], max_tokens=50)
    lm.generate([_user("hello")], {"temperature": 0.5})
    entry = lm.history[-1]
    assert entry["messages"] == [_user("hello")]
    assert entry["params"] == {"temperature": 0.5, "max_tokens": 50}
    assert entry["kwargs"] == {"temperature": 0.5}  # the call's own, as DSPy's DummyLM
    assert entry["outputs"] == ["[[ ## answer ## ]]\nx\n\n[[ ## completed ## ]]"]
    messages, outputs = lm.get_convo(-1)
    assert messages == [_user("hello")]
    assert outputs == entry["outputs"]
    assert lm.calls == 1
    lm.reset()
    assert lm.calls == 0
    assert "x" in lm.generate([_user("again")], {}).texts[0]  # the script rewound


def test_direct_call_returns_texts() -> None:
    lm = DummyLM([{"answer": "x"}])
    assert lm("hello") == ["[[ ## answer ## ]]\nx\n\n[[ ## completed ## ]]"]
    assert lm.history[-1]["messages"] == [{"role": "user", "content": "hello"}]


def test_concurrent_calls_each_get_one_answer() -> None:
    answers = [{"answer": str(i)} for i in range(200)]
    lm = DummyLM(answers)
    results: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(4, timeout=5)

    def worker() -> None:
        start.wait()
        for _ in range(50):
            text = lm.generate([_user("q")], {}).texts[0]
            with lock:
                results.append(text.split("\n")[1])

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results, key=int) == [str(i) for i in range(200)]
    assert lm.calls == 200


def test_dump_state_holds_no_script() -> None:
    lm = DummyLM([{"answer": "secret answer"}])
    state = lm.dump_state()
    assert state["model"] == "dummy"
    assert "secret answer" not in json.dumps(state)


def test_reply_format_can_be_forced() -> None:
    from dspex.programs._adapters import ChatAdapter, JSONAdapter

    as_json = DummyLM([{"answer": "x"}], adapter=JSONAdapter())
    assert json.loads(as_json.generate([_user("q")], {}).texts[0]) == {"answer": "x"}
    as_chat = DummyLM([{"answer": "x"}], adapter=ChatAdapter())
    assert as_chat.generate([_user("q")], {}).texts[0].startswith("[[ ## answer ## ]]")
    forced = DummyLM([{"answer": "x"}], json_answers=False)
    text = forced.generate([_user("q")], {"response_format": {"type": "json_object"}}).texts[0]
    assert text.startswith("[[ ## answer ## ]]")
    assert "adapter" not in as_json.kwargs  # not passed on as an LM parameter


def test_a_subclass_overriding_call_is_called_as_dspys_adapters_call_it() -> None:
    # DSPy's tests and users wrap DummyLM.__call__ (a slow or counting LM): it must run.
    seen: list[dict[str, Any]] = []

    class Counting(DummyLM):
        def __call__(self, *args: Any, **kwargs: Any) -> list[str]:
            seen.append(kwargs)
            return super().__call__(*args, **kwargs)

    lm = Counting([{"answer": "4"}])
    with dspex.context(lm=lm):
        assert dspex.Predict("question -> answer")(question="2+2?").answer == "4"
    assert len(seen) == 1 and seen[0]["messages"][-1]["role"] == "user"


def test_history_follows_dspy_settings_and_calls_counts_every_answer() -> None:
    lm = DummyLM([{"answer": str(i)} for i in range(6)])
    with dspex.context(lm=lm, max_history_size=2):
        for i in range(3):
            dspex.Predict("question -> answer")(question=f"q{i}")
    assert len(lm.history) == 2
    assert "q2" in str(lm.history[-1]["messages"]) and "q1" in str(lm.history[0]["messages"])
    with dspex.context(lm=lm, disable_history=True):
        dspex.Predict("question -> answer")(question="q3")
    assert len(lm.history) == 2 and "q1" in str(lm.history[0]["messages"])
    assert lm.calls == 4
    lm.reset()
    assert lm.calls == 0 and lm.history == []
