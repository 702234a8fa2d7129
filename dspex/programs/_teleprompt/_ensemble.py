"""``Ensemble``: one program made of several, their outputs combined by ``reduce_fn``.

Each call of the ensembled program runs its programs at once, each as its own
program run on a pool (the :class:`~dspex.Parallel` engine), and hands the
outputs, in program order, to ``reduce_fn`` (e.g. :func:`dspex.majority`).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from typing import Any

from dspex.errors import UsageError
from dspex.programs._module import Module
from dspex.programs._parallel import Parallel
from dspex.programs._teleprompt._base import Teleprompter

__all__ = ["Ensemble", "EnsembledProgram"]


class DeterministicEnsembleError(UsageError, AssertionError):
    """``Ensemble(deterministic=True)``: not implemented, as in DSPy (an AssertionError there)."""


class EnsembledProgram(Module):
    """Calls its programs (or ``size`` of them, sampled per call) in parallel.

    Returns ``reduce_fn(outputs)``, or the list of outputs when there is none.
    A program that raises makes the call raise that error, as a sequential
    loop would (the first failing program in order wins).
    """

    def __init__(
        self,
        programs: Sequence[Any],
        reduce_fn: Callable[[list[Any]], Any] | None = None,
        size: int | None = None,
    ) -> None:
        super().__init__()
        self.programs = list(programs)
        self.reduce_fn = reduce_fn
        self.size = size

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        chosen = random.sample(self.programs, self.size) if self.size else self.programs
        outputs = _run_all(chosen, args, kwargs)
        return self.reduce_fn(outputs) if self.reduce_fn is not None else outputs


def _run_all(programs: Sequence[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    """Every program's output for the same arguments, in program order."""
    if len(programs) == 1:  # nothing to overlap: no pool
        return [programs[0](*args, **kwargs)]
    calls = [(functools.partial(program, *args, **kwargs), ()) for program in programs]
    runner = Parallel(
        num_threads=len(calls),
        max_errors=len(calls),  # all run, so the first failure in program order is known
        return_failed_examples=True,
        disable_progress_bar=True,
    )
    outputs, _failed, errors = runner(calls)
    if errors:
        raise errors[0]
    return list(outputs)


class Ensemble(Teleprompter):
    """DSPy's ``Ensemble``: ``Ensemble(reduce_fn=dspex.majority).compile([p1, p2, p3])``.

    ``size`` samples that many programs for each call. Nothing is optimized:
    compile only builds the :class:`EnsembledProgram` (no coordinator: there
    is no work to supervise until it is called).
    """

    def __init__(
        self,
        *,
        reduce_fn: Callable[[list[Any]], Any] | None = None,
        size: int | None = None,
        deterministic: bool = False,
    ) -> None:
        if deterministic:
            # DSPy asserts here with this text; its tests match on it.
            raise DeterministicEnsembleError(
                "Ensemble(deterministic=True) is not supported, as in DSPy ('TODO: Implement "
                "example hashing for deterministic ensemble.'); use deterministic=False"
            )
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise UsageError(f"Ensemble(size={size!r}): use an int >= 1, or None for all programs")
        if reduce_fn is not None and not callable(reduce_fn):
            raise UsageError(
                f"Ensemble(reduce_fn={reduce_fn!r}): pass a function of the list of outputs, "
                "e.g. reduce_fn=dspex.majority"
            )
        self.reduce_fn = reduce_fn
        self.size = size
        self.deterministic = deterministic

    def compile(self, programs: Sequence[Any]) -> EnsembledProgram:  # type: ignore[override]
        """An :class:`EnsembledProgram` over ``programs``."""
        if isinstance(programs, str | bytes) or not isinstance(programs, Sequence):
            raise UsageError(
                f"Ensemble.compile(programs={programs!r}): pass a list of programs, "
                "e.g. Ensemble(reduce_fn=dspex.majority).compile([qa1, qa2, qa3])"
            )
        programs = list(programs)
        if not programs:
            raise UsageError("Ensemble.compile(programs=[]): give at least one program")
        for index, program in enumerate(programs):
            if not callable(program):
                raise UsageError(
                    f"Ensemble.compile: programs[{index}] is a {type(program).__name__}, "
                    "not a program; pass modules such as dspex.Predict(...)"
                )
        if self.size is not None and self.size > len(programs):
            raise UsageError(
                f"Ensemble(size={self.size}) needs at least {self.size} programs; "
                f"compile got {len(programs)}"
            )
        return EnsembledProgram(programs, reduce_fn=self.reduce_fn, size=self.size)
