"""OpenAI-shaped chat completions (objects or dicts) read as dspex's :class:`LMResponse`.

Used where an LM written for DSPy returns what the OpenAI SDK or litellm would:
``BaseLM.forward`` and a ``dspex.LM`` subclass overriding ``forward`` or ``__call__``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dspex.actors._lm._types import Completion, LMResponse, Usage
from dspex.errors import UsageError

__all__ = ["get_field", "outputs_to_lm_response", "response_to_lm_response", "usage_dict"]


def get_field(obj: Any, name: str, default: Any = None) -> Any:
    """``obj.name`` or ``obj[name]``: provider responses come as objects or dicts."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _usage_of(response: Any) -> Usage:
    usage = get_field(response, "usage")
    if usage is None:
        return Usage()
    prompt = get_field(usage, "prompt_tokens", 0) or 0
    completion = get_field(usage, "completion_tokens", 0) or 0
    return Usage(int(prompt), int(completion))


def usage_dict(response: Any) -> dict[str, Any]:
    usage = get_field(response, "usage")
    if usage is None:
        return {}
    if isinstance(usage, Mapping):
        return dict(usage)
    dump = getattr(usage, "model_dump", None)
    if callable(dump):
        return dict(dump())
    return {k: v for k, v in vars(usage).items() if not k.startswith("_")}


def response_to_lm_response(response: Any, model: str) -> LMResponse:
    """An OpenAI-shaped chat completion as dspex's :class:`LMResponse`."""
    if isinstance(response, LMResponse):
        return response
    choices = get_field(response, "choices")
    if choices is None:
        raise UsageError(
            f"forward() returned {type(response).__name__}, not an OpenAI-shaped chat completion; "
            "return an object or dict with choices[i].message.content (and usage, model)"
        )
    completions = []
    for choice in choices:
        message = get_field(choice, "message")
        content = (
            get_field(message, "content") if message is not None else get_field(choice, "text")
        )
        calls = get_field(message, "tool_calls") if message is not None else None
        reasoning = get_field(message, "reasoning_content") if message is not None else None
        completions.append(
            Completion(
                content or "",
                get_field(choice, "finish_reason"),
                tuple(_call_dict(c) for c in calls or ()),
                reasoning if isinstance(reasoning, str) and reasoning else None,
            )
        )
    return LMResponse(
        completions=tuple(completions),
        usage=_usage_of(response),
        model=str(get_field(response, "model") or model),
        cache_hit=bool(get_field(response, "cache_hit", False)),
    )


def _call_dict(call: Any) -> dict[str, Any]:
    """A provider tool call (an SDK object or a dict) in OpenAI's dict shape."""
    if isinstance(call, Mapping):
        return dict(call)
    function = get_field(call, "function")
    return {
        "id": get_field(call, "id"),
        "type": get_field(call, "type", "function"),
        "function": {
            "name": get_field(function, "name"),
            "arguments": get_field(function, "arguments"),
        },
    }


def outputs_to_lm_response(outputs: Any, model: str) -> LMResponse:
    """DSPy's ``lm(...)`` return value (texts, or dicts with ``text``) as an LMResponse."""
    if isinstance(outputs, LMResponse):
        return outputs
    if isinstance(outputs, str | Mapping):
        outputs = [outputs]
    completions = []
    for output in outputs:
        text = output.get("text") if isinstance(output, Mapping) else output
        completions.append(Completion("" if text is None else str(text), None))
    return LMResponse(completions=tuple(completions), model=model)
