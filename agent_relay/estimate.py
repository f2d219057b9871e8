"""What a call may cost at most, known before it runs: what a budgeted run reserves for it (see
``agent_relay.reserve``). Pure decisions, no I/O.

Three sources, in this order: ``@tool(cost_estimate=...)`` (a number, or a function of the arguments
dict), a constant ``@tool(cost=<number>)``, and for the model calls ``agent_relay.instrument`` records the
request's output limit (``max_tokens``, ``max_completion_tokens`` or ``max_output_tokens``) at the model's
output price, plus its input bounded by one token per byte of the request's JSON (tokenizers average three
to four bytes a token). A call with none of these is counted after it ran, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, NamedTuple

from .encoding import canonical_dumps
from .errors import ConfigurationError
from .pricing import PriceTable, to_usd
from .usage import TokenUsage


class Unpriced(NamedTuple):
    """A model call whose model has no known price: under a budget it is refused before the request."""

    model: str
    provider: str | None


Estimate = Decimal | Unpriced | None
"""At most this many USD; a model without a price; or ``None``: not known before the call runs."""
Estimator = Callable[[dict[str, Any]], Estimate]

OUTPUT_LIMITS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
"""The request parameters that cap a model call's output tokens (Anthropic / OpenAI chat / Responses)."""


def estimator(cost: Any, cost_estimate: Any, tool_name: str) -> Estimator | None:
    """``@tool(cost=..., cost_estimate=...)`` as one function of the arguments dict (``None``: nothing is
    known in advance). Bad values are a ``ConfigurationError`` at decoration time."""
    if cost_estimate is None:
        if cost is None or callable(cost):
            return None
        return _constant(to_usd(cost, f"@tool({tool_name!r}) cost"))
    if callable(cost_estimate):
        return _checked(cost_estimate, tool_name)
    return _constant(to_usd(cost_estimate, f"@tool({tool_name!r}) cost_estimate"))


def _constant(amount: Decimal) -> Estimator:
    return lambda arguments: amount


def _checked(function: Callable[[dict[str, Any]], Any], tool_name: str) -> Estimator:
    def estimate(arguments: dict[str, Any]) -> Estimate:
        try:
            value = function(arguments)
        except Exception as exc:
            raise ConfigurationError(
                f"tool {tool_name!r}: its cost_estimate function raised {type(exc).__name__}: {exc}; the "
                f"tool was not run. It is given the arguments dict and returns the most the call may cost in "
                f"USD (or None when it is not known)."
            ) from exc
        if value is None or isinstance(value, Unpriced):
            return value
        try:
            return to_usd(value, f"tool {tool_name!r}: cost_estimate")
        except ConfigurationError as err:
            raise ConfigurationError(
                f"{err} Return the most the call may cost in USD (or None when it is not known); the tool "
                f"was not run."
            ) from None

    return estimate


class ModelCallEstimate:
    """The estimate of one instrumented model API's calls, from the request. Thread-safe."""

    def __init__(self, prices: PriceTable, provider: str) -> None:
        self._prices = prices
        self._provider = provider

    def __call__(self, request: dict[str, Any]) -> Estimate:
        model = request.get("model")
        if not isinstance(model, str):
            return None
        if self._prices.cost(TokenUsage(model, self._provider, 0, 0)) is None:
            return Unpriced(model, self._provider)
        limit = next((request[name] for name in OUTPUT_LIMITS if isinstance(request.get(name), int)), None)
        if limit is None or limit < 0:
            return None  # no cap on its output: counted after it ran
        input_bound = len(canonical_dumps(request).encode())
        return self._prices.cost(TokenUsage(model, self._provider, input_bound, limit))
