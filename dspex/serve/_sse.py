"""Server-sent events for ``POST /v1/programs/{name}`` with ``Accept: text/event-stream``.

The stream is ``rt.stream(name, **inputs)`` written as SSE, one event per
value, each flushed as it comes (no batching):

- ``event: chunk`` with ``{"predict_name", "field", "text", "last"}``;
- ``event: prediction`` with the prediction's fields (as the JSON reply);
- ``event: error`` with ``{"error": {"type", "message"}}`` if the program
  fails (also mid-stream, e.g. the provider broke after the first chunk, or
  a drain deadline stopped the run), after which the stream ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from dspex.programs import Prediction
from dspex.serve._endpoints import result_fields, to_json_bytes
from dspex.serve._errors import error_reply
from dspex.streaming import StatusMessage, StreamResponse

__all__ = ["sse_event", "sse_events"]


def sse_event(event: str, data: Any) -> bytes:
    """One SSE event: ``event: <name>`` and its data as one line of compact JSON."""
    return b"event: " + event.encode() + b"\ndata: " + to_json_bytes(data) + b"\n\n"


async def sse_events(stream: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    """``stream``'s values as SSE events, ending with the prediction or an error."""
    try:
        async for value in stream:
            if isinstance(value, StreamResponse):
                yield sse_event(
                    "chunk",
                    {
                        "predict_name": value.predict_name,
                        "field": value.signature_field_name,
                        "text": value.chunk,
                        "last": value.is_last_chunk,
                    },
                )
            elif isinstance(value, Prediction):
                yield sse_event("prediction", result_fields(value))
            elif isinstance(value, StatusMessage):
                yield sse_event("status", {"message": value.message})
    except Exception as exc:  # the program's error: told to the client, no traceback
        reply = error_reply(exc)
        yield sse_event("error", reply.body)
    finally:
        closer = getattr(stream, "aclose", None)
        if closer is not None:
            await closer()
