"""DSPy's ``dspy.utils.callback_context`` path: carry the callback parent id into workers.

A function handed to a thread pool runs outside the caller's context, so
callbacks would see no parent call. :func:`bind_active_call_id` captures the
caller's ``ACTIVE_CALL_ID`` now and sets it around each later call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from dspex.actors._callbacks import ACTIVE_CALL_ID

__all__ = ["ACTIVE_CALL_ID", "bind_active_call_id"]

F = TypeVar("F", bound=Callable[..., Any])


def bind_active_call_id(fn: F) -> F:
    """``fn`` wrapped to run with the ``ACTIVE_CALL_ID`` current at wrapping time.

    The previous value is restored after each call, also when ``fn`` raises.
    """
    parent = ACTIVE_CALL_ID.get()

    @functools.wraps(fn)
    def bound(*args: Any, **kwargs: Any) -> Any:
        token = ACTIVE_CALL_ID.set(parent)
        try:
            return fn(*args, **kwargs)
        finally:
            ACTIVE_CALL_ID.reset(token)

    return bound  # type: ignore[return-value]


_bind_active_call_id = bind_active_call_id  # DSPy's (private) name for the same helper
