"""How a predictor's LM calls reach the current stream (the programs-side sink).

``Predict`` wraps its adapter call in :func:`streaming_call`: outside a
streamed call it costs one context-variable read; inside one, every LM call
the adapter makes streams its text, tagged with the predictor and the
adapter's kind, to the session's consumer, and the end of the adapter call
is announced so listeners can flush what they hold back.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from dspex.actors._lm._streaming import stream_to
from dspex.actors._program_run import CancelEvent, current_run, scoped_run
from dspex.programs._stream_listener import AdapterKind, StreamListener, adapter_kind
from dspex.programs._stream_messages import STREAM_SESSION, LMChunk

__all__ = ["CallDone", "Finished", "Piece", "Router", "Session", "streaming_call"]

_calls = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Piece:
    """A piece of LM text from predictor ``predict_id``'s adapter call ``call``."""

    predict_id: int
    call: int
    kind: AdapterKind | str
    text: str
    model: str | None


@dataclass(frozen=True, slots=True)
class CallDone:
    """Predictor ``predict_id``'s adapter call ``call`` returned (or failed)."""

    predict_id: int
    call: int


_NOT_STREAMING = contextlib.nullcontext()


def streaming_call(predict: Any, adapter: Any, lm: Any) -> contextlib.AbstractContextManager[Any]:
    """Around one adapter call of ``predict``: stream its LM text if a stream is open.

    Outside ``streamify`` (the common case) a shared no-op context: one
    context-variable read per predictor call.
    """
    session = STREAM_SESSION.get()
    if session is None:
        return _NOT_STREAMING
    return _streaming_call(session, predict, adapter, lm)


@contextlib.contextmanager
def _streaming_call(session: Any, predict: Any, adapter: Any, lm: Any) -> Iterator[None]:
    put = session.put
    predict_id, call = id(predict), next(_calls)
    kind = adapter_kind(adapter) or type(adapter).__name__  # a name: listeners refuse it
    model = getattr(lm, "model", None)

    def sink(text: str) -> None:
        put(Piece(predict_id, call, kind, text, model))

    try:
        with stream_to(sink), _cancelled_with(getattr(session, "cancelled", None)):
            yield
    finally:
        put(CallDone(predict_id, call))


class _LinkedCancel(CancelEvent):
    """A run's cancel flag that is also set by its stream's consumer leaving."""

    def __init__(self, parent: threading.Event) -> None:
        super().__init__()
        self._parent = parent

    def is_set(self) -> bool:
        return super().is_set() or self._parent.is_set()


@contextlib.contextmanager
def _cancelled_with(stream_cancel: CancelEvent | None) -> Iterator[None]:
    """Let ``stream_cancel`` cancel the current run's LM calls in this block.

    A served request's run has its server's cancel flag, which no consumer
    can set; inside the block the run's flag is one the stream's consumer
    sets when it leaves, so its LM call is woken and the upstream request
    cancelled. The server's own flag still counts (``_LinkedCancel``).
    """
    run = current_run()
    if stream_cancel is None or run is None:
        yield
        return
    linked = _LinkedCancel(run.cancelled)
    stream_cancel.add_waker(linked.set)
    parent = run.cancelled
    if isinstance(parent, CancelEvent):
        parent.add_waker(linked.set)
    try:
        with scoped_run(run.replace(cancelled=linked)):
            yield
    finally:
        stream_cancel.discard_waker(linked.set)
        if isinstance(parent, CancelEvent):
            parent.discard_waker(linked.set)


@dataclass(frozen=True, slots=True)
class Finished:
    reply: Future[Any]


class Session:
    """One streamed call's way to its consumer; ``put`` is thread-safe.

    ``cancelled`` (for served programs, whose runs the consumer does not
    own) is set when the consumer leaves; it cancels the LM calls in flight.
    """

    __slots__ = ("cancelled", "put")

    def __init__(self, put: Callable[[Any], None], cancelled: CancelEvent | None = None) -> None:
        self.put = put
        self.cancelled = cancelled


class Router:
    """Turns queue items into what the consumer yields (consumer thread)."""

    def __init__(
        self,
        by_predictor: dict[int, list[StreamListener]],
        listeners: list[StreamListener],
        names: dict[int, str],
        include_final: bool,
    ) -> None:
        self.by_predictor = by_predictor
        self.listeners = listeners
        self.names = names
        self.include_final = include_final
        self.done = False

    def handle(self, item: Any) -> list[Any]:
        if isinstance(item, Piece):
            if not self.listeners:
                name = self.names.get(item.predict_id)
                return [LMChunk(item.text, name, item.predict_id, item.model)]
            out = []
            for listener in self.by_predictor.get(item.predict_id, ()):
                response = listener.receive_text(item.text, item.kind, item.call)
                if response is not None:
                    out.append(response)
            return out
        if isinstance(item, CallDone):
            ends = [listener.finalize() for listener in self.by_predictor.get(item.predict_id, ())]
            return [end for end in ends if end is not None]
        if isinstance(item, Finished):
            self.done = True
            prediction = item.reply.result()  # raises the program's error
            out = [end for end in (lst.finalize() for lst in self.listeners) if end is not None]
            if (
                self.include_final
                or not self.listeners
                or any(lst.cache_hit for lst in self.listeners)
                or not any(lst.stream_start for lst in self.listeners)
            ):
                out.append(prediction)
            return out
        return [item]  # a StatusMessage
