"""Token usage per program call: ``track_usage()`` and ``Prediction.get_lm_usage()``.

DSPy's model: while a :class:`UsageTracker` is active (``with
track_usage() as tracker:``), every LM call that reached the provider (not
a cache hit) adds its token counts under the LM's model name, and
``tracker.get_total_tokens()`` sums them per model. With the
``track_usage=True`` setting, each top-level module call runs inside a
fresh tracker and its Prediction's ``get_lm_usage()`` returns the totals.

The active tracker is a context variable, so it travels into run actors and
Evaluate/Parallel workers with the caller's context; adding is thread-safe.

Two hooks connect it to calls (see :func:`note_usage` and
:func:`call_tracked`): the LM-call path reports each response, and the
module-call path wraps top-level calls when the setting is on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = [
    "UsageTracker",
    "call_tracked",
    "current_usage_tracker",
    "note_usage",
    "track_usage",
]

_active: ContextVar[UsageTracker | None] = ContextVar("dspex_usage_tracker", default=None)


class UsageTracker:
    """Token usage recorded per model name while active (see :func:`track_usage`)."""

    def __init__(self) -> None:
        self.usage_data: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def add_usage(self, lm: str, usage_entry: Mapping[str, Any]) -> None:
        """Record one call's usage under model ``lm`` (an empty entry is ignored)."""
        if not usage_entry:
            return
        with self._lock:
            self.usage_data.setdefault(lm, []).append(dict(usage_entry))

    def get_total_tokens(self) -> dict[str, dict[str, Any]]:
        """Per model, the sum of every recorded entry (nested dicts summed field by field)."""
        with self._lock:
            snapshot = {lm: list(entries) for lm, entries in self.usage_data.items()}
        totals: dict[str, dict[str, Any]] = {}
        for lm, entries in snapshot.items():
            total: dict[str, Any] = {}
            for entry in entries:
                total = _merge(total, entry)
            totals[lm] = total
        return totals

    def _absorb(self, other: UsageTracker) -> None:
        with other._lock:
            taken = {lm: list(entries) for lm, entries in other.usage_data.items()}
        with self._lock:
            for lm, entries in taken.items():
                self.usage_data.setdefault(lm, []).extend(entries)

    def __repr__(self) -> str:
        return f"UsageTracker({self.get_total_tokens()!r})"


def _merge(total: dict[str, Any], entry: Mapping[str, Any]) -> dict[str, Any]:
    """``total`` plus ``entry``: numbers add, dicts merge, anything else keeps the first value."""
    merged = dict(total)
    for key, value in entry.items():
        current = merged.get(key)
        if isinstance(value, Mapping) or isinstance(current, Mapping):
            merged[key] = _merge(dict(current or {}), value or {})
        elif current is None:
            if value is not None:
                merged[key] = value
        elif _countable(current) and _countable(value):
            merged[key] = current + value
    return merged


def _countable(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@contextmanager
def track_usage() -> Iterator[UsageTracker]:
    """Record LM usage inside the block: ``with track_usage() as t: ...; t.get_total_tokens()``.

    Nested blocks each see their own calls; on exit a nested tracker's
    entries are added to the enclosing one too.
    """
    parent = _active.get()
    tracker = UsageTracker()
    token = _active.set(tracker)
    try:
        yield tracker
    finally:
        _active.reset(token)
        if parent is not None:
            parent._absorb(tracker)


def current_usage_tracker() -> UsageTracker | None:
    """The tracker recording LM usage here, if any."""
    return _active.get()


def note_usage(lm: Any, response: Any) -> None:
    """Hook for the LM-call path: add ``response``'s usage to the active tracker.

    Cache hits cost nothing and are not counted (as in DSPy). Keys are the
    model that answered (a fallback's when one did), else the LM's ``model``;
    the entry holds prompt, completion and total tokens, and ``cost`` (USD)
    when the response has a known price. A model whose entries lack ``cost``
    has an unknown cost, never zero.
    """
    tracker = _active.get()
    if tracker is None or getattr(response, "cache_hit", False):
        return
    usage = getattr(response, "usage", None)
    if usage is None:
        return
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
    completion = int(getattr(usage, "completion_tokens", 0) or 0)
    if not prompt and not completion:
        return
    model = str(
        getattr(response, "answered_by", "")
        or getattr(lm, "model", None)
        or getattr(response, "model", "")
        or "unknown"
    )
    entry: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    cost = getattr(response, "cost", None)
    if isinstance(cost, int | float) and not isinstance(cost, bool):
        entry["cost"] = float(cost)
    tracker.add_usage(model, entry)


def call_tracked(call: Callable[[], Any]) -> Any:
    """Hook for the module-call path: run ``call()`` in a fresh tracker and attach the totals.

    For use when the ``track_usage`` setting is on and no tracker is active
    (the outermost module call); the totals go to the returned Prediction's
    ``set_lm_usage`` (also when it comes back as the first item of a tuple).
    """
    with track_usage() as tracker:
        output = call()
    totals = tracker.get_total_tokens()
    target = output[0] if isinstance(output, tuple) and output else output
    setter = getattr(target, "set_lm_usage", None)
    if callable(setter):
        setter(totals)
    return output
