"""What an LM call costs: per-model prices and the cost of a call's token usage.

Prices come, in order, from the user's settings (``models."<id>".price``,
USD per million input/output tokens), from the local model (free), then
from ``genai-prices`` (pydantic's maintained table of provider prices, the
``dspex[cost]`` extra). A model none of them knows costs ``None``
(unknown), never 0: a sum of costs that includes an unknown one is unknown.

A model's price is looked up once and kept (a few µs per call after that).
Prices are the flat per-token rates of a short prompt: tiers that start at
very long contexts and cache-read discounts are not modelled.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from dspex.actors._lm._types import Usage

__all__ = ["Price", "PriceTable", "package_price"]

# dspex provider prefix -> genai-prices provider id.
_PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "gemini": "google"}
_PROBE_TOKENS = 1000  # short enough to stay below long-context price tiers


class Price(NamedTuple):
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
