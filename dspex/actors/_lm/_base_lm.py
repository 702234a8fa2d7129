"""``BaseLM``: DSPy's base class for custom language models, driven by dspex.

A user subclasses it and implements ``forward(prompt=None, messages=None,
**kwargs)`` returning an OpenAI-shaped chat completion (an object or dict
with ``choices[i].message.content``, ``usage`` and ``model``), as in DSPy.
BaseLM serves dspex's LM protocol on top of it: ``generate(messages, params)``
calls ``forward`` and converts the reply to an :class:`LMResponse`, so
programs use such an LM as they use ``dspex.LM``. Callbacks, usage tracking
and the runtime's history (``inspect_history``) come from the programs
layer's LM-call path; ``lm.history`` is this instance's own bounded list of
DSPy-shaped entries.

``dspex.LM`` and ``DummyLM`` are registered as virtual subclasses, so
``isinstance(lm, BaseLM)`` holds for every LM dspex ships.
"""

from __future__ import annotations

import abc
import datetime
import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from dspex.actors._async_pool import in_thread
from dspex.actors._callbacks import active_callbacks, check_callbacks, invoke
from dspex.actors._lm._model import BUILTIN_LM_CLASS_PATH, LM_CLASS_STATE_KEY
from dspex.actors._lm._openai_shape import (
    get_field,
    outputs_to_lm_response,
    response_to_lm_response,
    usage_dict,
)
from dspex.actors._lm._types import LMResponse, Message
from dspex.actors._telemetry_emitter import history_disabled, new_uuid
from dspex.errors import UsageError

__all__ = ["BUILTIN_LM_CLASS_PATHS", "LM_CLASS_STATE_KEY", "MAX_HISTORY_SIZE", "BaseLM"]

MAX_HISTORY_SIZE = 10_000
"""Entries kept in one BaseLM's ``history`` (oldest dropped first), as in DSPy."""

BUILTIN_LM_CLASS_PATHS = frozenset(
    {BUILTIN_LM_CLASS_PATH, "dspex.LM", "dspex.actors._lm._model.LM", "dspex.clients.lm.LM"}
)
"""Class markers that load as ``dspex.LM`` without any opt-in (DSPy's first)."""


def _outputs(response: Any) -> list[Any]:
    """DSPy's per-choice outputs: the text, or a dict when tool calls or reasoning came too."""
    if isinstance(response, LMResponse):
        return response.texts
    outputs: list[Any] = []
    for choice in get_field(response, "choices") or ():
        message = get_field(choice, "message")
        text = (
            get_field(message, "content") if message is not None else get_field(choice, "text")
        ) or ""
        extra: dict[str, Any] = {}
        tool_calls = get_field(message, "tool_calls") if message is not None else None
        if tool_calls:
            extra["tool_calls"] = tool_calls
        reasoning = get_field(message, "reasoning_content") if message is not None else None
        if reasoning:
            extra["reasoning_content"] = reasoning
        outputs.append({"text": text, **extra} if extra else text)
    return outputs


class BaseLM(abc.ABC):  # noqa: B024  (no abstract method: forward() has DSPy's default error)
    """Base class for custom LMs: subclass it and implement ``forward``.

    ``forward(prompt=None, messages=None, **kwargs)`` returns an OpenAI-shaped
    chat completion; ``self.kwargs`` holds the default request parameters
    (``temperature``, ``max_tokens`` and any extra keyword). Then
    ``dspex.configure(lm=MyLM("my/model"))`` runs programs on it, and
    ``lm("hi")`` returns the completion texts. ``forward`` runs in the
    calling thread (a run actor's inside a program run).
    """

    def __init__(  # noqa: PLR0917  (DSPy's positional signature)
        self,
        model: str,
        model_type: str = "chat",
        temperature: float | None = None,
        max_tokens: int | None = None,
        cache: bool = True,
        callbacks: Sequence[Any] | None = None,
        num_retries: int = 3,
        **kwargs: Any,
    ) -> None:
        check_callbacks(callbacks, type(self).__name__)
        self.model = model
        self.model_type = model_type
        self.cache = cache
        self.callbacks: list[Any] = list(callbacks or [])
        self.num_retries = num_retries
        kwargs.pop(LM_CLASS_STATE_KEY, None)  # a marker from a state file is not a parameter
        self.kwargs: dict[str, Any] = {
            "temperature": temperature,
            "max_tokens": max_tokens,
            **kwargs,
        }
        self.history: list[dict[str, Any]] = []

    # -- what subclasses implement ----------------------------------------------------

    def forward(
        self, prompt: str | None = None, messages: Sequence[Message] | None = None, **kwargs: Any
    ) -> Any:
        """Call the model; return an OpenAI-shaped chat completion."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement forward(prompt=None, messages=None, **kwargs) "
            "returning an OpenAI-shaped chat completion"
        )

    async def aforward(
        self, prompt: str | None = None, messages: Sequence[Message] | None = None, **kwargs: Any
    ) -> Any:
        """Async ``forward``; by default ``forward`` in a worker thread."""
        return await in_thread(self.forward, prompt, messages, **kwargs)

    # -- the LM protocol (how programs call it) ---------------------------------------

    def generate(self, messages: Sequence[Message], params: Mapping[str, Any]) -> LMResponse:
        """One request: ``forward(messages=..., **params)``, recorded in ``history``."""
        msgs = list(messages)
        if type(self).__call__ is not BaseLM.__call__:
            # A subclass that overrides __call__ (DSPy adapters call ``lm(messages=...)``)
            # is called the same way here; it returns the completion texts.
            return outputs_to_lm_response(self(messages=msgs, **params), self.model)
        response = self.forward(messages=msgs, **params)
        self._record(None, msgs, dict(params), response)
        return response_to_lm_response(response, self.model)

    # -- direct calls, DSPy-style -------------------------------------------------------

    def __call__(
        self, prompt: str | None = None, messages: Sequence[Message] | None = None, **kwargs: Any
    ) -> list[Any]:
        """``lm("hi")`` or ``lm(messages=[...])``: the completion texts (dicts with tool calls)."""
        callbacks = active_callbacks(self)
        if not callbacks:
            return self._direct(prompt, messages, kwargs)
        inputs = {"prompt": prompt, "messages": messages, "kwargs": kwargs}
        outputs: list[Any] = invoke(
            callbacks, "lm", self, inputs, self._direct, prompt, messages, kwargs
        )
        return outputs

    async def acall(
        self, prompt: str | None = None, messages: Sequence[Message] | None = None, **kwargs: Any
    ) -> list[Any]:
        """Async direct call (``aforward``)."""
        response = await self.aforward(prompt=prompt, messages=messages, **kwargs)
        self._record(prompt, messages, kwargs, response)
        return _outputs(response)

    def _direct(
        self, prompt: str | None, messages: Sequence[Message] | None, kwargs: dict[str, Any]
    ) -> list[Any]:
        response = self.forward(prompt=prompt, messages=messages, **kwargs)
        self._record(prompt, messages, kwargs, response)
        return _outputs(response)

    # -- history ----------------------------------------------------------------------

    def _record(
        self,
        prompt: str | None,
        messages: Sequence[Message] | None,
        kwargs: Mapping[str, Any],
        response: Any,
    ) -> None:
        if history_disabled():
            return
        self.update_history(
            {
                "prompt": prompt,
                "messages": list(messages) if messages is not None else None,
                # an api_* parameter (api_key, api_base) never reaches the history
                "kwargs": {k: v for k, v in kwargs.items() if not k.startswith("api_")},
                "response": response,
                "outputs": _outputs(response),
                "usage": usage_dict(response),
                "cost": None,
                "timestamp": datetime.datetime.now().isoformat(),
                "uuid": new_uuid(),
                "model": self.model,
                "response_model": get_field(response, "model"),
                "model_type": self.model_type,
            }
        )

    def update_history(self, entry: dict[str, Any]) -> None:
        """Append one call's entry to ``history`` (bounded by ``MAX_HISTORY_SIZE``)."""
        if len(self.history) >= MAX_HISTORY_SIZE:
            del self.history[0]
        self.history.append(entry)

    def inspect_history(self, n: int = 1) -> str:
        """Print (and return) this LM's last ``n`` calls."""
        lines = []
        for entry in self.history[-n:]:
            lines.append(f"[{entry['timestamp']}] {entry['model']}")
            for message in entry["messages"] or [{"role": "user", "content": entry["prompt"]}]:
                lines.append(f"{message.get('role', '?')}: {message.get('content')}")
            for output in entry["outputs"]:
                lines.append(f"response: {output}")
            lines.append("")
        text = "\n".join(lines)
        print(text)
        return text

    # -- capabilities (DSPy's properties; a subclass overrides what its model has) --

    @property
    def supports_function_calling(self) -> bool:
        return False

    @property
    def supports_reasoning(self) -> bool:
        return False

    @property
    def supports_response_schema(self) -> bool:
        return False

    @property
    def supported_params(self) -> set[str]:
        return set()

    # -- copies and state -------------------------------------------------------------

    def copy(self, **kwargs: Any) -> BaseLM:
        """A shallow copy with some attributes or request defaults changed; empty history."""
        import copy as copy_module

        new = copy_module.copy(self)
        new.history = []
        new.kwargs = dict(self.kwargs)
        for key, value in kwargs.items():
            if hasattr(self, key) and key != "kwargs":
                setattr(new, key, value)
            if key in self.kwargs or not hasattr(self, key):
                if value is None:
                    new.kwargs.pop(key, None)
                else:
                    new.kwargs[key] = value
        return new

    def dump_state(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this LM, with its class marker; no API key."""
        kwargs = {k: v for k, v in self.kwargs.items() if k not in ("api_key", LM_CLASS_STATE_KEY)}
        return {
            LM_CLASS_STATE_KEY: f"{type(self).__module__}.{type(self).__qualname__}",
            "model": self.model,
            "model_type": self.model_type,
            "cache": self.cache,
            "num_retries": self.num_retries,
            **kwargs,
        }

    @classmethod
    def load_state(cls, state: Mapping[str, Any]) -> BaseLM:
        """Rebuild an LM of this class from :meth:`dump_state`'s output."""
        values = dict(state)
        values.pop(LM_CLASS_STATE_KEY, None)
        return cls(**values)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r})"


def import_lm_class(path: str) -> type:
    """The class a state's ``LM_CLASS_STATE_KEY`` names (``module.Qual.Name``)."""
    parts = path.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name or module_name.startswith(f"{exc.name}."):
                continue
            raise
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError:
            continue
        if not isinstance(obj, type):
            raise UsageError(f"saved LM class {path!r} is not a class")
        return obj
    raise UsageError(f"saved LM class {path!r} cannot be imported; is its module installed?")


def _register_builtin() -> None:
    from dspex.actors._lm._model import LM

    BaseLM.register(LM)


_register_builtin()
