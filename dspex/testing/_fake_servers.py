"""Fake LM provider servers: the dialect-neutral part (scripting, faults, records).

A :class:`FakeProvider` is a real HTTP server on 127.0.0.1 (see
``_fake_http``) that answers one provider's wire format. Tests script it with
a fixed reply or a function of the request, inject latency and faults, and
read back what it received. The scripted values (:class:`Reply`,
:class:`Fault`) live in ``_fake_script``, the three dialects in
``_fake_providers``.

Every request flows through :meth:`FakeProvider._handle` on the server's loop
thread: count and record it, sleep the latency, apply a fault if one is due,
check route, auth and payload the way the real API would, refuse a prompt
longer than ``context_window`` words, then render the reply. Settings may be
changed from any thread while the server runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import threading
from collections import Counter, deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Self

from dspex.errors import UsageError
from dspex.testing._fake_http import (
    ConnectionAction,
    HTTPRequest,
    HTTPResponse,
    HTTPServerThread,
    StreamedResponse,
)
from dspex.testing._fake_script import Fault, FaultKind, Reply, ReplyFn, Schedule

__all__ = ["FakeProvider", "Fault", "FaultKind", "RecordedRequest", "Reply"]

REDACTED = "<redacted>"


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
    context_window: int | None = None
    stream_delay: float = 0.0
    stream_fail_after: int | None = None


class FakeProvider:
    """Base of the fake provider servers; use FakeOpenAI/FakeAnthropic/FakeGemini.

    Start with ``with FakeOpenAI() as fake:`` or ``start()``/``stop()``; pass
    ``fake.url`` as ``api_base``. ``api_key=None`` accepts any non-empty key.
    ``fail_rate`` draws from ``faults`` with a ``seed``-ed RNG; a ``schedule``
    entry for a request index takes precedence. With ``context_window=N``, a
    valid request whose prompt has more than N words gets the provider's
    "prompt too long" answer (one word counts as one token here).

    A streaming request (each dialect's own way of asking) is answered with
    server-sent events in that dialect, one word of the reply per event,
    ``stream_delay`` seconds apart; ``stream_fail_after=N`` drops the
    connection after N text events (a failure mid-stream). A client that
    hangs up mid-stream is counted in :attr:`stream_disconnects`.
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
        context_window: int | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._script = self._checked(
            _Script(
                reply, float(latency), float(fail_rate), tuple(faults), schedule, context_window
            )
        )
        self._seed = seed
        self._rng = random.Random(seed)
        self._api_key = api_key
        self._records: deque[RecordedRequest] = deque(maxlen=max_recorded)
        self._outcomes: Counter[str] = Counter()
        self._count = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._stream_disconnects = 0
        self._disconnected = threading.Event()
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
        """Change several settings at once: reply, latency, fail_rate, faults, schedule,
        context_window."""
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
        window = script.context_window
        if window is not None and (
            isinstance(window, bool) or not isinstance(window, int) or window < 1
        ):
            raise UsageError(
                f"context_window={window!r} must be a positive int (prompt words) or None"
            )
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
    def context_window(self) -> int | None:
        """Longest prompt (in words) the fake accepts; None: no limit."""
        return self._script.context_window

    @context_window.setter
    def context_window(self, value: int | None) -> None:
        self.configure(context_window=value)

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
        context_window, raw, bad_request, not_found, reply_error."""
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
    def stream_disconnects(self) -> int:
        """Streamed replies the client hung up on before their end."""
        return self._stream_disconnects

    def wait_disconnect(self, timeout: float) -> bool:
        """Wait until a client hangs up mid-stream; False if none did within ``timeout``."""
        return self._disconnected.wait(timeout)

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
            self._stream_disconnects = 0
            self._disconnected.clear()
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

    def is_stream(self, request: HTTPRequest, body: Any) -> bool:
        """Whether the request asks for a streamed (SSE) reply."""
        return isinstance(body, dict) and body.get("stream") is True

    def stream_events(self, body: Any, model: str, reply: Reply) -> list[tuple[bytes, bool]]:
        """The reply as SSE frames in this dialect, one word of text per frame.

        Each frame comes with whether it carries text (``stream_fail_after`` counts those).
        """
        raise NotImplementedError

    def render(self, body: Any, model: str, reply: Reply) -> dict[str, Any]:
        """The dialect's success body for ``reply``."""
        raise NotImplementedError

    def render_for(
        self, request: HTTPRequest, body: Any, model: str, reply: Reply
    ) -> dict[str, Any]:
        """The success body for ``request`` (a dialect with several routes picks one)."""
        return self.render(body, model, reply)

    def error_response(
        self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> HTTPResponse:
        """The dialect's error envelope for ``status``."""
        raise NotImplementedError

    def messages_of(self, body: Any) -> list[dict[str, str]]:
        """The request's conversation as ``[{"role", "content"}]`` in OpenAI terms."""
        raise NotImplementedError

    def context_window_response(self, prompt_tokens: int, limit: int, status: int) -> HTTPResponse:
        """The dialect's answer to a prompt of ``prompt_tokens`` over a ``limit`` window."""
        raise NotImplementedError

    def prompt_tokens(self, body: Any) -> int:
        """The prompt's size as the fake counts it: words over every message."""
        try:
            messages = self.messages_of(body) if isinstance(body, dict) else []
        except (AttributeError, TypeError):  # a malformed body: nothing to count
            return 0
        return len(" ".join(m["content"] for m in messages).split())

    def key_rejected(self, sent: str | None) -> bool:
        """True when ``sent`` would not pass: missing, or not the configured key."""
        return not sent or (self._api_key is not None and sent != self._api_key)

    # -- request flow (server loop thread) -----------------------------------

    async def _handle(
        self, request: HTTPRequest
    ) -> HTTPResponse | StreamedResponse | ConnectionAction:
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
                return self._fault_response(fault, body)
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
            if script.context_window is not None:
                tokens = self.prompt_tokens(body)
                if tokens > script.context_window:
                    outcome = "context_window"
                    return self.context_window_response(tokens, script.context_window, 400)
            try:
                reply = Reply.of(script.reply(body) if callable(script.reply) else script.reply)
            except Exception as exc:  # surfaced to the client, and counted
                outcome = "reply_error"
                return self.error_response(500, f"fake reply raised {type(exc).__name__}: {exc}")
            if reply.body is not None:
                return HTTPResponse(200, json.dumps(dict(reply.body)).encode())
            if self.is_stream(request, body):
                outcome = "stream"
                return self._streamed(self.stream_events(body, model, reply), script)
            payload = self.render_for(request, body, model, reply)
            return HTTPResponse(200, json.dumps(payload).encode())
        finally:
            with self._lock:
                self._in_flight -= 1
                self._outcomes[outcome] += 1

    def _streamed(self, frames: list[tuple[bytes, bool]], script: _Script) -> StreamedResponse:
        async def chunks() -> AsyncIterator[bytes | ConnectionAction]:
            texts = 0
            for i, (frame, has_text) in enumerate(frames):
                if i and script.stream_delay > 0:
                    await asyncio.sleep(script.stream_delay)
                if has_text:
                    if script.stream_fail_after is not None and texts >= script.stream_fail_after:
                        yield ConnectionAction.DROP
                        return
                    texts += 1
                yield frame

        return StreamedResponse(chunks(), on_disconnect=self._on_disconnect)

    def _on_disconnect(self) -> None:
        with self._lock:
            self._stream_disconnects += 1
        self._disconnected.set()

    def _fault_response(self, fault: Fault, body: Any) -> HTTPResponse | ConnectionAction:
        if fault.kind is FaultKind.CONTEXT_WINDOW:
            limit = fault.limit or 4096
            tokens = max(self.prompt_tokens(body), limit + 1)
            return self.context_window_response(tokens, limit, fault.status)
        if fault.kind is FaultKind.TIMEOUT:
            return ConnectionAction.HANG
        if fault.kind is FaultKind.DROP:
            return ConnectionAction.DROP
        if fault.kind is FaultKind.RAW:
            assert fault.body is not None
            extra = {k.lower(): v for k, v in fault.headers}
            kind = extra.pop("content-type", "application/json")
            return HTTPResponse(
                fault.status, fault.body, headers=tuple(extra.items()), content_type=kind
            )
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
