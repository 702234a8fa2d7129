"""DSPy's callback hooks: the handler base class and the dispatcher that fires them.

A callback observes calls of modules, LMs, adapters, tools and evaluations:
each observed call gets a fresh ``call_id`` and fires ``on_<kind>_start``
before and ``on_<kind>_end`` after, in the thread that makes the call (a run
actor's thread inside a program run), with the exception when the call failed.

The active callbacks of a call are the registered ones followed by the
instance's own ``callbacks`` list. Registered callbacks have two layers kept
here, next to their one reader, so a call pays one context-variable read and
an empty check when there are none: the global layer
(``dspex.configure(callbacks=...)``) and the scoped layer
(``dspex.context(callbacks=...)``, a ``ContextVar``, so it travels into run
actors with the caller's copied context). The programs layer's settings
holder writes both.

This module lives in the actors layer so ``dspex.LM`` can fire LM hooks;
``dspex.utils.callback`` is its public face.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar, Token
from typing import Any, Final

from dspex.errors import ConfigError

__all__ = [
    "ACTIVE_CALL_ID",
    "BaseCallback",
    "active_callbacks",
    "ainvoke",
    "check_callbacks",
    "end_call",
    "invoke",
    "registered_callbacks",
    "reset_scoped_callbacks",
    "scope_callbacks",
    "set_global_callbacks",
    "start_call",
]

logger = logging.getLogger("dspex.callbacks")

ACTIVE_CALL_ID: ContextVar[str | None] = ContextVar("dspex_active_call_id", default=None)
"""The ``call_id`` of the innermost observed call running here (None outside any).

Read it in a start hook to find the caller's call id (the parent of the call
starting); it is set only while callbacks are registered.
"""

# Kinds of observed calls -> (start hook name, end hook name).
_HOOKS: Final[Mapping[str, tuple[str, str]]] = {
    kind: (f"on_{kind}_start", f"on_{kind}_end")
    for kind in ("module", "lm", "adapter_format", "adapter_parse", "tool", "evaluate", "compile")
}

# The global layer: the user's own list (not a copy, so appending to it
# registers more, as in DSPy). The scoped layer: None when no context sets it.
_global: Sequence[Any] = ()
_scoped: ContextVar[Sequence[Any] | None] = ContextVar("dspex_callbacks", default=None)


class BaseCallback:
    """Base class of callback handlers: subclass it and override the hooks you need.

    Start hooks get ``(call_id, instance, inputs)``: a unique id pairing the
    start with its end, the object called, and its arguments by name. End
    hooks get ``(call_id, outputs, exception)``: ``outputs`` is None and
    ``exception`` the error when the call failed. Hooks run in the calling
    thread, possibly several at once (evaluations run examples in parallel);
    an exception a hook raises is logged and the call goes on.
    """

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """A module is called; ``inputs`` is ``{"args": (...), "kwargs": {...}}``."""

    def on_module_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """A module call returned ``outputs`` (usually a Prediction) or raised."""

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """An LM is called; ``inputs`` holds ``prompt``, ``messages`` and ``kwargs``."""

    def on_lm_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """An LM call returned ``outputs`` (a list of completion texts) or raised."""

    def on_adapter_format_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """An adapter's ``format`` is called with ``signature``, ``demos`` and ``inputs``."""

    def on_adapter_format_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """``format`` returned ``outputs`` (the chat messages) or raised."""

    def on_adapter_parse_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """An adapter's ``parse`` is called with ``signature`` and ``completion`` (the text)."""

    def on_adapter_parse_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """``parse`` returned ``outputs`` (a dict of output values) or raised."""

    def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """A ``Tool`` is called (directly, or by ReAct); ``inputs`` holds its arguments."""

    def on_tool_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """A ``Tool`` call returned ``outputs`` (its result) or raised."""

    def on_evaluate_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """An ``Evaluate`` is called; ``inputs`` holds ``program``, ``metric``, ``devset``..."""

    def on_evaluate_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """An evaluation returned ``outputs`` (an EvaluationResult) or raised."""

    def on_compile_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """An optimizer's (``Teleprompter`` subclass's) ``compile`` is called."""

    def on_compile_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """An optimizer's ``compile`` returned the program or raised."""


def check_callbacks(value: Any, where: str) -> None:
    """Raise ConfigError unless ``value`` is None or a list/tuple of callback objects.

    ``where`` names the call for the message, e.g. ``"dspex.configure"``.
    """
    if value is None:
        return
    if not isinstance(value, list | tuple):
        raise ConfigError(
            f"{where}(callbacks={value!r}): pass a list of callback objects, "
            f"e.g. {where}(callbacks=[MyCallback()])",
            key="callbacks",
            value=value,
        )
    for item in value:
        if isinstance(item, type):
            raise ConfigError(
                f"{where}(callbacks=[..., {item.__name__}, ...]): pass an instance, "
                f"{item.__name__}(), not the class",
                key="callbacks",
                value=value,
            )


def set_global_callbacks(callbacks: Sequence[Any] | None) -> None:
    """Replace the global layer (``dspex.configure(callbacks=...)``; None: none)."""
    global _global
    _global = () if callbacks is None else callbacks


def scope_callbacks(callbacks: Sequence[Any] | None) -> Token[Sequence[Any] | None]:
    """Override the registered callbacks in this context (undo: :func:`reset_scoped_callbacks`)."""
    return _scoped.set(() if callbacks is None else callbacks)


def reset_scoped_callbacks(token: Token[Sequence[Any] | None]) -> None:
    """Undo the :func:`scope_callbacks` call that returned ``token``."""
    _scoped.reset(token)


def registered_callbacks() -> Sequence[Any]:
    """The callbacks registered for every call made here: scoped, else global."""
    scoped = _scoped.get()
    return _global if scoped is None else scoped


def active_callbacks(instance: Any) -> Sequence[Any]:
    """The callbacks observing a call of ``instance``: registered ones, then its own.

    Empty (falsy) when none are registered: callers test it and skip all hook work.
    """
    registered = _scoped.get()
    if registered is None:
        registered = _global
    own = getattr(instance, "callbacks", None)
    if own:
        return [*registered, *own] if registered else own
    return registered


def start_call(
    callbacks: Sequence[Any], kind: str, instance: Any, inputs: dict[str, Any]
) -> tuple[str, str | None]:
    """Fire the start hooks and make the new call active: ``(call_id, parent_id)``.

    Pair it with :func:`end_call` (in a ``finally``) in the same thread and context.
    """
    call_id = uuid.uuid4().hex
    hook = _HOOKS[kind][0]
    for callback in callbacks:
        try:
            getattr(callback, hook)(call_id=call_id, instance=instance, inputs=inputs)
        except Exception as exc:
            logger.warning("callback %r failed in %s: %r", callback, hook, exc)
    # The call becomes active only once its start hooks ran, so those hooks
    # read their parent's id from ACTIVE_CALL_ID.
    parent = ACTIVE_CALL_ID.get()
    ACTIVE_CALL_ID.set(call_id)
    return call_id, parent


def end_call(
    callbacks: Sequence[Any],
    kind: str,
    call: tuple[str, str | None],
    outputs: Any,
    exception: BaseException | None,
) -> None:
    """Restore the parent call as active and fire the end hooks of ``call``."""
    call_id, parent = call
    ACTIVE_CALL_ID.set(parent)
    hook = _HOOKS[kind][1]
    for callback in callbacks:
        try:
            getattr(callback, hook)(call_id=call_id, outputs=outputs, exception=exception)
        except Exception as exc:
            logger.warning("callback %r failed in %s: %r", callback, hook, exc)


def invoke(
    callbacks: Sequence[Any],
    kind: str,
    instance: Any,
    inputs: dict[str, Any],
    fn: Callable[..., Any],
    /,
    *args: Any,
    **kwargs: Any,
) -> Any:
    """``fn(*args, **kwargs)`` observed by ``callbacks`` as a ``kind`` call of ``instance``."""
    call = start_call(callbacks, kind, instance, inputs)
    outputs: Any = None
    error: BaseException | None = None
    try:
        outputs = fn(*args, **kwargs)
        return outputs
    except BaseException as exc:
        error = exc
        raise
    finally:
        end_call(callbacks, kind, call, outputs, error)


async def ainvoke(
    callbacks: Sequence[Any],
    kind: str,
    instance: Any,
    inputs: dict[str, Any],
    fn: Callable[..., Awaitable[Any]],
    /,
    *args: Any,
    **kwargs: Any,
) -> Any:
    """:func:`invoke` for a coroutine function (hooks run in the event loop's thread)."""
    call = start_call(callbacks, kind, instance, inputs)
    outputs: Any = None
    error: BaseException | None = None
    try:
        outputs = await fn(*args, **kwargs)
        return outputs
    except BaseException as exc:
        error = exc
        raise
    finally:
        end_call(callbacks, kind, call, outputs, error)
