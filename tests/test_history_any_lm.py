"""LM history for every LM: calls through DummyLM or a user's LM object reach
``dspex.inspect_history()`` and the runtime's metrics, shaped like ``dspex.LM``'s;
``disable_history`` is respected; a ``dspex.LM`` call is recorded once."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from runtime_helpers import SECRET, StartRuntime, chat_answer, echo_answers, make_lm

import dspex
import dspex.programs._lm_report as lm_report
from dspex.actors._callbacks import BaseCallback
from dspex.actors._lm._types import Completion, LMResponse, Usage
from dspex.actors._telemetry_emitter import TelemetryEvent
from dspex.errors import AuthenticationError, ProviderError
from dspex.testing import DummyLM, FakeOpenAI

STOP_KEYS = {
    "model",
    "duration_ms",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cache_hit",
    "cost",
    "retries",
    "shared",
    "messages",
    "outputs",
    "kwargs",
    "response",
}
ERROR_KEYS = {"model", "duration_ms", "error", "status", "retries"}


@pytest.fixture
def fake() -> Any:
    with FakeOpenAI(api_key=SECRET) as server:
        echo_answers(server)
        yield server


class EchoLM:
    """A user's LM: serves the protocol, holds a key in its kwargs."""

    model = "custom/echo"

    def __init__(self) -> None:
        self.kwargs: dict[str, Any] = {"api_key": SECRET, "temperature": 0.0}

    def generate(self, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> Any:
        return LMResponse((Completion(chat_answer("echo"), "stop"),), Usage(7, 3), self.model)


class FailingLM(EchoLM):
    model = "custom/failing"

    def generate(self, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> Any:
        raise ProviderError("the provider is down", status=503)


class Wrapper:
    """A user's LM delegating to a dspex.LM (which reports its calls itself)."""

    def __init__(self, inner: dspex.LM) -> None:
        self.inner = inner
        self.model = "wrapper/" + inner.model
        self.kwargs: dict[str, Any] = {}

    def generate(self, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> Any:
        return self.inner.generate(messages, params)


def _model_names(rt: dspex.Runtime, n: int = 50) -> list[str]:
    rt.telemetry.flush()
    return [entry.model for entry in rt.history(n)]


def _collect(rt: dspex.Runtime, names: set[str]) -> tuple[list[TelemetryEvent], threading.Event]:
    """Subscribe to the runtime's telemetry; the Event is set at each outcome event."""
    seen: list[TelemetryEvent] = []
    outcome = threading.Event()

    def record(event: TelemetryEvent) -> None:
        if event.name.startswith("lm.request.") and event.data.get("model") in names:
            seen.append(event)
            if event.name != "lm.request.start":
                outcome.set()

    rt.whereis("telemetry").proxy().subscribe(record).get(timeout=5)
    return seen, outcome


def test_dummy_lm_calls_show_in_inspect_history(
    start_runtime: StartRuntime, capsys: pytest.CaptureFixture[str]
) -> None:
    rt = start_runtime()
    dummy = DummyLM([{"answer": "4"}, {"answer": "6"}])
    dspex.configure(lm=dummy)
    qa = dspex.Predict("q -> answer")
    assert qa(q="2+2").answer == "4"
    assert qa(q="3+3").answer == "6"
    capsys.readouterr()
    text = dspex.inspect_history(n=2)
    assert capsys.readouterr().out.strip() == text.strip()
    assert text.count("Response:") == 2
    assert text.index("2+2") < text.index("3+3")  # oldest first
    entries = rt.history(2)
    for entry, call in zip(entries, dummy.history, strict=True):
        assert entry.model == "dummy"
        assert list(entry.messages) == call["messages"]
        assert list(entry.outputs) == call["outputs"]
        assert entry.usage == {
            "prompt_tokens": call["usage"].prompt_tokens,
            "completion_tokens": call["usage"].completion_tokens,
            "total_tokens": call["usage"].prompt_tokens + call["usage"].completion_tokens,
        }
        assert entry.duration_ms >= 0.0 and not entry.cache_hit
    assert dspex.inspect_history(n=1).count("Response:") == 1
    stats = rt.metrics()["models"]["dummy"]
    assert stats["requests"] == 2 and stats["errors"] == {}


def test_a_custom_lm_is_recorded_without_its_key(start_runtime: StartRuntime) -> None:
    rt = start_runtime()
    with dspex.context(lm=EchoLM()):
        assert dspex.Predict("q -> answer")(q="hello").answer == "echo"
    [entry] = rt.history(1)
    assert entry.model == "custom/echo"
    assert entry.outputs == (chat_answer("echo"),)
    assert entry.usage == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    stats = rt.metrics()["models"]["custom/echo"]
    assert (stats["requests"], stats["prompt_tokens"], stats["completion_tokens"]) == (1, 7, 3)
    shown = dspex.inspect_history(1) + repr(rt.history(5)) + json.dumps(rt.metrics())
    assert "hello" in shown and SECRET not in shown


def test_an_lm_without_a_model_name_is_named_by_its_class(start_runtime: StartRuntime) -> None:
    rt = start_runtime()

    class Nameless:
        kwargs: Mapping[str, Any] = {}

        def generate(self, messages: Sequence[Any], params: Mapping[str, Any]) -> Any:
            return LMResponse((Completion(chat_answer("x"), "stop"),))

    with dspex.context(lm=Nameless()):
        dspex.Predict("q -> answer")(q="who")
    assert _model_names(rt)[-1] == "Nameless"


def test_events_have_dspex_lm_shapes_and_errors_are_counted(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    rt = start_runtime()
    seen, outcome = _collect(rt, {"openai/test-model", "custom/echo", "custom/failing"})
    real = make_lm(fake)
    wrong = dspex.LM("openai/test-model", api_base=fake.url, api_key=SECRET + "-x", cache=False)
    qa = dspex.Predict("question -> answer")

    def outcome_of(call: Any) -> TelemetryEvent:
        outcome.clear()
        try:
            call()
        except (AuthenticationError, ProviderError):
            pass
        assert outcome.wait(5)
        return seen[-1]

    real_stop = outcome_of(lambda: qa(question="real", lm=real))
    real_error = outcome_of(lambda: qa(question="rejected", lm=wrong))
    echo_stop = outcome_of(lambda: qa(question="echo", lm=EchoLM()))
    echo_error = outcome_of(lambda: qa(question="fails", lm=FailingLM()))
    assert [e.name for e in (real_stop, echo_stop)] == ["lm.request.stop"] * 2
    assert [e.name for e in (real_error, echo_error)] == ["lm.request.exception"] * 2
    assert set(real_stop.data) == set(echo_stop.data) == STOP_KEYS
    assert set(real_error.data) == set(echo_error.data) == ERROR_KEYS
    assert echo_error.data["error"] == "ProviderError" and echo_error.data["status"] == 503
    # each call: one start, then its outcome
    assert [e.name for e in seen if e.data["model"].startswith("custom/")] == [
        "lm.request.start",
        "lm.request.stop",
        "lm.request.start",
        "lm.request.exception",
    ]
    failing = rt.metrics()["models"]["custom/failing"]
    assert failing["requests"] == 1 and failing["errors"] == {"ProviderError": 1}
    assert "custom/failing" not in _model_names(rt)


def test_metrics_without_subscribers_match_the_event_path(start_runtime: StartRuntime) -> None:
    rt = start_runtime()
    qa = dspex.Predict("q -> answer")
    with dspex.context(lm=EchoLM()):
        qa(q="a")
    with pytest.raises(ProviderError):
        qa(q="b", lm=FailingLM())
    before = rt.metrics()
    _collect(rt, set())  # now every call goes through the events
    with dspex.context(lm=EchoLM()):
        qa(q="a")
    with pytest.raises(ProviderError):
        qa(q="b", lm=FailingLM())
    after = rt.metrics()
    for model in ("custom/echo", "custom/failing"):
        once, twice = before["models"][model], after["models"][model]
        assert twice["requests"] == 2 * once["requests"] == 2
        assert twice["errors"] == {k: 2 * v for k, v in once["errors"].items()}
        assert twice["prompt_tokens"] == 2 * once["prompt_tokens"]
    assert _model_names(rt).count("custom/echo") == 2


def test_disable_history_keeps_counts_but_not_messages(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    rt = start_runtime()
    qa = dspex.Predict("question -> answer")
    real = make_lm(fake)
    with dspex.context(disable_history=True):
        qa(question="dummy hidden", lm=DummyLM([{"answer": "a"}]))
        qa(question="real hidden", lm=real)
    assert _model_names(rt) == []
    metrics = rt.metrics()["models"]
    assert metrics["dummy"]["requests"] == 1 and metrics["openai/test-model"]["requests"] == 1
    dspex.configure(disable_history=True)
    qa(question="globally hidden", lm=DummyLM([{"answer": "a"}]))
    with dspex.context(disable_history=False):
        qa(question="shown again", lm=DummyLM([{"answer": "b"}]))
    assert "shown again" in dspex.inspect_history(5)
    assert "hidden" not in dspex.inspect_history(5)


def test_a_dspex_lm_call_is_recorded_once(start_runtime: StartRuntime, fake: FakeOpenAI) -> None:
    rt = start_runtime()
    real = make_lm(fake)
    qa = dspex.Predict("question -> answer")
    assert qa(question="direct", lm=real).answer == "direct"
    assert qa(question="wrapped", lm=Wrapper(real)).answer == "wrapped"
    assert _model_names(rt) == ["openai/test-model", "openai/test-model"]
    assert rt.metrics()["models"]["openai/test-model"]["requests"] == 2
    assert "wrapper/openai/test-model" not in rt.metrics()["models"]


def test_calls_with_callbacks_are_recorded_too(start_runtime: StartRuntime) -> None:
    rt = start_runtime()
    ends: list[Any] = []

    class Watch(BaseCallback):
        def on_lm_end(self, call_id: str, outputs: Any, exception: Any = None) -> None:
            ends.append(outputs)

    with dspex.context(lm=EchoLM(), callbacks=[Watch()]):
        dspex.Predict("q -> answer")(q="observed")
    assert ends == [[chat_answer("echo")]]
    assert _model_names(rt) == ["custom/echo"]


def test_no_running_runtime_means_no_recording(monkeypatch: pytest.MonkeyPatch) -> None:
    from dspex.actors import _current, default_runtime
    from dspex.programs._callbacks import call_lm

    shared = default_runtime()  # running, but hidden from the lookup below
    monkeypatch.setattr(_current, "active_runtimes", list)
    dummy = DummyLM([{"answer": "4"}])
    assert _current.current_runtime(start=False) is None
    assert lm_report.history_emitter(dummy) is None
    marker = [{"role": "user", "content": "no-runtime-marker-31"}]
    assert call_lm(dummy, marker, {}).texts  # outside any run: answered, not recorded
    assert dspex.inspect_history(3) == ""
    shared.telemetry.flush()
    assert all(entry.messages != tuple(marker) for entry in shared.history(500))


def test_a_cache_hit_reports_the_events_and_history_of_before(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    # A hit is queued as one record; the actor still shows it as start + stop.
    rt = start_runtime()
    seen, outcome = _collect(rt, {"openai/test-model"})
    real = make_lm(fake)
    qa = dspex.Predict("question -> answer")
    assert qa(question="twice", lm=real).answer == "twice"
    assert outcome.wait(5)
    outcome.clear()
    assert qa(question="twice", lm=real).answer == "twice"
    assert outcome.wait(5)
    assert fake.request_count == 1
    _, miss_stop, hit_start, hit_stop = seen
    assert [e.name for e in seen] == ["lm.request.start", "lm.request.stop"] * 2
    assert hit_start.data == {"model": "openai/test-model"}
    assert set(hit_stop.data) == set(miss_stop.data) == STOP_KEYS
    assert hit_stop.data["cache_hit"] is True and hit_stop.data["cost"] == 0.0
    assert (hit_stop.data["retries"], hit_stop.data["shared"]) == (0, False)
    assert hit_stop.data["messages"] == miss_stop.data["messages"]
    assert hit_stop.data["outputs"] == miss_stop.data["outputs"] == [chat_answer("twice")]
    assert hit_stop.data["kwargs"] == miss_stop.data["kwargs"]
    assert hit_start.time <= hit_stop.time and miss_stop.time <= hit_start.time
    entries = rt.history(2)
    assert [e.cache_hit for e in entries] == [False, True]
    assert entries[1].messages == entries[0].messages and entries[1].cost == 0.0
    stats = rt.metrics()["models"]["openai/test-model"]
    assert (stats["requests"], stats["cache_hits"]) == (2, 1)
    with dspex.context(disable_history=True):
        qa(question="twice", lm=real)  # counted, not kept
    assert rt.metrics()["models"]["openai/test-model"]["cache_hits"] == 2
    assert [e.cache_hit for e in rt.history(3)] == [False, True]
