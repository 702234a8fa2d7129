"""Fake LM provider servers: the dialect-neutral part (scripting, faults, records).

A :class:`FakeProvider` is a real HTTP server on 127.0.0.1 (see
``_fake_http``) that answers one provider's wire format. Tests script it with
a fixed reply or a function of the request, inject latency and faults, and
read back what it received. The three dialects live in ``_fake_providers``.

Every request flows through :meth:`FakeProvider._handle` on the server's loop
thread: count and record it, sleep the latency, apply a fault if one is due,
check route, auth and payload the way the real API would, then render the
reply. Settings may be changed from any thread while the server runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import random
import threading
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Self

from dspex.errors import UsageError
from dspex.testing._fake_http import (
    ConnectionAction,
    HTTPRequest,
    HTTPResponse,
    HTTPServerThread,
)

__all__ = ["FakeProvider", "Fault", "FaultKind", "RecordedRequest", "Reply"]

REDACTED = "<redacted>"


class FaultKind(enum.StrEnum):
    """What kind of failure a :class:`Fault` injects."""

    ERROR = "error"  # an HTTP error status with the dialect's error body
    RATE_LIMIT = "rate_limit"  # HTTP 429 with Retry-After
    AUTH = "auth"  # HTTP 401 as if the key were wrong
    TIMEOUT = "timeout"  # no answer until the client gives up
    DROP = "drop"  # the connection closes without a response
    MALFORMED = "malformed"  # HTTP 200 whose body is not valid JSON


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected failure; build it with the class methods, e.g. ``Fault.rate_limit(2)``."""

    kind: FaultKind
    status: int = 500
    retry_after: float | str | None = None
    message: str | None = None

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 599:
            raise UsageError(f"Fault status={self.status!r} is not an HTTP status; use 100-599")

    @classmethod
    def error(cls, status: int = 500, message: str | None = None) -> Fault:
        """Answer ``status`` (500 by default) with the dialect's error body."""
        return cls(FaultKind.ERROR, status, None, message)

    @classmethod
    def rate_limit(cls, retry_after: float | str | None = 1) -> Fault:
        """Answer 429; ``retry_after`` is seconds or an HTTP-date (None: no header)."""
        return cls(FaultKind.RATE_LIMIT, 429, retry_after)

    @classmethod
    def unauthorized(cls, status: int = 401) -> Fault:
        """Answer 401 (or 403) as if the API key were rejected."""
        return cls(FaultKind.AUTH, status)

    @classmethod
    def timeout(cls) -> Fault:
        """Never answer: hold the connection until the client closes it."""
        return cls(FaultKind.TIMEOUT)

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection without sending a response."""
        return cls(FaultKind.DROP)

    @classmethod
    def malformed(cls) -> Fault:
        """Answer 200 with a body that is not valid JSON."""
        return cls(FaultKind.MALFORMED, 200)


Schedule = Sequence[Fault | None] | Callable[[int], Fault | None]
"""Faults by request index (0-based, in arrival order): a list, or a function."""

ReplyFn = Callable[[dict[str, Any]], "str | Mapping[str, Any]"]
"""Computes the reply from the request's JSON body (called on the server thread)."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A scripted answer, neutral across dialects (a reply function may return
    the same keys as a dict).

    ``texts`` gives one text per choice/candidate (else ``text`` is repeated
    ``n`` times); token counts default to a word count; ``body`` replaces the
    whole JSON response body verbatim.
    """

    text: str = ""
    texts: tuple[str, ...] | None = None
    finish_reason: str = "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    body: Mapping[str, Any] | None = None

    @classmethod
    def of(cls, value: object) -> Reply:
        """Normalise what a reply function returned; bad shapes raise naming the key."""
        if isinstance(value, Reply):
            return value
        if isinstance(value, str):
            return cls(text=value)
        if isinstance(value, Mapping):
            names = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(value) - names)
            if unknown:
                raise UsageError(f"reply dict has unknown keys {unknown}; use {sorted(names)}")
            data = dict(value)
            if data.get("texts") is not None:
                data["texts"] = tuple(str(t) for t in data["texts"])
            return cls(**data)
        raise UsageError(
            f"reply returned {type(value).__name__}; return a str or a dict with "
            "keys text/texts/finish_reason/prompt_tokens/completion_tokens/body"
        )


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request as the fake received it, with every secret redacted.

    ``headers`` and ``query`` hold ``<redacted>`` where a key was;
    ``api_key_present`` says whether one was sent at all.
    """

    index: int
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    json: Any
    api_key_present: bool
    model: str | None


@dataclass(frozen=True, slots=True)
class _Script:
    reply: str | ReplyFn
    latency: float
    fail_rate: float
    faults: tuple[Fault, ...]
    schedule: Schedule | None


class FakeProvider:
    """Base of the fake provider servers; use FakeOpenAI/FakeAnthropic/FakeGemini.

    Start with ``with FakeOpenAI() as fake:`` or ``start()``/``stop()``; pass
    ``fake.url`` as ``api_base``. ``api_key=None`` accepts any non-empty key.
    ``fail_rate`` draws from ``faults`` with a ``seed``-ed RNG; a ``schedule``
    entry for a request index takes precedence.
    """

    name: ClassVar[str] = "fake"
    base_path: ClassVar[str] = ""
    secret_headers: ClassVar[frozenset[str]] = frozenset()
    secret_query: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        *,
        reply: str | ReplyFn = "ok",
        latency: float = 0.0,
        fail_rate: float = 0.0,
        faults: Sequence[Fault] = (Fault.error(500),),
        schedule: Schedule | None = None,
        seed: int | None = 0,
        api_key: str | None = None,
        max_recorded: int = 1000,
        port: int = 0,
    ) -> None:
        self._lock = threading.Lock()
        self._script = self._checked(
            _Script(reply, float(latency), float(fail_rate), tuple(faults), schedule)
        )
        self._seed = seed
        self._rng = random.Random(seed)
        self._api_key = api_key
        self._records: deque[RecordedRequest] = deque(maxlen=max_recorded)
        self._outcomes: Counter[str] = Counter()
        self._count = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._server = HTTPServerThread(self._handle, name=f"dspex-{self.name}", port=port)

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> Self:
        """Start serving on 127.0.0.1; returns self."""
        self._server.start()
        return self

    def stop(self) -> None:
        """Close every connection and join the server thread."""
        self._server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._server.running else "stopped"
        return f"<{type(self).__name__} {where} requests={self.request_count}>"

    @property
    def url(self) -> str:
        """Base URL to pass as ``api_base``."""
        return f"http://{self._server.host}:{self._server.port}{self.base_path}"

    # -- scripting (any thread) --------------------------------------------

    def configure(self, **changes: Any) -> None:
        """Change several settings at once: reply, latency, fail_rate, faults, schedule."""
        names = {f.name for f in dataclasses.fields(_Script)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise UsageError(f"{type(self).__name__}.configure got {unknown}; use {sorted(names)}")
        if "faults" in changes:
            changes["faults"] = tuple(changes["faults"])
        with self._lock:
            self._script = self._checked(dataclasses.replace(self._script, **changes))

    @staticmethod
    def _checked(script: _Script) -> _Script:
        if script.latency < 0:
            raise UsageError(f"latency={script.latency!r} is negative; use seconds >= 0")
        if not 0.0 <= script.fail_rate <= 1.0:
            raise UsageError(f"fail_rate={script.fail_rate!r} is outside [0, 1]")
        if not script.faults or not all(isinstance(f, Fault) for f in script.faults):
            raise UsageError(f"faults={script.faults!r} must be a non-empty list of Fault")
        schedule = script.schedule
        if not (schedule is None or callable(schedule) or isinstance(schedule, Sequence)):
            raise UsageError(
                f"schedule={schedule!r} must be a list of Fault | None or a function "
                "index -> Fault | None"
            )
        if not (isinstance(script.reply, str) or callable(script.reply)):
            raise UsageError(f"reply={script.reply!r} must be a str or a function of the request")
        return script

    @property
    def latency(self) -> float:
        """Seconds the server waits before answering (other requests go on meanwhile)."""
        return self._script.latency

    @latency.setter
    def latency(self, value: float) -> None:
        self.configure(latency=value)

    @property
    def fail_rate(self) -> float:
        """Probability that a request gets one of ``faults``."""
        return self._script.fail_rate

    @fail_rate.setter
    def fail_rate(self, value: float) -> None:
        self.configure(fail_rate=value)

    @property
    def faults(self) -> tuple[Fault, ...]:
        """The faults ``fail_rate`` draws from."""
        return self._script.faults

    @faults.setter
    def faults(self, value: Sequence[Fault]) -> None:
        self.configure(faults=value)

    @property
    def schedule(self) -> Schedule | None:
        """Faults by request index: a list, or a function index -> Fault | None."""
        return self._script.schedule

    @schedule.setter
    def schedule(self, value: Schedule | None) -> None:
        self.configure(schedule=value)

    @property
    def reply(self) -> str | ReplyFn:
        """A fixed text, or a function of the request JSON returning str or dict."""
        return self._script.reply

    @reply.setter
    def reply(self, value: str | ReplyFn) -> None:
        self.configure(reply=value)

    # -- observation (any thread) ------------------------------------------

    @property
    def request_count(self) -> int:
        """Requests received since start or the last :meth:`reset`."""
        return self._count

    @property
    def requests(self) -> list[RecordedRequest]:
        """The most recent requests (up to ``max_recorded``), oldest first."""
        with self._lock:
            return list(self._records)

    @property
    def outcomes(self) -> dict[str, int]:
        """Counts per outcome: ok, error, rate_limit, auth, timeout, drop, malformed,
        bad_request, not_found, reply_error."""
        with self._lock:
            return dict(self._outcomes)

    @property
    def connections(self) -> int:
        """TCP connections accepted since start; keep-alive clients reuse theirs."""
        return self._server.accepted

    @property
    def in_flight(self) -> int:
        """Requests received and not yet answered."""
        return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """The most requests that were in flight at once."""
        return self._max_in_flight

    def reset(self) -> None:
        """Forget requests and counters, and reseed the fault RNG."""
        with self._lock:
            self._records.clear()
            self._outcomes.clear()
            self._count = 0
            self._max_in_flight = self._in_flight
            self._rng = random.Random(self._seed)

    # -- dialect hooks -------------------------------------------------------

    def route(self, request: HTTPRequest, body: Any) -> str | None:
        """The model the request names ("" if none), or None when the route is unknown."""
        raise NotImplementedError

    def api_key_of(self, request: HTTPRequest) -> str | None:
        """The API key the client sent, if any."""
        raise NotImplementedError

    def check_request(self, request: HTTPRequest, body: Any) -> HTTPResponse | None:
        """Reject the request as the real API would (auth, payload); None: accepted."""
        raise NotImplementedError

    def render(self, body: Any, model: str, reply: Reply) -> dict[str, Any]:
        """The dialect's success body for ``reply``."""
        raise NotImplementedError

    def error_response(
        self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> HTTPResponse:
        """The dialect's error envelope for ``status``."""
        raise NotImplementedError

    def messages_of(self, body: Any) -> list[dict[str, str]]:
        """The request's conversation as ``[{"role", "content"}]`` in OpenAI terms."""
        raise NotImplementedError

    def key_rejected(self, sent: str | None) -> bool:
        """True when ``sent`` would not pass: missing, or not the configured key."""
        return not sent or (self._api_key is not None and sent != self._api_key)

    # -- request flow (server loop thread) -----------------------------------

    async def _handle(self, request: HTTPRequest) -> HTTPResponse | ConnectionAction:
        body, body_error = _parse_json(request.body)
        model = self.route(request, body)
        with self._lock:
            index = self._count
            self._count += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            self._records.append(self._record(index, request, body, model))
            script = self._script
            drawn = script.fail_rate > 0 and self._rng.random() < script.fail_rate
            fault = self._rng.choice(script.faults) if drawn else None
        outcome = "ok"
        try:
            if script.latency > 0:
                await asyncio.sleep(script.latency)
            scheduled = _scheduled(script.schedule, index)
            fault = scheduled or fault
            if fault is not None:
                outcome = str(fault.kind)
                return self._fault_response(fault)
            if model is None:
                outcome = "not_found"
                return self.error_response(404, f"no route for {request.method} {request.path}")
            if body_error is not None:
                outcome = "bad_request"
                return self.error_response(400, f"request body is not valid JSON: {body_error}")
            rejected = self.check_request(request, body)
            if rejected is not None:
                outcome = {401: "auth", 403: "auth", 500: "error"}.get(
                    rejected.status, "bad_request"
                )
                return rejected
            try:
                reply = Reply.of(script.reply(body) if callable(script.reply) else script.reply)
            except Exception as exc:  # surfaced to the client, and counted
                outcome = "reply_error"
                return self.error_response(500, f"fake reply raised {type(exc).__name__}: {exc}")
            if reply.body is not None:
                return HTTPResponse(200, json.dumps(dict(reply.body)).encode())
            payload = self.render(body, model, reply)
            return HTTPResponse(200, json.dumps(payload).encode())
        finally:
            with self._lock:
                self._in_flight -= 1
                self._outcomes[outcome] += 1

    def _fault_response(self, fault: Fault) -> HTTPResponse | ConnectionAction:
        if fault.kind is FaultKind.TIMEOUT:
            return ConnectionAction.HANG
        if fault.kind is FaultKind.DROP:
            return ConnectionAction.DROP
        if fault.kind is FaultKind.MALFORMED:
            return HTTPResponse(200, b'{"choices": [ this is not json')
        if fault.kind is FaultKind.RATE_LIMIT:
            headers: tuple[tuple[str, str], ...] = ()
            if fault.retry_after is not None:
                after = fault.retry_after
                text = f"{after:g}" if isinstance(after, float | int) else str(after)
                headers = (("retry-after", text),)
            return self.error_response(429, fault.message or "rate limit exceeded", headers)
        if fault.kind is FaultKind.AUTH:
            return self.error_response(fault.status, fault.message or "invalid API key")
        return self.error_response(fault.status, fault.message or "injected server error")

    def _record(
        self, index: int, request: HTTPRequest, body: Any, model: str | None
    ) -> RecordedRequest:
        headers = {
            k: (_redact_header(v) if k in self.secret_headers else v)
            for k, v in request.headers.items()
        }
        query = {k: (REDACTED if k in self.secret_query else v) for k, v in request.query.items()}
        return RecordedRequest(
            index=index,
            method=request.method,
            path=request.path,
            query=query,
            headers=headers,
            json=body,
            api_key_present=bool(self.api_key_of(request)),
            model=model,
        )


def _parse_json(raw: bytes) -> tuple[Any, str | None]:
    if not raw:
        return None, None
    try:
        return json.loads(raw), None
    except ValueError as exc:
        return None, str(exc)


def _scheduled(schedule: Schedule | None, index: int) -> Fault | None:
    if schedule is None:
        return None
    if callable(schedule):
        return schedule(index)
    return schedule[index] if index < len(schedule) else None


def _redact_header(value: str) -> str:
    scheme, _, rest = value.partition(" ")
    if rest and scheme.lower() == "bearer":
        return f"{scheme} {REDACTED}"
    return REDACTED
