"""Shared helpers for the adapter tests: golden prompt files and a scripted LM."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dspex.actors import Completion, LMResponse

GOLDEN = Path(__file__).resolve().parent / "golden"

_HEADER = re.compile(r"^>>> (system|user|assistant)\n", re.MULTILINE)


def load_golden(name: str) -> list[dict[str, str]]:
    """Messages from ``tests/golden/<name>.txt``.

    Each message starts with a ``>>> role`` line; its content is everything up
    to the newline before the next header (or the end of the file), so a
    content ending in a newline shows as a blank line before the next header.
    """
    text = (GOLDEN / f"{name}.txt").read_text(encoding="utf-8")
    parts = _HEADER.split(text)
    assert parts[0] == "", f"{name}.txt must start with a '>>> role' line"
    messages = []
    for role, body in zip(parts[1::2], parts[2::2], strict=True):
        assert body.endswith("\n"), f"{name}.txt: a message must end with a newline"
        messages.append({"role": role, "content": body[:-1]})
    return messages


def assert_messages_equal(actual: list[dict[str, Any]], expected: list[dict[str, str]]) -> None:
    """Compare message lists, pointing at the first differing message on failure."""
    assert [m["role"] for m in actual] == [m["role"] for m in expected]
    for index, (got, want) in enumerate(zip(actual, expected, strict=True)):
        assert got["content"] == want["content"], f"message {index} ({want['role']}) differs"


class ScriptedLM:
    """Serves the LM protocol from a script of replies, recording every call.

    A reply is a string (one completion), a list of strings (several), or an
    exception to raise.
    """

    model = "scripted/test"

    def __init__(self, *replies: str | list[str] | BaseException) -> None:
        self.kwargs: dict[str, Any] = {}
        self.replies = list(replies)
        self.calls: list[tuple[list[Mapping[str, Any]], dict[str, Any]]] = []

    def generate(self, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> Any:
        self.calls.append((list(messages), dict(params)))
        assert self.replies, "the scripted LM ran out of replies"
        reply = self.replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        texts = reply if isinstance(reply, list) else [reply]
        return LMResponse(tuple(Completion(text) for text in texts))
