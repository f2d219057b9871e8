"""``RunSpend``: what a run has spent — tokens, USD against its budget — and the errors and warnings
that follow from it. Thread-safe bookkeeping; no I/O."""

from __future__ import annotations

import threading
import warnings
from decimal import Decimal

from .budget import BudgetMeter
from .errors import BudgetExceededError, UnpricedUsageError, UnpricedUsageWarning


class RunSpend:
    """One run's totals. ``charge`` counts a cost and says whether it passed the budget."""

    def __init__(self, run_id: str, limit: Decimal | None) -> None:
        self.run_id = run_id
        self._meter = BudgetMeter(limit)
        self._lock = threading.Lock()
        # the most the ledger was seen to count for the run (every worker's settled calls, this one's
        # too): a floor, never added to this worker's own charges, which it may already include
        self._seen = Decimal(0)
        self.input_tokens = 0
        self.output_tokens = 0

    @property
    def limit(self) -> Decimal | None:
        return self._meter.limit

    @property
    def spent(self) -> Decimal:
        """USD so far (a lower bound when ``unknown``, or while other workers' calls are unseen)."""
        return max(self._meter.spent, self._seen)

    @property
    def unknown(self) -> bool:
        """True when some usage could not be priced."""
        return self._meter.unknown

    @property
    def exceeded(self) -> bool:
        return self._meter.exceeded

    def carry(self, *, limit: Decimal | None, spent: Decimal, unknown: bool, inp: int, out: int) -> None:
        """Start from totals already recorded (a resumed run)."""
        with self._lock:
            self._meter.limit = limit
            self._meter.add(spent)
            self._meter.unknown |= unknown
            self.input_tokens, self.output_tokens = inp, out

    def at_least(self, *, spent: Decimal, unknown: bool, inp: int, out: int) -> None:
        """Raise the totals to what the ledger counted (other workers resumed the run too)."""
        with self._lock:
            self._meter.spent = max(self._meter.spent, spent)
            self._meter.unknown |= unknown
            self.input_tokens = max(self.input_tokens, inp)
            self.output_tokens = max(self.output_tokens, out)

    def at_least_spent(self, spent: Decimal) -> None:
        """Raise the cost so far to what the ledger counted (every worker's calls); passing the limit
        there counts as passed here."""
        with self._lock:
            meter = self._meter
            if spent > self._seen:
                self._seen = spent  # (raising meter.spent instead counted a call settled meanwhile twice)
                if meter.limit is not None and spent > meter.limit:
                    meter.exceeded = True

    def charge(
        self, cost: Decimal | None, *, input_tokens: int = 0, output_tokens: int = 0, unknown: bool = False
    ) -> bool:
        """Count tokens and a cost (``None``: nothing to add; ``unknown``: some of it could not be
        priced); True when this charge passed the budget."""
        with self._lock:
            self.input_tokens += input_tokens
            self.output_tokens += output_tokens
            passed = self._meter.add(cost) if cost is not None else False
            if unknown:
                self._meter.add(None)
        return passed

    def budget_error(self, tool_name: str | None) -> BudgetExceededError:
        """The error for passing (``tool_name``: that call passed it) or having passed the budget."""
        assert self._meter.limit is not None
        return BudgetExceededError(
            limit=self._meter.limit, spent=self._meter.spent, run_id=self.run_id, tool_name=tool_name
        )

    def unpriced(self, model: str, provider: str | None, *, raise_error: bool = True) -> None:
        """Usage of ``model`` had no price: under a budget an ``UnpricedUsageError`` (``raise_error``),
        else an ``UnpricedUsageWarning``."""
        if self._meter.limit is not None:
            if raise_error:
                raise UnpricedUsageError(model=model, provider=provider, run_id=self.run_id)
            return
        warnings.warn(
            f"agent-relay: no price is known for model {model!r}; run {self.run_id} records its usage as "
            f"unpriced (cost_unknown). Pass cost_usd=, or AgentRuntime(prices=...).",
            UnpricedUsageWarning,
            stacklevel=3,
        )
