"""Prices of model usage: your own prices first, then the ``genai-prices`` table.

A price that cannot be found is ``None`` — unknown, never zero: the caller records the usage as unpriced.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from .errors import ConfigurationError
from .usage import TokenUsage

_MILLION = Decimal(1_000_000)


def to_usd(value: Any, what: str) -> Decimal:
    """An exact, finite, non-negative USD amount; anything else is a ``ConfigurationError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        raise ConfigurationError(f"{what} must be a number of USD, not {value!r}.")
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
    except ArithmeticError:
        raise ConfigurationError(f"{what} must be a number of USD, not {value!r}.") from None
    if not amount.is_finite() or amount < 0:
        raise ConfigurationError(f"{what} must be a finite number >= 0, not {value!r}.")
    return amount


@dataclasses.dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per million tokens. Cached input defaults to the input price."""

    input_per_mtok: Decimal | float | int | str
    output_per_mtok: Decimal | float | int | str
    cache_read_per_mtok: Decimal | float | int | str | None = None

    def cost(self, usage: TokenUsage) -> Decimal:
        inp = to_usd(self.input_per_mtok, "ModelPrice.input_per_mtok")
        out = to_usd(self.output_per_mtok, "ModelPrice.output_per_mtok")
        cached = (
            inp
            if self.cache_read_per_mtok is None
            else to_usd(self.cache_read_per_mtok, "ModelPrice.cache_read_per_mtok")
        )
        uncached = usage.input_tokens - usage.cache_read_tokens
        return (inp * uncached + cached * usage.cache_read_tokens + out * usage.output_tokens) / _MILLION


class PriceTable:
    """Looks up what a model call cost. Thread-safe (read-only after construction)."""

    def __init__(self, prices: Mapping[str, ModelPrice] | None = None) -> None:
        self._own: dict[str, ModelPrice] = {}
        for model, price in (prices or {}).items():
            if not isinstance(price, ModelPrice):
                raise ConfigurationError(
                    f"prices[{model!r}] must be a ModelPrice(input_per_mtok=..., output_per_mtok=...), not "
                    f"{price!r}."
                )
            price.cost(TokenUsage(model, None, 0, 0))  # validates the numbers now, not mid-run
            self._own[model] = price

    def cost(self, usage: TokenUsage) -> Decimal | None:
        """USD for ``usage``, or ``None`` when neither your prices nor the table know the model."""
        if usage.model is None:
            return None
        own = self._own.get(usage.model) or (
            self._own.get(f"{usage.provider}/{usage.model}") if usage.provider else None
        )
        if own is not None:
            return own.cost(usage)
        import genai_prices  # imported on first use: it loads its price snapshot

        counts = genai_prices.Usage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens or None,
            cache_write_tokens=usage.cache_write_tokens or None,
        )
        try:
            return genai_prices.calc_price(counts, usage.model, provider_id=usage.provider).total_price
        except LookupError:
            return None
