"""``BestOfN``: run a module up to N times and keep the best-rewarded prediction.

Every attempt runs a fresh deep copy of the module whose predictors use a
rollout of the LM: ``rollout_id = start + attempt`` at ``temperature=1.0``,
so each attempt is a new sample (and a different cache key). The first
attempt whose reward reaches ``threshold`` ends the search; otherwise the
best one is returned. Attempts run one after another in the calling run's
thread, so the search can stop early.

The attempt loop lives in :class:`RolloutSearch`, shared with ``Refine``,
which also turns a low reward into hints for the next attempt.
"""

from __future__ import annotations

import inspect
import logging
import numbers
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from dspex._record import Record
from dspex.actors._program_run import current_run
from dspex.errors import UsageError
from dspex.programs._module import Module
from dspex.programs._settings import context, current_settings

__all__ = ["BestOfN", "RolloutSearch", "interpret_reward"]

logger = logging.getLogger("dspex.programs")

HINT_FIELD = "hint_"
"""The input field Refine adds to hinted predictors (stripped from merged traces)."""


def interpret_reward(value: Any) -> tuple[float, str | None]:
    """``(score, feedback)`` from what a reward function returned.

    A number (or bool) is the score; an object with a ``score`` attribute
    (``Prediction(score=..., feedback=...)``) or a dict with a ``"score"``
    key carries an optional ``feedback`` text too.
    """
    if isinstance(value, numbers.Real):
        return float(value), None
    score = value.get("score") if isinstance(value, Mapping) else getattr(value, "score", None)
    if score is not None:
        if isinstance(value, Mapping):
            feedback = value.get("feedback")
        else:
            feedback = getattr(value, "feedback", None)
        return float(score), (str(feedback) if feedback else None)
    try:
        return float(value), None
    except (TypeError, ValueError):
        raise UsageError(
            f"reward_fn returned {value!r}; return a number, or an object with a score "
            "(e.g. dspex.Prediction(score=0.0, feedback='why'))"
        ) from None


class _Reward:
    """Holds the user's reward function out of sight of ``named_parameters``.

    A reward function may itself be a module (an LM judge); wrapped, its
    predictors are not mistaken for the searched module's own.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, kwargs: dict[str, Any], prediction: Any) -> Any:
        return self.fn(kwargs, prediction)

    async def acall(self, kwargs: dict[str, Any], prediction: Any) -> Any:
        """The reward awaited: a module's ``acall``, an awaitable result, else the plain value."""
        acall = getattr(self.fn, "acall", None)
        if isinstance(self.fn, Module) and acall is not None:
            return await acall(kwargs, prediction)
        value = self.fn(kwargs, prediction)
        if inspect.isawaitable(value):
            value = await value
        return value


class _Best(Record):
    prediction: Any
    trace: list[Any]
    score: float


class RolloutSearch(Module):
    """The attempt loop of BestOfN and Refine (subclasses add hints between attempts)."""

    def __init__(
        self,
        module: Any,
        N: int,  # noqa: N803 - DSPy's keyword
        reward_fn: Callable[[dict[str, Any], Any], Any],
        threshold: float | None,
        fail_count: int | None = None,
    ) -> None:
        super().__init__()
        kind = type(self).__name__
        if not callable(getattr(module, "deepcopy", None)) or not callable(
            getattr(module, "set_lm", None)
        ):
            raise UsageError(
                f"{kind}(module=...) needs a dspex Module (it is deep-copied per attempt), "
                f"got {type(module).__name__}; e.g. {kind}(dspex.ChainOfThought('q -> a'), ...)"
            )
        if isinstance(N, bool) or not isinstance(N, int) or N < 1:
            raise UsageError(f"{kind}(N={N!r}): the number of attempts must be an int >= 1")
        if not callable(reward_fn):
            raise UsageError(
                f"{kind}(reward_fn={reward_fn!r}) must be callable as reward_fn(inputs, "
                "prediction) -> float"
            )
        if threshold is not None and (
            isinstance(threshold, bool) or not isinstance(threshold, numbers.Real)
        ):
            raise UsageError(f"{kind}(threshold={threshold!r}) must be a number (or None)")
        if fail_count is not None and (
            isinstance(fail_count, bool) or not isinstance(fail_count, int) or fail_count < 0
        ):
            raise UsageError(f"{kind}(fail_count={fail_count!r}) must be an int >= 0 (or None)")
        self.module = module
        self.reward_fn = _Reward(reward_fn)
        self.threshold = threshold
        self.N = N
        self.fail_count = fail_count or N  # DSPy's rule: None (or 0) allows N failures

    def forward(self, **kwargs: Any) -> Any:
        search = _Search(self, kwargs)
        for rollout_id in search.rollouts():
            candidate = self._candidate(search.lm, rollout_id, search.hints)
            trace: list[Any] = []
            try:
                with context(trace=trace):
                    prediction = candidate(**kwargs)
                    taken = list(trace)  # the reward function's own LM calls stay out
                    score, feedback = interpret_reward(self.reward_fn(kwargs, prediction))
            except Exception as exc:
                search.failed(rollout_id, exc)
                continue
            if search.scored(prediction, taken, score):
                search.hints = self._next_hints(
                    candidate,
                    kwargs,
                    prediction=prediction,
                    trace=taken,
                    score=score,
                    feedback=feedback,
                )
        return search.best()

    async def aforward(self, **kwargs: Any) -> Any:
        """``forward`` awaited: each attempt is ``await candidate.acall(...)`` on this loop.

        A reward function that is a dspex module (an LM judge) is awaited
        through its ``acall``, an ``async def`` one is awaited; a plain function
        runs inline on the loop, as ``forward`` runs it in the caller's thread.
        """
        search = _Search(self, kwargs)
        for rollout_id in search.rollouts():
            candidate = self._candidate(search.lm, rollout_id, search.hints)
            trace: list[Any] = []
            try:
                with context(trace=trace):
                    prediction = await candidate.acall(**kwargs)
                    taken = list(trace)
                    reward = await self.reward_fn.acall(kwargs, prediction)
                    score, feedback = interpret_reward(reward)
            except Exception as exc:
                search.failed(rollout_id, exc)
                continue
            if search.scored(prediction, taken, score):
                search.hints = await self._anext_hints(
                    candidate,
                    kwargs,
                    prediction=prediction,
                    trace=taken,
                    score=score,
                    feedback=feedback,
                )
        return search.best()

    # -- hooks ---------------------------------------------------------------------

    def _next_hints(
        self,
        candidate: Any,
        kwargs: dict[str, Any],
        *,
        prediction: Any,
        trace: list[Any],
        score: float,
        feedback: str | None,
    ) -> dict[str, str] | None:
        """Hints (predictor name -> text) for the next attempt; BestOfN gives none."""
        return None

    async def _anext_hints(
        self,
        candidate: Any,
        kwargs: dict[str, Any],
        *,
        prediction: Any,
        trace: list[Any],
        score: float,
        feedback: str | None,
    ) -> dict[str, str] | None:
        """``_next_hints`` awaited (Refine awaits its critic on the caller's loop)."""
        return None

    # -- helpers -------------------------------------------------------------------

    def _base_lm(self) -> Any:
        lm = self.module.get_lm() or current_settings().get("lm")
        if lm is None or getattr(lm, "generate", None) is None:
            raise UsageError(
                f"{type(self).__name__} needs an LM to sample from: set one with "
                "dspex.configure(lm=...) or module.set_lm(...)"
            )
        return lm

    def _candidate(self, lm: Any, rollout_id: int, hints: Mapping[str, str] | None) -> Any:
        """A private copy of the module sampling from rollout ``rollout_id`` (hinted if given)."""
        from dspex.programs._teleprompt._attempt import rollout_lm

        candidate = self.module.deepcopy()
        candidate.set_lm(rollout_lm(lm, rollout_id))
        if hints:
            from dspex.programs._fields import InputField

            for name, predictor in candidate.named_predictors():
                field = InputField(
                    desc="A hint to the module from an earlier run",
                    default=hints.get(name, "N/A"),
                )
                predictor.signature = predictor.signature.append(HINT_FIELD, field)
        return candidate


class BestOfN(RolloutSearch):
    """Runs ``module`` up to ``N`` times (rollout ids, temperature 1.0); returns the best.

    ``reward_fn(inputs, prediction)`` scores an attempt (a number, or an
    object with ``score``); the first attempt scoring ``>= threshold`` is
    returned at once. A failing attempt is skipped; more than ``fail_count``
    failures (default ``N``) re-raise the error, and so does the last error
    when every attempt failed.
    """


class _Search:
    """One search's bookkeeping, shared by ``forward`` and ``aforward``."""

    def __init__(self, owner: RolloutSearch, kwargs: dict[str, Any]) -> None:
        self.owner = owner
        self.lm = owner._base_lm()
        self.start = int(self.lm.kwargs.get("rollout_id", 0) or 0)
        self.best_so_far: _Best | None = None
        self.failures = 0
        self.last_error: Exception | None = None
        self.hints: dict[str, str] | None = None
        self.attempt = 0
        self.stop = False

    def rollouts(self) -> Iterator[int]:
        """The rollout id of each attempt, until the threshold is reached or N are made."""
        run = current_run()
        for attempt in range(self.owner.N):
            if self.stop:
                return
            if run is not None:
                run.check_deadline()  # a cancelled run stops here, not as N failed attempts
            self.attempt = attempt
            yield self.start + attempt

    def failed(self, rollout_id: int, exc: Exception) -> None:
        """Count a failed attempt; re-raise it past ``fail_count`` (call inside ``except``)."""
        self.failures += 1
        self.last_error = exc
        logger.warning(
            "%s: attempt %d (rollout_id=%d) failed: %s: %s",
            type(self.owner).__name__,
            self.attempt + 1,
            rollout_id,
            type(exc).__name__,
            exc,
        )
        if self.failures > self.owner.fail_count:
            raise exc

    def scored(self, prediction: Any, trace: list[Any], score: float) -> bool:
        """Record an attempt's score; whether the next attempt needs hints."""
        if self.best_so_far is None or score > self.best_so_far.score:
            self.best_so_far = _Best(prediction, trace, score)
        threshold = self.owner.threshold
        if threshold is not None and score >= threshold:
            self.stop = True
            return False
        return self.attempt < self.owner.N - 1

    def best(self) -> Any:
        """The best prediction (its trace joins the outer one), or the last error."""
        if self.best_so_far is None:
            assert self.last_error is not None  # N >= 1 and no attempt succeeded
            raise self.last_error
        outer = current_settings().get("trace")
        if outer is not None:
            outer.extend(_without_hints(self.best_so_far.trace))
        return self.best_so_far.prediction


def _without_hints(trace: list[Any]) -> list[Any]:
    """The trace with Refine's hint input removed, so it matches the declared signatures."""
    cleaned = []
    for entry in trace:
        predictor, inputs, outputs = entry
        if HINT_FIELD in inputs:
            inputs = {k: v for k, v in inputs.items() if k != HINT_FIELD}
        cleaned.append((predictor, inputs, outputs))
    return cleaned
