"""What a test scripts on a fake provider: replies and injected faults.

Plain values, neutral across dialects; :class:`~dspex.testing.FakeProvider`
turns them into each provider's wire format.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dspex.errors import UsageError

__all__ = ["Fault", "FaultKind", "Reply", "ReplyFn", "Schedule"]


class FaultKind(enum.StrEnum):
    """What kind of failure a :class:`Fault` injects."""

    ERROR = "error"  # an HTTP error status with the dialect's error body
    RATE_LIMIT = "rate_limit"  # HTTP 429 with Retry-After
    AUTH = "auth"  # HTTP 401 as if the key were wrong
    TIMEOUT = "timeout"  # no answer until the client gives up
    DROP = "drop"  # the connection closes without a response
    MALFORMED = "malformed"  # HTTP 200 whose body is not valid JSON
    CONTEXT_WINDOW = "context_window"  # the provider's "prompt too long" answer
    RAW = "raw"  # exactly the given body and headers, e.g. a gzip bomb


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected failure; build it with the class methods, e.g. ``Fault.rate_limit(2)``."""

    kind: FaultKind
    status: int = 500
    retry_after: float | str | None = None
    message: str | None = None
    limit: int | None = None
    body: bytes | None = field(default=None, repr=False)
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 599:
            raise UsageError(f"Fault status={self.status!r} is not an HTTP status; use 100-599")
        if self.limit is not None and (isinstance(self.limit, bool) or self.limit < 1):
            raise UsageError(f"Fault limit={self.limit!r} must be a positive token count")

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

    @classmethod
    def context_window(cls, limit: int = 4096, status: int = 400) -> Fault:
        """Answer as the provider does when the prompt exceeds a ``limit``-token window.

        The reported prompt size is the request's word count, at least ``limit + 1``.
        """
        return cls(FaultKind.CONTEXT_WINDOW, status, limit=limit)

    @classmethod
    def raw(
        cls, body: bytes, *, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> Fault:
        """Answer ``status`` with ``body`` sent as given, plus ``headers``.

        For replies no dialect would produce: an oversized body, or one whose
        ``Content-Encoding: gzip`` header lies or hides a compression bomb.
        ``Content-Length`` is added; ``content-type`` defaults to JSON.
        """
        if not isinstance(body, bytes | bytearray):
            raise UsageError(f"Fault.raw(body={type(body).__name__}) needs bytes")
        return cls(FaultKind.RAW, status, body=bytes(body), headers=tuple((headers or {}).items()))


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
