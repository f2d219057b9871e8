"""The budget meter: exact USD arithmetic and the one decision, "has this run passed its limit?".

Pure bookkeeping, no I/O; the session holds one and serialises access to it. "Passed" means spent >
limit: spending exactly the limit is allowed.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from .errors import ConfigurationError
from .pricing import to_usd


def parse_limit(value: Any) -> Decimal | None:
    """``budget_limit`` as an exact Decimal; ``None`` for no limit."""
    if value is None:
        return None
    limit = to_usd(value, "budget_limit")
    if limit <= 0:
        raise ConfigurationError(
            f"budget_limit must be a number of USD greater than zero, not {value!r} (omit it for no limit)."
        )
    return limit


class BudgetMeter:
    """What a run has spent, against its limit. Not thread-safe on its own."""

    __slots__ = ("exceeded", "limit", "spent", "unknown")

    def __init__(self, limit: Decimal | None) -> None:
        self.limit = limit
        self.spent = Decimal(0)
        self.unknown = False  # some usage could not be priced: ``spent`` is a lower bound
        self.exceeded = False

    def add(self, cost: Decimal | None) -> bool:
        """Add a cost (``None``: unknown); True when this addition passed the limit."""
        if cost is None:
            self.unknown = True
            return False
        self.spent += cost
        if self.limit is not None and not self.exceeded and self.spent > self.limit:
            self.exceeded = True
            return True
        return False
