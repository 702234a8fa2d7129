"""``asyncify``: call a program from async code (DSPy's ``dspy.asyncify``).

``asyncify(program)`` returns an async function; awaiting it runs
``program(*args, **kwargs)`` in one of dspex's async pool threads as one program run, so the
event loop stays free. The caller's ``dspex.context`` overrides travel into
the call. At most ``async_max_workers`` (a setting, default 8) such calls
run at once per event loop; the others wait their turn without a thread.

Unlike DSPy, cancelling the awaiting task also cancels the run: it stops at
its next LM call instead of running on unobserved.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from dspex.errors import UsageError
from dspex.programs._async_pool import in_thread
from dspex.programs._settings import current_settings

__all__ = ["asyncify"]

_DEFAULT_MAX_WORKERS = 8

# event loop -> (limit, semaphore): asyncio primitives belong to one loop each
_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[int, asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary()
)


def asyncify(program: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """An async function that runs ``program(*args, **kwargs)`` in a worker thread."""
    if not callable(program):
        raise UsageError(
            f"asyncify(program) needs a callable module, got {type(program).__name__}; "
            "e.g. asyncify(dspex.Predict('question -> answer'))"
        )

    async def run_async(*args: Any, **kwargs: Any) -> Any:
        async with _limiter():
            return await _run_in_thread(program, args, kwargs)

    return run_async


def _limiter() -> asyncio.Semaphore:
    """This loop's semaphore, sized by the ``async_max_workers`` setting."""
    limit = current_settings().get("async_max_workers")
    if limit is None:
        limit = _DEFAULT_MAX_WORKERS
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise UsageError(
            f"async_max_workers={limit!r}: must be an int >= 1 (how many asyncified calls "
            "run at once), e.g. dspex.configure(async_max_workers=8)"
        )
    loop = asyncio.get_running_loop()
    entry = _limiters.get(loop)
    if entry is None or entry[0] != limit:
        entry = (limit, asyncio.Semaphore(limit))
        _limiters[loop] = entry
    return entry[1]


async def _run_in_thread(program: Callable[..., Any], args: tuple[Any, ...], kwargs: Any) -> Any:
    """Run the call as a program run in a worker thread; cancel the run if the task is."""
    from dspex.actors._program_run import RunContext, current_run

    if current_run() is not None:  # already inside a run: execute inline in the worker
        return await in_thread(program, *args, **kwargs)

    from dspex.programs._runtime_access import current_runtime

    runtime = current_runtime()
    run = RunContext(label=f"asyncify:{_label(program)}", runtime=runtime)

    def call() -> Any:
        return program(*args, **kwargs)

    # in_thread copies the caller's contextvars (settings overrides) into the thread,
    # and runtime.run copies them on into the run actor.
    work = asyncio.ensure_future(in_thread(runtime.run, call, label=run.label, run=run))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        run.cancelled.set()  # the run stops at its next check; its thread then returns
        work.add_done_callback(_discard_result)
        raise


def _discard_result(future: asyncio.Future[Any]) -> None:
    """Consume the outcome of an abandoned call so asyncio does not log it as unretrieved."""
    if not future.cancelled():
        future.exception()


def _label(program: Any) -> str:
    name = getattr(program, "__name__", None)
    return name if isinstance(name, str) else type(program).__name__
