"""``Parallel.aforward``'s engine: the pairs as tasks on the caller's event loop.

Each pair is awaited through its module's ``acall`` (a ``dspex.LM`` call
inside answers on this loop, no thread per pair); a callable with no
``acall`` runs in dspex's async pool. A semaphore keeps at most
``num_threads`` pairs in flight, started in input order. A failure fails
only its pair; reaching ``max_errors`` (or a spent budget) cancels the pairs
still running and returns what finished, as the threaded engine does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from dspex.actors._lm._budget import budget_error
from dspex.errors import ProgramError
from dspex.programs._async_pool import in_thread
from dspex.programs._evaluate_engine import log_failure
from dspex.programs._example import Example

logger = logging.getLogger("dspex.programs")

__all__ = ["acall_pair", "run_pairs"]


def _arguments(example: Any, access_examples: bool) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``(args, kwargs)`` a pair's module is called with (``Parallel._call_pair``'s rule)."""
    if isinstance(example, Example):
        return ((), dict(example.inputs())) if access_examples else ((example,), {})
    if isinstance(example, Mapping):
        return (), dict(example)
    if isinstance(example, tuple):
        return example, {}
    return (example,), {}  # a list handed to a nested Parallel


async def acall_pair(pair: tuple[Any, Any], access_examples: bool) -> Any:
    """One pair's result, awaited: ``module.acall(...)``, or its call in the async pool."""
    module, example = pair
    args, kwargs = _arguments(example, access_examples)
    acall = getattr(module, "acall", None)
    if acall is None:
        return await in_thread(module, *args, **kwargs)
    return await acall(*args, **kwargs)


async def run_pairs(
    pairs: Sequence[tuple[Any, Any]],
    access_examples: bool,
    *,
    num_threads: int,
    max_errors: float,
    timeout: float | None,
    provide_traceback: bool,
    label: str = "parallel",
) -> tuple[list[Any], dict[int, BaseException]]:
    """Each pair's value in input order (None if it failed or never ran) and the failures."""
    results: list[Any] = [None] * len(pairs)
    failed: dict[int, BaseException] = {}
    if not pairs:
        return results, failed
    gate = asyncio.Semaphore(max(1, min(num_threads, len(pairs))))
    state = {"finished": 0, "errors": 0, "stopped": False}
    tasks: list[asyncio.Task[None]] = []

    def stop_rest() -> None:
        state["stopped"] = True
        current = asyncio.current_task()
        for task in tasks:
            if task is not current:
                task.cancel()

    async def one(index: int) -> None:
        async with gate:
            if state["stopped"]:
                return
            try:
                async with asyncio.timeout(timeout):
                    value = await acall_pair(pairs[index], access_examples)
            except TimeoutError as exc:
                error: Exception = ProgramError(
                    f"{label}[{index}] passed its deadline of {timeout} s; "
                    "raise Parallel(timeout=...) or make the program faster"
                )
                error.__cause__ = exc
            except Exception as exc:
                error = exc
            else:
                results[index] = value
                state["finished"] += 1
                return
            spent = budget_error(error)
            if spent is not None:  # not this pair's failure: it never ran
                logger.warning(
                    "%s: %s; returning the %d finished so far", label, spent, state["finished"]
                )
                stop_rest()
                return
            failed[index] = error
            state["finished"] += 1
            state["errors"] += 1
            log_failure(label, index, error, provide_traceback)
            if state["errors"] >= max_errors and state["finished"] < len(pairs):
                logger.warning(
                    "%s: stopping after %d failed examples (max_errors=%s); "
                    "returning the %d finished so far",
                    label,
                    state["errors"],
                    max_errors,
                    state["finished"],
                )
                stop_rest()

    tasks.extend(asyncio.create_task(one(i)) for i in range(len(pairs)))
    try:
        await asyncio.gather(*tasks, return_exceptions=True)
    except BaseException:  # the caller was cancelled: so are its pairs
        for task in tasks:
            task.cancel()
        raise
    return results, failed
