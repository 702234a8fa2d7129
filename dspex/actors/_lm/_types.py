"""The LM protocol: the one seam between programs and however an LM is reached.

Predict and the adapters speak only this: messages plus parameters in, an
:class:`LMResponse` with one or more completions out. ``dspex.testing.DummyLM``
serves it in-process; ``dspex.LM`` serves it through a supervised client actor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["Completion", "LMProtocol", "LMRequest", "LMResponse", "Message", "Usage"]

Message = Mapping[str, Any]
"""A chat message: ``{"role": "system" | "user" | "assistant", "content": str}``."""


@dataclass(frozen=True, slots=True)
class LMRequest:
    """One call to a model: the model id, the messages and the merged parameters.

    ``params`` holds provider-neutral options: ``temperature``, ``max_tokens``,
    ``n``, ``stop``, ``response_format`` (OpenAI's shape) and pass-through keys.
    """

    model: str
    messages: tuple[Message, ...]
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts for one call (zeros when the provider reports none)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )


@dataclass(frozen=True, slots=True)
class Completion:
    """One generated alternative: its text and why generation stopped.

    ``tool_calls`` holds the provider's native tool calls, each in OpenAI's
    shape (``{"id", "type": "function", "function": {"name", "arguments"}}``);
    ``reasoning_content`` a reasoning model's separate reasoning text (or the
    Responses API's reasoning summary); ``citations`` the provider's native
    citations of the documents sent (Anthropic's, each a dict such as
    ``{"type": "char_location", "cited_text", "document_index", ...}``).
    """

    text: str
    finish_reason: str | None = None
    tool_calls: tuple[Mapping[str, Any], ...] = ()
    reasoning_content: str | None = None
    citations: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class LMResponse:
    """What a model returned for one :class:`LMRequest`.

    ``model`` is the provider's name for the model that answered;
    ``answered_by`` the dspex model id whose client answered (with fallbacks,
    possibly not the one called); ``cost`` the call's price in USD (0 for a
    cache hit, None when the model's price is unknown).

    An embeddings call (``model_type="embeddings"``) has no completions and one
    vector per input in ``embeddings``, in input order.
    """

    completions: tuple[Completion, ...]
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    cache_hit: bool = False
    cost: float | None = None
    answered_by: str = ""
    embeddings: tuple[tuple[float, ...], ...] = ()

    @property
    def texts(self) -> list[str]:
        return [c.text for c in self.completions]


@runtime_checkable
class LMProtocol(Protocol):
    """What a program needs from a language model.

    ``generate`` merges ``params`` over the LM's own defaults (``kwargs``) and
    returns the completions. It is called from the program's thread and may
    block; it raises errors from the ``LMError`` tree.
    """

    model: str
    kwargs: Mapping[str, Any]

    def generate(self, messages: Sequence[Message], params: Mapping[str, Any]) -> LMResponse: ...
