"""The sending side of telemetry: :class:`TelemetryEmitter` and its queue protocol.

An emitter queues events and nudges the Telemetry actor (a ``tell``) only
when the actor is not already watching its queue; after a nudge the actor
polls the queue every :data:`LINGER` seconds until a poll finds it empty. So
emitting never blocks, and while events flow the actor thread wakes once per
``LINGER``, not once per event. The actor's inbox (:class:`_PollingInbox`)
is what hands it those polls. The actor itself lives in
:mod:`dspex.actors._telemetry`.

LM calls reach the history ring as ``lm.request.stop`` events carrying their
messages. ``LMHandle`` (behind ``dspex.LM``) emits them itself; any other LM
(a ``DummyLM``, a user's object) is reported by the programs layer through
:meth:`TelemetryEmitter.report_lm_call`. Two caller-thread hooks apply to
both: the history gate (DSPy's ``disable_history``: the call is counted but
its messages are not kept) and :func:`begin_lm_report`, which tells a
reporter whether an LM wrapped inside its call already reported, so a
wrapper around ``dspex.LM`` is not recorded twice.
"""

from __future__ import annotations

import collections
import queue
import random
import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar, Token
from typing import Any

import pykka

from dspex._record import Record
from dspex.supervision import Event

__all__ = [
    "LINGER",
    "LMCall",
    "RunNote",
    "TelemetryEmitter",
    "TelemetryEvent",
    "begin_lm_report",
    "end_lm_report",
    "history_disabled",
    "history_params",
    "new_uuid",
    "set_history_gate",
]

LINGER = 0.01
"""Seconds between the actor's polls of an emitter's queue while events flow."""


class TelemetryEvent:
    """One event for the Telemetry actor (read-only by convention)."""

    # A slotted class, not a frozen dataclass: one is made per event, and a
    # dataclass costs ~0.5 ms to define on a cold start.
    __slots__ = ("data", "name", "time")

    def __init__(
        self, name: str, data: Mapping[str, Any] | None = None, time: float | None = None
    ) -> None:
        self.name = name
        self.data: Mapping[str, Any] = {} if data is None else data
        self.time = _now() if time is None else time

    def __eq__(self, other: object) -> bool:
        if type(other) is not TelemetryEvent:
            return NotImplemented
        return (self.name, self.data, self.time) == (other.name, other.data, other.time)

    __hash__ = None  # type: ignore[assignment]  # the data is a mapping

    def __repr__(self) -> str:
        return f"TelemetryEvent(name={self.name!r}, data={self.data!r}, time={self.time!r})"


_now = time.time


HistoryGate = Callable[[], bool]
_history_off: HistoryGate | None = None

# Set by a reporter around a call it will report; a list so that an inner
# LM's report (same thread, same context) can mark it by appending.
_reporting: ContextVar[list[bool] | None] = ContextVar("dspex_lm_reporting", default=None)

_STOP = "lm.request.stop"
_EXCEPTION = "lm.request.exception"
_LM_OUTCOMES = frozenset({_STOP, _EXCEPTION})
_HISTORY_KEYS = ("messages", "outputs", "kwargs", "response")


def set_history_gate(gate: HistoryGate | None) -> None:
    """Install the check of whether LM history is disabled where a call is made.

    The programs layer installs one reading the ``disable_history`` setting;
    it runs in the calling thread once per LM call, so it must be quick.
    """
    global _history_off
    _history_off = gate


def history_disabled() -> bool:
    """Whether ``disable_history`` is in effect in the calling thread (False with no gate)."""
    gate = _history_off
    return bool(gate()) if gate is not None else False


def begin_lm_report() -> tuple[list[bool], Token[list[bool] | None]]:
    """Mark the start of an LM call this thread will report (see :func:`end_lm_report`)."""
    marks: list[bool] = []
    return marks, _reporting.set(marks)


def end_lm_report(scope: tuple[list[bool], Token[list[bool] | None]]) -> bool:
    """End the scope; True if no LM inside it reported the call itself."""
    marks, token = scope
    _reporting.reset(token)
    return not marks


def _lm_outcome(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """An LM call's stop/exception data as it should be queued here (caller's thread)."""
    marks = _reporting.get()
    if marks is not None:
        marks.append(True)  # an outer reporter must not report this call again
    gate = _history_off
    if gate is not None and "messages" in data and gate():
        return {k: v for k, v in data.items() if k not in _HISTORY_KEYS}
    return data


def history_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A call's parameters as history keeps them: never an ``api_*`` entry (as DSPy)."""
    return {k: v for k, v in params.items() if not str(k).startswith("api_")}


def new_uuid() -> str:
    """A random (version 4) UUID string for a history entry.

    From ``random``, not ``os.urandom``: it names an entry, it guards nothing,
    and the system call behind ``uuid4()`` cost more than a cache hit's lookup.
    """
    bits = random.getrandbits(128) & _UUID_FREE | _UUID_V4
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_UUID_FREE = ~((0xF000 << 64) | (0xC000 << 48))  # all but the version and variant bits
_UUID_V4 = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant


class LMCall(Record):
    """A finished call of an LM that does not report itself, as queued by the caller.

    Cheap to queue; the Telemetry actor reads it directly, and expands it with
    :meth:`events` only for subscribers and the log. ``failure`` is the error's
    (class name, HTTP status) when the call raised; ``keep`` says whether its
    messages go to the history ring; ``time`` is when it ended (``time.time()``).
    """

    model: str
    messages: tuple[Mapping[str, Any], ...]
    duration_ms: float
    response: Any
    failure: tuple[str, Any] | None
    keep: bool
    time: float
    params: Mapping[str, Any] = {}  # the call's request parameters (DSPy's history kwargs)
    uuid: str = ""

    @property
    def usage(self) -> tuple[int, int]:
        """(prompt tokens, completion tokens), zeros when the response has none."""
        usage = getattr(self.response, "usage", None)
        return (
            int(getattr(usage, "prompt_tokens", 0) or 0),
            int(getattr(usage, "completion_tokens", 0) or 0),
        )

    @property
    def outputs(self) -> tuple[str, ...]:
        """The completion texts (none if the response is not an ``LMResponse``)."""
        try:
            return tuple(c.text for c in self.response.completions)
        except (AttributeError, TypeError):  # the adapter reports a bad response
            return ()

    @property
    def cache_hit(self) -> bool:
        return bool(getattr(self.response, "cache_hit", False))

    @property
    def cost(self) -> float | None:
        """The response's cost in USD (None: unknown, e.g. a DummyLM's)."""
        cost = getattr(self.response, "cost", None)
        return float(cost) if isinstance(cost, int | float) else None

    def events(self) -> tuple[TelemetryEvent, TelemetryEvent]:
        """The start and stop (or exception) events ``LMHandle`` would have sent."""
        start = TelemetryEvent(
            "lm.request.start", {"model": self.model}, self.time - self.duration_ms / 1000.0
        )
        data: dict[str, Any]
        if self.failure is not None:
            data = {
                "model": self.model,
                "duration_ms": self.duration_ms,
                "error": self.failure[0],
                "status": self.failure[1],
                "retries": 0,
            }
            return start, TelemetryEvent(_EXCEPTION, data, self.time)
        prompt, completion = self.usage
        data = {
            "model": self.model,
            "duration_ms": self.duration_ms,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "cache_hit": self.cache_hit,
            "cost": self.cost,
            "retries": 0,
            "shared": False,
        }
        if self.keep:
            data["messages"] = self.messages
            data["outputs"] = list(self.outputs)
            data["kwargs"] = self.params
            data["response"] = self.response
        return start, TelemetryEvent(_STOP, data, self.time)


class RunNote(Record):
    """A program run's start, stop or exception, as queued by the caller.

    Cheaper to build than a :class:`TelemetryEvent` (every top-level call makes
    two); the Telemetry actor counts it directly and builds the event with
    :meth:`event` only for a subscriber, the log or OpenTelemetry.
    ``error`` is the exception's class name (``program.run.exception``).
    """

    name: str
    run_id: int
    label: str
    duration_ms: float | None
    error: str | None
    time: float

    def event(self) -> TelemetryEvent:
        """The event :meth:`TelemetryEmitter.emit` would have queued."""
        data: dict[str, Any] = {"run_id": self.run_id, "label": self.label}
        if self.duration_ms is not None:
            data["duration_ms"] = self.duration_ms
        if self.error is not None:
            data["error"] = self.error
        return TelemetryEvent(self.name, data, self.time)


# Records (NamedTuples), not frozen dataclasses: cheaper to define on a cold start.
class _Drain(Record):
    """Nudge from an emitter: handle the events queued in ``source``, then keep polling it."""

    source: TelemetryEmitter


class _PollDue:
    """Handed to the actor by its inbox when it is time to poll the emitters' queues."""


class _Envelope(Record):
    """Looks like pykka's envelope to its actor loop: a message, no reply."""

    message: object
    reply_to: None = None


_POLL = _Envelope(_PollDue())


class _PollingInbox:
    """The Telemetry actor's inbox: a SimpleQueue whose ``get`` returns :data:`_POLL`
    once ``deadline`` (``time.monotonic()``; None: never) has passed.

    Only the actor thread touches ``deadline``; one poll is handed out per
    deadline, so pykka's final "drain the inbox" loop always ends.
    """

    __slots__ = ("_queue", "deadline")

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.deadline: float | None = None

    def put(self, envelope: Any, /) -> None:
        self._queue.put(envelope)

    def get(self) -> Any:
        deadline = self.deadline
        if deadline is None:
            return self._queue.get()
        remaining = deadline - time.monotonic()
        if remaining > 0:
            try:
                return self._queue.get(timeout=remaining)
            except queue.Empty:
                pass
        self.deadline = None
        return _POLL

    def empty(self) -> bool:
        return self._queue.empty()


class TelemetryEmitter:
    """What other components hold: ``emit(name, **data)``, never blocking.

    ``target`` returns the current Telemetry incarnation (None while it
    restarts). Events wait in this emitter's queue until the actor drains it
    (see the module docstring). Events emitted while no Telemetry runs, or
    queued for one found dead, are counted in ``dropped``.
    """

    def __init__(self, target: Callable[[], pykka.ActorRef[Any] | None]) -> None:
        self._target = target
        self._ref: pykka.ActorRef[Any] | None = None  # last incarnation resolved
        self._pending: collections.deque[TelemetryEvent | Event | LMCall | RunNote] = (
            collections.deque()
        )
        # The incarnation that will look at the queue without a nudge: one
        # polling it, or one a nudge was sent to. The actor resets it.
        self._watcher: pykka.ActorRef[Any] | None = None
        self._drain_message = _Drain(self)
        self.dropped = 0

    def emit(self, name: str, **data: Any) -> None:
        """Queue an event; the actor handles it within ``LINGER`` seconds."""
        self._push(TelemetryEvent(name, data), nudge=True)

    def emit_later(self, name: str, **data: Any) -> None:
        """Queue an event without waking the actor.

        It is handled with the next event or :meth:`flush`; use it only where
        one is sure to follow soon (e.g. a run's start, whose stop follows).
        """
        self._push(TelemetryEvent(name, data), nudge=False)

    def run_event(
        self,
        name: str,
        run_id: int,
        label: str,
        duration_ms: float | None = None,
        error: str | None = None,
        *,
        nudge: bool = True,
    ) -> None:
        """Queue a ``program.run.*`` event as a :class:`RunNote` (caller's thread)."""
        self._push(RunNote(name, run_id, label, duration_ms, error, time.time()), nudge=nudge)

    def flush(self) -> None:
        """Make sure queued events will be handled (a query made afterwards sees them)."""
        if self._pending:
            ref = self._resolve()
            if ref is None:
                self._drop_pending()
            else:
                self._nudge(ref)

    def __call__(self, name: str, data: Mapping[str, Any]) -> None:
        if name in _LM_OUTCOMES:
            data = _lm_outcome(data)
        self._push(TelemetryEvent(name, data), nudge=True)

    def report_lm_call(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        duration_ms: float,
        response: Any = None,
        error: BaseException | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        keep: bool = True,
    ) -> None:
        """Report a finished call of an LM that does not report itself (caller's thread).

        Queues one :class:`LMCall`, which the actor expands into the events
        ``LMHandle`` sends. Only messages and completions are kept, never
        request parameters whose names start with ``api_`` (where keys live);
        ``keep=False`` keeps neither (an embeddings call, which is no history
        entry). ``LMHandle`` reports its cache hits this way too.
        """
        marks = _reporting.get()
        if marks is not None:
            marks.append(True)
        gate = _history_off
        keep = keep and error is None and not (gate is not None and gate())
        failure = None if error is None else (type(error).__name__, getattr(error, "status", None))
        kept = history_params(params) if keep and params else {}
        call = LMCall(
            model,
            tuple(messages),
            duration_ms,
            response,
            failure,
            keep,
            time.time(),
            kept,
            new_uuid(),
        )
        self._push(call, nudge=True)

    def sink(self, event: Event) -> None:
        """An EventBus sink: forwards supervision events."""
        self._push(event, nudge=True)

    def _resolve(self) -> pykka.ActorRef[Any] | None:
        ref = self._ref
        if ref is None or not ref.is_alive():
            ref = self._ref = self._target()
            if ref is not None and not ref.is_alive():
                return None
        return ref

    def _push(self, event: TelemetryEvent | Event | LMCall | RunNote, *, nudge: bool) -> None:
        ref = self._resolve()
        if ref is None:
            self.dropped += 1
            return
        self._pending.append(event)
        if nudge:
            self._nudge(ref)

    def _nudge(self, ref: pykka.ActorRef[Any]) -> None:
        if self._watcher is ref:
            return  # it polls this queue, or a nudge is on its way
        self._watcher = ref
        try:
            ref.tell(self._drain_message)
        except pykka.ActorDeadError:
            self._watcher = None
            self._drop_pending()

    def _drop_pending(self) -> None:
        while self._pending:
            try:
                self._pending.popleft()
            except IndexError:
                return
            self.dropped += 1
