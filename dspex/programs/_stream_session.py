"""The current stream session: what ``Predict`` reads before every adapter call.

Kept apart from the streaming modules so a call outside ``streamify`` (one
context-variable read) loads none of them.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Protocol

__all__ = ["STREAM_SESSION", "StreamSession"]


class StreamSession(Protocol):
    """The stream a running program's messages go to (``streamify`` makes one per call)."""

    def put(self, item: Any) -> None:
        """Send ``item`` to the consumer (any thread; quick)."""


STREAM_SESSION: ContextVar[StreamSession | None] = ContextVar("dspex_stream_session", default=None)
"""The session of the streamed call this code runs in (travels into the run's thread)."""
