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
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dspex.actors._lm._streaming import stream_to
from dspex.programs._stream_listener import AdapterKind, adapter_kind
from dspex.programs._stream_messages import STREAM_SESSION

__all__ = ["CallDone", "Piece", "streaming_call"]

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
