"""``Ensemble``: one program made of several, their outputs combined by ``reduce_fn``."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from dspex.errors import UsageError
from dspex.programs._module import Module
from dspex.programs._teleprompt._base import Teleprompter

__all__ = ["Ensemble", "EnsembledProgram"]


class EnsembledProgram(Module):
    """Calls each of its programs (or ``size`` of them, sampled per call) in turn.

    Returns ``reduce_fn(outputs)``, or the list of outputs when there is none
    (``dspex.majority`` is the usual reducer for predictions).
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
        outputs = [program(*args, **kwargs) for program in chosen]
        return self.reduce_fn(outputs) if self.reduce_fn is not None else outputs


class Ensemble(Teleprompter):
    """DSPy's ``Ensemble``: ``Ensemble(reduce_fn=dspex.majority).compile([p1, p2, p3])``.

    ``size`` samples that many programs for each call. Nothing is optimized:
    compile only builds the :class:`EnsembledProgram`, so it needs no actor.
    """

    def __init__(
        self,
        *,
        reduce_fn: Callable[[list[Any]], Any] | None = None,
        size: int | None = None,
        deterministic: bool = False,
    ) -> None:
        if deterministic:
            raise UsageError(
                "Ensemble(deterministic=True) is not implemented (as in DSPy): it needs "
                "per-example hashing to pick programs; use deterministic=False"
            )
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise UsageError(f"Ensemble(size={size!r}): use an int >= 1, or None for all programs")
        self.reduce_fn = reduce_fn
        self.size = size
        self.deterministic = deterministic

    def compile(self, programs: Sequence[Any], **kwargs: Any) -> EnsembledProgram:  # type: ignore[override]
        """An :class:`EnsembledProgram` over ``programs``."""
        programs = list(programs)
        if not programs:
            raise UsageError("Ensemble.compile(programs=[]): give at least one program")
        if self.size is not None and self.size > len(programs):
            raise UsageError(
                f"Ensemble(size={self.size}) needs at least {self.size} programs; "
                f"compile got {len(programs)}"
            )
        return EnsembledProgram(programs, reduce_fn=self.reduce_fn, size=self.size)
