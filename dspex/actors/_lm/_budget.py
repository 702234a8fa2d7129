"""Cost and token budgets: no LM call starts once a budget is spent.

A :class:`Budget` counts what the calls made under it spent. Budgets are
active in a scope (:func:`budget_scope`, a context variable, so it travels
with the caller's context into run actors and Evaluate/optimizer workers),
and the runtime has one of its own (``budget`` settings). ``LMHandle``
checks every active budget before a call leaves for the provider (a cache
hit is free and always allowed) and charges them when it returns. Once spent
reaches a limit, the next call raises :class:`~dspex.errors.BudgetExceededError`;
calls already in flight finish and are charged, so a budget is overshot by
at most what they cost.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from dspex.errors import BudgetExceededError, UsageError

__all__ = ["Budget", "active_budgets", "budget_error", "budget_scope"]

_active: ContextVar[tuple[Budget, ...]] = ContextVar("dspex_budgets", default=())


class Budget:
    """A spending limit in USD and/or tokens; thread-safe.

    ``scope`` names whose budget it is in errors (``"Evaluate"``,
    ``"compile"``, ``"runtime"``). ``stopped_by`` is set to the exceeded
    limit's name the first time a call is refused.
    """

    def __init__(
        self,
        *,
        max_cost_usd: float | None = None,
        max_tokens: int | None = None,
        scope: str = "budget",
    ) -> None:
        if max_cost_usd is not None and (
            isinstance(max_cost_usd, bool)
            or not isinstance(max_cost_usd, int | float)
            or max_cost_usd <= 0
        ):
            raise UsageError(f"{scope}(max_cost_usd={max_cost_usd!r}) is invalid; use USD > 0")
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
        ):
            raise UsageError(f"{scope}(max_tokens={max_tokens!r}) is invalid; use an int >= 1")
        self.max_cost_usd = None if max_cost_usd is None else float(max_cost_usd)
        self.max_tokens = max_tokens
        self.scope = scope
        self.cost_usd = 0.0
        self.tokens = 0
        self.calls = 0
        self.unpriced_calls = 0  # answered calls whose model has no known price
        self.stopped_by: str | None = None
        self._lock = threading.Lock()

    @property
    def limited(self) -> bool:
        return self.max_cost_usd is not None or self.max_tokens is not None

    def admit(self, model: str, priced: bool) -> None:
        """Let one call of ``model`` start, or raise ``BudgetExceededError``.

        ``priced`` says whether the model's price is known: a cost budget
        cannot be kept with calls it cannot price, so those are refused.
        """
        with self._lock:
            if self.max_cost_usd is not None and self.cost_usd >= self.max_cost_usd:
                self._stop("max_cost_usd", self.max_cost_usd, self.cost_usd)
            if self.max_tokens is not None and self.tokens >= self.max_tokens:
                self._stop("max_tokens", self.max_tokens, self.tokens)
        if self.max_cost_usd is not None and not priced:
            raise UsageError(
                f"{self.scope}(max_cost_usd={self.max_cost_usd:g}) cannot be kept: model "
                f"{model!r} has no known price; set it in the settings "
                f'([models."{model}".price] input = ..., output = ... USD per million tokens) '
                "or drop max_cost_usd"
            )

    def check(self) -> None:
        """Raise ``BudgetExceededError`` if a limit is already reached (no call in hand)."""
        with self._lock:
            if self.max_cost_usd is not None and self.cost_usd >= self.max_cost_usd:
                self._stop("max_cost_usd", self.max_cost_usd, self.cost_usd)
            if self.max_tokens is not None and self.tokens >= self.max_tokens:
                self._stop("max_tokens", self.max_tokens, self.tokens)

    def charge_spend(self, calls: int, cost: float | None, unpriced: int, tokens: int) -> None:
        """Count what another process's calls spent (a Ray unit's ``snapshot``)."""
        with self._lock:
            self.calls += calls
            self.tokens += tokens
            self.unpriced_calls += unpriced
            self.cost_usd += cost or 0.0

    def _stop(self, name: str, limit: float, spent: float) -> None:
        if self.stopped_by is None:
            self.stopped_by = name
        raise BudgetExceededError(
            f"{self.scope} budget {name}={limit:g} is spent ({spent:g}); no new LM call starts",
            budget=name,
            scope=self.scope,
            limit=limit,
            spent=spent,
        )

    def charge(self, cost: float | None, tokens: int) -> None:
        """Count one answered call (``cost`` None: its price is unknown)."""
        with self._lock:
            self.calls += 1
            self.tokens += tokens
            if cost is None:
                self.unpriced_calls += 1
            else:
                self.cost_usd += cost

    def snapshot(self) -> dict[str, object]:
        """What was spent, against which limits, and which limit stopped work (if any)."""
        with self._lock:
            return {
                "cost_usd": self.cost_usd if self.unpriced_calls == 0 else None,
                "priced_cost_usd": self.cost_usd,
                "tokens": self.tokens,
                "calls": self.calls,
                "unpriced_calls": self.unpriced_calls,
                "max_cost_usd": self.max_cost_usd,
                "max_tokens": self.max_tokens,
                "stopped_by": self.stopped_by,
            }

    def __repr__(self) -> str:
        return (
            f"Budget({self.scope}, cost_usd={self.cost_usd:g}/{self.max_cost_usd}, "
            f"tokens={self.tokens}/{self.max_tokens})"
        )


def budget_error(error: BaseException | None) -> BudgetExceededError | None:
    """The ``BudgetExceededError`` behind ``error`` (itself, a cause, a wrapped original)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, BudgetExceededError):
            return error
        seen.add(id(error))
        error = getattr(error, "original", None) or error.__cause__ or error.__context__
    return None


def active_budgets() -> tuple[Budget, ...]:
    """The budgets in scope here, outermost first."""
    return _active.get()


@contextmanager
def budget_scope(budget: Budget) -> Iterator[Budget]:
    """Make ``budget`` active (with any enclosing ones) for LM calls inside the block."""
    token = _active.set((*_active.get(), budget))
    try:
        yield budget
    finally:
        _active.reset(token)
