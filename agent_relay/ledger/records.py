"""The record of one tool call as it travels from the wrapper, through the span processor, to the store."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

from ..errors import ConfigurationError, LedgerError

PENDING = "pending"
SUCCEEDED = "succeeded"
FAILED = "failed"

# durability modes (see README "Durability"): what is committed around a live tool call
STRICT = "strict"  # the pending row before the body runs, the outcome before the call returns
OUTCOME = "outcome"  # only the outcome, before the call returns (a crash mid-body: the call runs again)
DURABILITY_MODES = (STRICT, OUTCOME)
DURABILITY_ENV = "AGENT_RELAY_DURABILITY"


def check_durability(value: object, where: str) -> None:
    """Raise ``ConfigurationError`` unless ``value`` is a durability mode."""
    if value not in DURABILITY_MODES:
        raise ConfigurationError(
            f"{where}: durability must be 'strict' (a pending row before the tool runs, the outcome before "
            f"it returns) or 'outcome' (only the outcome: one commit, at-least-once after a crash), not "
            f"{value!r}."
        )


CLAIMED = "claimed"  # this worker holds the pending row and runs the tool
EXISTS = "exists"  # a row for this key already exists and is not failed: see ``existing_status``


@dataclasses.dataclass(slots=True, eq=False)
class CallRecord:
    """One tool call's ledger row in the making. Owned by one thread or task at a time."""

    ledger: Any  # the LedgerStore meant to persist it (a provider may carry several runtimes' processors)
    run_id: str
    call_id: str
    seq: int
    tool_name: str
    phase: str
    idempotency_key: str
    arguments: Any
    owner: str
    # set when the claim is made
    trace_id: str | None = None
    span_id: str | None = None
    started_ns: int | None = None
    claim: str | None = None
    attempts: int = 0
    existing_status: str | None = None
    existing_output: Any = None
    existing_owner: str | None = None
    existing_arguments: Any = None
    # set by the wrapper before the span ends
    status: str = PENDING
    output: Any = None
    error_type: str | None = None
    error_message: str | None = None
    cost_usd: Decimal | None = None
    cost_unknown: bool = False
    input_tokens: int | None = None
    output_tokens: int | None = None
    model: str | None = None
    ended_ns: int | None = None
    completed: bool = False
    origin: str = "live"  # live | replayed | diverged
    # a failed ledger write, kept for the wrapper to raise (span processors must not raise)
    ledger_error: LedgerError | None = None
    # the arguments as JSON text when it is already at hand (the key was computed from it)
    arguments_text: str | None = None
    # False in durability "outcome": no pending row; the outcome row is inserted when the span ends
    pending_row: bool = True
    # an async call among others in flight: its claim / outcome is written with theirs, in one
    # transaction, by the wrapper (agent_relay.batching) instead of by the span processor
    batch_claim: bool = False
    batch_complete: bool = False

    def held(self, attempts: int) -> None:
        """The claim is committed: this worker holds the call (``attempts`` counts its tries)."""
        self.claim, self.attempts = CLAIMED, attempts

    def found(self, status: str, output: Any, attempts: int, owner: str | None, arguments: Any) -> None:
        """Another row already holds the call's key (outputs and arguments decoded JSON): what it says."""
        self.claim, self.existing_status, self.existing_owner = EXISTS, status, owner
        self.existing_output, self.existing_arguments, self.attempts = output, arguments, attempts
