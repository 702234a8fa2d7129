"""Per-module LM history: ``module.history`` lists the LM calls made under each module.

DSPy's model: every module whose ``forward`` is running when an LM call is
made gets the call's entry appended to its ``history`` (the same dict object
for all of them, to save memory), bounded by the ``max_history_size``
setting and skipped under ``disable_history``. The running modules are a
context variable, so they follow a run into its actor thread.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

from dspex.actors._telemetry_emitter import new_uuid
from dspex.programs._settings import current_settings

__all__ = ["calling", "enter_calling", "innermost_calling", "leave_calling", "record_lm_call"]

_callers: ContextVar[tuple[Any, ...]] = ContextVar("dspex_caller_modules", default=())


@contextmanager
def calling(module: Any) -> Iterator[None]:
    """Mark ``module`` as running for the body (its LM calls go to its history)."""
    token = _callers.set((*_callers.get(), module))
    try:
        yield
    finally:
        _callers.reset(token)


def enter_calling(module: Any) -> Token[tuple[Any, ...]]:
    """:func:`calling`'s entry, for a hot path that cannot afford a generator."""
    return _callers.set((*_callers.get(), module))


def leave_calling(token: Token[tuple[Any, ...]]) -> None:
    """:func:`calling`'s exit: the modules running before :func:`enter_calling`."""
    _callers.reset(token)


def innermost_calling() -> Any:
    """The module whose ``forward`` the current context runs innermost, or None."""
    callers = _callers.get()
    return callers[-1] if callers else None


def record_lm_call(
    lm: Any, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any], response: Any
) -> None:
    """Append one LM call's entry to the history of every module running here."""
    callers = _callers.get()
    if not callers:
        return
    settings = current_settings()
    limit = settings.get("max_history_size", 10_000)
    if not limit or settings.get("disable_history"):
        return
    usage = getattr(response, "usage", None)
    entry = {
        "prompt": None,
        "messages": list(messages),
        "kwargs": {k: v for k, v in params.items() if not str(k).startswith("api_")}
        if params
        else {},
        "response": response,
        "outputs": [c.text for c in getattr(response, "completions", ())],
        "usage": {
            "prompt_tokens": getattr(usage, "prompt_tokens", 0),
            "completion_tokens": getattr(usage, "completion_tokens", 0),
        },
        "cost": None,
        "timestamp": _now().isoformat(),
        "uuid": new_uuid(),
        "model": getattr(lm, "model", None),
        "response_model": getattr(response, "model", None),
        "model_type": getattr(lm, "model_type", "chat"),
    }
    if len(callers) == 1:  # the common case: one module (a Predict called at top level)
        _append(callers[0], entry, limit)
        return
    seen: set[int] = set()
    for module in callers:
        if id(module) in seen:  # a module calling itself recursively: one entry
            continue
        seen.add(id(module))
        _append(module, entry, limit)


_now = datetime.datetime.now


def _append(module: Any, entry: dict[str, Any], limit: int) -> None:
    history = module.__dict__.get("history")
    if history is None:
        history = module.__dict__.setdefault("history", [])
    while len(history) >= limit:
        del history[0]
    history.append(entry)
