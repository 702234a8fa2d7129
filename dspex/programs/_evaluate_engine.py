"""The engine under ``Evaluate``, ``Module.batch`` and ``Parallel``: one run per example.

:func:`execute` runs the examples with the shared fan-out engine
(``_fanout``) on a pool of its own and consumes the outcomes in the calling
thread, in completion order, which is where the journal and progress bar are
fed. Stopping (``max_errors``, Ctrl-C) cancels the running examples, stops
feeding the pool and closes it; Ctrl-C does not wait for the running ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dspex._record import Record
from dspex.actors._lm._budget import budget_error
from dspex.errors import UsageError
from dspex.programs._fanout import fan_out, fan_out_runtime, open_pool, spare_threads

__all__ = [
    "Outcome",
    "RunSummary",
    "call_each",
    "evaluate_one",
    "execute",
    "log_failure",
    "resolve_max_errors",
    "resolve_num_threads",
]

logger = logging.getLogger("dspex.programs")


class Outcome(Record):
    """What one example produced: prediction, raw score, score as float, error."""

    prediction: Any
    score: Any
    value: float
    error: BaseException | None


@dataclass(slots=True)
class RunSummary:
    """How a parallel run ended."""

    finished: int = 0
    errors: int = 0
    stopped_early: bool = False
    """``max_errors`` was reached before every example ran."""
    interrupted: bool = False
    """Ctrl-C (KeyboardInterrupt) stopped the run."""
    stopped_by: str | None = None
    """The budget that stopped the run (``"<scope>.<limit>"``), if one did."""


def resolve_num_threads(num_threads: int | None, settings: Any) -> int:
    """``num_threads`` or the ``num_threads`` setting, checked (an int >= 1)."""
    value = num_threads if num_threads is not None else settings.get("num_threads") or 8
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(
            f"num_threads={value!r}: must be an int >= 1 (the number of examples run at "
            "once), e.g. num_threads=16"
        )
    return value


def resolve_max_errors(max_errors: float | None, settings: Any) -> float:
    """``max_errors`` or the ``max_errors`` setting, checked (a number >= 0)."""
    value = max_errors if max_errors is not None else settings.get("max_errors")
    if value is None:
        return float("inf")
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise UsageError(
            f"max_errors={value!r}: must be a number >= 0 (stop after that many failed "
            "examples), e.g. max_errors=10, or float('inf') to never stop"
        )
    return value


def execute(
    body: Callable[[Any], Outcome],
    items: Sequence[tuple[int, Any]],
    *,
    num_threads: int,
    timeout: float | None,
    max_errors: float,
    on_outcome: Callable[[int, Any, Outcome], None],
    provide_traceback: bool = False,
    label: str = "evaluate",
) -> RunSummary:
    """Run ``body(example)`` for each ``(index, example)``; feed ``on_outcome`` as they finish.

    ``body`` catches its own exceptions into ``Outcome.error`` (a
    ``SystemExit`` & co escaping it is that example's failure too).
    ``timeout`` is each example's run deadline. ``on_outcome`` runs in the
    calling thread; Ctrl-C never cuts it in half. Returns how the run ended;
    never raises for a failing example, ``max_errors`` or Ctrl-C.
    """
    summary = RunSummary()
    if not items:
        return summary
    runtime = fan_out_runtime()
    size = max(1, min(num_threads, len(items)))
    burst = min(spare_threads(runtime), len(items) - size)
    try:
        with fan_out(
            body,
            items,
            pool=lambda: open_pool(runtime, size, burst, label),
            num_threads=size,
            label=label,
            runtime=runtime,
            timeout=timeout,
            error_of=_error_of,
            contain=_contained,
        ) as flow:
            for result in flow:
                outcome = result.value if result.ok else Outcome(None, None, 0.0, result.error)
                index, example = result.item
                spent = budget_error(outcome.error)
                if spent is not None:  # not this example's failure: it never ran
                    summary.stopped_early = True
                    summary.stopped_by = f"{spent.scope}.{spent.budget}"
                    logger.warning(
                        "%s: %s; returning the %d finished so far", label, spent, summary.finished
                    )
                    break
                with flow.critical():
                    summary.finished += 1
                    on_outcome(index, example, outcome)
                if outcome.error is not None:
                    summary.errors += 1
                    log_failure(label, index, outcome.error, provide_traceback)
                    if summary.errors >= max_errors and summary.finished < len(items):
                        summary.stopped_early = True
                        logger.warning(
                            "%s: stopping after %d failed examples (max_errors=%s); "
                            "returning the %d finished so far",
                            label,
                            summary.errors,
                            max_errors,
                            summary.finished,
                        )
                        break
    except KeyboardInterrupt:
        summary.interrupted = True
        logger.warning(
            "%s interrupted: %d examples finished before Ctrl-C", label, summary.finished
        )
    return summary


def call_each(
    call: Callable[[Any], Any],
    items: Sequence[Any],
    *,
    num_threads: int,
    max_errors: float,
    timeout: float | None,
    provide_traceback: bool,
    show_progress: bool,
    label: str,
) -> tuple[list[Any], dict[int, BaseException]]:
    """``call(item)`` for each item (``batch``, ``Parallel``): values in input order, failures.

    A failed or unrun item's value is None; the failures map index to error.
    Reaching ``max_errors`` stops early; Ctrl-C raises ``KeyboardInterrupt``.
    """
    from dspex.programs._evaluate_progress import Progress

    results: list[Any] = [None] * len(items)
    failed: dict[int, BaseException] = {}
    progress = Progress(len(items), enabled=show_progress, scored=False)

    def body(item: Any) -> Outcome:
        try:
            return Outcome(call(item), None, 0.0, None)
        except Exception as exc:
            return Outcome(None, None, 0.0, exc)

    def record(index: int, item: Any, outcome: Outcome) -> None:
        if outcome.error is None:
            results[index] = outcome.prediction
        else:
            failed[index] = outcome.error
        progress.add()

    try:
        summary = execute(
            body,
            list(enumerate(items)),
            num_threads=num_threads,
            timeout=timeout,
            max_errors=max_errors,
            on_outcome=record,
            provide_traceback=provide_traceback,
            label=label,
        )
    finally:
        progress.close()
    if summary.interrupted:
        raise KeyboardInterrupt
    return results, failed


def evaluate_one(program: Any, metric: Callable[..., Any], example: Any) -> Outcome:
    """Evaluate's unit: run ``program`` on ``example`` and score it (any thread, any process)."""
    try:
        prediction = program(**example.inputs())
    except Exception as exc:
        return Outcome(None, None, 0.0, exc)
    try:
        score = metric(example, prediction)
        return Outcome(prediction, score, float(score), None)
    except Exception as exc:
        return Outcome(prediction, None, 0.0, _metric_error(metric, exc))


def _metric_error(metric: Any, exc: Exception) -> Exception:
    if isinstance(exc, TypeError) and "float()" in str(exc):
        name = getattr(metric, "__name__", type(metric).__name__)
        error = UsageError(
            f"metric {name} returned a value that is not a number ({exc}); return a bool, "
            "an int/float, or a Prediction with a score field"
        )
        error.__cause__ = exc
        return error
    return exc


def _error_of(outcome: Outcome) -> BaseException | None:
    return outcome.error


def _contained(error: BaseException) -> Outcome:
    return Outcome(None, None, 0.0, error)


def log_failure(label: str, index: int, error: BaseException, traceback: bool) -> None:
    if traceback:
        logger.error("%s: example %d failed: %r", label, index, error, exc_info=error)
    else:
        logger.error(
            "%s: example %d failed: %s: %s (set provide_traceback=True for the traceback)",
            label,
            index,
            type(error).__name__,
            error,
        )
