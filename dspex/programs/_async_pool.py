"""``in_thread`` for the programs layer: the actors' pool, bounded by ``async_max_workers``.

The pool itself is :mod:`dspex.actors._async_pool` (the LM layer uses it too);
here the limit is read from the settings in effect and checked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from dspex.actors._async_pool import pool_threads, submit
from dspex.programs._settings import worker_limit

__all__ = ["in_thread", "pool_threads", "worker_limit"]

T = TypeVar("T")


async def in_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in one of dspex's async worker threads, awaited here."""
    return await submit(fn, args, kwargs, worker_limit())
