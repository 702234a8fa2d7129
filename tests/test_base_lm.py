"""DSPy's ``BaseLM``: a user's LM implementing ``forward()`` runs programs like ``dspex.LM``.

Covers the OpenAI-shaped response conversion, per-instance history (and
``disable_history``), callbacks, usage tracking, direct calls, state with the
class marker, and ``isinstance`` for dspex's own LMs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

import dspex
from dspex.clients.base_lm import LM_CLASS_STATE_KEY, BaseLM
from dspex.programs import settings
from dspex.testing import DummyLM
from dspex.utils.callback import BaseCallback


@pytest.fixture(autouse=True)
def clean_settings() -> Iterator[None]:
    yield
    settings.reset()


def chat_completion(text: str, prompt_tokens: int = 7, completion_tokens: int = 3) -> Any:
    """An OpenAI-shaped response as objects (what the openai SDK returns)."""
    message = SimpleNamespace(content=text, tool_calls=None)
    return SimpleNamespace(
        choices=[SimpleNamespace(message=message, finish_reason="stop")],
        usage=SimpleNamespace(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
        model="echo-1",
    )


class EchoLM(BaseLM):
    """Answers every request with a fixed ChatAdapter reply; records what forward got."""

    def __init__(self, answer: str = "Paris", **kwargs: Any) -> None:
        super().__init__(model="test/echo", **kwargs)
        self.answer = answer
        self.seen: list[dict[str, Any]] = []

    def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
        self.seen.append({"prompt": prompt, "messages": messages, "kwargs": kwargs})
        return chat_completion(f"[[ ## answer ## ]]\n{self.answer}\n\n[[ ## completed ## ]]")


class DictLM(BaseLM):
    """Returns the response as a plain dict, as an HTTP client's JSON would be."""

    def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
        return {
            "choices": [{"message": {"content": "hello"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 1},
            "model": "dict-1",
        }


def test_predict_runs_on_a_custom_lm() -> None:
    lm = EchoLM(temperature=0.5)
    dspex.configure(lm=lm)
    pred = dspex.Predict("question -> answer")(question="Capital of France?")
    assert pred.answer == "Paris"
    call = lm.seen[-1]
    assert call["prompt"] is None
    assert "Capital of France?" in call["messages"][-1]["content"]
    assert lm.kwargs == {"temperature": 0.5, "max_tokens": None}


def test_history_holds_dspy_shaped_entries() -> None:
    lm = EchoLM()
    dspex.Predict("question -> answer", lm=None)(question="q", lm=lm)
    (entry,) = lm.history
    assert set(entry) >= {
        "prompt",
        "messages",
        "kwargs",
        "response",
        "outputs",
        "usage",
        "cost",
        "timestamp",
        "uuid",
        "model",
        "response_model",
        "model_type",
    }
    assert entry["usage"] == {"prompt_tokens": 7, "completion_tokens": 3}
    assert entry["response_model"] == "echo-1"
    assert entry["outputs"][0].startswith("[[ ## answer ## ]]")


def test_disable_history_keeps_no_entries() -> None:
    lm = EchoLM()
    with dspex.context(disable_history=True):
        dspex.Predict("question -> answer")(question="q", lm=lm)
    assert lm.history == []


def test_api_keys_never_reach_history() -> None:
    lm = DictLM(model="test/dict")
    lm("hi", api_key="sk-secret", temperature=0.1)
    assert lm.history[-1]["kwargs"] == {"temperature": 0.1}


def test_direct_call_returns_texts_from_a_dict_response() -> None:
    lm = DictLM(model="test/dict")
    assert lm("hi") == ["hello"]
    assert lm(messages=[{"role": "user", "content": "hi"}]) == ["hello"]
    assert asyncio.run(lm.acall("hi")) == ["hello"]
    assert len(lm.history) == 3


def test_usage_is_tracked() -> None:
    lm = EchoLM()
    with dspex.track_usage() as tracker:
        dspex.Predict("question -> answer")(question="q", lm=lm)
    assert tracker.get_total_tokens()["test/echo"]["total_tokens"] == 10


def test_callbacks_observe_the_lm_call() -> None:
    class Recorder(BaseCallback):
        def __init__(self) -> None:
            self.events: list[tuple[str, Any]] = []

        def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            self.events.append(("start", instance))

        def on_lm_end(self, call_id: str, outputs: Any, exception: Any = None) -> None:
            self.events.append(("end", outputs))

    recorder = Recorder()
    lm = EchoLM(callbacks=[recorder])
    dspex.Predict("question -> answer")(question="q", lm=lm)
    assert [kind for kind, _ in recorder.events] == ["start", "end"]
    assert recorder.events[0][1] is lm
    recorder.events.clear()
    assert lm("hi")[0].startswith("[[ ## answer")
    assert [kind for kind, _ in recorder.events] == ["start", "end"]


def test_a_subclass_overriding_call_is_called_by_adapters() -> None:
    class CallLM(BaseLM):
        def __call__(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
            return ["[[ ## answer ## ]]\nfrom __call__\n\n[[ ## completed ## ]]"]

    pred = dspex.Predict("question -> answer")(question="q", lm=CallLM(model="x/y"))
    assert pred.answer == "from __call__"


def test_a_forward_returning_something_else_is_a_clear_error() -> None:
    class BadLM(BaseLM):
        def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
            return "just a string"

    with pytest.raises(dspex.UsageError, match="OpenAI-shaped"):
        dspex.Predict("question -> answer")(question="q", lm=BadLM(model="x/y"))


def test_state_has_the_class_marker_and_loads_back() -> None:
    lm = EchoLM(temperature=0.2, **{LM_CLASS_STATE_KEY: "evil.module.LM"})
    state = lm.dump_state()
    assert state[LM_CLASS_STATE_KEY] == f"{EchoLM.__module__}.{EchoLM.__qualname__}"
    assert state["temperature"] == 0.2 and "api_key" not in state
    assert "evil" not in str(state)


def test_dspex_lms_are_base_lms() -> None:
    assert isinstance(DummyLM([]), BaseLM)
    assert isinstance(dspex.LM("openai/gpt-4o-mini"), BaseLM)
    assert dspex.BaseLM is BaseLM
    assert not isinstance("openai/gpt-4o-mini", BaseLM)


def test_copy_changes_defaults_and_starts_a_fresh_history() -> None:
    lm = EchoLM(temperature=0.0)
    lm("hi")
    other = lm.copy(temperature=1.0)
    assert other.kwargs["temperature"] == 1.0 and lm.kwargs["temperature"] == 0.0
    assert other.history == [] and len(lm.history) == 1


# -- dspex.LM subclasses written for DSPy, and the saved class marker ----------------


def test_an_lm_subclass_overriding_call_is_used_by_predict() -> None:
    class SpyLM(dspex.LM):
        def __init__(self) -> None:
            super().__init__("dummy_model")  # a bare id: no provider is ever reached
            self.calls: list[Any] = []

        def __call__(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
            self.calls.append(messages)
            return ["[[ ## answer ## ]]\nspied"]

    lm = SpyLM()
    assert dspex.Predict("question -> answer")(question="q", lm=lm).answer == "spied"
    assert "q" in lm.calls[0][-1]["content"]


def test_an_lm_subclass_overriding_forward_may_call_super() -> None:
    seen: list[str] = []

    class Wrapped(dspex.LM):
        def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
            seen.append("wrapped")
            return chat_completion("[[ ## answer ## ]]\nfrom forward")

    lm = Wrapped("openai/gpt-4o-mini")
    assert dspex.Predict("question -> answer")(question="q", lm=lm).answer == "from forward"
    assert seen == ["wrapped"]


def test_a_bare_model_id_is_refused_unless_the_subclass_answers_itself() -> None:
    with pytest.raises(dspex.UsageError, match="did you mean 'openai/gpt-4o-mini'"):
        dspex.LM("gpt-4o-mini")  # a plain LM would need a provider: refused up front

    class Answering(dspex.LM):
        def __call__(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
            return ["[[ ## answer ## ]]\nok"]

    assert Answering("anything").model == "anything"


def test_lm_state_carries_dspys_class_marker_and_loads_back() -> None:
    lm = dspex.LM("openai/gpt-4o-mini", temperature=1, max_tokens=100, num_retries=10)
    state = lm.dump_state()
    assert state[LM_CLASS_STATE_KEY] == "dspy.clients.lm.LM"
    assert (state["finetuning_model"], state["launch_kwargs"], state["train_kwargs"]) == (
        None,
        {},
        {},
    )
    pred = dspex.Predict("q -> a")
    pred.lm = lm
    loaded = dspex.Predict("q -> a").load_state(pred.dump_state())
    assert type(loaded.lm) is dspex.LM
    assert loaded.lm.dump_state() == state
    assert LM_CLASS_STATE_KEY not in loaded.lm.kwargs  # the marker is not a parameter


class Deployed(BaseLM):
    def __init__(self, model: str, *, deployment: str, **kwargs: Any) -> None:
        super().__init__(model=model, **kwargs)
        self.deployment = deployment

    def dump_state(self) -> dict[str, Any]:
        return {**super().dump_state(), "deployment": self.deployment}

    @classmethod
    def load_state(cls, state: Any) -> Deployed:
        values = dict(state)
        values.pop(LM_CLASS_STATE_KEY, None)
        return cls(**values)


def test_a_custom_lm_class_loads_only_with_the_opt_in() -> None:
    pred = dspex.Predict("q -> a")
    pred.lm = Deployed("custom/model", deployment="prod")
    state = pred.dump_state()
    with pytest.raises(dspex.UsageError, match="Refusing to import custom serialized LM class"):
        dspex.Predict("q -> a").load_state(state)
    loaded = dspex.Predict("q -> a").load_state(state, allow_unsafe_lm_state=True)
    assert isinstance(loaded.lm, Deployed) and loaded.lm.deployment == "prod"


def test_an_awaited_sync_forward_runs_in_dspexs_bounded_pool_not_the_default_executor() -> None:
    threads: list[str] = []

    class ThreadLM(EchoLM):
        def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
            threads.append(threading.current_thread().name)
            return super().forward(prompt, messages, **kwargs)

    lm = ThreadLM()
    dspex.configure(lm=lm, async_max_workers=3)
    predict = dspex.Predict("question -> answer")

    async def main() -> list[str]:
        replies = await asyncio.gather(*(predict.acall(question=f"q{i}") for i in range(6)))
        return [r.answer for r in replies]

    assert asyncio.run(main()) == ["Paris"] * 6
    assert len(threads) == 6
    assert all(name.startswith("dspex-async-") for name in threads), threads
    assert asyncio.run(lm.aforward(messages=[{"role": "user", "content": "hi"}])) is not None
    assert threads[-1].startswith("dspex-async-")
