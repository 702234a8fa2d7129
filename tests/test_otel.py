"""OpenTelemetry export: spans and metrics checked with the SDK's in-memory
exporters (fake providers on 127.0.0.1; no collector)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from runtime_helpers import SECRET, StartRuntime, chat_answer, echo_answers

import dspex
from dspex.actors import _otel
from dspex.errors import AuthenticationError
from dspex.programs import Evaluate, Example, Module, Tool
from dspex.testing import FakeOpenAI, Fault

MODEL = "openai/gpt-4o-mini"


class Exported:
    """The in-memory exporter and metric reader behind an instrumentation."""

    def __init__(self) -> None:
        self.spans_exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans_exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def spans(self) -> list[ReadableSpan]:
        return list(self.spans_exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]

    def metrics(self) -> dict[str, list[Any]]:
        data = self.reader.get_metrics_data()
        found: dict[str, list[Any]] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
        return found


@pytest.fixture
def otel() -> Iterator[Exported]:
    exported = Exported()
    _otel.instrument(exported.tracer_provider, exported.meter_provider)
    try:
        yield exported
    finally:
        _otel.uninstrument()
        exported.tracer_provider.shutdown()
        exported.meter_provider.shutdown()


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=SECRET) as server:
        echo_answers(server)
        yield server


def _lm(fake: FakeOpenAI, **kwargs: Any) -> dspex.LM:
    return dspex.LM(MODEL, api_base=fake.url, api_key=SECRET, **kwargs)


def _parent(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def test_lm_call_is_a_genai_client_span_under_the_run_under_the_callers_span(
    start_runtime: StartRuntime, otel: Exported, fake: FakeOpenAI
) -> None:
    start_runtime()
    dspex.configure(lm=_lm(fake, temperature=0.5, max_tokens=64))
    tracer = otel.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        answer = dspex.Predict("question -> answer")(question="hi")
    assert answer.answer == "hi"
    [run] = otel.named("run Predict")
    [chat] = otel.named("chat gpt-4o-mini")
    # The caller's span parents the run (another thread: the run actor's), which
    # parents the LM client span.
    assert _parent(run) == request.get_span_context().span_id
    assert _parent(chat) == run.context.span_id
    assert chat.context.trace_id == request.get_span_context().trace_id
    assert chat.kind is SpanKind.CLIENT
    attrs = dict(chat.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.request.temperature"] == 0.5
    assert attrs["gen_ai.request.max_tokens"] == 64
    assert attrs["gen_ai.response.model"]
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
    assert attrs["server.address"] == "127.0.0.1"
    assert attrs["server.port"] == urlsplit(fake.url).port
    assert "dspex.lm.cache_hit" not in attrs  # set on cache hits only
    assert "gen_ai.input.messages" not in attrs  # content is opt-in


def test_modules_and_predictors_nest_and_cache_hits_show(
    start_runtime: StartRuntime, otel: Exported, fake: FakeOpenAI
) -> None:
    start_runtime()

    class TwoSteps(Module):
        def __init__(self) -> None:
            super().__init__()
            self.first = dspex.Predict("question -> answer")
            self.second = dspex.Predict("question -> answer")

        def forward(self, question: str) -> Any:
            self.first(question=question)
            return self.second(question=question)  # the same prompt: a cache hit

    dspex.configure(lm=_lm(fake))
    TwoSteps()(question="twice")
    [run] = otel.named("run TwoSteps")
    predicts = otel.named("predict Predict")
    chats = otel.named("chat gpt-4o-mini")
    assert len(predicts) == 2 and len(chats) == 2
    assert all(_parent(p) == run.context.span_id for p in predicts)
    assert {_parent(c) for c in chats} == {p.context.span_id for p in predicts}
    assert sorted(bool((c.attributes or {}).get("dspex.lm.cache_hit")) for c in chats) == [
        False,
        True,
    ]
    assert fake.request_count == 1


def test_retries_are_events_added_on_the_clients_loop_and_errors_are_marked(
    start_runtime: StartRuntime, otel: Exported, fake: FakeOpenAI
) -> None:
    start_runtime(lm_client={"num_retries": 1, "backoff_base": 0.001, "backoff_max": 0.001})
    lm = _lm(fake, cache=False)
    fake.schedule = [Fault.error(503), None, Fault.unauthorized()]
    assert lm("retried") == [chat_answer("retried")]
    with pytest.raises(AuthenticationError):
        lm("rejected")
    ok, failed = otel.named("chat gpt-4o-mini")
    assert [e.name for e in ok.events] == ["gen_ai.retry"]
    assert ok.events[0].attributes["error.type"] == "ProviderError"
    assert (ok.attributes or {})["dspex.lm.retries"] == 1
    assert (failed.attributes or {})["error.type"] == "AuthenticationError"
    assert failed.status.status_code is StatusCode.ERROR


def test_message_content_is_recorded_only_when_asked(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    exported = Exported()
    _otel.instrument(exported.tracer_provider, exported.meter_provider, capture_content=True)
    try:
        start_runtime()
        _lm(fake)("the prompt")
    finally:
        _otel.uninstrument()
    [chat] = exported.named("chat gpt-4o-mini")
    attrs = dict(chat.attributes or {})
    assert "the prompt" in attrs["gen_ai.input.messages"]
    assert chat_answer("the prompt")[:10] in attrs["gen_ai.output.messages"]


def test_tool_evaluate_and_compile_spans(
    start_runtime: StartRuntime, otel: Exported, fake: FakeOpenAI
) -> None:
    start_runtime()

    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    assert Tool(add)(a=1, b=2) == 3
    assert asyncio.run(Tool(add).acall(a=2, b=2)) == 4
    tool, async_tool = otel.named("execute_tool add")
    assert (async_tool.attributes or {})["gen_ai.tool.name"] == "add"
    assert (tool.attributes or {})["gen_ai.tool.name"] == "add"
    assert (tool.attributes or {})["gen_ai.operation.name"] == "execute_tool"

    dspex.configure(lm=_lm(fake))
    devset = [Example(question=f"q{i}", answer=f"q{i}").with_inputs("question") for i in range(3)]
    Evaluate(
        devset=devset, metric=lambda ex, pred, trace=None: ex.answer == pred.answer, num_threads=2
    )(dspex.Predict("question -> answer"))
    [evaluate] = otel.named("evaluate")
    runs = otel.named("run Predict")
    assert len(runs) == 3
    assert all(r.context.trace_id == evaluate.context.trace_id for r in runs)
    assert all(_parent(r) == evaluate.context.span_id for r in runs)

    dspex.LabeledFewShot(k=2).compile(dspex.Predict("question -> answer"), trainset=devset)
    [compile_span] = otel.named("compile LabeledFewShot")
    assert (compile_span.attributes or {})["dspex.operation"] == "compile"


def test_genai_client_metrics_and_dspex_gauges(
    start_runtime: StartRuntime, otel: Exported, fake: FakeOpenAI
) -> None:
    rt = start_runtime()
    dspex.configure(lm=_lm(fake))
    dspex.Predict("question -> answer")(question="metered")
    dspex.Predict("question -> answer")(question="metered")  # a cache hit: not an operation
    rt.flush()  # the GenAI metrics are recorded by the Telemetry actor
    metrics = otel.metrics()
    usage = metrics["gen_ai.client.token.usage"]
    assert sorted(p.attributes["gen_ai.token.type"] for p in usage) == ["input", "output"]
    assert all(p.count == 1 for p in usage)
    assert all(p.attributes["gen_ai.request.model"] == "gpt-4o-mini" for p in usage)
    assert sum(p.count for p in metrics["gen_ai.client.operation.duration"]) == 1
    [breaker] = metrics["dspex.lm.breaker.state"]
    assert breaker.value == 0 and breaker.attributes["dspex.lm.model"] == MODEL
    assert [p.value for p in metrics["dspex.lm.in_flight"]] == [0]
    rt.serve("qa", dspex.Predict("question -> answer"))
    [queue] = otel.metrics()["dspex.server.queue_depth"]
    assert queue.value == 0 and queue.attributes["dspex.server"] == "qa"


def test_nothing_is_recorded_once_uninstrumented(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    exported = Exported()
    _otel.instrument(exported.tracer_provider, exported.meter_provider)
    _otel.uninstrument()
    start_runtime()
    _lm(fake)("quiet")
    assert exported.spans() == []


def test_the_setting_turns_export_on(start_runtime: StartRuntime) -> None:
    assert _otel.tracing() is None
    try:
        start_runtime(telemetry={"otel": True})
        assert _otel.tracing() is not None
    finally:
        _otel.uninstrument()


def test_disabled_export_imports_nothing_of_opentelemetry() -> None:
    code = (
        "import sys, dspex\n"
        "from dspex.testing import DummyLM\n"
        "dspex.configure(lm=DummyLM([{'answer': 'x'}]))\n"
        "assert dspex.Predict('question -> answer')(question='q').answer == 'x'\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_a_failing_module_marks_its_span_and_restores_the_callers_context(
    start_runtime: StartRuntime, otel: Exported
) -> None:
    from opentelemetry import trace

    start_runtime()

    class Fails(Module):
        def forward(self, question: str) -> Any:
            raise ValueError(f"no answer to {question}")

    tracer = otel.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        with pytest.raises(ValueError, match="no answer"):
            Fails()(question="q")
        # The run's span was current only inside the run: the caller's is current again.
        assert trace.get_current_span() is request
    [run] = otel.named("run Fails")
    assert _parent(run) == request.get_span_context().span_id
    assert (run.attributes or {})["error.type"] == "ValueError"
    assert run.status.status_code is StatusCode.ERROR
    assert run.status.description == "ValueError: no answer to q"
    assert [e.name for e in run.events] == ["exception"]
    assert run.end_time is not None


def test_span_marks_a_base_exception_without_an_error_status(otel: Exported) -> None:
    tracing = _otel.tracing()
    assert tracing is not None
    with pytest.raises(KeyboardInterrupt), tracing.span("interrupted", {"k": "v"}):
        raise KeyboardInterrupt
    [span] = otel.named("interrupted")
    # As the SDK's own use_span: only an Exception is an error of the span.
    assert dict(span.attributes or {}) == {"k": "v", "error.type": "KeyboardInterrupt"}
    assert span.status.status_code is StatusCode.UNSET


def test_lm_span_attributes_follow_each_calls_parameters(otel: Exported) -> None:
    tracing = _otel.tracing()
    assert tracing is not None
    messages = [{"role": "user", "content": "hi"}]
    for params in ({"temperature": 0.1}, {"temperature": 0.9, "top_p": 0.5}, {}):
        tracing.end_lm(tracing.start_lm(MODEL, None, params, messages), _response(), None)
    # An unhashable value is not cached, and a non-number is not an attribute.
    tracing.end_lm(tracing.start_lm(MODEL, None, {"max_tokens": [8]}, messages), _response(), None)
    got = [
        {k: v for k, v in (s.attributes or {}).items() if k.startswith("gen_ai.request.")}
        for s in otel.named("chat gpt-4o-mini")
    ]
    assert got == [
        {"gen_ai.request.model": "gpt-4o-mini", "gen_ai.request.temperature": 0.1},
        {
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.request.temperature": 0.9,
            "gen_ai.request.top_p": 0.5,
        },
        {"gen_ai.request.model": "gpt-4o-mini"},
        {"gen_ai.request.model": "gpt-4o-mini"},
    ]
    assert (otel.named("chat gpt-4o-mini")[0].attributes or {})["server.address"] == (
        "api.openai.com"
    )


def test_lm_span_start_attributes_are_cached_within_a_bound(otel: Exported) -> None:
    tracing = _otel.tracing()
    assert tracing is not None
    for i in range(_otel._MAX_CACHED + 10):
        tracing.end_lm(
            tracing.start_lm(MODEL, None, {"temperature": i / 10_000}, []), None, Exception()
        )
    assert 0 < len(tracing._starts) <= _otel._MAX_CACHED
    last = otel.spans()[-1]
    assert (last.attributes or {})["gen_ai.request.temperature"] == (
        (_otel._MAX_CACHED + 9) / 10_000
    )


def test_lm_span_finish_reasons_of_several_completions(otel: Exported) -> None:
    from dspex.actors._lm._types import Completion

    tracing = _otel.tracing()
    assert tracing is not None
    response = _response(Completion("a", "stop"), Completion("b", None), Completion("c", "length"))
    tracing.end_lm(tracing.start_lm(MODEL, None, {}, []), response, None)
    tracing.end_lm(tracing.start_lm(MODEL, None, {}, []), _response(Completion("d")), None)
    first, second = otel.named("chat gpt-4o-mini")
    assert (first.attributes or {})["gen_ai.response.finish_reasons"] == ("stop", "length")
    assert "gen_ai.response.finish_reasons" not in (second.attributes or {})


def test_failed_calls_duration_carries_each_error_type(otel: Exported) -> None:
    tracing = _otel.tracing()
    assert tracing is not None
    for error in ("RateLimitError", "RateLimitError", "ProviderError"):
        tracing.on_event(
            "lm.request.exception", {"model": MODEL, "error": error, "duration_ms": 5.0}
        )
    tracing.on_event("program.run.stop", {})
    tracing.on_event("program.run.exception", {})
    metrics = otel.metrics()
    points = {
        p.attributes["error.type"]: p.count for p in metrics["gen_ai.client.operation.duration"]
    }
    assert points == {"RateLimitError": 2, "ProviderError": 1}
    runs = {p.attributes["dspex.run.outcome"]: p.value for p in metrics["dspex.runs"]}
    assert runs == {"ok": 1, "error": 1}


def _response(*completions: Any) -> Any:
    from dspex.actors._lm._types import Completion, LMResponse, Usage

    return LMResponse(
        completions or (Completion("ok", "stop"),),
        Usage(prompt_tokens=3, completion_tokens=1),
        model="gpt-4o-mini-2024-07-18",
    )


def test_lm_span_keeps_its_start_time_and_the_parent_current_at_its_start(
    otel: Exported,
) -> None:
    tracing = _otel.tracing()
    assert tracing is not None
    tracer = otel.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("caller") as caller:
        begun = tracing.start_lm(MODEL, None, {}, [])
    begun.add_event("gen_ai.retry", {"dspex.retry": 1})
    with tracer.start_as_current_span("elsewhere"):  # current at the end, not the parent
        tracing.end_lm(begun, _response(), None)
    [chat] = otel.named("chat gpt-4o-mini")
    [event] = chat.events
    assert _parent(chat) == caller.get_span_context().span_id
    assert chat.start_time is not None and chat.end_time is not None
    # The SDK span was created at the end, but starts when the call began.
    assert chat.start_time <= (caller.end_time or 0) <= event.timestamp <= chat.end_time


def test_retry_events_fall_inside_the_lm_span(
    start_runtime: StartRuntime, otel: Exported, fake: FakeOpenAI
) -> None:
    start_runtime(lm_client={"num_retries": 1, "backoff_base": 0.001, "backoff_max": 0.001})
    fake.schedule = [Fault.error(503), None]
    _lm(fake, cache=False)("retried")
    [chat] = otel.named("chat gpt-4o-mini")
    [retry] = chat.events
    assert chat.start_time is not None and chat.end_time is not None
    assert chat.start_time <= retry.timestamp <= chat.end_time
    assert (chat.attributes or {})["dspex.lm.retries"] == 1
