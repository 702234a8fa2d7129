"""The LM ``chat`` span handed to the SDK's span processors as an ended span.

Departure 29 (docs/architecture.md): the OpenTelemetry SDK's ``Span`` costs
more per call than the whole 30 µs budget of issue 13 (a sampler call, ids,
a ``Span`` with its lock, a validated ``BoundedAttributes``, a
``BoundedList`` per events and links, a second ``ReadableSpan`` at the end,
and the garbage all of that leaves in the batch queue). dspex creates the
``chat`` span when the call has ended (``LMSpan``), so it can skip the live
span: :class:`DirectSpans` does what ``Tracer.start_span`` and
``Span.end`` do for an ended span, with the tracer's own sampler, id
generator, resource, scope, limits and span processors, and builds the
``ReadableSpan`` the processors' ``on_end`` would have received.

It serves only the SDK's own ``Tracer`` (exactly that class) whose span
processors do nothing when a span starts or is ending (the SDK's batch and
simple processors, or any processor that leaves ``on_start`` and
``_on_ending`` as the base class has them); otherwise, or when an SDK lacks
a piece used here, the caller takes the SDK's normal path. The attributes
go unchecked only when they are dspex's own, unchanged by the sampler, and
within the tracer's span limits; otherwise the SDK's ``BoundedAttributes``
checks, truncates and drops them as ``Span`` would.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.util import BoundedList

__all__ = ["DirectSpans"]

_SpanProcessor = sdk_trace.SpanProcessor
# Processors whose on_start and _on_ending do nothing: a span they never see
# start is the same to them.
_QUIET_START = {
    getattr(cls, "on_start", None)
    for cls in (_SpanProcessor, BatchSpanProcessor, SimpleSpanProcessor)
}
_QUIET_ENDING = {
    getattr(cls, "_on_ending", None)
    for cls in (_SpanProcessor, BatchSpanProcessor, SimpleSpanProcessor)
}
_MULTI = (sdk_trace.SynchronousMultiSpanProcessor, sdk_trace.ConcurrentMultiSpanProcessor)
# What this module reads of a Tracer besides its public attributes (SDK 1.45).
_TRACER_PARTS = ("_span_limits", "_instrumentation_scope", "_tracer_config", "_tracer_metrics")
_SAMPLED = trace_api.TraceFlags(trace_api.TraceFlags.SAMPLED)
_NOT_SAMPLED = trace_api.TraceFlags(trace_api.TraceFlags.DEFAULT)
_RANDOM = int(getattr(trace_api.TraceFlags, "RANDOM_TRACE_ID", 0))
_RANDOM_SAMPLED = trace_api.TraceFlags(_SAMPLED | _RANDOM)
_RANDOM_NOT_SAMPLED = trace_api.TraceFlags(_NOT_SAMPLED | _RANDOM)
_NO_LINKS: tuple[Any, ...] = ()


class DirectSpans:
    """Ended spans of one SDK tracer, written without the SDK's live ``Span``.

    :meth:`write` runs in the thread that ended the LM call; it keeps no
    state of its own per span, only what it last checked of the tracer.
    """

    __slots__ = ("_checked", "_kind", "_limits", "_max_attributes", "_plain", "_quiet", "tracer")

    def __init__(self, tracer: Any, kind: Any) -> None:
        self.tracer = tracer
        self._kind = kind
        self._checked: Any = None  # the processors tuple last checked, and the verdict
        self._quiet = False
        self._limits: Any = None  # the SpanLimits last read
        self._plain = False
        self._max_attributes: int | None = None

    @classmethod
    def for_tracer(cls, tracer: Any, kind: Any) -> DirectSpans | None:
        """A writer for ``tracer`` if it is the SDK's own Tracer, else None."""
        if type(tracer) is not sdk_trace.Tracer:  # a subclass may start spans its own way
            return None
        if not all(hasattr(tracer, part) for part in _TRACER_PARTS):
            return None
        if _RANDOM and not hasattr(tracer.id_generator, "is_trace_id_random"):
            return None
        return cls(tracer, kind)

    def write(self, span: Any, attributes: dict[str, Any], end: int, status: Any) -> bool:
        """Start and end ``span`` (an ``_otel.LMSpan``) as the SDK would; False if the
        SDK's own path must.

        ``attributes`` are the span's, in a new dict the caller does not
        keep; the parent is the context captured at the call's start.
        """
        name, context, events = span.name, span.context, span.events
        tracer = self.tracer
        processor = tracer.span_processor
        processors = getattr(processor, "_span_processors", None)
        if processors is not self._checked:
            self._quiet = _quiet(processor, processors)
            self._checked = processors
        if not self._quiet:
            return False
        if not tracer._tracer_config.is_enabled:
            return True  # the SDK's span would be a NonRecordingSpan: nothing to export
        limits = tracer._span_limits
        if limits is not self._limits:
            self._max_attributes = limits.max_span_attributes
            self._plain = limits.max_span_attribute_length is None
            self._limits = limits

        # From here on, Tracer.start_span, in its order.
        parent: Any = trace_api.get_current_span(context).get_span_context()
        ids = tracer.id_generator
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = ids.generate_trace_id()
        else:
            trace_id = parent.trace_id
        kind = self._kind
        sampled = tracer.sampler.should_sample(context, trace_id, name, kind, attributes, _NO_LINKS)
        decision = sampled.decision
        if parent is None:
            random = _RANDOM and ids.is_trace_id_random()
        else:
            random = _RANDOM and parent.trace_flags & _RANDOM
        if decision.is_sampled():
            flags = _RANDOM_SAMPLED if random else _SAMPLED
        else:
            flags = _RANDOM_NOT_SAMPLED if random else _NOT_SAMPLED
        span_context = trace_api.SpanContext(
            trace_id,
            ids.generate_span_id(),
            is_remote=False,
            trace_flags=flags,
            trace_state=sampled.trace_state,
        )
        record_end = tracer._tracer_metrics.start_span(parent, decision)
        if not decision.is_recording():
            return True

        # The Span's contents, then Span.end.
        found: Mapping[str, Any] = sampled.attributes
        most = self._max_attributes
        if self._plain and (most is None or len(found) <= most) and found == attributes:
            # dspex's own values, valid by construction, within the limits: what
            # BoundedAttributes would hold, without its per-value checks.
            span_attributes: Any = attributes
        else:
            span_attributes = BoundedAttributes(
                most, found, immutable=True, max_value_len=limits.max_span_attribute_length
            )
        span_events: Any = _NO_LINKS
        if events:
            span_events = BoundedList(limits.max_events)
            for event_name, event_attributes, at in events:
                span_events.append(
                    sdk_trace.Event(
                        event_name,
                        BoundedAttributes(
                            limits.max_event_attributes,
                            event_attributes,
                            max_value_len=limits.max_attribute_length,
                            immutable=True,
                        ),
                        at,
                    )
                )
        readable = sdk_trace.ReadableSpan(
            name,
            span_context,
            parent,
            tracer.resource,
            span_attributes,
            span_events,
            _NO_LINKS,
            kind,
            tracer.instrumentation_info,
            status,
            span.start,
            end,
            tracer._instrumentation_scope,
        )
        record_end()
        processor.on_end(readable)
        return True


def _quiet(processor: Any, processors: Any) -> bool:
    """Whether every span processor ignores a span's start and its ending."""
    if type(processor) not in _MULTI or not isinstance(processors, tuple):
        return False
    for each in processors:
        kind = type(each)
        if getattr(kind, "on_start", None) not in _QUIET_START:
            return False
        if getattr(kind, "_on_ending", None) not in _QUIET_ENDING:
            return False
    return True
