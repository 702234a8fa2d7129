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
    A turn with no content is left out."""
    messages: list[dict[str, Any]] = []
    for entry in getattr(history, "messages", None) or ():
        has_inputs = any(field in entry for field in signature.input_fields)
        user = adapter.format_user_message_content(signature, entry, main_request=has_inputs)
        if user:
            messages.append({"role": "user", "content": user})
        reply = adapter.format_assistant_message_content(signature, entry)
        if reply:
            messages.append({"role": "assistant", "content": reply})
    return messages


def _signature_without(signature: Any, name: str) -> Any:
    try:
        bare = _without.get(signature)
    except TypeError:  # not weak-referenceable or hashable: build it each time
        return signature.delete(name)
    if bare is None:
        bare = signature.delete(name)
        _without[signature] = bare
    return bare
