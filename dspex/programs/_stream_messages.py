"""What a streamed program yields, besides its final Prediction.

:class:`StreamResponse` is one piece of an output field caught by a
``StreamListener``; :class:`StatusMessage` a progress note from a
:class:`StatusMessageProvider`; :class:`LMChunk` a raw piece of model text
(what ``streamify`` yields when no listener is given, shaped like the
litellm chunks DSPy yields there: ``chunk.choices[0].delta.content``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dspex.actors._callbacks import BaseCallback
from dspex.programs._stream_session import STREAM_SESSION, StreamSession

__all__ = [
    "STREAM_SESSION",
    "LMChunk",
    "StatusMessage",
    "StatusMessageProvider",
    "StatusStreamingCallback",
    "StreamResponse",
    "StreamSession",
]


@dataclass
class StreamResponse:
    """A piece of one output field of one predictor, as it streams."""

    predict_name: str
    signature_field_name: str
    chunk: str
    is_last_chunk: bool = False


@dataclass
class StatusMessage:
    """A progress note for the consumer (from a :class:`StatusMessageProvider`)."""

    message: str


@dataclass(frozen=True)
class _Delta:
    content: str | None
    role: str | None = "assistant"


@dataclass(frozen=True)
class _Choice:
    delta: _Delta
    index: int = 0


@dataclass(frozen=True)
class LMChunk:
    """A raw piece of one LM call's text, tagged with the predictor that made the call."""

    text: str
    predict_name: str | None = None
    predict_id: int | None = None
    model: str | None = None

    @property
    def choices(self) -> list[_Choice]:
        """DSPy/litellm's shape: ``chunk.choices[0].delta.content``."""
        return [_Choice(_Delta(self.text))]

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "predict_name": self.predict_name, "model": self.model}


class StatusMessageProvider:
    """Decides the status messages a streamed program yields; override what you need.

    Each method returns the message text, or None for no message. They run
    in the program's thread (the run actor's).
    """

    def tool_start_status_message(self, instance: Any, inputs: dict[str, Any]) -> str | None:
        """Before a ``dspex.Tool`` runs."""
        return f"Calling tool {instance.name}..."

    def tool_end_status_message(self, outputs: Any) -> str | None:
        """After a ``dspex.Tool`` ran."""
        return "Tool calling finished! Querying the LLM with tool calling results..."

    def module_start_status_message(self, instance: Any, inputs: dict[str, Any]) -> str | None:
        """Before a module (or ``Predict``) runs."""
        return None

    def module_end_status_message(self, outputs: Any) -> str | None:
        """After a module (or ``Predict``) ran."""
        return None

    def lm_start_status_message(self, instance: Any, inputs: dict[str, Any]) -> str | None:
        """Before an LM call."""
        return None

    def lm_end_status_message(self, outputs: Any) -> str | None:
        """After an LM call."""
        return None


class StatusStreamingCallback(BaseCallback):
    """Turns callback hooks into status messages on the current stream (program thread)."""

    def __init__(self, provider: StatusMessageProvider | None = None) -> None:
        self.status_message_provider = provider or StatusMessageProvider()

    def _send(self, text: str | None) -> None:
        session = STREAM_SESSION.get()
        if session is not None and text:
            session.put(StatusMessage(text))

    def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        if getattr(instance, "name", None) != "finish":
            self._send(self.status_message_provider.tool_start_status_message(instance, inputs))

    def on_tool_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        if outputs != "Completed.":
            self._send(self.status_message_provider.tool_end_status_message(outputs))

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._send(self.status_message_provider.lm_start_status_message(instance, inputs))

    def on_lm_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        self._send(self.status_message_provider.lm_end_status_message(outputs))

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._send(self.status_message_provider.module_start_status_message(instance, inputs))

    def on_module_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        self._send(self.status_message_provider.module_end_status_message(outputs))
