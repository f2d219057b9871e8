"""The SQL ledger: schema, store (every SQL statement) and the OpenTelemetry span processor."""

from .processor import LedgerSpanProcessor
from .records import CallRecord
from .schema import SCHEMA_VERSION, agent_runs, metadata, tool_calls
from .store import LedgerOptions, LedgerStore

__all__ = [
    "SCHEMA_VERSION",
    "CallRecord",
    "LedgerOptions",
    "LedgerSpanProcessor",
    "LedgerStore",
    "agent_runs",
    "metadata",
    "tool_calls",
]
