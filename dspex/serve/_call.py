"""``POST /v1/programs/{name}``: the hot route, as a plain ASGI handler.

It is every request of a busy server, so it skips Starlette's Request,
Response and routing layers (``bench/serve.py``: they cost about a fifth of
the HTTP layer's CPU per request) and speaks ASGI directly: read the body,
check it, ``await`` the program server's ``acall`` on this loop (a program
with ``aforward`` runs as a task here, with no thread), write the JSON.

While the request waits or runs (from 0.25 s on), a watcher reads
``receive``: if the client disconnects first, the handler is cancelled, which
cancels the request (a queued one never runs; a running task stops, its LM
call with it).
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.responses import StreamingResponse

from dspex.serve._endpoints import InputError, result_fields, to_json_bytes
from dspex.serve._errors import ErrorReply, error_reply
from dspex.serve._sse import sse_events

__all__ = ["call_program", "program_name"]

_PREFIX = "/v1/programs/"
_JSON = (b"content-type", b"application/json")
# Seconds a call runs before a task watches for its client hanging up (see
# _unless_disconnected): longer than most LM calls, short next to a client's patience.
_WATCH_AFTER = 0.25


def program_name(scope: dict[str, Any]) -> str | None:
    """The ``{name}`` of a ``/v1/programs/{name}`` path (under the mount point), else None."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        path = path[len(root) :]  # mounted: Starlette leaves the mount prefix in path
    if not path.startswith(_PREFIX):
        return None
    name = path[len(_PREFIX) :]
    return name if name and "/" not in name else None


async def _send_json(send: Any, status: int, body: bytes, headers: Any = ()) -> None:
    extra = [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in headers]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON, (b"content-length", str(len(body)).encode()), *extra],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _send_error(send: Any, reply: ErrorReply) -> None:
    await _send_json(send, reply.status, to_json_bytes(reply.body), reply.headers.items())


async def _read_body(receive: Any) -> bytes | None:
    """The request body, or None if the client disconnected first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _wants_stream(scope: dict[str, Any]) -> bool:
    for key, value in scope["headers"]:
        if key == b"accept":
            return b"text/event-stream" in value and b"application/json" not in value
    return False


async def call_program(state: Any, scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Serve one ``POST /v1/programs/{name}`` (``state`` is the app's ServeState)."""
    name = program_name(scope)
    assert name is not None
    if state.draining:
        reply = ErrorReply(503, "Draining", "the server is shutting down; send it elsewhere")
        await _send_error(send, reply)
        return
    try:
        server = await state.runtime.servers.astate(name)  # a restart is awaited off the loop
        endpoint = state.endpoint_of(name, server.program)
        body = await _read_body(receive)
        if body is None:
            return  # the client left before sending its request
        inputs = endpoint.parse(body)
        if _wants_stream(scope):
            # Admitted (or refused with its status) here, before the stream starts.
            stream = state.runtime.stream(name, **inputs)
            response = StreamingResponse(
                sse_events(stream),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
            )
            await response(scope, receive, send)
            return
    except InputError as exc:
        await _send_error(
            send, ErrorReply(422, "InputError", f"program {name!r}: {exc}", errors=exc.errors)
        )
        return
    except Exception as exc:
        await _send_error(send, error_reply(exc))
        return
    try:
        call = server.start_call(inputs)  # admits or raises at once: never blocks
    except Exception as exc:
        await _send_error(send, error_reply(exc))
        return
    try:
        result = await _unless_disconnected(call, receive)
    except _ClientGone:
        return  # nobody to answer; the request was cancelled
    except Exception as exc:
        await _send_error(send, error_reply(exc))
        return
    try:
        body = to_json_bytes(result_fields(result))
    except Exception as exc:
        reply = ErrorReply(500, type(exc).__name__, f"cannot encode result: {exc}")
        await _send_error(send, reply)
        return
    await _send_json(send, 200, body)


class _ClientGone(Exception):
    """The client disconnected while its request waited or ran."""


async def _unless_disconnected(call: Any, receive: Any) -> Any:
    """Await ``call``; if ``receive`` reports a disconnect first, cancel it (_ClientGone).

    The watcher task starts only once the call has taken ``_WATCH_AFTER``: a
    task per request (create, first step, cancel, last step) was the largest
    cost of this module under load, and most calls end sooner. A client that
    hung up earlier is seen at once when the watcher starts (the server keeps
    the disconnect for the next ``receive``), so it is cancelled at most
    ``_WATCH_AFTER`` late.
    """
    loop = asyncio.get_running_loop()
    gone = False
    watcher: asyncio.Task[None] | None = None

    async def watch() -> None:
        nonlocal gone
        message = await receive()
        if message["type"] == "http.disconnect":
            gone = True
            call.cancel()  # wakes the await below; this task itself is not cancelled

    def start_watching() -> None:
        nonlocal watcher
        watcher = loop.create_task(watch())

    timer = loop.call_later(_WATCH_AFTER, start_watching)
    try:
        return await call
    except asyncio.CancelledError:
        if gone:
            raise _ClientGone() from None
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()  # uvicorn ends its receive() once the answer is written anyway
