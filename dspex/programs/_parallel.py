"""``Parallel``: run many ``(module, example)`` pairs at once (DSPy's ``dspy.Parallel``).

Each pair runs on a supervised WorkerPool as its own program run, through
the fan-out engine that Evaluate and ``Module.batch`` use (``_fanout``): the
caller's ``dspex.context`` overrides travel into every pair, a failing pair
fails only itself, and Ctrl-C or ``max_errors`` stops the rest. Results come
back in input order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dspex.errors import UsageError
from dspex.programs._example import Example
from dspex.programs._settings import current_settings

__all__ = ["Parallel"]


class Parallel:
    """Runs ``(module, example)`` pairs in parallel: ``Parallel(num_threads=8)(pairs)``.

    How a pair is called depends on its example: an :class:`Example` as
    ``module(**example.inputs())`` (or ``module(example)`` with
    ``access_examples=False``), a dict as ``module(**example)``, a tuple as
    ``module(*example)``, and a list, when the module is itself a Parallel,
    as ``module(example)``. A failed pair's result is None; with
    ``return_failed_examples=True`` a call returns ``(results,
    failed_examples, exceptions)``. Reaching ``max_errors`` stops early and
    returns what finished (as ``Module.batch`` does). ``timeout`` is each
    pair's cooperative deadline in seconds (DSPy's default, 120; None: no limit).
    """

    def __init__(  # noqa: PLR0917  (DSPy's positional signature)
        self,
        num_threads: int | None = None,
        max_errors: int | None = None,
        access_examples: bool = True,
        return_failed_examples: bool = False,
        provide_traceback: bool | None = None,
        disable_progress_bar: bool = False,
        timeout: float | None = 120,
        straggler_limit: int = 3,
    ) -> None:
        self.num_threads = num_threads
        self.max_errors = max_errors
        self.access_examples = access_examples
        self.return_failed_examples = return_failed_examples
        self.provide_traceback = provide_traceback
        self.disable_progress_bar = disable_progress_bar
        self.timeout = timeout
        # DSPy resubmits stragglers; here a slow pair keeps its worker and others go on.
        self.straggler_limit = straggler_limit
        self.failed_examples: list[Any] = []
        self.exceptions: list[BaseException] = []

    def __call__(self, exec_pairs: Sequence[Any], num_threads: int | None = None) -> Any:
        return self.forward(exec_pairs, num_threads=num_threads)

    def forward(self, exec_pairs: Sequence[Any], num_threads: int | None = None) -> Any:
        """Run every pair; the results (None for a failure) in the order of ``exec_pairs``."""
        from dspex.programs._evaluate_engine import (
            call_each,
            resolve_max_errors,
            resolve_num_threads,
        )
        from dspex.programs._evaluate_progress import progress_enabled

        pairs = _check_pairs(exec_pairs, self.access_examples)
        settings = current_settings()
        access = self.access_examples
        results, failed = call_each(
            lambda pair: _call_pair(pair, access),
            pairs,
            num_threads=resolve_num_threads(
                num_threads if num_threads is not None else self.num_threads, settings
            ),
            max_errors=resolve_max_errors(self.max_errors, settings),
            timeout=self.timeout,
            provide_traceback=(
                self.provide_traceback
                if self.provide_traceback is not None
                else bool(settings.get("provide_traceback"))
            ),
            show_progress=progress_enabled(False if self.disable_progress_bar else None),
            label="parallel",
        )
        order = sorted(failed)
        self.failed_examples = [pairs[i][1] for i in order]
        self.exceptions = [failed[i] for i in order]
        if self.return_failed_examples:
            return results, list(self.failed_examples), list(self.exceptions)
        return results

    async def acall(self, exec_pairs: Sequence[Any], num_threads: int | None = None) -> Any:
        return await self.aforward(exec_pairs, num_threads=num_threads)

    async def aforward(self, exec_pairs: Sequence[Any], num_threads: int | None = None) -> Any:
        """``forward`` awaited on the caller's loop: each pair is ``await module.acall(...)``.

        At most ``num_threads`` pairs are in flight at once (tasks on this loop,
        no thread per pair); a callable without ``acall`` runs in dspex's async
        pool. Failures, ``max_errors``, ``timeout`` and the return value are
        those of ``forward``.
        """
        from dspex.programs._evaluate_engine import resolve_max_errors, resolve_num_threads
        from dspex.programs._parallel_async import run_pairs

        pairs = _check_pairs(exec_pairs, self.access_examples)
        settings = current_settings()
        results, failed = await run_pairs(
            pairs,
            self.access_examples,
            num_threads=resolve_num_threads(
                num_threads if num_threads is not None else self.num_threads, settings
            ),
            max_errors=resolve_max_errors(self.max_errors, settings),
            timeout=self.timeout,
            provide_traceback=(
                self.provide_traceback
                if self.provide_traceback is not None
                else bool(settings.get("provide_traceback"))
            ),
        )
        order = sorted(failed)
        self.failed_examples = [pairs[i][1] for i in order]
        self.exceptions = [failed[i] for i in order]
        if self.return_failed_examples:
            return results, list(self.failed_examples), list(self.exceptions)
        return results

    def __repr__(self) -> str:
        return f"Parallel(num_threads={self.num_threads}, max_errors={self.max_errors})"


def _call_pair(pair: tuple[Any, Any], access_examples: bool) -> Any:
    """Call one pair's module the way its example's type asks (checked up front)."""
    module, example = pair
    if isinstance(example, Example):
        return module(**example.inputs()) if access_examples else module(example)
    if isinstance(example, Mapping):
        return module(**example)
    if isinstance(example, tuple):
        return module(*example)
    return module(example)  # a list handed to a nested Parallel


def _check_pairs(exec_pairs: Any, access_examples: bool) -> list[tuple[Any, Any]]:
    """Every pair as ``(callable, example of a supported kind)``; a clear error otherwise."""
    if isinstance(exec_pairs, str | bytes | Mapping) or not isinstance(exec_pairs, Sequence):
        raise UsageError(
            f"Parallel takes a list of (module, example) pairs, got "
            f"{type(exec_pairs).__name__}; e.g. Parallel()([(qa, ex) for ex in examples])"
        )
    pairs: list[tuple[Any, Any]] = []
    for i, pair in enumerate(exec_pairs):
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise UsageError(
                f"Parallel: exec_pairs[{i}] is {pair!r}; each item must be a "
                "(module, example) pair, e.g. (qa, dspex.Example(question=...))"
            )
        module, example = pair
        if not callable(module):
            raise UsageError(
                f"Parallel: exec_pairs[{i}][0] is a {type(module).__name__}, not a module; "
                "put the module to call first in each pair"
            )
        if isinstance(example, Example):
            if access_examples and getattr(example, "_input_keys", None) is None:
                raise UsageError(
                    f"Parallel: the Example in exec_pairs[{i}] has no input fields; mark them "
                    "with example.with_inputs('question', ...) or pass access_examples=False"
                )
        elif isinstance(example, list):
            if not isinstance(module, Parallel):
                raise UsageError(
                    f"Parallel: exec_pairs[{i}] pairs a list with a {type(module).__name__}; "
                    "a list example is only for a nested Parallel. Use an Example, a dict "
                    "(keyword arguments) or a tuple (positional arguments)"
                )
        elif not isinstance(example, Mapping | tuple):
            raise UsageError(
                f"Parallel: exec_pairs[{i}] has a {type(example).__name__} example; use an "
                "Example, a dict (keyword arguments) or a tuple (positional arguments)"
            )
        pairs.append((module, example))
    return pairs
