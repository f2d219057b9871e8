"""AgentRelay: a transactional runtime for agent tool calls.

Tools decorated with ``@tool`` and called inside ``runtime.agent_session(...)`` emit OpenTelemetry spans
(GenAI conventions) and are recorded as rows of a SQL ``tool_calls`` ledger by a span processor; calls
are keyed, deduplicated, and (in later releases) compensated, replayed and budgeted.
"""

from ._version import __version__
from .context import CallInfo, current_call
from .errors import (
    AgentRelayError,
    ArgumentEncodingError,
    CallInProgressError,
    ConfigurationError,
    DuplicateToolError,
    EncodingError,
    LedgerError,
    OutputEncodingError,
    RuntimeClosedError,
    SchemaVersionError,
    SessionStateError,
)
from .ledger import LedgerOptions, LedgerSpanProcessor
from .runtime import AgentRuntime
from .session import AgentSession
from .tooling import tool

__all__ = [
    "AgentRelayError",
    "AgentRuntime",
    "AgentSession",
    "ArgumentEncodingError",
    "CallInProgressError",
    "CallInfo",
    "ConfigurationError",
    "DuplicateToolError",
    "EncodingError",
    "LedgerError",
    "LedgerOptions",
    "LedgerSpanProcessor",
    "OutputEncodingError",
    "RuntimeClosedError",
    "SchemaVersionError",
    "SessionStateError",
    "__version__",
    "current_call",
    "tool",
]
