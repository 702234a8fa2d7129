"""What an LM call costs: per-model prices and the cost of a call's token usage.

Prices come, in order, from the user's settings (``models."<id>".price``,
USD per million input/output tokens), from the local model (free), then
from ``genai-prices`` (pydantic's maintained table of provider prices, the
``dspex[cost]`` extra). A model none of them knows costs ``None``
(unknown), never 0: a sum of costs that includes an unknown one is unknown.

A model's price is looked up once and kept (a few µs per call after that).
Until then an answer's cost is looked up when first read (:class:`PricedLater`):
loading genai-prices costs tens of milliseconds, which a process's first call
should not wait for when nothing reads the cost before it returns (the
Telemetry actor reads it in its own thread).
Prices are the flat per-token rates of a short prompt: tiers that start at
very long contexts and cache-read discounts are not modelled.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping
from typing import Any

from dspex._record import Record
from dspex.actors._lm._types import LMResponse, Usage

__all__ = [
    "LaterCost",
    "Price",
    "PriceTable",
    "PricedLater",
    "cost_or_later",
    "package_price",
    "replace_response",
]

# dspex provider prefix -> genai-prices provider id.
_PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "gemini": "google"}
_PROBE_TOKENS = 1000  # short enough to stay below long-context price tiers


class Price(Record):
    """USD per million input (prompt) and output (completion) tokens."""

    input_per_mtok: float
    output_per_mtok: float

    def cost(self, usage: Usage) -> float:
        return (
            usage.prompt_tokens * self.input_per_mtok
            + usage.completion_tokens * self.output_per_mtok
        ) / 1_000_000


def package_price(model: str) -> Price | None:
    """``model``'s price from ``genai-prices``; None if it is not installed or lacks the model."""
    provider, _, name = model.partition("/")
    provider_id = _PROVIDERS.get(provider)
    if provider_id is None:
        return None
    try:
        from genai_prices import Usage as PriceUsage
        from genai_prices import calc_price
    except ImportError:
        return None
    try:
        unit_in = calc_price(PriceUsage(input_tokens=_PROBE_TOKENS), name, provider_id=provider_id)
        unit_out = calc_price(
            PriceUsage(output_tokens=_PROBE_TOKENS), name, provider_id=provider_id
        )
    except LookupError:
        return None
    scale = 1_000_000 / _PROBE_TOKENS
    return Price(float(unit_in.total_price) * scale, float(unit_out.total_price) * scale)


class PriceTable:
    """Prices per dspex model id; thread-safe (calls look prices up in their own threads).

    ``overrides`` returns the user's prices (read each time, so a
    ``configure`` takes effect); ``lookup`` is the package lookup (injectable
    for tests).
    """

    def __init__(
        self,
        overrides: Callable[[], Mapping[str, Price]] | None = None,
        *,
        lookup: Callable[[str], Price | None] = package_price,
    ) -> None:
        self._overrides = overrides
        self._lookup = lookup
        self._known: dict[str, Price | None] = {}
        self._lock = threading.Lock()

    def price(self, model: str) -> Price | None:
        """``model``'s price, or None when unknown."""
        if self._overrides is not None:
            own = self._overrides().get(model)
            if own is not None:
                return own
        if model.startswith("local/"):
            return Price(0.0, 0.0)
        try:
            return self._known[model]
        except KeyError:
            pass
        found = self._lookup(model)  # outside the lock: the first lookup loads the table
        with self._lock:
            self._known[model] = found
        return found

    def known(self, model: str) -> bool:
        """Whether ``model``'s price is at hand without loading the package's table."""
        if model in self._known or model.startswith("local/"):
            return True
        return self._overrides is not None and model in self._overrides()

    def cost(self, model: str, usage: Usage) -> float | None:
        """What ``usage`` of ``model`` costs in USD; None when its price is unknown."""
        price = self.price(model)
        return None if price is None else price.cost(usage)


def settings_prices(settings: Any) -> dict[str, Price]:
    """The ``models."<id>".price`` entries of ``settings`` as :class:`Price` values."""
    found: dict[str, Price] = {}
    for model, entry in settings.models.items():
        price = getattr(entry, "price", None)
        if price is not None:
            found[model] = Price(float(price.input), float(price.output))
    return found


_UNPRICED: Any = object()
_COST_SLOT: Any = LMResponse.__dict__["cost"]  # the dataclass slot behind ``cost``
# Read once: dataclasses.fields() rebuilds its list on every call, and ``of``
# runs on every answer of a model whose price nobody has read yet.
_FIELDS = tuple(f.name for f in dataclasses.fields(LMResponse))


class PricedLater(LMResponse):
    """An :class:`LMResponse` whose ``cost`` is looked up on first read (any thread).

    Equal to, hashed, printed and pickled as the plain response it stands for.
    """

    __slots__ = ("_pricing",)
    _pricing: Callable[[], float | None]

    @classmethod
    def of(
        cls, response: LMResponse, pricing: Callable[[], float | None], **changes: Any
    ) -> LMResponse:
        """``response`` (with ``changes``) whose cost is left to ``pricing()``, called once
        on first read."""
        values = {name: getattr(response, name) for name in _FIELDS}
        values.update(changes)
        values["cost"] = _UNPRICED
        later = cls(**values)
        object.__setattr__(later, "_pricing", pricing)
        return later

    @property
    def cost(self) -> float | None:
        value = _COST_SLOT.__get__(self, LMResponse)
        if value is _UNPRICED:
            value = self._pricing()  # a race prices twice, to the same value
            _COST_SLOT.__set__(self, value)
        result: float | None = value
        return result

    @cost.setter
    def cost(self, value: float | None) -> None:  # the dataclass __init__ sets it
        _COST_SLOT.__set__(self, value)

    @property
    def priced(self) -> bool:
        return _COST_SLOT.__get__(self, LMResponse) is not _UNPRICED

    def plain(self) -> LMResponse:
        """The same response as a plain :class:`LMResponse` (prices it now)."""
        return LMResponse(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LMResponse):
            return self.plain() == (other.plain() if isinstance(other, PricedLater) else other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.plain())

    def __repr__(self) -> str:
        return repr(self.plain())

    def __reduce__(self) -> tuple[Any, ...]:
        return (LMResponse, tuple(getattr(self, f.name) for f in dataclasses.fields(self)))


def replace_response(response: LMResponse, **changes: Any) -> LMResponse:
    """``dataclasses.replace(response, **changes)``, leaving an unpriced cost unpriced."""
    if isinstance(response, PricedLater) and not response.priced and "cost" not in changes:
        fields = [f.name for f in dataclasses.fields(response) if f.name != "cost"]
        values = {name: getattr(response, name) for name in fields}
        values.update(changes)
        later = PricedLater(**values, cost=_UNPRICED)
        object.__setattr__(later, "_pricing", response._pricing)
        return later
    return dataclasses.replace(response, **changes)


class LaterCost:
    """A telemetry ``cost`` not priced yet: the Telemetry actor calls it (its own thread)."""

    __slots__ = ("response",)

    def __init__(self, response: LMResponse) -> None:
        self.response = response

    def __call__(self) -> float | None:
        return self.response.cost


def cost_or_later(response: LMResponse) -> float | LaterCost | None:
    """``response.cost``, or a :class:`LaterCost` if reading it now would price it."""
    if isinstance(response, PricedLater) and not response.priced:
        return LaterCost(response)
    return response.cost
