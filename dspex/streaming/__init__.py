"""DSPy's ``dspy.streaming`` path: stream listeners, stream messages, SSE helpers.

``dspex.streamify(program, stream_listeners=[StreamListener("answer")])``
wraps a program so a call yields :class:`StreamResponse` pieces of the
listened fields as the LM generates them, :class:`StatusMessage` notes, and
finally the ``Prediction``. See docs/streaming.md.
"""

from dspex.programs._stream_listener import StreamListener, find_predictor_for_stream_listeners
from dspex.programs._stream_messages import (
    LMChunk,
    StatusMessage,
    StatusMessageProvider,
    StatusStreamingCallback,
    StreamResponse,
)
from dspex.programs._streamify import apply_sync_streaming, streamify, streaming_response

__all__ = [
    "LMChunk",
    "StatusMessage",
    "StatusMessageProvider",
    "StatusStreamingCallback",
    "StreamListener",
    "StreamResponse",
    "apply_sync_streaming",
    "find_predictor_for_stream_listeners",
    "streamify",
    "streaming_response",
]
