"""The SQL ledger: schema, store (runs and reads), the call writer and the OpenTelemetry span processor."""

from .connection import LedgerOptions
from .processor import LedgerSpanProcessor
from .records import CallRecord
from .schema import SCHEMA_VERSION, agent_runs, metadata, tool_calls
from .store import LedgerStore

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
