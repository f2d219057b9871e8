"""Errors raised by AgentRelay.

Every error derives from one root, so ``except AgentRelayError`` catches all of them. Each carries the
facts it names as attributes (``tool_name``, ``run_id``, ``argument``, ``database``, ...) and a message
that says what to do about it. Configuration mistakes are also ``ValueError``s, so code that validates
input the usual way catches them too::

    AgentRelayError
    ├── ConfigurationError (ValueError)      a runtime, tool or session was set up wrongly
    │   ├── DuplicateToolError               two tools registered under one name
    │   ├── UnknownToolError                 a name (a compensation, a recorded tool) matches no tool
    │   ├── UnknownRunError                  no run has this id
    │   │   └── AmbiguousRunError            a run id prefix matches several runs
    │   ├── UnpricedUsageError               token usage of a model with no known price, under a budget
    │   ├── IdempotencyKeyReuseError         a caller-supplied key reused with different arguments
    │   └── SessionStateError                a session used outside its lifetime or entered twice
    ├── EncodingError (ValueError)           a value cannot be stored as canonical JSON
    │   ├── ArgumentEncodingError            ... a tool argument (raised before the tool runs)
    │   └── OutputEncodingError              ... a tool's result or a session output
    ├── LedgerError                          the ledger could not be read or written
    │   ├── SchemaVersionError               the ledger was made by another schema version
    │   └── ClaimLostError                   another worker took over a call after this one's lease ran out
    ├── BudgetExceededError                  the run spent more than its budget_limit
    │   └── BudgetReservationError           a call that could pass it was refused before it ran
    ├── CallInProgressError                  another worker holds the claim on this call
    ├── CallInDoubtError                     a call's process died (or its body timed out) mid-call
    ├── ToolTimeoutError (TimeoutError)      a tool's body did not end within its timeout_s
    ├── ReplayDivergenceError                a replay asked for a call the recorded run does not have
    ├── ReplayedError                        a recorded failure whose type cannot be rebuilt safely
    ├── RunCancelledError                    the run was cancelled from outside; its call was refused
    ├── ApprovalRequiredError                a call awaits a person's approval; the run stopped there
    ├── ApprovalRejectedError                a person rejected the call; raised in the resumed run
    └── RuntimeClosedError                   the runtime was shut down

Warnings (``UserWarning``s): ``UnpricedUsageWarning``: usage of a model with no known price was recorded
as unpriced in a session without a budget. ``UnrecordedCallWarning``: a tool was called outside any
session's context while a session of its runtime was open (a thread that did not copy the context).
"""

from __future__ import annotations

from decimal import Decimal

__all__ = [
    "AgentRelayError",
    "AmbiguousRunError",
    "ApprovalRejectedError",
    "ApprovalRequiredError",
    "ArgumentEncodingError",
    "BudgetExceededError",
    "BudgetReservationError",
    "CallInDoubtError",
    "CallInProgressError",
    "ClaimLostError",
    "ConfigurationError",
    "DuplicateToolError",
    "EncodingError",
    "IdempotencyKeyReuseError",
    "LedgerError",
    "OutputEncodingError",
    "ReplayDivergenceError",
    "ReplayedError",
    "RunCancelledError",
    "RuntimeClosedError",
    "SchemaVersionError",
    "SessionStateError",
    "ToolTimeoutError",
    "UnknownRunError",
    "UnknownToolError",
    "UnpricedUsageError",
    "UnpricedUsageWarning",
    "UnrecordedCallWarning",
]


class AgentRelayError(Exception):
    """Root of every error AgentRelay raises."""


class ConfigurationError(AgentRelayError, ValueError):
    """A runtime, tool or session was configured wrongly; raised before any side effect."""


class DuplicateToolError(ConfigurationError):
    """A tool name is already registered on this runtime."""

    def __init__(self, tool_name: str, existing: str, new: str) -> None:
        self.tool_name = tool_name
        super().__init__(
            f"tool name {tool_name!r} is already registered on this runtime (by {existing}); "
            f"{new} cannot take it too. Pass a different name=... to @tool, or use another runtime."
        )


class UnknownToolError(ConfigurationError):
    """A tool name (a compensation, or a tool recorded in a run) matches no tool of this runtime."""

    def __init__(self, message: str, *, tool_name: str) -> None:
        self.tool_name = tool_name
        super().__init__(message)


class UnknownRunError(ConfigurationError):
    """No run with this id is in the ledger."""

    def __init__(self, run_id: str, database: str) -> None:
        self.run_id = run_id
        super().__init__(f"no run {run_id!r} in the ledger at {database}; check the id (agent_runs.run_id).")


class AmbiguousRunError(UnknownRunError):
    """A run id prefix matches more than one run."""

    def __init__(self, prefix: str, matches: list[str]) -> None:
        self.run_id = prefix
        self.matches = matches
        more = ", ..." if len(matches) > 2 else ""
        ConfigurationError.__init__(
            self,
            f"run id prefix {prefix!r} is ambiguous: it matches {', '.join(matches[:2])}{more}; give more "
            f"characters.",
        )


class UnpricedUsageError(ConfigurationError):
    """Token usage of a model without a known price was recorded in a session with a budget."""

    def __init__(self, *, model: str, provider: str | None, run_id: str, before_call: bool = False) -> None:
        self.model = model
        self.provider = provider
        self.run_id = run_id
        price = f"AgentRuntime(prices={{{model!r}: ModelPrice(input_per_mtok=..., output_per_mtok=...)}})"
        of = f" of provider {provider!r}" if provider else ""
        if before_call:  # (a model call under a budget: refused before its request)
            message = (
                f"run {run_id} has a budget, and no price is known for model {model!r}{of}, so what the call "
                f"may cost cannot be counted against it: the request was not sent. Price it: {price}."
            )
        else:
            message = (
                f"run {run_id}: no price is known for model {model!r}{of}, so its usage cannot be counted "
                f"against the budget. Pass cost_usd= to record_usage(), or price it: {price}."
            )
        super().__init__(message)


class IdempotencyKeyReuseError(ConfigurationError):
    """A caller-supplied idempotency key was used again with different arguments (Stripe's rule)."""

    def __init__(self, *, tool_name: str, user_key: str, run_id: str, difference: str) -> None:
        self.tool_name = tool_name
        self.user_key = user_key
        self.run_id = run_id
        super().__init__(
            f"tool {tool_name!r}: idempotency key {user_key!r} was already used in run {run_id} with other "
            f"arguments ({difference}); the tool was not run. Use a new key for a different request."
        )


class SessionStateError(ConfigurationError):
    """A session was used outside its lifetime (entered twice, output set after exit, ...)."""


class EncodingError(AgentRelayError, ValueError):
    """A value cannot be encoded as canonical JSON for the ledger and the idempotency key."""

    def __init__(self, message: str, *, tool_name: str | None, path: str, type_name: str) -> None:
        self.tool_name = tool_name
        self.path = path
        self.type_name = type_name
        super().__init__(message)


class ArgumentEncodingError(EncodingError):
    """A tool argument cannot be encoded; the tool did not run and nothing was recorded.

    ``argument`` names the parameter, ``path`` the exact place inside it (``items[2].price``).
    """

    @property
    def argument(self) -> str:
        return self.path.split(".", 1)[0].split("[", 1)[0]


class OutputEncodingError(EncodingError):
    """A tool's result (or a session's output) cannot be encoded.

    For a tool, the body has run (its side effect may have happened), but the call is recorded as
    ``failed`` rather than pretending its output was stored.
    """


class LedgerError(AgentRelayError):
    """The ledger could not be read or written.

    Raised to the caller whenever a record could not be made durable: a tool whose claim failed did not
    run; a tool whose completion failed did run, and its row stays ``pending`` (outcome unknown).
    ``database`` is the ledger's URL with any password masked.
    """

    def __init__(
        self, message: str, *, database: str, run_id: str | None = None, tool_name: str | None = None
    ) -> None:
        self.database = database
        self.run_id = run_id
        self.tool_name = tool_name
        super().__init__(message)


class ClaimLostError(LedgerError):
    """Another worker took over this process's call after its lease on it ran out (this process was
    frozen, or cut off from the ledger, for longer than ``LedgerOptions.lease_s``): the body ran here, but
    its outcome is not recorded, and the run is the other worker's now. A session this reaches stops
    without unwinding the run and leaves the run's row to that worker."""

    def __init__(
        self, *, database: str, run_id: str, tool_name: str, call_id: str, owner: str | None
    ) -> None:
        self.call_id = call_id
        self.owner = owner
        super().__init__(
            f"tool call {tool_name!r} (call_id {call_id}) of run {run_id} was taken over by {owner} after "
            f"this process's lease on it ran out (it was frozen, or cut off from the ledger at {database}, "
            f"for longer than LedgerOptions(lease_s=...)); its outcome here was not recorded. The run goes "
            f"on in {owner}: this session stops without unwinding it.",
            database=database,
            run_id=run_id,
            tool_name=tool_name,
        )


class SchemaVersionError(LedgerError):
    """The ledger's recorded schema version is not the one this version of AgentRelay uses."""

    def __init__(self, *, database: str, found: int, expected: int) -> None:
        self.found = found
        self.expected = expected
        if found > expected:
            advice = "upgrade agent-relay to a version that knows this schema"
        else:
            advice = (
                "upgrade the ledger: `agent-relay --db <url> db upgrade`, or open it with "
                "LedgerOptions(upgrade=True)"
            )
        super().__init__(
            f"the ledger at {database} has schema version {found}, this agent-relay uses version "
            f"{expected}: {advice}.",
            database=database,
        )


class BudgetExceededError(AgentRelayError):
    """The run's spending passed its ``budget_limit`` (spent > limit); no later tool call runs.

    The call that passed the limit was recorded (with its cost) before this was raised.
    """

    def __init__(self, *, limit: Decimal, spent: Decimal, run_id: str, tool_name: str | None = None) -> None:
        self.limit = limit
        self.spent = spent
        self.run_id = run_id
        self.tool_name = tool_name
        by = f" (passed by tool {tool_name!r})" if tool_name else ""
        super().__init__(
            f"run {run_id} spent ${spent} of its ${limit} budget{by}; no further tool calls run in it. "
            f"Raise budget_limit, or make the agent cheaper."
        )


class BudgetReservationError(BudgetExceededError):
    """A call whose cost is known before it runs was refused before it ran: the run's cost so far
    (``spent``), what its calls in flight reserved (``reserved``) and this call's ``reservation`` could
    pass ``limit``. Nothing of the call ran or was recorded; cheaper calls may still run."""

    def __init__(
        self,
        *,
        limit: Decimal,
        spent: Decimal,
        reserved: Decimal,
        reservation: Decimal,
        run_id: str,
        tool_name: str,
    ) -> None:
        self.limit = limit
        self.spent = spent
        self.reserved = reserved
        self.reservation = reservation
        self.run_id = run_id
        self.tool_name = tool_name
        AgentRelayError.__init__(
            self,
            f"tool {tool_name!r} was refused before it ran: it may cost up to ${reservation}, and run "
            f"{run_id} has spent ${spent} with ${reserved} reserved by calls in flight, of its ${limit} "
            f"budget (${spent} + ${reserved} + ${reservation} > ${limit}). Raise budget_limit, or lower what "
            f"the call may cost (its cost= or cost_estimate=, or a model call's max_tokens).",
        )


class CallInDoubtError(AgentRelayError):
    """A call was claimed by a process that died (or whose lease on it ran out: gone, frozen or cut off
    from the ledger) before recording its outcome, or its body timed out.

    Whether its side effect happened is unknown, so it is not run again unless its tool is declared
    ``idempotent=True``.
    """

    def __init__(
        self, *, tool_name: str, run_id: str, call_id: str, owner: str | None, why: str | None = None
    ) -> None:
        self.tool_name = tool_name
        self.run_id = run_id
        self.call_id = call_id
        self.owner = owner
        why = why or f"was claimed by {owner}, which died before recording its outcome"
        super().__init__(
            f"tool call {tool_name!r} (call_id {call_id}) of run {run_id} {why}: it may or may not have "
            f"happened. Check the real outcome, then "
            f'record it with runtime.settle_call("{call_id}", "succeeded", output=...) if it happened, or '
            f'runtime.settle_call("{call_id}", "failed") if it did not (from a shell: agent-relay settle '
            f"{call_id} succeeded --output JSON, or ... failed), then resume or compensate the run again; "
            f"or declare the tool @tool(..., idempotent=True) if running it again is safe."
        )


class ApprovalRequiredError(AgentRelayError):
    """A tool that requires approval was called: the call is recorded ``awaiting_approval`` and the run
    stops there without unwinding, until a person decides and the run is resumed."""

    def __init__(self, *, tool_name: str, run_id: str, call_id: str) -> None:
        self.tool_name = tool_name
        self.run_id = run_id
        self.call_id = call_id
        super().__init__(
            f"tool call {tool_name!r} (call_id {call_id}) of run {run_id} awaits approval; nothing ran. "
            f"Decide with runtime.approve({call_id!r}, by=...) or runtime.reject(...) (or agent-relay "
            f"approve|reject {call_id}), then resume the run (agent_session(..., resume_run_id={run_id!r}))."
        )


class ApprovalRejectedError(AgentRelayError):
    """A person rejected a call that required approval: raised where the agent called it, in the resumed
    run; the agent may handle it (unhandled, the saga unwinds)."""

    def __init__(self, *, tool_name: str, call_id: str, by: str | None, note: str | None) -> None:
        self.tool_name = tool_name
        self.call_id = call_id
        self.by = by
        self.note = note
        why = f": {note}" if note else ""
        super().__init__(f"tool call {tool_name!r} (call_id {call_id}) was rejected by {by}{why}.")


class RunCancelledError(AgentRelayError):
    """The run was cancelled from outside (``runtime.cancel`` / ``agent-relay cancel``): its forward calls
    are refused before they run, and its saga unwinds what it did."""

    def __init__(self, *, run_id: str, tool_name: str | None, reason: str | None) -> None:
        self.run_id = run_id
        self.tool_name = tool_name
        self.reason = reason
        what = f"tool {tool_name!r} was not run: " if tool_name else ""
        why = f" ({reason})" if reason else ""
        super().__init__(f"{what}run {run_id} was cancelled{why}.")


class ToolTimeoutError(AgentRelayError, TimeoutError):
    """A tool's body did not end within its ``@tool(timeout_s=...)``. Its side effect may have happened
    (or, for a sync body left running, may still): the call is in doubt unless the tool is idempotent."""

    def __init__(self, *, tool_name: str, timeout_s: float) -> None:
        self.tool_name = tool_name
        self.timeout_s = timeout_s
        super().__init__(f"tool {tool_name!r} did not end within its timeout of {timeout_s:g} s.")


class ReplayDivergenceError(AgentRelayError):
    """A replay asked for a call that the recorded run does not have; no tool body ran."""

    def __init__(
        self, message: str, *, tool_name: str, run_id: str, source_run_id: str, position: int
    ) -> None:
        self.tool_name = tool_name
        self.run_id = run_id
        self.source_run_id = source_run_id
        self.position = position
        super().__init__(message)


class ReplayedError(AgentRelayError):
    """A failure recorded in the replayed run, re-raised in the replay.

    Raised when the original type cannot be rebuilt safely (not a built-in exception, nor one of the
    tool's ``raises=`` types); ``original_type`` and ``original_message`` say what it was.
    """

    def __init__(self, *, tool_name: str, original_type: str, original_message: str) -> None:
        self.tool_name = tool_name
        self.original_type = original_type
        self.original_message = original_message
        super().__init__(
            f"tool {tool_name!r} failed in the recorded run: {original_type}: {original_message}"
        )


class CallInProgressError(AgentRelayError):
    """Another worker holds the pending claim on this call, so it was not run here."""

    def __init__(self, *, tool_name: str, run_id: str, idempotency_key: str) -> None:
        self.tool_name = tool_name
        self.run_id = run_id
        self.idempotency_key = idempotency_key
        super().__init__(
            f"tool call {tool_name!r} (key {idempotency_key[:16]}...) of run {run_id} is claimed by another "
            f"worker and still pending; it was not run again here. Wait for that worker, or resume the run "
            f"once it is gone."
        )


class RuntimeClosedError(AgentRelayError):
    """The runtime was shut down; create a new one to record more runs."""


class UnpricedUsageWarning(UserWarning):
    """Usage of a model with no known price was recorded as unpriced (the run's cost is a lower bound)."""


class UnrecordedCallWarning(UserWarning):
    """A tool ran unrecorded — outside any session's context — while a session of its runtime was open:
    typically a thread pool's worker, which does not inherit the caller's context. Submit the work with
    ``contextvars.copy_context().run`` (or ``asyncio.to_thread``, which copies it) to record it."""
