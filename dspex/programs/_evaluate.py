"""``Evaluate`` (DSPy-compatible) and ``Module.batch``, on a WorkerPool, with a resumable journal.

``Evaluate(devset=..., metric=...)(program)`` runs ``program(**example.inputs())``
and ``metric(example, prediction)`` for every example, ``num_threads`` at a
time, and returns an :class:`EvaluationResult` whose ``score`` is a percent.
Differences from DSPy (see docs/evaluate.md): a failing example is kept with
its error; ``max_errors`` returns the partial result instead of raising
(Ctrl-C raises, as in DSPy, or returns it with ``on_interrupt="return"``);
``timeout`` is a per-example limit; ``journal=`` makes a run resumable after
a crash.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

from dspex.actors._lm._budget import Budget, budget_scope
from dspex.errors import UsageError
from dspex.programs._backend import Backend, check_backend, resolve_backend
from dspex.programs._callbacks import hooked
from dspex.programs._evaluate_journal import Journal, JournalEntry
from dspex.programs._evaluate_progress import Progress, progress_enabled
from dspex.programs._prediction import Prediction
from dspex.programs._settings import check_num_threads, current_settings

if TYPE_CHECKING:
    from dspex.programs._evaluate_engine import Outcome

__all__ = ["Evaluate", "EvaluationResult", "run_batch"]

logger = logging.getLogger("dspex.programs")

_UNSET: Final[Any] = object()
_DEPRECATED = ("return_all_scores", "return_outputs")
_IGNORED = ("straggler_limit", "callback_metadata")
_ON_INTERRUPT = ("raise", "return")

OnInterrupt = Literal["raise", "return"]


class EvaluationResult(Prediction):
    """What an evaluation returns: ``score`` (a percent) and ``results``.

    ``results`` is a list of ``(example, prediction, score)`` in devset order.
    Beyond DSPy's two fields: ``errors`` lists ``(index, exception)`` of failed
    examples, ``stopped_early`` says ``max_errors`` was reached, ``interrupted``
    that Ctrl-C stopped the run (both mean ``results`` holds only the examples
    that finished), and ``resumed`` counts results read back from a journal.
    ``stopped_by`` names the budget that stopped the run (``stopped_early``
    is then True too) and ``cost_usd`` is what its LM calls cost (None when
    a model's price is unknown; see docs/cost.md).
    """

    def __init__(
        self,
        score: float,
        results: list[tuple[Any, Any, Any]],
        *,
        errors: list[tuple[int, BaseException]] | None = None,
        stopped_early: bool = False,
        interrupted: bool = False,
        resumed: int = 0,
        stopped_by: str | None = None,
        cost_usd: float | None = None,
    ) -> None:
        super().__init__(score=score, results=results)
        object.__setattr__(self, "_errors", list(errors or []))
        object.__setattr__(self, "_flags", (stopped_early, interrupted, resumed))
        object.__setattr__(self, "_spend", (stopped_by, cost_usd))

    @property
    def stopped_by(self) -> str | None:
        """The budget that stopped the run, e.g. ``"Evaluate.max_cost_usd"``; None if none."""
        return self._spend[0]  # type: ignore[no-any-return]

    @property
    def cost_usd(self) -> float | None:
        """USD the evaluation's LM calls cost (cache hits are free); None when unknown."""
        return self._spend[1]  # type: ignore[no-any-return]

    @property
    def errors(self) -> list[tuple[int, BaseException]]:
        """``(devset index, exception)`` for every example that failed, by index."""
        return self._errors  # type: ignore[no-any-return]

    @property
    def stopped_early(self) -> bool:
        """True when ``max_errors`` stopped the run before every example ran."""
        return bool(self._flags[0])

    @property
    def interrupted(self) -> bool:
        """True when Ctrl-C stopped the run; the journal keeps what finished."""
        return bool(self._flags[1])

    @property
    def resumed(self) -> int:
        """How many results were read back from the journal instead of run."""
        return int(self._flags[2])

    def __repr__(self) -> str:
        # DSPy's repr, plus what dspex knows beyond it, shown only when it happened
        extra = f", errors={len(self.errors)}" if self.errors else ""
        extra += "".join(
            f", {name}=True"
            for name, flag in (
                ("stopped_early", self.stopped_early),
                ("interrupted", self.interrupted),
            )
            if flag
        )
        if self.stopped_by is not None:
            extra += f", stopped_by={self.stopped_by!r}"
        return (
            f"EvaluationResult(score={self.score}, results=<list of {len(self.results)} "
            f"results>{extra})"
        )

    __str__ = __repr__


class Evaluate:
    """Evaluate a program on a devset with a metric, in parallel (``dspy.Evaluate``).

    ::

        evaluate = Evaluate(devset=devset, metric=answer_exact_match, num_threads=16,
                            journal="runs/dev.jsonl")
        result = evaluate(program)       # EvaluationResult(score=73.5, results=[...])

    ``display_progress`` None (default) shows the bar when stderr is a terminal.
    ``timeout`` (seconds) limits each example; ``failure_score`` is what a
    failed example scores; ``max_errors`` (default: the ``max_errors`` setting)
    stops the run once that many examples failed and returns what finished.
    Ctrl-C cancels the running examples, keeps what finished in the journal
    and raises ``KeyboardInterrupt``; ``on_interrupt="return"`` returns the
    partial result (``interrupted=True``) instead. ``backend="ray"`` runs the
    examples (program and metric) on Ray actors over a cluster; the journal,
    progress and ``max_errors`` stay here (see docs/distributed.md; default:
    the ``runtime.backend`` setting). Every argument but
    ``devset`` may be overridden per call.
    """

    _dspex_callback_kind: ClassVar[str] = "evaluate"  # see _callbacks.CALLBACK_KIND

    def __init__(
        self,
        *,
        devset: Sequence[Any],
        metric: Callable[..., Any] | None = None,
        num_threads: int | None = None,
        display_progress: bool | None = None,
        display_table: bool | int = False,
        max_errors: float | None = None,
        failure_score: float = 0.0,
        timeout: float | None = None,
        journal: str | Path | None = None,
        provide_traceback: bool | None = None,
        save_as_csv: str | None = None,
        save_as_json: str | None = None,
        on_interrupt: OnInterrupt = "raise",
        max_cost_usd: float | None = None,
        max_tokens: int | None = None,
        backend: Backend | None = None,
        **kwargs: Any,
    ) -> None:
        _check_kwargs("Evaluate", kwargs)
        self.backend = check_backend(backend, "Evaluate")
        Budget(max_cost_usd=max_cost_usd, max_tokens=max_tokens, scope="Evaluate")  # checks
        self.max_cost_usd = max_cost_usd
        self.max_tokens = max_tokens
        if num_threads is not None:
            check_num_threads(num_threads, "Evaluate")
        self.devset = devset
        self.metric = metric
        self.num_threads = num_threads
        self.display_progress = display_progress
        self.display_table = display_table
        self.max_errors = max_errors
        self.failure_score = failure_score
        self.timeout = _check_timeout(timeout)
        self.journal = journal
        self.provide_traceback = provide_traceback
        self.save_as_csv = save_as_csv
        self.save_as_json = save_as_json
        self.on_interrupt = _check_on_interrupt(on_interrupt)

    @hooked("evaluate")  # on_evaluate_start/end, as DSPy's Evaluate fires them
    def __call__(  # noqa: PLR0917  (DSPy's positional signature)
        self,
        program: Any,
        metric: Callable[..., Any] | None = None,
        devset: Sequence[Any] | None = None,
        num_threads: int | None = None,
        display_progress: bool | None = None,
        display_table: bool | int | None = None,
        callback_metadata: Mapping[str, Any] | None = None,
        save_as_csv: str | None = None,
        save_as_json: str | None = None,
        *,
        timeout: Any = _UNSET,
        max_errors: float | None = None,
        failure_score: float | None = None,
        journal: Any = _UNSET,
        provide_traceback: bool | None = None,
        on_interrupt: OnInterrupt | None = None,
        max_cost_usd: float | None = None,
        max_tokens: int | None = None,
        backend: Backend | None = None,
        **kwargs: Any,
    ) -> EvaluationResult:
        """Evaluate ``program``; arguments given here override the constructor's."""
        _check_kwargs("Evaluate.__call__", kwargs)
        chosen = check_backend(backend, "Evaluate.__call__") or self.backend
        from dspex.programs._evaluate_engine import resolve_max_errors, resolve_num_threads

        metric = metric if metric is not None else self.metric
        devset = devset if devset is not None else self.devset
        settings = current_settings()
        threads = resolve_num_threads(
            num_threads if num_threads is not None else self.num_threads, settings
        )
        limit = resolve_max_errors(
            max_errors if max_errors is not None else self.max_errors, settings
        )
        fail_score = failure_score if failure_score is not None else self.failure_score
        per_example = self.timeout if timeout is _UNSET else _check_timeout(timeout)
        journal_path = self.journal if journal is _UNSET else journal
        traceback = _traceback_flag(provide_traceback, self.provide_traceback, settings)
        show = display_progress if display_progress is not None else self.display_progress
        table = display_table if display_table is not None else self.display_table
        interrupt = self.on_interrupt if on_interrupt is None else _check_on_interrupt(on_interrupt)
        if callback_metadata:
            logger.debug("Evaluate called with callback metadata %r", callback_metadata)
        if not callable(program):
            raise UsageError(
                f"Evaluate(program={program!r}): the program must be callable, e.g. a "
                "dspex.Module or dspex.Predict"
            )
        if metric is None or not callable(metric):
            raise UsageError(
                f"Evaluate(metric={metric!r}): a metric is required; pass metric=fn where "
                "fn(example, prediction) returns a bool or a number, e.g. answer_exact_match"
            )
        examples = _check_devset(devset, "devset")

        # Every call of this evaluation is counted (and, with limits, refused once spent).
        budget = Budget(
            max_cost_usd=max_cost_usd if max_cost_usd is not None else self.max_cost_usd,
            max_tokens=max_tokens if max_tokens is not None else self.max_tokens,
            scope="Evaluate",
        )
        with budget_scope(budget):
            outcome = _evaluate(
                program,
                metric,
                examples,
                threads=threads,
                max_errors=limit,
                failure_score=fail_score,
                timeout=per_example,
                journal_path=journal_path,
                provide_traceback=traceback,
                show_progress=progress_enabled(show),
                backend=resolve_backend(chosen),
            )
        spend = budget.snapshot()
        object.__setattr__(outcome, "_spend", (outcome.stopped_by, spend["cost_usd"]))
        if outcome.interrupted and interrupt == "raise":
            # The journal is closed and flushed by now: a rerun resumes from it.
            raise KeyboardInterrupt
        results = outcome.results
        if table or save_as_csv or self.save_as_csv or save_as_json or self.save_as_json:
            from dspex.programs._evaluate_output import display_results, save_results

            name = getattr(metric, "__name__", type(metric).__name__)
            if table:
                display_results(results, name, table)
            save_results(
                results,
                name,
                csv_path=save_as_csv or self.save_as_csv,
                json_path=save_as_json or self.save_as_json,
            )
        return outcome


def _evaluate(
    program: Any,
    metric: Callable[..., Any],
    devset: list[Any],
    *,
    threads: int,
    max_errors: float,
    failure_score: float,
    timeout: float | None,
    journal_path: Any,
    provide_traceback: bool,
    show_progress: bool,
    backend: Backend = "local",
) -> EvaluationResult:
    from dspex.programs._evaluate_engine import evaluate_one, execute

    total = len(devset)
    slots: list[tuple[Any, Any, Any] | None] = [None] * total
    values: list[float] = [0.0] * total
    errors: dict[int, BaseException] = {}
    journal: Journal | None = None
    restored = 0
    if journal_path is not None:
        journal, entries = Journal.open(journal_path, devset)
        for index, entry in entries.items():
            if entry.error is None:  # failed examples run again on resume
                slots[index], values[index] = _restore(devset[index], entry, failure_score)
                restored += 1
        if entries:
            logger.info(
                "journal %s: %d of %d examples already done; running the other %d",
                journal.path,
                restored,
                total,
                total - restored,
            )
    todo = [(i, example) for i, example in enumerate(devset) if slots[i] is None]
    progress = Progress(
        total,
        enabled=show_progress,
        done=restored,
        score_sum=sum(values[i] for i in range(total) if slots[i] is not None),
    )

    if backend == "ray":
        from dspex.programs._ray._bodies import evaluate_body

        body: Callable[[Any], Outcome] = evaluate_body(program, metric)  # ships, or raises now
    else:
        body = functools.partial(evaluate_one, program, metric)

    def record(index: int, example: Any, outcome: Outcome) -> None:
        error = outcome.error
        if error is None:
            score, value = outcome.score, outcome.value
        else:
            score = value = failure_score
            errors[index] = error
        prediction = outcome.prediction if outcome.prediction is not None else Prediction()
        slots[index] = (example, prediction, score)
        values[index] = value
        if journal is not None:
            journal.append(index, score, outcome.prediction, error)
        progress.add(value)

    try:
        summary = execute(
            body,
            todo,
            num_threads=threads,
            timeout=timeout,
            max_errors=max_errors,
            on_outcome=record,
            provide_traceback=provide_traceback,
            label="evaluate",
        )
    finally:
        progress.close()
        if journal is not None:
            journal.close()

    results = [slot for slot in slots if slot is not None]
    done = len(results)
    score_sum = sum(values[i] for i in range(total) if slots[i] is not None)
    score = round(100 * score_sum / done, 2) if done else 0.0
    logger.info(
        "Average Metric: %s / %d (%s%%)",
        round(score_sum, 2),
        done,
        round(100 * score_sum / done, 1) if done else 0.0,
    )
    return EvaluationResult(
        score,
        results,
        errors=sorted(errors.items(), key=lambda item: item[0]),
        stopped_early=summary.stopped_early,
        interrupted=summary.interrupted,
        resumed=restored,
        stopped_by=summary.stopped_by,
    )


def _restore(example: Any, entry: JournalEntry, failure_score: float) -> tuple[Any, float]:
    """A journal entry back as a ``(example, Prediction, score)`` slot and its value."""
    prediction = Prediction(**entry.prediction) if entry.prediction else Prediction()
    score = entry.score
    try:
        value = float(score) if score is not None else failure_score
    except (TypeError, ValueError):
        value = failure_score
    return (example, prediction, score), value


def run_batch(
    program: Any,
    examples: Sequence[Any],
    *,
    num_threads: int | None = None,
    max_errors: float | None = None,
    return_failed_examples: bool = False,
    provide_traceback: bool | None = None,
    disable_progress_bar: bool = False,
    timeout: float | None = None,
    **kwargs: Any,
) -> Any:
    """``Module.batch``: ``program(**example.inputs())`` for each example, in parallel.

    Returns the predictions in input order (None for an example that failed or
    did not run); with ``return_failed_examples=True``, ``(results,
    failed_examples, exceptions)`` like DSPy. Reaching ``max_errors`` stops
    early and returns what finished; Ctrl-C stops and re-raises.
    """
    _check_kwargs("batch", kwargs)
    from dspex.programs._evaluate_engine import call_each, resolve_max_errors, resolve_num_threads

    settings = current_settings()
    items = _check_devset(examples, "examples", allow_dicts=True)

    def call(item: Any) -> Any:
        return program(**(item if isinstance(item, Mapping) else item.inputs()))

    results, failed = call_each(
        call,
        items,
        num_threads=resolve_num_threads(num_threads, settings),
        max_errors=resolve_max_errors(max_errors, settings),
        timeout=_check_timeout(timeout),
        provide_traceback=_traceback_flag(provide_traceback, None, settings),
        show_progress=progress_enabled(False if disable_progress_bar else None),
        label="batch",
    )
    if return_failed_examples:
        order = sorted(failed)
        return results, [items[i] for i in order], [failed[i] for i in order]
    return results


# -- argument checks ----------------------------------------------------------------


def _check_kwargs(where: str, kwargs: Mapping[str, Any]) -> None:
    for name in kwargs:
        if name in _DEPRECATED:
            warnings.warn(
                f"{where}({name}=...) is deprecated and ignored: the EvaluationResult always "
                "holds the score and every (example, prediction, score)",
                DeprecationWarning,
                stacklevel=3,
            )
        elif name not in _IGNORED:
            warnings.warn(
                f"{where}: ignoring unknown argument {name}={kwargs[name]!r}",
                UserWarning,
                stacklevel=3,
            )


def _check_on_interrupt(value: Any) -> OnInterrupt:
    if value not in _ON_INTERRUPT:
        raise UsageError(
            f"on_interrupt={value!r}: must be 'raise' (Ctrl-C raises KeyboardInterrupt, as "
            "in DSPy) or 'return' (return the partial result with interrupted=True)"
        )
    return value  # type: ignore[no-any-return]


def _check_timeout(timeout: Any) -> float | None:
    if timeout is None or timeout == 0:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
        raise UsageError(
            f"timeout={timeout!r}: must be a number of seconds > 0 per example, or None for "
            "no limit"
        )
    return float(timeout)


def _traceback_flag(given: bool | None, default: bool | None, settings: Any) -> bool:
    if given is not None:
        return bool(given)
    if default is not None:
        return bool(default)
    return bool(settings.get("provide_traceback", False))


def _check_devset(devset: Any, name: str, *, allow_dicts: bool = False) -> list[Any]:
    if devset is None or isinstance(devset, str | bytes | Mapping):
        raise UsageError(
            f"{name}={devset!r}: pass a list of dspex.Example with inputs marked, e.g. "
            "[Example(question=..., answer=...).with_inputs('question')]"
        )
    try:
        examples = list(devset)
    except TypeError:
        raise UsageError(f"{name}={devset!r}: not a list of examples") from None
    for index, example in enumerate(examples):
        if allow_dicts and isinstance(example, Mapping):
            continue
        if not callable(getattr(example, "inputs", None)):
            raise UsageError(
                f"{name}[{index}]={example!r} is not an Example; wrap it, e.g. "
                "dspex.Example(**row).with_inputs('question')"
            )
        if getattr(example, "_input_keys", ()) is None:
            raise UsageError(
                f"{name}[{index}] has no input fields marked; call "
                f".with_inputs(...) on it, e.g. example.with_inputs('question')"
            )
    return examples
