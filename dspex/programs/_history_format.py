"""Conversation history as chat turns: what an adapter sends for a ``History`` input.

DSPy 3.x lays a call whose signature has a ``History`` input out as: the
system message (for the whole signature), the demos, then each history
entry as a user turn (its input fields) and an assistant turn (its output
fields), then the current inputs, all written in the adapter's own format.
:func:`format_with_history` builds exactly that from an adapter's public
``format_*`` methods, so an adapter's ``format`` can hand such calls to it.

Importing this module does not import pydantic: a History field can only
exist once :mod:`dspex.programs._history` was imported, so that is checked
in ``sys.modules`` first.
"""

from __future__ import annotations

import json
import sys
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["find_history_field", "format_with_history", "history_turns"]

_HISTORY_MODULE = "dspex.programs._history"

# signature -> the same signature without its history field (built once each)
_without: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def find_history_field(signature: Any) -> str | None:
    """The name of ``signature``'s ``History``-typed input field, if it has one."""
    module = sys.modules.get(_HISTORY_MODULE)
    if module is None:
        return None
    history_type = module.History
    for name, field in signature.input_fields.items():
        if field.annotation is history_type:
            return str(name)
    return None


def format_with_history(
    adapter: Any, signature: Any, demos: Sequence[Any], inputs: Mapping[str, Any]
) -> list[dict[str, Any]] | None:
    """The messages for a call whose signature has a History input; None when it has none.

    ``adapter`` supplies the wording (``format_system_message``,
    ``format_demos``, ``format_user_message_content``,
    ``format_assistant_message_content``). A turn with no content is left out.
    """
    name = find_history_field(signature)
    if name is None:
        return None
    bare = _signature_without(signature, name)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": adapter.format_system_message(signature)}
    ]
    if demos:
        messages.extend(adapter.format_demos(signature, demos))
    # The adapter's hook (overridable, as in DSPy) writes the earlier turns; it may
    # remove the history entry from this copy of the inputs.
    remaining = dict(inputs)
    messages.extend(adapter.format_conversation_history(bare, name, remaining))
    current = {k: v for k, v in remaining.items() if k != name}
    content = adapter.format_user_message_content(bare, current, main_request=True)
    if content:
        messages.append({"role": "user", "content": content})
    return messages


def history_turns(adapter: Any, signature: Any, history: Any) -> list[dict[str, Any]]:
    """One user turn (input fields) and one assistant turn (output fields) per entry
    of ``history``, in ``adapter``'s format, for ``signature`` without its History field.
    A turn with no content is left out.

    An entry whose ``ToolCalls`` value carries ``tool_call_results`` also replays
    the results, as DSPy does: with native function calling, as the assistant's
    ``tool_calls`` and one ``tool`` message per result (only when every call has
    an id matching its result); otherwise as text, a user turn with a
    ``tool_call_results`` field after the assistant turn.
    """
    messages: list[dict[str, Any]] = []
    native = bool(getattr(adapter, "use_native_function_calling", False))
    for entry in getattr(history, "messages", None) or ():
        has_inputs = any(field in entry for field in signature.input_fields)
        user = adapter.format_user_message_content(signature, entry, main_request=has_inputs)
        if user:
            messages.append({"role": "user", "content": user})
        calls_field, calls = _tool_calls_in(entry)
        results = _results_of(calls)
        if native and calls is not None:
            messages.extend(_native_turns(adapter, signature, entry, calls, results))
            continue
        values = entry
        if calls_field is not None and results is not None:
            # the results go in their own turn, not inside the assistant's tool calls
            values = {**entry, calls_field: calls.model_copy(update={"tool_call_results": None})}
        reply = adapter.format_assistant_message_content(signature, values)
        if reply:
            messages.append({"role": "assistant", "content": reply})
        if results is not None:
            content = adapter.format_user_message_content(
                _results_signature(), {"tool_call_results": results}
            )
            messages.append({"role": "user", "content": content})
    return messages


def _tool_calls_in(entry: Mapping[str, Any]) -> tuple[str | None, Any]:
    """The first field of a history entry holding tool calls, and them as ``ToolCalls``."""
    if not any(isinstance(v, dict) or hasattr(v, "tool_calls") for v in entry.values()):
        return None, None  # the common case: no tool calls, and no pydantic import
    from dspex.programs._types._tool_calls import ToolCalls

    for name, value in entry.items():
        if isinstance(value, ToolCalls) or (isinstance(value, dict) and "tool_calls" in value):
            return str(name), ToolCalls.model_validate(value)
    return None, None


def _results_of(calls: Any) -> Any:
    if calls is None or calls.tool_call_results is None:
        return None
    from dspex.programs._types._tool_calls import ToolCallResults

    return ToolCallResults.model_validate(calls.tool_call_results)


def _native_turns(
    adapter: Any, signature: Any, entry: Mapping[str, Any], calls: Any, results: Any
) -> list[dict[str, Any]]:
    """The assistant turn (with native ``tool_calls``) and the ``tool`` result messages."""
    from dspex.programs._types._tool_calls import ToolCalls

    content_signature = signature
    for name, field in signature.output_fields.items():
        if field.annotation is ToolCalls or entry.get(name) is None:
            content_signature = content_signature.delete(name)
    content = (
        adapter.format_assistant_message_content(content_signature, entry)
        if content_signature.output_fields
        else ""
    )
    if results is not None:
        call_ids = [call.id for call in calls.tool_calls]
        result_ids = [result.call_id for result in results.tool_call_results]
        if call_ids != result_ids or not all(call_ids):
            results = None  # unmatched results cannot be replayed natively
    messages: list[dict[str, Any]] = []
    if content or results is not None:
        assistant: dict[str, Any] = {"role": "assistant", "content": content or None}
        if results is not None:
            assistant["tool_calls"] = [_openai_tool_call(call) for call in calls.tool_calls]
        messages.append(assistant)
    for result in results.tool_call_results if results is not None else ():
        messages.append(
            {
                "role": "tool",
                "tool_call_id": result.call_id,
                "name": result.name,
                "content": _result_text(result.value),
            }
        )
    return messages


def _openai_tool_call(call: Any) -> dict[str, Any]:
    from dspex.programs._adapters._values import to_jsonable

    arguments = json.dumps(to_jsonable(call.args), ensure_ascii=False)
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": arguments},
    }


def _result_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    from dspex.programs._adapters._values import to_jsonable

    return json.dumps(to_jsonable(value), ensure_ascii=False)


_RESULTS_SIGNATURE: list[Any] = []  # built on first use (it imports pydantic)


def _results_signature() -> Any:
    """The one-input signature a text replay of tool results is written with."""
    if not _RESULTS_SIGNATURE:
        from dspex.programs._fields import InputField
        from dspex.programs._signature import make_signature
        from dspex.programs._types._tool_calls import ToolCallResults

        _RESULTS_SIGNATURE.append(
            make_signature({"tool_call_results": (ToolCallResults, InputField())})
        )
    return _RESULTS_SIGNATURE[0]


def _signature_without(signature: Any, name: str) -> Any:
    try:
        bare = _without.get(signature)
    except TypeError:  # not weak-referenceable or hashable: build it each time
        return signature.delete(name)
    if bare is None:
        bare = signature.delete(name)
        _without[signature] = bare
    return bare
