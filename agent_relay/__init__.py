"""AgentRelay: a transactional runtime for agent tool calls.

Tools decorated with ``@tool`` and called inside ``runtime.agent_session(...)`` emit OpenTelemetry spans
(GenAI conventions) and are recorded as rows of a SQL ``tool_calls`` ledger by a span processor; calls
are keyed and deduplicated, compensated in reverse order when the run fails, and counted against the
run's budget.
"""

from ._version import __version__
from .context import CallInfo, current_call
from .errors import (
    AgentRelayError,
    ApprovalRejectedError,
    ApprovalRequiredError,
    ArgumentEncodingError,
    BudgetExceededError,
    BudgetReservationError,
    CallInDoubtError,
    CallInProgressError,
    ClaimLostError,
    ConfigurationError,
    DuplicateToolError,
    EncodingError,
    IdempotencyKeyReuseError,
    LedgerError,
    OutputEncodingError,
    ReplayDivergenceError,
    ReplayedError,
    RunCancelledError,
    RuntimeClosedError,
    SchemaVersionError,
    SessionStateError,
    ToolTimeoutError,
    UnknownRunError,
    UnknownToolError,
    UnpricedUsageError,
    UnpricedUsageWarning,
    UnrecordedCallWarning,
)
from .instrument import instrument, uninstrument
from .ledger import LedgerOptions, LedgerSpanProcessor
from .pricing import ModelPrice
from .query import LedgerReader
from .retry import Retry
from .runtime import AgentRuntime
from .saga import CompensationFailure
from .session import AgentSession
from .tooling import tool

__all__ = [
    "AgentRelayError",
    "AgentRuntime",
    "AgentSession",
    "ApprovalRejectedError",
    "ApprovalRequiredError",
    "ArgumentEncodingError",
    "BudgetExceededError",
    "BudgetReservationError",
    "CallInDoubtError",
    "CallInProgressError",
    "CallInfo",
    "ClaimLostError",
    "CompensationFailure",
    "ConfigurationError",
    "DuplicateToolError",
    "EncodingError",
    "IdempotencyKeyReuseError",
    "LedgerError",
    "LedgerOptions",
    "LedgerReader",
    "LedgerSpanProcessor",
    "ModelPrice",
    "OutputEncodingError",
    "ReplayDivergenceError",
    "ReplayedError",
    "Retry",
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
    "__version__",
    "current_call",
    "instrument",
    "tool",
    "uninstrument",
]
