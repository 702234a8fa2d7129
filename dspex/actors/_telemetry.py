"""The Telemetry actor: structlog events, metrics and the LM history ring.

Components send it events through a :class:`~dspex.actors._telemetry_emitter.TelemetryEmitter`
(see that module for the queue it polls and how it is nudged). Queries drain
the queues first: an ask made after ``emit`` returned sees the event. A plain
``tell`` of a :class:`~dspex.actors._telemetry_emitter.TelemetryEvent` works
too. The actor aggregates per-model and per-run counters, bounded latency
windows for p50/p95, and a bounded ring of recent LM calls for
``inspect_history`` (unlike DSPy's unbounded global history).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

from dspex.actors import _otel
from dspex.actors._lm._prices import LaterCost, PricedLater
from dspex.actors._telemetry_emitter import (
    LINGER,
    LMCall,
    RunNote,
    TelemetryEmitter,
    TelemetryEvent,
    _Drain,
    _PollDue,
    _PollingInbox,
    history_params,
    new_uuid,
)
from dspex.config._logging import LOGGING_STREAM
from dspex.supervision import Actor, Event

__all__ = [
    "HistoryEntry",
    "Telemetry",
    "percentile",
    "redact",
    "render_history",
]

logger = logging.getLogger("dspex.telemetry")

# Unpriced costs a model may hold (each keeps its answer alive) before the actor
# prices them itself. A process that makes fewer calls and never reads a cost
# never loads the price table; a server or a long run loads it once, here.
SETTLE_AT = 256

_SECRET_MARKERS = ("api_key", "apikey", "authorization", "token", "secret", "password")


def redact(data: Mapping[str, Any]) -> dict[str, Any]:
    """Copy ``data`` with secret-looking keys masked (one level deep, nested dicts too)."""
    clean: dict[str, Any] = {}
    for key, value in data.items():
        lowered = key.lower()
        if any(marker in lowered for marker in _SECRET_MARKERS) and value:
            clean[key] = "***"
        elif isinstance(value, Mapping):
            clean[key] = redact(value)
        else:
            clean[key] = value
    return clean


def percentile(samples: collections.deque[float] | list[float], q: float) -> float | None:
    """Nearest-rank percentile of ``samples`` (q in 0..100); None when empty."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One LM call kept for ``inspect_history`` and ``lm.history``.

    ``kwargs`` are the call's request parameters (no ``api_*`` entry), ``response``
    the LM's response object, ``uuid`` names the entry, as in DSPy's history.
    """

    model: str
    messages: tuple[Mapping[str, Any], ...]
    outputs: tuple[str, ...]
    usage: Mapping[str, int]
    duration_ms: float
    cache_hit: bool
    time: float
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    response: Any = None
    uuid: str = ""

    @property
    def timestamp(self) -> str:
        """When the call ended, as DSPy writes it (local ISO time)."""
        return datetime.datetime.fromtimestamp(self.time).isoformat()

    @property
    def response_model(self) -> str:
        """The model the response names (the requested one when it names none)."""
        named = getattr(self.response, "model", None)
        return named if isinstance(named, str) and named else self.model

    cost: float | None = None


class _ModelStats:
    # A plain class, as the other records of the first call's path: a dataclass
    # costs ~0.5 ms to define on a slow machine.
    __slots__ = (
        "cache_hits",
        "completion_tokens",
        "cost_usd",
        "errors",
        "fallbacks",
        "latencies",
        "pending",
        "prompt_tokens",
        "requests",
        "retries",
        "unpriced",
    )

    def __init__(self, latencies: collections.deque[float]) -> None:
        self.requests = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.cache_hits = 0
        self.retries = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost_usd = 0.0
        self.unpriced = 0  # answered calls whose cost is unknown
        self.fallbacks = 0  # calls this model passed on to a fallback
        self.latencies = latencies
        # Costs not priced yet: a model's first price loads genai-prices (tens of ms
        # of GIL time), so it waits until a query reads the cost, off the first call.
        self.pending: list[LaterCost] = []

    def add_cost(self, cost: Any, model: str = "?") -> None:
        if isinstance(cost, LaterCost):
            self.pending.append(cost)
            if len(self.pending) >= SETTLE_AT:
                # Nobody has read the costs (a server between scrapes, a long
                # evaluation): price them here, once the price table is worth
                # loading, rather than keep every answer alive. The model is then
                # known, and its later answers come priced.
                self.settle(model)
        elif cost is None:
            self.unpriced += 1
        else:
            self.cost_usd += float(cost)

    def settle(self, model: str) -> None:
        """Price the pending costs (actor thread, when a query reads them)."""
        pending, self.pending = self.pending, []
        for later in pending:
            self.add_cost(_priced(later, model))


class _RunStats:
    __slots__ = ("errors", "failed", "latencies", "started", "succeeded")

    def __init__(self, latencies: collections.deque[float]) -> None:
        self.started = 0
        self.succeeded = 0
        self.failed = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.latencies = latencies


class Telemetry(Actor):
    """Aggregates events into metrics and logs them through structlog (actor thread)."""

    def __init__(
        self,
        *,
        format: Literal["json", "console", "off"] = "off",
        level: str = "info",
        history_size: int = 200,
        latency_window: int = 1000,
        stream: TextIO | None = None,
    ) -> None:
        super().__init__()
        self._format = format
        self._level = level
        self._stream = stream
        self._window = latency_window
        # LMCall records are kept as queued and turned into entries when asked for.
        self._history: collections.deque[HistoryEntry | LMCall] = collections.deque(
            maxlen=history_size
        )
        self._models: dict[str, _ModelStats] = {}
        self._runs = _RunStats(latencies=collections.deque(maxlen=latency_window))
        self._restarts: collections.Counter[str] = collections.Counter()
        self._supervisor_events: collections.Counter[str] = collections.Counter()
        self._events = 0
        self._logger: Any = None
        self._subscribers: list[Callable[[TelemetryEvent], None]] = []
        self._sources: set[TelemetryEmitter] = set()  # queues polled every LINGER
        self._inbox: _PollingInbox = self.actor_inbox  # type: ignore[assignment]

    @staticmethod
    def _create_actor_inbox() -> Any:
        return _PollingInbox()

    def on_start(self) -> None:
        import logging

        # Events are logged at info: below that level skip the logger (and the
        # redacted copy of the data it would need) entirely.
        threshold = logging.getLevelNamesMapping().get(self._level.upper(), logging.INFO)
        if self._format != "off" and threshold <= logging.INFO:
            self._logger = _make_logger(self._format, self._level, self._stream or LOGGING_STREAM)

    # -- intake -----------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _PollDue):
            self._poll()
            return None
        if isinstance(message, _Drain):
            self._sources.add(message.source)
            self._drain(message.source)
            if self._inbox.deadline is None:
                self._inbox.deadline = time.monotonic() + LINGER
            return None
        if isinstance(message, TelemetryEvent):
            self._handle(message)
            return None
        if isinstance(message, LMCall):
            self._on_lm_call(message)
            return None
        if isinstance(message, Event):  # supervision events from an EventBus sink
            self._handle(TelemetryEvent(message.name, message.data, message.time))
            return None
        return super().on_receive(message)

    def _poll(self) -> None:
        for source in list(self._sources):
            if not self._drain(source):
                self._release(source)
        if self._sources:
            self._inbox.deadline = time.monotonic() + LINGER

    def _release(self, source: TelemetryEmitter) -> None:
        # Stop polling: the next event must nudge. Release first, then look
        # once more, so an event queued in between is not left behind.
        self._sources.discard(source)
        source._watcher = None
        self._drain(source)

    def _drain_all(self) -> None:
        for source in list(self._sources):
            self._drain(source)

    def _drain(self, source: TelemetryEmitter) -> int:
        """Handle every event queued in ``source``; how many there were."""
        pending = source._pending
        handled = 0
        while pending:
            try:
                event = pending.popleft()
            except IndexError:  # another incarnation drained it meanwhile
                break
            if isinstance(event, LMCall):
                self._on_lm_call(event)
            elif isinstance(event, RunNote):
                self._on_run_note(event)
            elif isinstance(event, Event):
                self._handle(TelemetryEvent(event.name, event.data, event.time))
            else:
                self._handle(event)
            handled += 1
        return handled

    def on_stop(self) -> None:
        """Handle what the emitters queued, and make their next event nudge (actor thread)."""
        for source in list(self._sources):
            self._release(source)

    def on_failure(self, *exc_info: Any) -> None:
        """Crashed (actor thread): queued events wait for the next incarnation's nudge."""
        for source in self._sources:
            source._watcher = None

    def _handle(self, event: TelemetryEvent) -> None:
        self._events += 1
        name, data = event.name, event.data
        later = data.get("cost")
        if isinstance(later, LaterCost) and self._sees_events():
            # A model's first answer, priced here for those who see the event;
            # otherwise it stays pending until a query reads the cost.
            data = {**data, "cost": _priced(later, data.get("model"))}
            event = TelemetryEvent(name, data, event.time)
        if name.startswith("lm.request."):
            self._on_lm(name, data)
        elif name.startswith("program.run."):
            self._on_run(name, data)
        elif name == "lm.fallback":
            self._model(str(data.get("model", "?"))).fallbacks += 1
        elif name.startswith("supervisor."):
            self._supervisor_events[name] += 1
            if name == "supervisor.child_restarted":
                # Supervisors name the restarted child's spec id as ``child``.
                self._restarts[str(data.get("child", "?"))] += 1
        otel = _otel._tracing
        if otel is not None:
            with contextlib.suppress(Exception):
                otel.on_event(name, data)
        for subscriber in self._subscribers:
            with contextlib.suppress(Exception):
                subscriber(event)
        if self._logger is not None:
            self._logger.info(name, **redact(_loggable(data)))

    def _sees_events(self) -> bool:
        return bool(self._subscribers) or self._logger is not None or _otel._tracing is not None

    def _model(self, model: str) -> _ModelStats:
        stats = self._models.get(model)
        if stats is None:
            stats = self._models[model] = _ModelStats(
                latencies=collections.deque(maxlen=self._window)
            )
        return stats

    def _on_lm(self, name: str, data: Mapping[str, Any]) -> None:
        stats = self._model(str(data.get("model", "?")))
        if name == "lm.request.stop":
            stats.requests += 1
            stats.cache_hits += bool(data.get("cache_hit"))
            stats.retries += int(data.get("retries", 0))
            stats.prompt_tokens += int(data.get("prompt_tokens", 0))
            stats.completion_tokens += int(data.get("completion_tokens", 0))
            stats.add_cost(data.get("cost"), str(data.get("model", "?")))
            if "duration_ms" in data:
                stats.latencies.append(float(data["duration_ms"]))
            if "messages" in data:
                prompt = int(data.get("prompt_tokens", 0))
                completion = int(data.get("completion_tokens", 0))
                self._history.append(
                    HistoryEntry(
                        model=str(data.get("model", "?")),
                        messages=tuple(data["messages"]),
                        outputs=tuple(data.get("outputs", ())),
                        usage=_usage(prompt, completion),
                        duration_ms=float(data.get("duration_ms", 0.0)),
                        cache_hit=bool(data.get("cache_hit")),
                        time=time.time(),
                        cost=data.get("cost"),
                        kwargs=history_params(data.get("kwargs") or {}),
                        response=data.get("response"),
                        uuid=new_uuid(),
                    )
                )
        elif name == "lm.request.exception":
            stats.requests += 1
            stats.errors[str(data.get("error", "Exception"))] += 1
            stats.retries += int(data.get("retries", 0))

    def _on_lm_call(self, call: LMCall) -> None:
        """Count a reported LM call as its start and stop/exception events would be."""
        if self._subscribers or self._logger is not None:
            for event in call.events():
                self._handle(event)
            return
        # No one sees the events themselves: update the counters directly.
        self._events += 2
        stats = self._model(call.model)
        stats.requests += 1
        if call.failure is not None:
            stats.errors[call.failure[0]] += 1
            return
        prompt, completion = call.usage
        stats.cache_hits += call.cache_hit
        stats.prompt_tokens += prompt
        stats.completion_tokens += completion
        response = call.response
        if isinstance(response, PricedLater) and not response.priced:
            stats.add_cost(LaterCost(response), call.model)  # priced when read (or SETTLE_AT)
        else:
            stats.add_cost(call.cost)
        stats.latencies.append(call.duration_ms)
        if call.keep:
            self._history.append(call)

    def _on_run_note(self, note: RunNote) -> None:
        """Count a run's event as :meth:`_handle` would (building it only if it is seen)."""
        if self._subscribers or self._logger is not None or _otel._tracing is not None:
            self._handle(note.event())
            return
        self._events += 1
        runs = self._runs
        if note.name == "program.run.start":
            runs.started += 1
        elif note.name == "program.run.stop":
            runs.succeeded += 1
            if note.duration_ms is not None:
                runs.latencies.append(note.duration_ms)
        elif note.name == "program.run.exception":
            runs.failed += 1
            runs.errors[note.error or "Exception"] += 1

    def _on_run(self, name: str, data: Mapping[str, Any]) -> None:
        runs = self._runs
        if name == "program.run.start":
            runs.started += 1
        elif name == "program.run.stop":
            runs.succeeded += 1
            if "duration_ms" in data:
                runs.latencies.append(float(data["duration_ms"]))
        elif name == "program.run.exception":
            runs.failed += 1
            runs.errors[str(data.get("error", "Exception"))] += 1

    # -- queries (asked via proxy; actor thread) ----------------------------------

    def metrics(self) -> dict[str, Any]:
        """A JSON-ready snapshot of every counter."""
        self._drain_all()
        models: dict[str, Any] = {}
        for model, s in sorted(self._models.items()):
            s.settle(model)
            ok = s.requests - sum(s.errors.values())
            models[model] = {
                "requests": s.requests,
                "errors": dict(s.errors),
                "retries": s.retries,
                "cache_hits": s.cache_hits,
                "cache_hit_rate": round(s.cache_hits / ok, 4) if ok > 0 else 0.0,
                "p50_ms": _round(percentile(s.latencies, 50)),
                "p95_ms": _round(percentile(s.latencies, 95)),
                "prompt_tokens": s.prompt_tokens,
                "completion_tokens": s.completion_tokens,
                "total_tokens": s.prompt_tokens + s.completion_tokens,
                # Unknown, never zero, while any answered call could not be priced.
                "cost_usd": None if s.unpriced else round(s.cost_usd, 8),
                "unpriced_calls": s.unpriced,
                "fallbacks": s.fallbacks,
            }
        runs = self._runs
        return {
            "models": models,
            "runs": {
                "started": runs.started,
                "succeeded": runs.succeeded,
                "failed": runs.failed,
                "errors": dict(runs.errors),
                "p50_ms": _round(percentile(runs.latencies, 50)),
                "p95_ms": _round(percentile(runs.latencies, 95)),
            },
            "supervision": {
                "restarts": sum(self._restarts.values()),
                "restarts_by_child": dict(self._restarts),
                "events": dict(self._supervisor_events),
            },
            "events": self._events,
        }

    def drain(self) -> int:
        """Handle every queued event (none is priced yet); the count of events handled."""
        self._drain_all()
        return self._events

    def history(self, n: int = 1) -> list[HistoryEntry]:
        """The last ``n`` LM calls, oldest first."""
        self._drain_all()
        if n <= 0:
            return []
        return [_entry(item) for item in list(self._history)[-n:]]

    def subscribe(self, callback: Callable[[TelemetryEvent], None]) -> None:
        """Call ``callback`` (in this actor's thread) for every event; for tests and exporters."""
        self._subscribers.append(callback)


def _entry(item: HistoryEntry | LMCall) -> HistoryEntry:
    if isinstance(item, HistoryEntry):
        later: Any = item.cost
        if isinstance(later, LaterCost):  # left pending by _handle: priced when read
            return dataclasses.replace(item, cost=_priced(later, item.model))
        return item
    prompt, completion = item.usage
    return HistoryEntry(
        model=item.model,
        messages=item.messages,
        outputs=item.outputs,
        usage=_usage(prompt, completion),
        duration_ms=item.duration_ms,
        cache_hit=item.cache_hit,
        time=item.time,
        cost=item.cost,
        kwargs=item.params,
        response=item.response,
        uuid=item.uuid,
    )


def _priced(later: LaterCost, model: Any) -> float | None:
    try:
        return later()
    except Exception:  # a broken price table must not stop telemetry: unknown
        logger.warning("could not price %s's answer", model, exc_info=True)
        return None


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


_HISTORY_ONLY = frozenset({"messages", "outputs", "kwargs", "response"})


def _loggable(data: Mapping[str, Any]) -> dict[str, Any]:
    # Prompts, outputs and parameters are kept for history but do not go to a log line.
    return {k: v for k, v in data.items() if k not in _HISTORY_ONLY}


def _make_logger(fmt: str, level: str, stream: Any) -> Any:
    import logging

    import structlog

    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    return structlog.wrap_logger(
        structlog.PrintLogger(stream),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
    )


def render_history(entries: list[HistoryEntry], *, colors: bool = False) -> str:
    """Text for ``inspect_history`` in DSPy's layout (ANSI colours if ``colors``)."""
    paint = _paint if colors else _plain_text
    out: list[str] = []
    for entry in entries:
        out.append("\n\n\n\n")
        out.append(paint(_BLUE, f"[{entry.timestamp}]") + "\n\n")
        for message in entry.messages:
            out.append(paint(_RED, f"{str(message.get('role', '?')).capitalize()} message:"))
            text = _content_text(message.get("content"), paint)
            out.append("\n\n" + ("" if text is None else text + "\n") + "\n\n")
        if entry.outputs:
            out.append(paint(_RED, "Response:") + "\n\n")
            out.append(paint(_GREEN, entry.outputs[0].strip()) + "\n\n")
        if len(entry.outputs) > 1:
            out.append(paint(_RED, f" \t (and {len(entry.outputs) - 1} other completions)") + "\n")
    out.append("\n\n\n\n")
    return "".join(out)


_RED, _GREEN, _BLUE = "31", "32", "34"


def _paint(colour: str, text: str) -> str:
    return f"\x1b[{colour}m{text}\x1b[0m"


def _plain_text(colour: str, text: str) -> str:
    return text


def _content_text(content: Any, paint: Callable[[str, str], str]) -> str | None:
    """A message's content as DSPy prints it: text stripped, media as short placeholders."""
    if isinstance(content, str):
        return content.strip()
    if not isinstance(content, list):
        return str(content).strip()
    lines = []
    for part in content:
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text":
            lines.append(str(part.get("text", "")).strip())
        elif kind == "image_url":
            url = str((part.get("image_url") or {}).get("url", ""))
            if "base64," in url:
                head, data = url.split("base64,", 1)
                shown = f"<{head}base64,<IMAGE BASE 64 ENCODED({len(data)})>"
            else:
                shown = f"<image_url: {url}>"
            lines.append(paint(_BLUE, shown) + "\n")  # DSPy leaves a blank line after media
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            shown = f"<audio format='{audio.get('format')}' base64-encoded, "
            length = len(str(audio.get("data", "")))
            lines.append(paint(_BLUE, shown + f"length={length}>") + "\n")
    return "\n".join(lines) if lines else None  # DSPy prints no line for such content
