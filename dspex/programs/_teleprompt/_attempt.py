"""One training example's teacher runs, as a pool worker executes them for BootstrapFewShot.

The teacher runs on the example with trace capture, up to ``max_rounds``
times: round 0 with the configured LM, later rounds with a fresh rollout of
it (``rollout_id=round``, ``temperature=1.0``: a different cache key, so a
new sample). A run the metric accepts becomes augmented demos per predictor
name; the first accepted round ends the example.

Each run must hide its own example from the teacher's labeled demos. DSPy's
sequential loop edits the teacher in place; here runs overlap, so each one
borrows a private deep copy of the teacher from a small stock (at most one
per concurrent run) and puts it back afterwards.
"""

from __future__ import annotations

import hashlib
import queue
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dspex._record import Record
from dspex.actors._program_run import current_run
from dspex.programs._example import Example
from dspex.programs._settings import context

__all__ = ["Attempt", "TeacherRuns", "rollout_lm"]


class Attempt(Record):
    """One teacher run: accepted (``demos`` set), rejected by the metric, or failed."""

    round: int
    demos: dict[str, list[Example]] | None
    """Augmented demos per predictor name, when the metric accepted the run."""
    error: BaseException | None


class _Copy(Record):
    """A private copy of the teacher and what its trace entries map to."""

    program: Any
    predictors: tuple[Any, ...]
    names: dict[int, str]
    """``id(predictor)`` -> predictor name, for reading traces."""


class TeacherRuns:
    """Callable run in pool workers: ``runs(example) -> [Attempt, ...]`` (one per round tried).

    Exceptions of the teacher or the metric are returned in the attempt;
    a ``BaseException`` propagates (it crashes the worker, and the pool
    retries the example).
    """

    def __init__(
        self,
        teacher: Any,
        *,
        metric: Callable[..., Any] | None,
        metric_threshold: float | None,
        teacher_settings: Mapping[str, Any],
        max_rounds: int,
        rollout_lms: Mapping[int, Any],
    ) -> None:
        self._teacher = teacher
        self._metric = metric
        self._threshold = metric_threshold
        self._settings = dict(teacher_settings)
        self._max_rounds = max_rounds
        self._rollout_lms = dict(rollout_lms)
        self._stock: queue.SimpleQueue[_Copy] = queue.SimpleQueue()

    def __call__(self, example: Any) -> list[Attempt]:
        copy = self._borrow()
        try:
            attempts: list[Attempt] = []
            for round_idx in range(self._max_rounds):
                attempt = self._attempt(copy, example, round_idx)
                attempts.append(attempt)
                run = current_run()
                if attempt.demos is not None or (run is not None and run.cancelled.is_set()):
                    break
            return attempts
        finally:
            self._stock.put(copy)

    @staticmethod
    def failure(attempts: list[Attempt]) -> BaseException | None:
        """The error to report for an example's runs: the last one's, if it failed."""
        return attempts[-1].error if attempts else None

    def _borrow(self) -> _Copy:
        try:
            return self._stock.get_nowait()
        except queue.Empty:
            program = self._teacher.deepcopy()
            named = program.named_predictors()
            return _Copy(program, tuple(p for _, p in named), {id(p): name for name, p in named})

    def _attempt(self, copy: _Copy, example: Any, round_idx: int) -> Attempt:
        trace: list[Any] = []
        try:
            with context(trace=trace, **self._settings):
                lm = self._rollout_lms.get(round_idx)
                with context(**({"lm": lm} if lm is not None else {})):
                    saved = [(p, p.demos) for p in copy.predictors]
                    try:
                        for predictor, demos in saved:
                            predictor.demos = [d for d in demos if d != example]
                        prediction = copy.program(**example.inputs())
                    finally:
                        for predictor, demos in saved:
                            predictor.demos = demos
                if self._metric is None:
                    accepted = True
                else:
                    value = self._metric(example, prediction, trace)
                    # DSPy's rule: a threshold (when truthy) compares, else the value's truth.
                    accepted = bool(value >= self._threshold if self._threshold else value)
            demos = _demos_from_trace(trace, copy.names) if accepted else None
        except Exception as exc:
            return Attempt(round_idx, None, exc)
        return Attempt(round_idx, demos, None)


def rollout_lm(lm: Any, round_idx: int) -> Any:
    """``lm`` for retry round ``round_idx``: a fresh rollout at temperature 1.0.

    Uses ``lm.copy(rollout_id=..., temperature=...)`` as DSPy does; an LM
    without ``copy`` (a test double) is wrapped to send those parameters.
    """
    copy = getattr(lm, "copy", None)
    if callable(copy):
        try:
            return copy(rollout_id=round_idx, temperature=1.0)
        except TypeError:  # a copy() that takes no overrides
            pass
    return _RolloutLM(lm, {"rollout_id": round_idx, "temperature": 1.0})


class _RolloutLM:
    """An LM with extra default request parameters (call parameters still win)."""

    def __init__(self, lm: Any, overrides: Mapping[str, Any]) -> None:
        self._lm = lm
        self._overrides = dict(overrides)
        self.kwargs = {**getattr(lm, "kwargs", {}), **self._overrides}

    def generate(self, messages: Sequence[Any], params: Mapping[str, Any]) -> Any:
        return self._lm.generate(messages, {**self._overrides, **params})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._lm, name)

    def __repr__(self) -> str:
        return f"{self._lm!r}.rollout({self._overrides!r})"


def _demos_from_trace(trace: Sequence[Any], names: Mapping[int, str]) -> dict[str, list[Example]]:
    """Each traced predictor call as an augmented demo, one per predictor name.

    Calls of predictors outside the teacher (a helper module built on the
    fly) are skipped. A predictor called several times keeps one demo: the
    last call or one of the earlier ones, 50/50, seeded by the demos
    themselves so the choice is the same on every run (DSPy's rule).
    """
    by_name: dict[str, list[Example]] = {}
    for predictor, inputs, outputs in trace:
        name = names.get(id(predictor))
        if name is not None:
            by_name.setdefault(name, []).append(Example(augmented=True, **inputs, **outputs))
    for name, demos in by_name.items():
        if len(demos) > 1:
            rng = random.Random(_stable_seed(demos))
            by_name[name] = [rng.choice(demos[:-1]) if rng.random() < 0.5 else demos[-1]]
    return by_name


def _stable_seed(demos: Sequence[Example]) -> int:
    """A seed that depends only on the demos' contents (not on ``hash()`` salting)."""
    text = repr([sorted(demo.items(), key=lambda item: item[0]) for demo in demos])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
