"""The LM ``chat`` span written straight to the SDK's span processors
(``_otel_direct``, departure 29) is, for an exporter, the span the SDK's own
``Tracer``/``Span`` path makes: each case runs the same call through both
(``Tracing(direct=False)`` is the SDK's path) with the same ids and compares."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import sampling as samplers
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from dspex.actors import _otel
from dspex.actors._lm._types import Completion, LMResponse, Usage
from dspex.errors import RateLimitError

MODEL = "openai/gpt-4o-mini"
API_BASE = "http://127.0.0.1:8123/v1"


class Counting(IdGenerator):
    """Ids from a counter, so both paths can be given the same ones."""

    def __init__(self) -> None:
        self.next = 0

    def generate_span_id(self) -> int:
        self.next += 1
        return self.next

    def generate_trace_id(self) -> int:
        self.next += 1
        return (self.next << 64) | 0xABC

    def is_trace_id_random(self) -> bool:
        return True  # so the random-trace-id flag is exercised too


class Everything(SpanProcessor):
    """Keeps every span it is given at its end, sampled or not (on_start as the base's)."""

    def __init__(self) -> None:
        self.ended: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


class Stamping(SpanProcessor):
    """Sets an attribute when a span starts, as a baggage processor does."""

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        span.set_attribute("stamped", True)


class Pair:
    """One SDK provider, dspex's direct path and the SDK's path on it."""

    def __init__(self, sampler: Any = None, limits: SpanLimits | None = None) -> None:
        self.ids = Counting()
        self.exporter = InMemorySpanExporter()
        self.everything = Everything()
        self.provider = TracerProvider(
            sampler=sampler,
            resource=Resource.create({"service.name": "direct-test"}),
            id_generator=self.ids,
            span_limits=limits,
        )
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.provider.add_span_processor(self.everything)
        self.meters = MeterProvider()
        tracer = trace.get_tracer("dspex", "0.1.0", tracer_provider=self.provider)
        meter = self.meters.get_meter("dspex")
        self.direct = _otel.Tracing(tracer, meter)
        self.sdk = _otel.Tracing(tracer, meter, direct=False)

    def both(
        self,
        response: Any = None,
        error: BaseException | None = None,
        *,
        parent: Any = None,
        events: Sequence[tuple[str, Mapping[str, Any] | None]] = (),
        extra: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> tuple[list[ReadableSpan], list[ReadableSpan]]:
        """The spans each path gave the processors for the same call and ids."""
        got = []
        for tracing in (self.sdk, self.direct):
            self.ids.next = 1000
            before = len(self.everything.ended)
            token = context_api.attach(trace.set_span_in_context(parent)) if parent else None
            try:
                span = tracing.start_lm(MODEL, API_BASE, params or {"temperature": 0.3}, [])
            finally:
                if token is not None:
                    context_api.detach(token)
            span.start = 1_000_000_000  # the same start for both
            for name, attributes in events:
                span.events.append((name, attributes, 1_000_000_500))
            for key, value in (extra or {}).items():
                span.set_attribute(key, value)
            tracing.end_lm(span, response, error)
            got.append(self.everything.ended[before:])
        assert self.direct._direct is not None  # the SDK's own tracer: the direct path serves
        return got[0], got[1]

    def close(self) -> None:
        self.provider.shutdown()
        self.meters.shutdown()


@pytest.fixture
def pair() -> Iterator[Pair]:
    made = Pair()
    yield made
    made.close()


def _response(*, cache_hit: bool = False) -> LMResponse:
    return LMResponse(
        (Completion("ok", "stop"),),
        Usage(prompt_tokens=12, completion_tokens=3),
        model="gpt-4o-mini-2024-07-18",
        cache_hit=cache_hit,
        cost=0.00012,
    )


def _exported(span: ReadableSpan) -> dict[str, Any]:
    """What an exporter can read of a span, end time aside (each path's clock)."""
    fields = json.loads(span.to_json())
    del fields["end_time"]
    context = span.context
    assert context is not None
    fields.update(
        trace_flags=int(context.trace_flags),
        trace_state=context.trace_state.to_header(),
        remote=context.is_remote,
        parent_remote=span.parent.is_remote if span.parent else None,
        scope=span.instrumentation_scope,
        kind_enum=span.kind,
        start=span.start_time,
        attributes_typed=dict(span.attributes or {}),
        events_typed=[(e.name, dict(e.attributes or {}), e.timestamp) for e in span.events],
        dropped=(span.dropped_attributes, span.dropped_events, span.dropped_links),
        event_dropped=[getattr(e, "dropped_attributes", 0) for e in span.events],
        status_code=span.status.status_code,
        status_description=span.status.description,
        resource=span.resource,
        links=tuple(span.links),
    )
    return fields


def _same(sdk: list[ReadableSpan], direct: list[ReadableSpan]) -> None:
    assert [_exported(s) for s in direct] == [_exported(s) for s in sdk]
    for s in direct:
        assert s.end_time is not None and s.start_time is not None
        assert s.end_time >= s.start_time
        # Written directly: plain, already-checked attributes, no SDK Span behind them.
        assert type(s) is ReadableSpan


def test_a_chat_span_is_the_same_as_the_sdks_own(pair: Pair) -> None:
    sdk, direct = pair.both(_response(), params={"temperature": 0.3, "max_tokens": 64})
    _same(sdk, direct)
    [span] = direct
    assert type(span._attributes) is dict  # the direct path served, without BoundedAttributes
    assert span.kind is SpanKind.CLIENT and span.name == "chat gpt-4o-mini"
    assert span.parent is None  # no current span: a root, with a trace id of its own
    assert span.context is not None and span.context.trace_id == (1001 << 64) | 0xABC
    assert span.context.trace_flags == TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID
    assert dict(span.attributes or {})["gen_ai.request.max_tokens"] == 64
    assert span.resource.attributes["service.name"] == "direct-test"
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "dspex"
    assert pair.exporter.get_finished_spans()[-1] is span  # and it was exported


def test_a_child_a_cache_hit_retries_and_extra_attributes_are_the_same(pair: Pair) -> None:
    tracer = pair.provider.get_tracer("caller")
    with tracer.start_as_current_span("request") as request:
        sdk, direct = pair.both(
            _response(cache_hit=True),
            parent=request,
            events=[("gen_ai.retry", {"dspex.retry": 1, "error.type": "ProviderError"})] * 2,
            extra={"dspex.lm.retries": 2, "dspex.lm.single_flight_joined": False},
        )
    _same(sdk, direct)
    [span] = direct
    assert span.parent is not None
    assert span.parent.span_id == request.get_span_context().span_id
    assert span.context is not None
    assert span.context.trace_id == request.get_span_context().trace_id
    assert [e.timestamp for e in span.events] == [1_000_000_500] * 2
    assert dict(span.attributes or {})["dspex.lm.cache_hit"] is True


def test_an_error_is_marked_the_same(pair: Pair) -> None:
    sdk, direct = pair.both(None, RateLimitError("slow down " * 40))
    _same(sdk, direct)
    [span] = direct
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == ("slow down " * 40)[:200]
    assert dict(span.attributes or {})["error.type"] == "RateLimitError"


def test_message_content_is_the_same() -> None:
    made = Pair()
    try:
        for tracing in (made.direct, made.sdk):
            tracing.capture_content = True
        sdk, direct = made.both(_response())
        _same(sdk, direct)
        assert "gen_ai.output.messages" in dict(direct[0].attributes or {})
    finally:
        made.close()


@pytest.mark.parametrize(
    "sampler",
    [samplers.ALWAYS_OFF, samplers.DEFAULT_OFF, samplers.TraceIdRatioBased(0.5)],
    ids=["always_off", "parent_based_off", "ratio"],
)
def test_the_providers_sampler_decides(sampler: Any) -> None:
    made = Pair(sampler=sampler)
    try:
        sdk_kept, direct_kept = [], []
        for _ in range(40):
            sdk, direct = made.both(_response())
            _same(sdk, direct)
            sdk_kept.extend(sdk)
            direct_kept.extend(direct)
            made.ids.next += 7  # another trace id for the ratio sampler
        if sampler is samplers.ALWAYS_OFF or sampler is samplers.DEFAULT_OFF:
            assert direct_kept == [] and made.exporter.get_finished_spans() == ()
        else:
            # Counter trace ids: the ratio sampler keeps the same ones on both paths.
            assert len(direct_kept) == len(sdk_kept)
    finally:
        made.close()


def test_an_unsampled_parent_is_honoured(pair: Pair) -> None:
    unsampled = trace.NonRecordingSpan(
        trace.SpanContext(5 << 64, 77, is_remote=True, trace_flags=TraceFlags(0))
    )
    sdk, direct = pair.both(_response(), parent=unsampled)
    assert sdk == [] and direct == []  # ParentBased(ALWAYS_ON): not sampled, not recorded
    assert pair.exporter.get_finished_spans() == ()


class Odd:
    """Not an attribute type: the SDK records its str()."""

    def __str__(self) -> str:
        return "odd"


class Marking(samplers.Sampler):
    """Records everything, samples nothing, and adds an attribute and trace state."""

    def should_sample(self, *args: Any, **kwargs: Any) -> samplers.SamplingResult:
        attributes = {**(args[4] or {}), "sampler.mark": "m", "odd": Odd()}
        return samplers.SamplingResult(
            samplers.Decision.RECORD_ONLY, attributes, TraceState([("vendor", "v1")])
        )

    def get_description(self) -> str:
        return "Marking"


def test_a_record_only_sampler_with_its_own_attributes_and_state() -> None:
    made = Pair(sampler=Marking())
    try:
        sdk, direct = made.both(_response())
        _same(sdk, direct)
        [span] = direct
        assert span.context is not None and not span.context.trace_flags.sampled
        assert span.context.trace_state.get("vendor") == "v1"
        attributes = dict(span.attributes or {})
        # The sampler's attributes are checked as the SDK checks them: the odd one a str.
        assert attributes["sampler.mark"] == "m" and attributes["odd"] == "odd"
        assert made.exporter.get_finished_spans() == ()  # the exporting processor skips it
    finally:
        made.close()


def test_smaller_span_limits_truncate_and_drop_as_the_sdk_does() -> None:
    limits = SpanLimits(
        max_span_attributes=4,
        max_span_attribute_length=5,
        max_events=1,
        max_event_attributes=1,
        max_attribute_length=3,
    )
    made = Pair(limits=limits)
    try:
        sdk, direct = made.both(
            _response(), events=[("gen_ai.retry", {"n": 1, "error.type": "ProviderError"})] * 2
        )
        _same(sdk, direct)
        [span] = direct
        attributes = dict(span.attributes or {})
        # The oldest dropped, strings cut to 5 characters, as the SDK's Span does.
        assert list(attributes) == list(dict(sdk[0].attributes or {}))
        assert len(attributes) == 4 and span.dropped_attributes > 0
        assert attributes["gen_ai.response.model"] == "gpt-4"
        assert span.dropped_events == 1
        assert dict(span.events[0].attributes or {}) == {"error.type": "Pro"}
    finally:
        made.close()


def test_a_processor_that_reads_the_start_gets_the_sdks_path(pair: Pair) -> None:
    pair.both(_response())  # the direct path is in use...
    pair.provider.add_span_processor(Stamping())  # ...until a processor wants on_start
    sdk, direct = pair.both(_response())
    _same(sdk, direct)
    [span] = direct
    assert dict(span.attributes or {})["stamped"] is True


class Wrapping(trace.TracerProvider):
    """A vendor's provider: not the SDK's, though it uses one underneath."""

    def __init__(self, inner: TracerProvider) -> None:
        self.inner = inner

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return WrappingTracer(self.inner.get_tracer(*args, **kwargs))


class WrappingTracer(trace.Tracer):
    def __init__(self, inner: trace.Tracer) -> None:
        self.inner = inner
        self.started: list[str] = []

    def start_span(self, name: str, *args: Any, **kwargs: Any) -> trace.Span:
        self.started.append(name)
        return self.inner.start_span(name, *args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.start_as_current_span(*args, **kwargs)


def test_a_provider_that_is_not_the_sdks_keeps_the_normal_path(pair: Pair) -> None:
    tracer = trace.get_tracer("dspex", tracer_provider=Wrapping(pair.provider))
    tracing = _otel.Tracing(tracer, pair.meters.get_meter("dspex"))
    tracing.end_lm(tracing.start_lm(MODEL, API_BASE, {}, []), _response(), None)
    assert tracing._direct is None
    assert isinstance(tracer, WrappingTracer) and tracer.started == ["chat gpt-4o-mini"]
    [span] = pair.exporter.get_finished_spans()
    assert span.name == "chat gpt-4o-mini" and span.kind is SpanKind.CLIENT


def test_queued_spans_share_one_finish_reasons_tuple(pair: Pair) -> None:
    # A shared tuple of strings is untracked by the GC, and so then is the
    # attribute dict of each span waiting in a batch queue.
    _, [first] = pair.both(_response())
    _, [second] = pair.both(_response())
    reasons = dict(first.attributes or {})["gen_ai.response.finish_reasons"]
    assert reasons == ("stop",)
    assert dict(second.attributes or {})["gen_ai.response.finish_reasons"] is reasons


def test_the_global_provider_set_after_instrumenting_gets_the_direct_path() -> None:
    code = (
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from opentelemetry.sdk.trace.export import SimpleSpanProcessor\n"
        "from opentelemetry.sdk.trace.export.in_memory_span_exporter import"
        " InMemorySpanExporter\n"
        "from dspex.actors import _otel\n"
        "tracing = _otel.instrument()\n"  # the global tracer: a proxy, no provider yet
        "tracing.end_lm(tracing.start_lm('openai/m', None, {}, []), None, ValueError())\n"
        "assert tracing._direct is _otel._UNRESOLVED\n"
        "exporter = InMemorySpanExporter()\n"
        "provider = TracerProvider()\n"
        "provider.add_span_processor(SimpleSpanProcessor(exporter))\n"
        "trace.set_tracer_provider(provider)\n"
        "tracing.end_lm(tracing.start_lm('openai/m', None, {}, []), None, ValueError())\n"
        "assert tracing._direct is not None and tracing._direct is not _otel._UNRESOLVED\n"
        "[span] = exporter.get_finished_spans()\n"
        "assert type(span._attributes) is dict, span._attributes\n"
        "print(span.name, dict(span.attributes)['error.type'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "chat m ValueError"
