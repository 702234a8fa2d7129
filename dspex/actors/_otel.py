"""OpenTelemetry export (the ``dspex[otel]`` extra): spans and metrics.

Off by default, and then free: every hook reads the module global
``_tracing`` once and finds None; ``opentelemetry`` is imported only by
:func:`instrument` (``dspex.instrument_otel()`` or ``telemetry.otel = true``).

Spans follow the OpenTelemetry GenAI semantic conventions:

- an LM call is a CLIENT span ``chat {model}``, begun and ended by
  ``LMHandle`` in the calling thread (so it is a child of whatever span is
  current there: the module's, inside a run). While the call runs it is an
  :class:`LMSpan` record, riding in the call's
  :class:`~dspex.actors._lm._slot.Attempt` to the client's event loop, where
  retries are added to it as ``gen_ai.retry`` events; when the call ends it
  goes to the SDK, with its recorded start time: with the SDK's own tracer
  straight to the span processors as an ended span
  (:mod:`dspex.actors._otel_direct`), otherwise through the span API;
- a program run, its modules and predictors, a tool call (``execute_tool
  {name}``), an ``Evaluate`` and an optimizer's ``compile`` are INTERNAL
  spans started by the programs layer through :meth:`Tracing.span`.

Contextvars travel with a run's job and with Evaluate's workers, so the
current span crosses actors and threads with them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from dspex.actors._runtime_registry import active_runtimes
from dspex.errors import UsageError

if TYPE_CHECKING:
    from dspex.actors._otel_direct import DirectSpans

__all__ = ["LMSpan", "Tracing", "instrument", "instrument_otel", "tracing", "uninstrument"]

_tracing: Tracing | None = None
_UNRESOLVED = object()  # Tracing._direct before its first LM span

# dspex provider prefix -> gen_ai.provider.name (the conventions' well-known values).
_PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini"}
_DEFAULT_HOSTS = {
    "openai": "api.openai.com",
    "anthropic": "api.anthropic.com",
    "gemini": "generativelanguage.googleapis.com",
}
_CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_BREAKER_CODES = {"closed": 0, "half_open": 1, "open": 2}
_REQUEST_PARAMS = ("temperature", "max_tokens", "top_p")  # -> gen_ai.request.{name}
_MAX_CACHED = 1024  # prebuilt attribute sets kept, per kind
_RUN_OK = {"dspex.run.outcome": "ok"}
_RUN_ERROR = {"dspex.run.outcome": "error"}


def tracing() -> Tracing | None:
    """The active instrumentation, or None when OpenTelemetry export is off."""
    return _tracing


def instrument(
    tracer_provider: Any = None,
    meter_provider: Any = None,
    *,
    capture_content: bool | None = None,
) -> Tracing:
    """Turn OpenTelemetry export on (the global providers unless given); idempotent.

    ``capture_content`` records prompts and completions on LM spans (off by
    default, as the conventions ask; the env var
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`` turns it on too).
    """
    global _tracing
    try:
        from opentelemetry import metrics, trace
    except ImportError as exc:
        raise UsageError(
            "OpenTelemetry export needs the otel extra: pip install 'dspex[otel]'"
        ) from exc
    if capture_content is None:
        capture_content = os.environ.get(_CAPTURE_ENV, "").lower() in ("1", "true", "yes")
    tracer = trace.get_tracer("dspex", "0.1.0", tracer_provider=tracer_provider)
    meter = metrics.get_meter("dspex", "0.1.0", meter_provider=meter_provider)
    _tracing = Tracing(tracer, meter, capture_content=capture_content)
    return _tracing


def instrument_otel(tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Export dspex's spans and metrics to OpenTelemetry (needs ``dspex[otel]``).

    Uses the global tracer and meter providers unless given. Message content
    is recorded only with ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``.
    See docs/otel.md.
    """
    instrument(tracer_provider, meter_provider)


def uninstrument() -> None:
    """Turn export off again (spans already started still end)."""
    global _tracing
    _tracing = None


class Tracing:
    """The tracer, the meter and their instruments; used from any thread."""

    def __init__(
        self, tracer: Any, meter: Any, *, capture_content: bool = False, direct: bool = True
    ) -> None:
        from opentelemetry import context, trace
        from opentelemetry.metrics import Observation

        self.tracer = tracer
        self.capture_content = capture_content
        # The chat span's direct writer (departure 29): resolved on first use;
        # None keeps the SDK's normal path (another provider, or ``direct=False``).
        self._direct: Any = _UNRESOLVED if direct else None
        self._unset = trace.Status(trace.StatusCode.UNSET)
        self._trace = trace
        self._observation = Observation
        self._client_kind = trace.SpanKind.CLIENT
        self._current = context.get_current
        self._time_ns = time.time_ns  # the SDK's clock for span and event times
        # What a current span needs: no generator-based context managers per span.
        self._attach, self._detach = context.attach, context.detach
        self._set_span = trace.set_span_in_context
        self._hosts: dict[str | None, tuple[str, int | None]] = {}
        # Per (model, api_base): span name and attributes, built on first use.
        self._models: dict[tuple[str, str | None], tuple[str, Mapping[str, Any]]] = {}
        # Per (model, api_base, temperature, max_tokens, top_p): the LM span's start.
        self._starts: dict[tuple[Any, ...], tuple[str, Mapping[str, Any]]] = {}
        self._tokens: dict[int, tuple[Mapping[str, Any], Mapping[str, Any]]] = {}
        self._metric_attrs: dict[str, Mapping[str, Any]] = {}
        self._error_attrs: dict[tuple[str, str], Mapping[str, Any]] = {}
        self._finish_reasons: dict[str, tuple[str]] = {}
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used",
        )
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="GenAI operation duration"
        )
        self.runs = meter.create_counter(
            "dspex.runs", unit="{run}", description="Program runs finished, by outcome"
        )
        self.restarts = meter.create_counter(
            "dspex.restarts", unit="{restart}", description="Children restarted by a supervisor"
        )
        meter.create_observable_gauge(
            "dspex.lm.breaker.state",
            callbacks=[self._breaker_states],
            description="Circuit breaker per LM client: 0 closed, 1 half-open, 2 open",
        )
        meter.create_observable_gauge(
            "dspex.server.queue_depth",
            callbacks=[self._queue_depths],
            unit="{request}",
            description="Requests waiting in each named program server's queue",
        )
        meter.create_observable_gauge(
            "dspex.lm.in_flight",
            callbacks=[self._in_flight],
            unit="{request}",
            description="Distinct requests an LM client is working on (its queue depth)",
        )

    # -- LM calls (LMHandle, the caller's thread) ------------------------------

    def start_lm(
        self,
        model: str,
        api_base: str | None,
        params: Mapping[str, Any],
        messages: Sequence[Mapping[str, Any]],
    ) -> LMSpan:
        """Begin the CLIENT span of one call of ``model`` (a child of the current span)."""
        # One prebuilt attribute dict per (model, endpoint, sampling parameters),
        # rather than one built per call.
        key = (model, api_base, *map(params.get, _REQUEST_PARAMS))
        try:
            name, attributes = self._starts[key]
        except KeyError:
            name, attributes = self._start_attributes(key)
        except TypeError:  # an unhashable parameter value: built for this call only
            name, attributes = self._start_attributes(key, keep=False)
        if self.capture_content:
            attributes = {
                **attributes,
                "gen_ai.input.messages": json.dumps(list(messages), default=str),
            }
        return LMSpan(name, attributes, self._current(), self._time_ns())

    def end_lm(self, span: LMSpan, response: Any, error: BaseException | None) -> None:
        """Create the call's span, as it was, in the SDK and end it (the caller's thread).

        With the SDK's own tracer the span goes straight to its span
        processors as an ended span (:mod:`dspex.actors._otel_direct`). The
        metrics come from telemetry events, on the Telemetry actor's thread.
        """
        end = self._time_ns()
        attributes = dict(span.attributes)
        if error is not None:
            attributes["error.type"] = type(error).__name__
        else:
            usage = response.usage
            attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
            if response.cache_hit:
                attributes["dspex.lm.cache_hit"] = True
            if response.model:
                attributes["gen_ai.response.model"] = response.model
            completions = response.completions
            if len(completions) == 1:  # the usual case, without a generator
                reason = completions[0].finish_reason
                if reason:
                    attributes["gen_ai.response.finish_reasons"] = self._reasons(reason)
            elif completions:
                reasons = tuple(c.finish_reason for c in completions if c.finish_reason)
                if reasons:
                    attributes["gen_ai.response.finish_reasons"] = reasons
            if response.cost is not None:
                attributes["dspex.lm.cost_usd"] = response.cost
            if self.capture_content:
                attributes["gen_ai.output.messages"] = json.dumps(response.texts)
        if span.extra:
            attributes.update(span.extra)
        direct = self._direct if self._direct is not _UNRESOLVED else self._resolve_direct()
        if direct is not None:
            status = self._unset
            if error is not None:
                status = self._trace.Status(self._trace.StatusCode.ERROR, str(error)[:200])
            if direct.write(span, attributes, end, status):
                return
        created = self.tracer.start_span(
            span.name,
            span.context,
            kind=self._client_kind,
            attributes=attributes,
            start_time=span.start,
        )
        for name, event, at in span.events:
            created.add_event(name, event, at)
        if error is not None:
            created.set_status(self._trace.Status(self._trace.StatusCode.ERROR, str(error)[:200]))
        created.end(end)

    def _resolve_direct(self) -> DirectSpans | None:
        """The direct writer of ``chat`` spans for this tracer, once it is known.

        A global tracer asked for before a provider was set is a proxy that
        finds its real tracer later: until then the normal path serves.
        """
        from opentelemetry.trace import ProxyTracer

        from dspex.actors._otel_direct import DirectSpans

        tracer = self.tracer
        if isinstance(tracer, ProxyTracer):
            tracer = tracer._tracer  # the real tracer, or a no-op one until a provider is set
            if isinstance(tracer, self._trace.NoOpTracer):
                return None
        direct = DirectSpans.for_tracer(tracer, self._client_kind)
        self._direct = direct
        return direct

    def _reasons(self, reason: str) -> tuple[str]:
        """``(reason,)``, one shared tuple per reason.

        A shared tuple of strings is soon untracked by the garbage collector,
        and so is then the attribute dict holding it: a span waiting in a
        batch processor's queue gives the collector less to walk.
        """
        found = self._finish_reasons.get(reason)
        if found is None:
            found = (reason,)
            if len(self._finish_reasons) < _MAX_CACHED:
                self._finish_reasons[reason] = found
        return found

    def _start_attributes(
        self, key: tuple[Any, ...], *, keep: bool = True
    ) -> tuple[str, Mapping[str, Any]]:
        """(span name, attributes) of calls with this (model, api_base, *params) key."""
        model, api_base, *values = key
        name, base = self._model_attributes(model, api_base)
        attributes = dict(base)
        for param, value in zip(_REQUEST_PARAMS, values, strict=True):
            if isinstance(value, int | float) and not isinstance(value, bool):
                attributes[f"gen_ai.request.{param}"] = value
        found = (name, attributes)
        if keep:
            if len(self._starts) >= _MAX_CACHED:  # parameters varied per call: start over
                self._starts.clear()
            self._starts[key] = found
        return found

    def _metric_attributes(self, model: str) -> Mapping[str, Any]:
        found = self._metric_attrs.get(model)
        if found is None:
            provider, _, name = model.partition("/")
            found = self._metric_attrs[model] = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": _PROVIDERS.get(provider, provider),
                "gen_ai.request.model": name,
            }
        return found

    def _model_attributes(self, model: str, api_base: str | None) -> tuple[str, Mapping[str, Any]]:
        """(span name, span attributes) of a model's calls, built once (any thread)."""
        found = self._models.get((model, api_base))
        if found is None:
            provider, _, name = model.partition("/")
            host, port = self._host(provider, api_base)
            span_attrs: dict[str, Any] = {**self._metric_attributes(model), "server.address": host}
            if port is not None:
                span_attrs["server.port"] = port
            found = (f"chat {name}", span_attrs)
            self._models[(model, api_base)] = found
        return found

    def _token_attributes(
        self, metric_attrs: Mapping[str, Any]
    ) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
        found = self._tokens.get(id(metric_attrs))
        if found is None:
            found = (
                {**metric_attrs, "gen_ai.token.type": "input"},
                {**metric_attrs, "gen_ai.token.type": "output"},
            )
            self._tokens[id(metric_attrs)] = found
        return found

    def _host(self, provider: str, api_base: str | None) -> tuple[str, int | None]:
        found = self._hosts.get(api_base)
        if found is None:
            if api_base:
                parts = urlsplit(api_base)
                found = (parts.hostname or api_base, parts.port)
            else:
                found = (_DEFAULT_HOSTS.get(provider, provider), None)
            self._hosts[api_base] = found
        return found

    # -- program spans (programs layer, the thread running the call) -----------

    def span(self, name: str, attributes: Mapping[str, Any] | None = None) -> _CurrentSpan:
        """An INTERNAL span, started now and made current for a ``with`` block; an
        error marks it (``error.type``, an exception event, ERROR status) and is re-raised."""
        return _CurrentSpan(self, self.tracer.start_span(name, attributes=attributes))

    def in_span(self) -> bool:
        """Whether a dspex program span is current here (so a module call is nested)."""
        span = self._trace.get_current_span()
        attributes = getattr(span, "attributes", None)
        return bool(attributes and "dspex.module" in attributes)

    # -- telemetry events (the Telemetry actor's thread) -----------------------

    def on_event(self, name: str, data: Mapping[str, Any]) -> None:
        """Record metrics from a telemetry event (the Telemetry actor's thread).

        The GenAI client metrics are recorded here rather than in the caller's
        thread, off the call's path. A cache hit is not an operation on the
        provider: it shows on its span (``dspex.lm.cache_hit``), not here.
        """
        if name == "lm.request.stop":
            if data.get("cache_hit"):
                return
            attrs = self._metric_attributes(str(data.get("model", "?/?")))
            input_attrs, output_attrs = self._token_attributes(attrs)
            self.token_usage.record(int(data.get("prompt_tokens", 0)), input_attrs)
            self.token_usage.record(int(data.get("completion_tokens", 0)), output_attrs)
            self.duration.record(float(data.get("duration_ms", 0.0)) / 1000.0, attrs)
        elif name == "lm.request.exception":
            key = (str(data.get("model", "?/?")), str(data.get("error", "Exception")))
            error = self._error_attrs.get(key)
            if error is None:
                error = {**self._metric_attributes(key[0]), "error.type": key[1]}
                if len(self._error_attrs) < _MAX_CACHED:
                    self._error_attrs[key] = error
            self.duration.record(float(data.get("duration_ms", 0.0)) / 1000.0, error)
        elif name == "program.run.stop":
            self.runs.add(1, _RUN_OK)
        elif name == "program.run.exception":
            self.runs.add(1, _RUN_ERROR)
        elif name == "supervisor.child_restarted":
            self.restarts.add(1, {"dspex.child": str(data.get("child", "?"))})

    # -- observable gauges (the metric reader's thread) ------------------------

    def _clients(self) -> list[tuple[str, Any]]:
        found: list[tuple[str, Any]] = []
        for runtime in active_runtimes():
            found.extend(runtime.clients.endpoints())
        return found

    def _breaker_states(self, options: Any) -> list[Any]:
        out = []
        for model, endpoint in self._clients():
            state = getattr(endpoint, "breaker_state", None)
            if state in _BREAKER_CODES:
                out.append(self._observation(_BREAKER_CODES[state], {"dspex.lm.model": model}))
        return out

    def _queue_depths(self, options: Any) -> list[Any]:
        out = []
        for runtime in active_runtimes():
            servers = runtime.servers
            for name in servers.names():
                try:
                    queued = servers.stats(name).queued
                except Exception:  # stopped between names() and stats()
                    continue
                out.append(self._observation(queued, {"dspex.server": name}))
        return out

    def _in_flight(self, options: Any) -> list[Any]:
        return [
            self._observation(endpoint.in_flight, {"dspex.lm.model": model})
            for model, endpoint in self._clients()
        ]


class _CurrentSpan:
    """``with``: a started span made current in this thread's context, ended on exit.

    A class rather than ``start_as_current_span``: that stacks generator-based
    context managers for every module, predictor and tool call.
    """

    __slots__ = ("_span", "_token", "_tracing")

    def __init__(self, tracing: Tracing, span: Any) -> None:
        self._tracing = tracing
        self._span = span
        self._token: Any = None

    def __enter__(self) -> Any:
        self._token = self._tracing._attach(self._tracing._set_span(self._span))
        return self._span

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: Any
    ) -> None:
        span = self._span
        try:
            if kind is not None:
                span.set_attribute("error.type", kind.__name__)
                # As the SDK's use_span: an Exception is an error, GeneratorExit is not.
                if isinstance(error, Exception):
                    trace = self._tracing._trace
                    span.record_exception(error)
                    span.set_status(
                        trace.Status(trace.StatusCode.ERROR, f"{kind.__name__}: {error}")
                    )
        finally:
            self._tracing._detach(self._token)
            span.end()


class LMSpan:
    """An LM call's CLIENT span while the call runs: what the SDK's span will hold.

    :meth:`Tracing.end_lm` hands it to the SDK when the call ends, with its
    recorded start time, the parent context current at the start, and every
    attribute and event at once (an ended span for the SDK's own tracer;
    otherwise one SDK span created and ended, so span processors see it
    start when it ends). The client's loop adds
    retry events to it (:meth:`add_event`, from the loop's thread while the
    caller waits), the handle single-flight and retry attributes.
    """

    __slots__ = ("attributes", "context", "events", "extra", "name", "start")

    def __init__(self, name: str, attributes: Mapping[str, Any], context: Any, start: int) -> None:
        self.name = name
        self.attributes = attributes  # shared and prebuilt: never changed here
        self.context = context
        self.start = start
        self.events: list[tuple[str, Mapping[str, Any] | None, int]] = []
        self.extra: dict[str, Any] | None = None

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        """Record an event now (any thread; the SDK span gets it with this time)."""
        self.events.append((name, attributes, time.time_ns()))

    def set_attribute(self, key: str, value: Any) -> None:
        """Set one more attribute of the span."""
        if self.extra is None:
            self.extra = {}
        self.extra[key] = value
