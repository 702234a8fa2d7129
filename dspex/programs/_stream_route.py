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
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from dspex.actors._lm._streaming import stream_to
from dspex.programs._stream_listener import AdapterKind, StreamListener, adapter_kind
from dspex.programs._stream_messages import STREAM_SESSION, LMChunk

__all__ = ["CallDone", "Finished", "Piece", "Router", "Session", "streaming_call"]

_calls = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Piece:
    """A piece of LM text from predictor ``predict_id``'s adapter call ``call``."""

    predict_id: int
    call: int
    kind: AdapterKind | None
    text: str
    model: str | None


@dataclass(frozen=True, slots=True)
class CallDone:
    """Predictor ``predict_id``'s adapter call ``call`` returned (or failed)."""

    predict_id: int
    call: int


@contextlib.contextmanager
def streaming_call(predict: Any, adapter: Any, lm: Any) -> Iterator[None]:
    """Around one adapter call of ``predict``: stream its LM text if a stream is open."""
    session = STREAM_SESSION.get()
    if session is None:
        yield
        return
    put = session.put
    predict_id, call, kind = id(predict), next(_calls), adapter_kind(adapter)
    model = getattr(lm, "model", None)

    def sink(text: str) -> None:
        put(Piece(predict_id, call, kind, text, model))

    try:
        with stream_to(sink):
            yield
    finally:
        put(CallDone(predict_id, call))


@dataclass(frozen=True, slots=True)
class Finished:
    reply: Future[Any]


class Session:
    """One streamed call's way to its consumer; ``put`` is thread-safe."""

    __slots__ = ("put",)

    def __init__(self, put: Callable[[Any], None]) -> None:
        self.put = put


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
                response = listener.receive_text(item.text, item.kind or "?", item.call)
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
