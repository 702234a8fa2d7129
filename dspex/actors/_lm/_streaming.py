"""Where a streaming LM call sends its text as it arrives: the chunk sink.

A caller that wants chunks sets a sink with :func:`stream_to` around its LM
calls (``dspex.streamify`` does, through the program's contextvars). The
handle reads it in the caller's thread and gives it to the call's attempt;
the engine sets the same variable on the loop while it starts the call, so
the provider layer finds it in the call's task. The sink runs on the
client's IO loop thread for live chunks, and in the caller's thread for a
cache hit (the whole text at once); it must be quick and must not raise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar

__all__ = ["STREAM_TO", "ChunkSink", "stream_to"]

ChunkSink = Callable[[str], None]
"""Receives each text delta of a call's first completion."""

STREAM_TO: ContextVar[ChunkSink | None] = ContextVar("dspex_stream_to", default=None)


@contextlib.contextmanager
def stream_to(sink: ChunkSink | None) -> Iterator[None]:
    """LM calls made inside stream their text to ``sink`` (None: they do not stream)."""
    token = STREAM_TO.set(sink)
    try:
        yield
    finally:
        STREAM_TO.reset(token)
