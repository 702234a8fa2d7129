"""``dspex.streamify``: run a program and yield its output as it is generated.

Iterated asynchronously, a program with ``aforward`` is awaited as a task on
the consumer's loop (``acall``: a light run at top level); otherwise it runs
as an ordinary ProgramRun actor (``Runtime.submit_run``). The consumer is
whoever iterates the stream. Between them one queue per
call: an ``asyncio.Queue`` filled with ``call_soon_threadsafe`` for async
iteration, a ``queue.SimpleQueue`` for sync iteration. The LM client's IO
loop puts text pieces in it directly (through the chunk sink
``_stream_route`` sets around each predictor's LM calls), the run's thread
puts status messages, and the run's reply future puts the end. No thread is
started per call.

Listeners run in the consumer, in queue order: each piece goes to the
listeners of the predictor that made the call; the end of a predictor's
call flushes what they hold back; the reply ends the stream with the
Prediction (or raises the program's error). Closing or cancelling the
consumer cancels the run, and with it the LM call in flight upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator
from concurrent.futures import Future
from typing import Any

from dspex.actors._program_run import RunContext
from dspex.errors import UsageError
from dspex.programs._prediction import Prediction
from dspex.programs._runtime_access import current_runtime
from dspex.programs._settings import settings
from dspex.programs._stream_listener import StreamListener, find_predictor_for_stream_listeners
from dspex.programs._stream_messages import (
    STREAM_SESSION,
    LMChunk,
    StatusMessage,
    StatusMessageProvider,
    StatusStreamingCallback,
    StreamResponse,
)
from dspex.programs._stream_route import Finished, Router, Session

__all__ = ["apply_sync_streaming", "streamify", "streaming_response"]


def streamify(  # noqa: PLR0917  (DSPy's signature, positional arguments included)
    program: Any,
    status_message_provider: StatusMessageProvider | None = None,
    stream_listeners: list[StreamListener] | None = None,
    include_final_prediction_in_output_stream: bool = True,
    is_async_program: bool = False,
    async_streaming: bool = True,
) -> Callable[..., Any]:
    """Wrap ``program`` so a call yields its output as it is generated, then the Prediction.

    With ``stream_listeners``, each listener's field streams as
    :class:`StreamResponse` pieces; without, every LM call's raw text
    streams as :class:`LMChunk` pieces. ``status_message_provider`` decides
    the :class:`StatusMessage` notes. The wrapped call returns an async
    iterator, or a plain iterator with ``async_streaming=False``.
    ``is_async_program`` is accepted for DSPy compatibility: async iteration
    of a program with ``aforward`` awaits ``program.acall`` as a task on the
    consumer's loop; otherwise (and for sync iteration) it runs as a run actor.
    """
    listeners = list(stream_listeners or [])
    for listener in listeners:
        if not isinstance(listener, StreamListener):
            raise UsageError(
                f"stream_listeners contains {listener!r}; pass dspex.streaming.StreamListener "
                "objects"
            )
    by_predictor = find_predictor_for_stream_listeners(program, listeners) if listeners else {}
    names = {id(p): name for name, p in _named_predictors(program)}
    status = StatusStreamingCallback(status_message_provider)
    label = type(program).__name__
    # Async iteration of a program with aforward (a Predict, a Module that
    # defines it) awaits it on the consumer's loop, as ``acall`` does.
    native = callable(getattr(program, "acall", None)) and (
        is_async_program or callable(getattr(program, "aforward", None))
    )

    def router() -> Router:
        # Fresh listener state per call: calls may run one after another or at once.
        fresh = {id(lst): lst.fresh() for lst in listeners}
        mine = {pid: [fresh[id(lst)] for lst in group] for pid, group in by_predictor.items()}
        return Router(mine, list(fresh.values()), names, include_final_prediction_in_output_stream)

    def callbacks() -> list[Any]:
        mine = [c for c in settings.get("callbacks") or () if c is not status]
        if not any(isinstance(c, StatusStreamingCallback) for c in mine):
            mine.append(status)
        return mine

    def launch(
        put: Callable[[Any], None], args: Any, kwargs: Any
    ) -> tuple[Future[Any], RunContext]:
        token = STREAM_SESSION.set(Session(put))
        try:
            with settings.context(callbacks=callbacks()):
                reply, run = current_runtime().submit_run(
                    lambda: program(*args, **kwargs), label=label
                )
        finally:
            STREAM_SESSION.reset(token)
        reply.add_done_callback(lambda done: put(Finished(done)))
        return reply, run

    def launch_here(put: Callable[[Any], None], args: Any, kwargs: Any) -> asyncio.Task[Any]:
        # The task copies this context: the session and the callbacks go with it;
        # at top level ``acall`` makes it a light run on this loop (Runtime.arun).
        token = STREAM_SESSION.set(Session(put))
        try:
            with settings.context(callbacks=callbacks()):
                task = asyncio.get_running_loop().create_task(program.acall(*args, **kwargs))
        finally:
            STREAM_SESSION.reset(token)
        task.add_done_callback(lambda done: put(Finished(done)))  # type: ignore[arg-type]
        return task

    async def async_streamer(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[Any] = asyncio.Queue()

        def put(item: Any) -> None:
            # RuntimeError: the consumer's loop is closed, so nobody listens any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(items.put_nowait, item)

        route = router()
        if native:  # a task on this loop: no run actor, no thread
            task = launch_here(put, args, kwargs)
            try:
                while not route.done:
                    for out in route.handle(await items.get()):
                        yield out
            finally:
                if not task.done():
                    task.cancel()  # the consumer left: stop the run and its LM call
            return
        reply, run = launch(put, args, kwargs)
        try:
            while not route.done:
                for out in route.handle(await items.get()):
                    yield out
        finally:
            if not reply.done():
                run.cancelled.set()  # the consumer left: stop the run and its LM call

    def sync_streamer(*args: Any, **kwargs: Any) -> Generator[Any, None, None]:
        items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        route = router()
        reply, run = launch(items.put, args, kwargs)
        try:
            while not route.done:
                yield from route.handle(items.get())
        finally:
            if not reply.done():
                run.cancelled.set()

    return async_streamer if async_streaming else sync_streamer


def _named_predictors(program: Any) -> list[tuple[str, Any]]:
    named = getattr(program, "named_predictors", None)
    return list(named()) if callable(named) else []


def apply_sync_streaming(async_generator: AsyncIterator[Any]) -> Generator[Any, None, None]:
    """Iterate an async stream from sync code (on a private event loop in this thread)."""
    loop = asyncio.new_event_loop()
    iterator = aiter(async_generator)
    try:
        while True:
            try:
                yield loop.run_until_complete(anext(iterator))
            except StopAsyncIteration:
                return
    finally:
        closer = getattr(iterator, "aclose", None)
        if closer is not None:
            loop.run_until_complete(closer())
        loop.close()


async def streaming_response(streamer: AsyncIterator[Any]) -> AsyncGenerator[str, None]:
    """A streamed program's output as server-sent-event lines (``data: {...}``).

    Field pieces as ``{"chunk": {...}}``, status notes as ``{"status": ...}``,
    the Prediction as ``{"prediction": {...}}``, then ``data: [DONE]``.
    """
    async for value in streamer:
        yield f"data: {json.dumps(event_payload(value), default=str)}\n\n"
    yield "data: [DONE]\n\n"


def event_payload(value: Any) -> dict[str, Any]:
    """The JSON object one streamed value becomes on the wire."""
    if isinstance(value, Prediction):
        return {"prediction": dict(value.items())}
    if isinstance(value, StreamResponse):
        return {
            "chunk": {
                "predict_name": value.predict_name,
                "field": value.signature_field_name,
                "text": value.chunk,
                "last": value.is_last_chunk,
            }
        }
    if isinstance(value, LMChunk):
        return {"chunk": value.to_dict()}
    if isinstance(value, StatusMessage):
        return {"status": value.message}
    raise UsageError(f"streaming_response got {type(value).__name__} {value!r}; not a stream value")
