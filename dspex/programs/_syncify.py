"""``syncify``: run an async module from synchronous code (DSPy's ``dspy.syncify``).

The module's ``aforward`` becomes its ``forward``: each call runs the
coroutine to completion on a fresh event loop. When the calling thread
already runs a loop (a notebook, an async server), the coroutine runs on a
loop in a helper thread instead, with the caller's context (settings
overrides, callbacks) copied in; DSPy patches the running loop with
``nest_asyncio`` there, dspex does not touch the caller's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
from collections.abc import Coroutine
from types import MethodType
from typing import Any

from dspex.errors import UsageError
from dspex.programs._module import Module

__all__ = ["SyncWrapper", "run_async", "syncify"]


def run_async(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` to completion from synchronous code and return its result."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # A loop runs in this thread: blocking it in run_until_complete would deadlock.
    context = contextvars.copy_context()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dspex-syncify") as pool:
        return pool.submit(context.run, asyncio.run, coro).result()


def syncify(program: Any, in_place: bool = True) -> Any:
    """A module whose synchronous call runs ``program.aforward``.

    ``in_place=True`` gives ``program`` a ``forward`` that runs its
    ``aforward`` (and returns it); ``in_place=False`` leaves ``program``
    alone and returns a wrapper module holding it as ``.program``.
    """
    if not callable(getattr(program, "aforward", None)):
        raise UsageError(
            f"syncify(program={type(program).__name__}): the module has no aforward(); "
            "define `async def aforward(self, ...)` on it"
        )
    if in_place:

        def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
            return run_async(self.aforward(*args, **kwargs))

        program.forward = MethodType(forward, program)
        return program
    return SyncWrapper(program)


class SyncWrapper(Module):
    """Runs the wrapped module's ``aforward`` synchronously (``syncify(..., in_place=False)``)."""

    def __init__(self, program: Any) -> None:
        super().__init__()
        self.program = program

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return run_async(self.program.aforward(*args, **kwargs))
