"""DSPy's callbacks: hooks fired around module, adapter, LM and evaluation calls."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest
from runtime_helpers import SECRET, StartRuntime, chat_answer, echo_answers

import dspex
from dspex.actors._lm._types import LMResponse
from dspex.errors import AdapterParseError, ConfigError, LMError, ProgramError
from dspex.programs import settings
from dspex.testing import DummyLM, FakeOpenAI
from dspex.utils.callback import ACTIVE_CALL_ID, BaseCallback, with_callbacks


class Recorder(BaseCallback):
    """Records every hook call with its thread and the active call id it saw."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def _add(self, handler: str, call_id: str, **fields: Any) -> None:
        with self._lock:
            self.calls.append(
                {
                    "handler": handler,
                    "call_id": call_id,
                    "parent": ACTIVE_CALL_ID.get(),
                    "thread": threading.current_thread(),
                    **fields,
                }
            )

    def _start(self, handler: str) -> Any:
        def hook(call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            self._add(handler, call_id, instance=instance, inputs=inputs)

        return hook

    def _end(self, handler: str) -> Any:
        def hook(call_id: str, outputs: Any, exception: BaseException | None) -> None:
            self._add(handler, call_id, outputs=outputs, exception=exception)

        return hook

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("on_") and name.endswith("_start"):
            return self._start(name)
        if name.startswith("on_") and name.endswith("_end"):
            return self._end(name)
        return super().__getattribute__(name)

    def handlers(self) -> list[str]:
        return [c["handler"] for c in self.calls]

    def of(self, handler: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["handler"] == handler]


@pytest.fixture(autouse=True)
def restore_callbacks() -> Iterator[None]:
    before = settings.get("callbacks")
    yield
    settings.configure(callbacks=before)


def _assert_paired(calls: Sequence[Mapping[str, Any]]) -> None:
    """Every start has exactly one end with the same call id, and ids are unique."""
    starts = [c["call_id"] for c in calls if c["handler"].endswith("_start")]
    ends = [c["call_id"] for c in calls if c["handler"].endswith("_end")]
    assert len(set(starts)) == len(starts)
    assert sorted(starts) == sorted(ends)


# -- registration ------------------------------------------------------------------------


def test_configured_callbacks_see_a_chain_of_thought_call_in_dspy_order() -> None:
    recorder = Recorder()
    lm = DummyLM({"How are you?": {"reasoning": "No more responses", "answer": "test output"}})
    dspex.configure(callbacks=[recorder])
    cot = dspex.ChainOfThought("question -> answer", n=3)
    with dspex.context(lm=lm):
        result = cot(question="How are you?")
    assert result.answer == "test output"
    assert recorder.handlers() == [
        "on_module_start",
        "on_module_start",
        "on_adapter_format_start",
        "on_adapter_format_end",
        "on_lm_start",
        "on_lm_end",
        *["on_adapter_parse_start", "on_adapter_parse_end"] * 3,
        "on_module_end",
        "on_module_end",
    ]
    _assert_paired(recorder.calls)
    outer, inner = recorder.of("on_module_start")
    assert outer["instance"] is cot and inner["instance"] is cot.predict
    assert outer["inputs"] == {"args": (), "kwargs": {"question": "How are you?"}}
    ends = recorder.of("on_module_end")
    assert ends[-1]["outputs"] is result and ends[-1]["exception"] is None


def test_context_callbacks_apply_only_inside_the_block_and_override_global() -> None:
    global_rec, scoped = Recorder(), Recorder()
    lm = DummyLM([{"answer": "a"}] * 3)
    predict = dspex.Predict("question -> answer")
    dspex.configure(callbacks=[global_rec])
    with dspex.context(lm=lm, callbacks=[scoped]):
        predict(question="q1")
    with dspex.context(lm=lm, callbacks=[]):
        predict(question="q2")
    with dspex.context(lm=lm):
        predict(question="q3")
    assert scoped.handlers()[0] == "on_module_start" and len(scoped.of("on_lm_start")) == 1
    assert [c["inputs"]["kwargs"] for c in global_rec.of("on_module_start")] == [{"question": "q3"}]


def test_instance_callbacks_observe_only_their_instance_after_global_ones() -> None:
    order: list[str] = []

    class Named(BaseCallback):
        def __init__(self, name: str) -> None:
            self.name = name

        def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            order.append(self.name)

    mine = dspex.Predict("question -> answer", callbacks=[Named("own")])
    other = dspex.Predict("question -> answer")
    with dspex.context(lm=DummyLM([{"answer": "a"}] * 2), callbacks=[Named("global")]):
        mine(question="q")
        other(question="q")
    assert order == ["global", "own", "global"]


def test_adapter_callbacks_observe_format_and_parse_only() -> None:
    recorder = Recorder()
    adapter = dspex.ChatAdapter(callbacks=[recorder])
    with dspex.context(lm=DummyLM([{"answer": "a"}]), adapter=adapter):
        dspex.Predict("question -> answer")(question="q")
    assert recorder.handlers() == [
        "on_adapter_format_start",
        "on_adapter_format_end",
        "on_adapter_parse_start",
        "on_adapter_parse_end",
    ]
    assert all(c.get("instance", adapter) is adapter for c in recorder.calls)


def test_bad_registrations_are_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"list of callback objects"):
        dspex.configure(callbacks=Recorder())
    with pytest.raises(ConfigError, match=r"Recorder\(\), not the class"):
        with dspex.context(callbacks=[Recorder]):
            pass
    with pytest.raises(ConfigError, match="callbacks"):
        dspex.Predict("question -> answer", callbacks=Recorder())  # type: ignore[arg-type]


# -- call ids and failures -------------------------------------------------------------------


def test_each_call_gets_an_id_and_nested_calls_see_their_parent() -> None:
    class Child(dspex.Module):
        def forward(self) -> None:
            return None

    class Parent(dspex.Module):
        def __init__(self) -> None:
            self.first = Child()
            self.second = Child()

        def forward(self) -> str:
            self.first()
            self.second()
            return "done"

    recorder = Recorder()
    with dspex.context(callbacks=[recorder]):
        assert Parent()() == "done"
    starts = recorder.of("on_module_start")
    assert len({c["call_id"] for c in starts}) == 3
    parent_id = starts[0]["call_id"]
    assert [c["parent"] for c in starts] == [None, parent_id, parent_id]
    assert recorder.of("on_module_end")[-1]["call_id"] == parent_id
    _assert_paired(recorder.calls)


def test_a_failing_module_passes_the_exception_and_no_outputs() -> None:
    class Broken(dspex.Module):
        def forward(self, x: int) -> int:
            raise ValueError(f"bad x={x}")

    recorder = Recorder()
    with dspex.context(callbacks=[recorder]), pytest.raises(ValueError, match="bad x=1"):
        Broken()(1)
    [start] = recorder.of("on_module_start")
    [end] = recorder.of("on_module_end")
    assert start["inputs"] == {"args": (1,), "kwargs": {}}
    assert end["call_id"] == start["call_id"] and end["outputs"] is None
    assert type(end["exception"]) is ValueError  # the original, not the run's wrapper


def test_a_raising_callback_is_logged_and_the_call_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Faulty(BaseCallback):
        def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            raise RuntimeError("start hook broke")

        def on_lm_end(self, call_id: str, outputs: Any, exception: Any = None) -> None:
            raise RuntimeError("end hook broke")

    recorder = Recorder()
    with caplog.at_level(logging.WARNING, logger="dspex.callbacks"):
        with dspex.context(lm=DummyLM([{"answer": "fine"}]), callbacks=[Faulty(), recorder]):
            assert dspex.Predict("question -> answer")(question="q").answer == "fine"
    assert "start hook broke" in caplog.text and "end hook broke" in caplog.text
    assert recorder.handlers()[0] == "on_module_start"  # later callbacks still ran
    _assert_paired(recorder.calls)


class _FailingLM:
    model = "failing"
    kwargs: Mapping[str, Any] = {}

    def generate(self, messages: Sequence[Any], params: Mapping[str, Any]) -> LMResponse:
        raise LMError("provider down", status=503)


def test_lm_and_parse_failures_reach_the_end_hooks() -> None:
    recorder = Recorder()
    with dspex.context(lm=_FailingLM(), callbacks=[recorder]), pytest.raises(LMError):
        dspex.Predict("question -> answer")(question="q")
    [lm_end] = recorder.of("on_lm_end")
    assert lm_end["outputs"] is None and isinstance(lm_end["exception"], LMError)

    recorder.calls.clear()
    garbled = DummyLM([{"wrong": "x"}, {"wrong": "y"}])
    with (
        dspex.context(lm=garbled, callbacks=[recorder]),
        pytest.raises(AdapterParseError),
    ):
        dspex.Predict("question -> answer")(question="q")
    parse_ends = recorder.of("on_adapter_parse_end")
    # ChatAdapter fails, then its JSONAdapter fallback fails: two parses, both failed.
    assert len(parse_ends) == 2
    assert all(isinstance(c["exception"], AdapterParseError) for c in parse_ends)
    assert isinstance(recorder.of("on_module_end")[0]["exception"], AdapterParseError)
    _assert_paired(recorder.calls)


# -- what the hooks receive ---------------------------------------------------------------


def test_lm_hooks_get_messages_kwargs_and_completion_texts() -> None:
    recorder = Recorder()
    lm = DummyLM([{"answer": "Paris"}])
    with dspex.context(lm=lm, callbacks=[recorder]):
        dspex.Predict("question -> answer", temperature=0.3)(question="Capital?")
    [start] = recorder.of("on_lm_start")
    [end] = recorder.of("on_lm_end")
    entry = lm.history[-1]
    assert start["instance"] is lm
    assert start["inputs"]["prompt"] is None
    assert start["inputs"]["messages"] == entry["messages"]
    assert start["inputs"]["kwargs"]["temperature"] == 0.3
    assert end["outputs"] == entry["outputs"] == [chat_answer("Paris")]


def test_adapter_hooks_get_format_and_parse_arguments_and_results() -> None:
    recorder = Recorder()
    adapter = dspex.ChatAdapter()
    demos = [dspex.Example(question="1+1?", answer="2")]
    with dspex.context(lm=DummyLM([{"answer": "4"}]), callbacks=[recorder]):
        predict = dspex.Predict("question -> answer")
        predict.demos = demos
        predict(question="2+2?")
    [fmt_start] = recorder.of("on_adapter_format_start")
    [fmt_end] = recorder.of("on_adapter_format_end")
    assert set(fmt_start["inputs"]) == {"signature", "demos", "inputs"}
    assert fmt_start["inputs"]["signature"] is predict.signature
    assert fmt_start["inputs"]["inputs"] == {"question": "2+2?"}
    assert fmt_end["outputs"] == adapter.format(predict.signature, demos, {"question": "2+2?"})
    [parse_start] = recorder.of("on_adapter_parse_start")
    [parse_end] = recorder.of("on_adapter_parse_end")
    assert parse_start["inputs"] == {
        "signature": predict.signature,
        "completion": chat_answer("4"),
    }
    assert parse_end["outputs"] == {"answer": "4"}


def test_a_subclass_override_calling_super_is_one_format_call() -> None:
    class Shouting(dspex.ChatAdapter):
        def format(self, signature: Any, demos: Any, inputs: Any) -> list[dict[str, Any]]:
            messages = super().format(signature, demos, inputs)
            return [{**m, "content": m["content"].upper()} for m in messages]

    recorder = Recorder()
    lm = DummyLM([{"answer": "ok"}])
    with dspex.context(lm=lm, adapter=Shouting(), callbacks=[recorder]):
        dspex.Predict("question -> answer")(question="q")
    [end] = recorder.of("on_adapter_format_end")
    assert end["outputs"][-1]["content"].isupper()
    assert len(recorder.of("on_adapter_format_start")) == 1


def test_with_callbacks_decorates_custom_methods_as_dspy_does() -> None:
    class Target(dspex.Module):
        @with_callbacks
        def forward(self, x: int, y: str, z: float = 3.0) -> int:
            return x + int(y) + int(z)

    recorder = Recorder()
    target = Target(callbacks=[recorder])
    assert target.forward(1, "2") == 6
    assert recorder.handlers() == ["on_module_start", "on_module_end"]
    assert recorder.calls[0]["inputs"] == {"x": 1, "y": "2", "z": 3.0}
    assert recorder.calls[1]["outputs"] == 6
    assert Target().forward(1, "2") == 6 and len(recorder.calls) == 2  # other instance: none


def test_evaluate_hooks_wrap_the_examples_module_calls() -> None:
    recorder = Recorder()
    devset = [dspex.Example(question=f"q{i}", answer="a").with_inputs("question") for i in range(4)]
    program = dspex.Predict("question -> answer")
    evaluate = dspex.Evaluate(devset=devset, num_threads=2, display_progress=False)

    def metric(example: Any, pred: Any, trace: Any = None) -> bool:
        return bool(example.answer == pred.answer)

    with dspex.context(lm=DummyLM([{"answer": "a"}] * 4), callbacks=[recorder]):
        result = evaluate(program, metric=metric)
    [start] = recorder.of("on_evaluate_start")
    [end] = recorder.of("on_evaluate_end")
    assert start["instance"] is evaluate
    assert start["inputs"]["program"] is program and start["inputs"]["metric"] is metric
    assert end["outputs"] is result and result.score == 100.0
    modules = recorder.of("on_module_start")
    assert len(modules) == 4 and {c["parent"] for c in modules} == {start["call_id"]}
    _assert_paired(recorder.calls)


# -- threads, runs, async, LM objects ----------------------------------------------------------


def test_context_callbacks_fire_inside_the_run_in_its_callers_thread() -> None:
    recorder = Recorder()
    caller = threading.current_thread()
    with dspex.context(lm=DummyLM([{"answer": "a"}]), callbacks=[recorder]):
        dspex.Predict("question -> answer")(question="q")
    threads = {c["thread"] for c in recorder.calls}
    assert threads == {caller}  # a top-level run borrows its caller's thread
    _assert_paired(recorder.calls)


def test_acall_with_aforward_is_observed() -> None:
    recorder = Recorder()
    cot = dspex.ChainOfThought("question -> answer")

    async def call() -> Any:
        with dspex.context(lm=DummyLM([{"reasoning": "r", "answer": "a"}]), callbacks=[recorder]):
            return await cot.acall(question="q")

    result = asyncio.run(call())
    assert result.answer == "a"
    starts = recorder.of("on_module_start")
    assert [c["instance"] for c in starts] == [cot, cot.predict]
    assert starts[1]["parent"] == starts[0]["call_id"]
    _assert_paired(recorder.calls)


def test_dspex_lm_fires_lm_hooks_when_called_directly(start_runtime: StartRuntime) -> None:
    start_runtime()
    own, registered = Recorder(), Recorder()
    with FakeOpenAI(api_key=SECRET) as server:
        echo_answers(server)
        lm = dspex.LM("openai/test", api_base=server.url, api_key=SECRET, callbacks=[own])
        with dspex.context(callbacks=[registered]):
            assert lm("hello", temperature=0.5) == [chat_answer("hello")]
        assert "callbacks" not in server.requests[0].json
        with dspex.context(lm=lm):  # through Predict: the adapter fires the LM hooks
            assert dspex.Predict("question -> answer")(question="hi").answer == "hi"
    [start, end] = own.calls[:2]
    assert start["inputs"] == {"prompt": "hello", "messages": None, "kwargs": {"temperature": 0.5}}
    assert start["instance"] is lm and end["outputs"] == [chat_answer("hello")]
    assert registered.handlers() == ["on_lm_start", "on_lm_end"]
    assert own.handlers() == ["on_lm_start", "on_lm_end"] * 2
    assert lm.copy(temperature=0.1).callbacks == [own]
    assert "callbacks" not in lm.dump_state()


def test_tool_calls_fire_tool_hooks_with_their_arguments() -> None:
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    def broken(x: str) -> str:
        """Always fails."""
        raise RuntimeError("tool down")

    recorder = Recorder()
    with dspex.context(callbacks=[recorder]):
        assert dspex.Tool(add)(a=1, b="2") == 3
        with pytest.raises(RuntimeError, match="tool down"):
            dspex.Tool(broken)(x="y")
        assert asyncio.run(dspex.Tool(add).acall(a=2, b=2)) == 4
    starts, ends = recorder.of("on_tool_start"), recorder.of("on_tool_end")
    assert [s["instance"].name for s in starts] == ["add", "broken", "add"]
    assert starts[0]["inputs"] == {"kwargs": {"a": 1, "b": "2"}}
    assert [e["outputs"] for e in ends] == [3, None, 4]
    assert isinstance(ends[1]["exception"], RuntimeError) and ends[0]["exception"] is None
    _assert_paired(recorder.calls)


def test_the_top_level_failure_still_wraps_for_the_caller() -> None:
    class Broken(dspex.Module):
        def forward(self) -> None:
            raise KeyError("k")

    recorder = Recorder()
    with dspex.context(callbacks=[recorder]), pytest.raises(ProgramError) as info:
        Broken()()
    assert isinstance(info.value, KeyError)
    assert recorder.of("on_module_end")[0]["exception"] is info.value.__cause__


def test_no_callbacks_means_no_hooks_and_the_dspy_import_paths_work() -> None:
    import dspex.utils
    from dspex.actors._callbacks import active_callbacks, registered_callbacks
    from dspex.utils.dummies import DummyLM as DspyDummyLM

    assert dspex.utils.BaseCallback is BaseCallback and DspyDummyLM is DummyLM
    assert dspex.utils.callback.with_callbacks is with_callbacks
    predict = dspex.Predict("question -> answer")
    recorder = Recorder()
    with dspex.context(callbacks=[recorder]):
        assert list(active_callbacks(predict)) == [recorder]
    assert not registered_callbacks() and not active_callbacks(predict)
    assert ACTIVE_CALL_ID.get() is None
    with dspex.context(lm=DummyLM([{"answer": "a"}])):
        assert predict(question="q").answer == "a"
    assert recorder.calls == []
