"""StreamListener: catches one output field of one predictor in a streaming LM reply.

A listener sees the text of each LM call its predictor makes, piece by
piece, and yields :class:`StreamResponse` pieces of its field's value only:
the adapter's markup (ChatAdapter's ``[[ ## field ## ]]`` headers,
JSONAdapter's keys, XMLAdapter's tags) never reaches the consumer. It runs
in the consumer's thread (``streamify``'s iterator), never on the LM's loop.

How the value's end is found, per adapter:

- Chat: the next ``[[ ## name ## ]]`` header. Pieces that may be the start
  of one are held back until it is clear whether they are.
- XML: the field's closing tag, held back the same way.
- JSON: a scan of the value's JSON (strings, escapes, nesting): it ends at
  the ``,`` or ``}`` that closes it. A piece after which the value could be
  complete is held until the next piece says whether it is.

The last piece has ``is_last_chunk=True``. A whole reply arriving at once
(a cache hit) yields the whole value as one last piece.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any, Literal

from dspex.errors import UsageError
from dspex.programs._stream_messages import StreamResponse

__all__ = [
    "AdapterKind",
    "StreamListener",
    "adapter_kind",
    "find_predictor_for_stream_listeners",
]

AdapterKind = Literal["chat", "json", "xml"]
ADAPTER_NAMES: dict[str, AdapterKind] = {
    "ChatAdapter": "chat",
    "JSONAdapter": "json",
    "XMLAdapter": "xml",
}

_CHAT_HEADER = re.compile(r"\[\[ ## (\w+) ## \]\]")
_CHAT_OPEN = "[[ ## "
_CHAT_CLOSE = " ## ]]"


class StreamListener:
    """Streams ``signature_field_name`` of ``predict`` (found by field name if not given).

    ``allow_reuse=True`` lets the listener stream the field again each time
    the predictor is called within one program run (by default it stops
    after the first complete value).
    """

    def __init__(
        self,
        signature_field_name: str,
        predict: Any = None,
        predict_name: str | None = None,
        allow_reuse: bool = False,
    ) -> None:
        if not isinstance(signature_field_name, str) or not signature_field_name.isidentifier():
            raise UsageError(
                f"StreamListener(signature_field_name={signature_field_name!r}): name an "
                "output field of the predictor, e.g. 'answer'"
            )
        self.signature_field_name = signature_field_name
        self.predict = predict
        self.predict_name = predict_name
        self.allow_reuse = allow_reuse
        self._reset()

    def _reset(self) -> None:
        self.stream_start = False
        self.stream_end = False
        self.cache_hit = False
        self._seen = ""  # the current LM call's text so far, until the value starts
        self._pending: list[str] = []  # value pieces not yet yielded
        self._emitted = 0  # characters of the value yielded so far
        self._call: object = None
        self._json = _JsonScan()

    def fresh(self) -> StreamListener:
        """A copy with this listener's settings and a clean state (one per streamed call)."""
        return StreamListener(
            self.signature_field_name, self.predict, self.predict_name, self.allow_reuse
        )

    # -- DSPy's inspection helpers -------------------------------------------------

    def _could_form_end_identifier(self, text: str, adapter_name: str) -> bool:
        """Whether ``text`` may end in the beginning of the field's end marker."""
        kind = ADAPTER_NAMES.get(adapter_name)
        if kind is None:
            raise _unsupported(adapter_name)
        if kind == "json":
            stripped = text.rstrip()
            return stripped.endswith(('"', '",', '" ', '"}')) or "}" in stripped
        return self._hold_from(text, kind) < len(text)

    # -- receiving -----------------------------------------------------------------

    def receive(self, chunk: Any, adapter: Any = None) -> StreamResponse | None:
        """DSPy's entry: a chunk with ``choices[0].delta.content``; ``adapter`` an instance
        or class name (default ChatAdapter)."""
        try:
            text = chunk.choices[0].delta.content
        except (AttributeError, IndexError, TypeError):
            return None
        if not text:
            return None
        name = adapter if isinstance(adapter, str) else _adapter_name(adapter)
        return self.receive_text(text, name, getattr(chunk, "predict_id", None))

    def receive_text(
        self, text: str, adapter: AdapterKind | str, call: object = None
    ) -> StreamResponse | None:
        """Take one piece of LM text (from LM call ``call``); a StreamResponse or None."""
        kind = adapter if adapter in ("chat", "json", "xml") else ADAPTER_NAMES.get(adapter)
        if kind is None:
            raise _unsupported(str(adapter))
        if call != self._call:
            # A new LM call: whatever the last one streamed is over.
            if self.stream_start and not self.stream_end:
                self.stream_end = True
            if self.stream_end and self.allow_reuse:
                self._reset()
            self._call = call
            self._seen = ""
        if self.stream_end:
            return None
        if not self.stream_start:
            self._seen += text
            begun = self._find_start(kind)
            if begun is None:
                return None
            self.stream_start = True
            text = begun
        if self._emitted == 0 and not self._pending:
            text = text.lstrip()  # the value starts at its first non-blank character
            if not text:
                return None
        self._pending.append(text)
        return self._advance(kind)

    def finalize(self) -> StreamResponse | None:
        """At the end of the LM call or the program: yield what is still held back."""
        if self.stream_end or not self.stream_start:
            return None
        self.stream_end = True
        rest = "".join(self._pending).rstrip()
        self._pending = []
        if not rest:
            return None
        return self._response(rest, last=True)

    # -- internals -------------------------------------------------------------------

    def _start_identifier(self, kind: AdapterKind) -> str:
        name = self.signature_field_name
        if kind == "chat":
            return f"[[ ## {name} ## ]]"
        if kind == "xml":
            return f"<{name}>"
        return f'"{name}":'

    def _find_start(self, kind: AdapterKind) -> str | None:
        """The text after the field's start marker, once it has been seen."""
        marker = self._start_identifier(kind)
        at = self._seen.find(marker)
        if at < 0:
            return None
        rest = self._seen[at + len(marker) :]
        self._seen = ""
        return rest

    def _advance(self, kind: AdapterKind) -> StreamResponse | None:
        text = "".join(self._pending)
        if kind == "json":
            end = self._json.feed(text, self._json.scanned)
            if end is not None:
                return self._finish(text[:end].rstrip())
            if self._json.maybe_complete:
                # The value may be complete: hold the last piece until the next one tells.
                return self._flush(len(text) - len(self._pending[-1]))
            return self._flush(len(text))
        end_at = self._end_marker(text, kind)
        if end_at is not None:
            return self._finish(text[:end_at].rstrip())
        hold = self._hold_from(text, kind)
        # Whole pieces only: a piece holding the start of a possible marker waits entire.
        return self._flush(hold)

    def _end_marker(self, text: str, kind: AdapterKind) -> int | None:
        if kind == "chat":
            match = _CHAT_HEADER.search(text)
            return match.start() if match else None
        at = text.find(f"</{self.signature_field_name}>")
        return at if at >= 0 else None

    def _hold_from(self, text: str, kind: AdapterKind) -> int:
        """Where a possible (incomplete) end marker begins in ``text`` (len: none)."""
        opener = "[" if kind == "chat" else "<"
        at = text.find(opener)
        while at >= 0:
            tail = text[at:]
            if kind == "chat" and _chat_prefix(tail):
                return at
            if kind == "xml" and f"</{self.signature_field_name}>".startswith(tail):
                return at
            at = text.find(opener, at + 1)
        return len(text)

    def _flush(self, upto: int) -> StreamResponse | None:
        """Yield the whole pending pieces that end at or before ``upto``."""
        out: list[str] = []
        used = 0
        while self._pending and used + len(self._pending[0]) <= upto:
            piece = self._pending.pop(0)
            used += len(piece)
            out.append(piece)
        self._json.scanned = max(0, self._json.scanned - used)
        text = "".join(out)
        if not text:
            return None
        return self._response(text, last=False)

    def _finish(self, value_rest: str) -> StreamResponse:
        self._pending = []
        self.stream_end = True
        if self._emitted == 0:
            self.cache_hit = True  # the whole value arrived at once
        return self._response(value_rest, last=True)

    def _response(self, text: str, *, last: bool) -> StreamResponse:
        self._emitted += len(text)
        return StreamResponse(
            self.predict_name or "", self.signature_field_name, text, is_last_chunk=last
        )

    def __repr__(self) -> str:
        return (
            f"StreamListener({self.signature_field_name!r}, predict_name={self.predict_name!r}, "
            f"allow_reuse={self.allow_reuse})"
        )


def _chat_prefix(tail: str) -> bool:
    """Whether ``tail`` may be the beginning of a ``[[ ## name ## ]]`` header."""
    if len(tail) <= len(_CHAT_OPEN):
        return _CHAT_OPEN.startswith(tail)
    if not tail.startswith(_CHAT_OPEN):
        return False
    rest = tail[len(_CHAT_OPEN) :]
    word = re.match(r"\w*", rest)
    assert word is not None
    after = rest[word.end() :]
    return not after or (word.end() > 0 and _CHAT_CLOSE.startswith(after))


class _JsonScan:
    """Finds where one JSON value ends in text that grows; remembers its place."""

    __slots__ = ("depth", "escape", "in_string", "maybe_complete", "scanned", "started")

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escape = False
        self.started = False
        self.maybe_complete = False
        self.scanned = 0

    def feed(self, text: str, start: int) -> int | None:
        """Scan ``text`` from ``start``; the index of the value's end, if reached."""
        for i in range(start, len(text)):
            ch = text[i]
            if self.in_string:
                if self.escape:
                    self.escape = False
                elif ch == "\\":
                    self.escape = True
                elif ch == '"':
                    self.in_string = False
                    if self.depth == 0:
                        self.maybe_complete = True
                continue
            if ch.isspace():
                continue
            if self.depth == 0 and self.started and ch in ",}":
                self.scanned = len(text)
                return i
            self.started = True
            if ch == '"':
                self.in_string = True
                self.maybe_complete = False
            elif ch in "{[":
                self.depth += 1
                self.maybe_complete = False
            elif ch in "}]":
                self.depth -= 1
                self.maybe_complete = self.depth == 0
            else:  # a number, true, false or null: complete at any character
                self.maybe_complete = self.depth == 0
        self.scanned = len(text)
        return None


def _adapter_name(adapter: Any) -> str:
    """The streaming kind's class name for ``adapter`` (subclasses count as their base)."""
    if adapter is None:
        return "ChatAdapter"
    for cls in type(adapter).__mro__:
        if cls.__name__ in ("JSONAdapter", "XMLAdapter", "ChatAdapter"):
            return cls.__name__
    return type(adapter).__name__


def adapter_kind(adapter: Any) -> AdapterKind | None:
    """``"chat"``, ``"json"`` or ``"xml"`` for an adapter instance (None: not streamable)."""
    if adapter is None:
        return "chat"
    return ADAPTER_NAMES.get(_adapter_name(adapter))


def _unsupported(name: str) -> UsageError:
    return UsageError(
        f"streaming does not support the adapter {name}; use ChatAdapter, JSONAdapter or XMLAdapter"
    )


def find_predictor_for_stream_listeners(
    program: Any, stream_listeners: list[StreamListener]
) -> dict[int, list[StreamListener]]:
    """Attach each listener without a predictor to the one predictor with its field.

    Returns ``id(predictor) -> listeners``. A field found in several
    predictors, or in none, is an error naming it.
    """
    owners: dict[str, tuple[str, Any] | None] = {
        listener.signature_field_name: None for listener in stream_listeners if not listener.predict
    }
    for name, predictor in program.named_predictors():
        for field in predictor.signature.output_fields:
            if field not in owners:
                continue
            if owners[field] is not None:
                raise UsageError(
                    f"StreamListener(signature_field_name={field!r}): several predictors have "
                    "this output field; pass predict=<the predictor> (and predict_name=...)"
                )
            owners[field] = (name, predictor)
    by_predictor: dict[int, list[StreamListener]] = defaultdict(list)
    names = {id(p): n for n, p in program.named_predictors()}
    for listener in stream_listeners:
        if not listener.predict:
            owner = owners[listener.signature_field_name]
            if owner is None:
                raise UsageError(
                    f"StreamListener(signature_field_name={listener.signature_field_name!r}): "
                    "no predictor of the program has this output field; check the name or "
                    "pass predict=..."
                )
            listener.predict_name, listener.predict = owner
        elif listener.predict_name is None:
            listener.predict_name = names.get(id(listener.predict))
        by_predictor[id(listener.predict)].append(listener)
    return dict(by_predictor)
