"""``History``: the conversation-history input type (DSPy's ``dspy.History``).

Declare ``history: dspex.History = dspex.InputField()`` in a signature and
pass ``History(messages=[...])``, one dict per earlier turn keyed by the
signature's own field names (``{"question": ..., "answer": ...}``). This
module defines the type only (it imports pydantic, so it loads on first
use); :mod:`dspex.programs._history_format` turns a History into chat turns.
"""

from __future__ import annotations

from typing import Any

import pydantic

__all__ = ["History"]


class History(pydantic.BaseModel):
    """Earlier turns of a conversation: ``History(messages=[{"question": ..., "answer": ...}])``.

    Frozen (a History value is not reassigned), but ``messages`` is a plain
    list, so a chat loop may ``history.messages.append({...})`` between calls.
    """

    messages: list[dict[str, Any]]

    model_config = pydantic.ConfigDict(
        frozen=True,
        str_strip_whitespace=True,
        validate_assignment=True,
        extra="forbid",
    )

    def with_messages(self, messages: list[dict[str, Any]]) -> History:
        """A new History with ``messages`` appended after these."""
        return History(messages=[*self.messages, *messages])
