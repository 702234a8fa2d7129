"""Errors as HTTP answers: which status each dspex error gets, and a body free of secrets.

Every error body is ``{"error": {"type", "message", ...}}``. A program's own
failure is a 500 naming the original exception's type and message: never a
traceback, and with anything that looks like a credential masked.
"""

from __future__ import annotations

import math
import os
import re
import time
from typing import Any

from dspex.config import REDACTED, is_secret_key
from dspex.errors import (
    ActorStoppedError,
    CircuitOpenError,
    OverloadedError,
    ProgramError,
    RegistryError,
)

__all__ = ["ErrorReply", "error_reply", "scrub"]

MAX_MESSAGE = 2000  # characters of an error message sent back; the rest is cut

# Credential shapes that may end up inside a provider's or a program's message.
_CREDENTIAL = re.compile(
    r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"
    r"|\b(?:sk|pk|rk)-[A-Za-z0-9_-]{8,}"
    r"|\bAIza[0-9A-Za-z_-]{20,}"
    r"|((?:api[_-]?key|token|password|secret)[\"']?\s*[=:]\s*[\"']?)[^\s\"',&}]{4,}"
)


def _mask(match: re.Match[str]) -> str:
    prefix = match.group(1) or match.group(2) or ""
    return f"{prefix}{REDACTED}"


def scrub(text: str) -> str:
    """``text`` with credential-like substrings and secret environment values masked."""
    for name, value in os.environ.items():
        if len(value) >= 8 and is_secret_key(name) and value in text:
            text = text.replace(value, REDACTED)
    text = _CREDENTIAL.sub(_mask, text)
    if len(text) > MAX_MESSAGE:
        text = text[:MAX_MESSAGE] + "... (cut)"
    return text


class ErrorReply:
    """An HTTP status, the JSON error body and extra headers."""

    __slots__ = ("body", "headers", "status")

    def __init__(
        self,
        status: int,
        kind: str,
        message: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        self.status = status
        self.body = {"error": {"type": kind, "message": scrub(message), **extra}}
        self.headers = headers or {}


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def error_reply(exc: BaseException) -> ErrorReply:
    """The answer to a request that failed with ``exc`` (from ``rt.ask`` or the program)."""
    original = exc.original if isinstance(exc, ProgramError) and exc.original else exc
    kind = type(original).__name__
    # ProgramError is also an instance of the original's type: test the specific ones first.
    if isinstance(exc, CircuitOpenError):
        wait = (exc.retry_at - time.monotonic()) if exc.retry_at is not None else 1.0
        return ErrorReply(503, kind, str(original), _retry_after(wait))
    if isinstance(exc, OverloadedError):
        return ErrorReply(429, kind, str(original), _retry_after(1.0))
    if isinstance(exc, ActorStoppedError) and not isinstance(exc, ProgramError):
        return ErrorReply(503, kind, str(original))
    if isinstance(exc, RegistryError) and not isinstance(exc, ProgramError):
        return ErrorReply(404, kind, str(original))
    return ErrorReply(500, kind, str(original))
