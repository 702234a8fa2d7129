"""``Runtime.stream(name, **inputs)``: stream a served program's output.

Installed as the actors layer's stream opener (``install_caller_hooks``).
The request goes through the server's admission as ``rt.ask`` does, with
the stream's session in the request's context: a program with ``aforward``
runs as a task on the consumer's loop (others in a server worker thread),
its predictors' LM calls stream to this consumer's queue straight from the
LM client's loop, and the answer ends the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from dspex.actors._program_run import CancelEvent
from dspex.actors._server_requests import AsyncCall
from dspex.errors import UsageError
from dspex.programs._stream_listener import StreamListener
from dspex.programs._stream_messages import STREAM_SESSION
from dspex.programs._stream_route import Finished, Router, Session

__all__ = ["field_listeners", "stream_served"]


def field_listeners(program: Any) -> tuple[dict[int, list[StreamListener]], dict[int, str]]:
    """A reusable listener on every output field of every predictor of ``program``."""
    by_predictor: dict[int, list[StreamListener]] = {}
    names: dict[int, str] = {}
    named = getattr(program, "named_predictors", None)
    for name, predictor in named() if callable(named) else ():
        names[id(predictor)] = name
        by_predictor[id(predictor)] = [
            StreamListener(field, predict=predictor, predict_name=name, allow_reuse=True)
            for field in predictor.signature.output_fields
        ]
    return by_predictor, names


def stream_served(runtime: Any, name: str, inputs: Mapping[str, Any]) -> AsyncIterator[Any]:
    """Field pieces of served program ``name`` as they come, then its Prediction.

    Admits the request at once (so ``OverloadedError`` and friends raise
    here, as from ``rt.ask``); call it with an event loop running, which
    the returned async iterator must be consumed on.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise UsageError(
            f"rt.stream({name!r}, ...) returns an async iterator: call it from async code "
            "(inside a running event loop), or use dspex.streamify(...) with "
            "async_streaming=False for sync iteration"
        ) from None
    by_predictor, names = field_listeners(runtime.servers.program(name))
    listeners = [lst for group in by_predictor.values() for lst in group]
    route = Router(by_predictor, listeners, names, include_final=True)
    items: asyncio.Queue[Any] = asyncio.Queue()

    def put(item: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the consumer's loop closed
            loop.call_soon_threadsafe(items.put_nowait, item)

    session = Session(put, CancelEvent())
    token = STREAM_SESSION.set(session)
    try:
        # Admitted here, on this loop: a program with aforward runs as a task on
        # it (the request's context carries the session), others in a worker
        # thread; no run actor, no thread per stream.
        call = runtime.servers.start_call(name, inputs)
    finally:
        STREAM_SESSION.reset(token)
    call.reply.future.add_done_callback(lambda done: put(Finished(done)))
    return _pump(route, items, call, session)


async def _pump(
    route: Router, items: asyncio.Queue[Any], call: AsyncCall, session: Session
) -> AsyncIterator[Any]:
    try:
        while not route.done:
            for out in route.handle(await items.get()):
                yield out
    finally:
        if not call.reply.future.done():
            # The consumer left: a queued request is dropped, a running task
            # cancelled (its LM call with it); a worker thread's LM call in
            # flight is cancelled through the session's flag.
            call.cancel()
            assert session.cancelled is not None
            session.cancelled.set()
